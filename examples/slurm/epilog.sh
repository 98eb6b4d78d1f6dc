#!/bin/sh
# shellcheck source-path=SCRIPTDIR
# matrix as a Slurm Epilog (or part of one): check this node after each job, so that a job
# that left it broken (a GPU fallen off the bus, a full scratch, leaked memory) drains it
# before the next job instead of failing that job's prolog.
#
#   slurm.conf:  Epilog=/etc/slurm/matrix/epilog.sh
#   beside it:   matrix-node.sh, matrix-prolog.conf (settings) and the node spec
#
# The same mapping of exit codes as the prolog (matrix-node.sh, slurm_exit); an epilog's
# non-zero exit makes Slurm drain the node too.
here=$(dirname "$0")
WHAT=epilog
# shellcheck source=matrix-node.sh
. "$here/matrix-node.sh"
check_node --drain
slurm_exit $?

#!/bin/sh
# shellcheck source-path=SCRIPTDIR
# matrix as a Slurm Prolog (or part of one): check this node before each job starts on it.
#
#   slurm.conf:  Prolog=/etc/slurm/matrix/prolog.sh
#                PrologEpilogTimeout=120     # above the spec's slowest check (node.yaml: 50 s)
#   beside it:   matrix-node.sh, matrix-prolog.conf (settings) and the node spec
#
# `matrix run --drain` on this node: a critical check that observed a failure here drains it,
# the reason naming the spec and check ("matrix[slurm-node] gpu-health: ..."), and the job
# does not start here; what the exit codes mean is in matrix-node.sh (slurm_exit).
here=$(dirname "$0")
WHAT=prolog
# shellcheck source=matrix-node.sh
. "$here/matrix-node.sh"
check_node --drain
slurm_exit $?

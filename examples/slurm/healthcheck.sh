#!/bin/sh
# shellcheck source-path=SCRIPTDIR
# matrix as slurmd's HealthCheckProgram: check this node every HealthCheckInterval, drain it
# when a critical check observes a failure, and resume it once a whole run of the same spec
# passes. Only drains of this spec are resumed: a node drained by another spec (a fleet
# check), by Slurm or by an admin stays as it is.
#
#   slurm.conf:  HealthCheckProgram=/etc/slurm/matrix/healthcheck.sh
#                HealthCheckInterval=300
#
# slurmd sets no SLURM_CONF here: set it in matrix-prolog.conf when slurm.conf is not at the
# default path (matrix-node.sh). Slurm ignores the exit code of a health check program; a
# drain or resume that failed is logged in REPORTS/NODE.log.
here=$(dirname "$0")
WHAT=healthcheck
# shellcheck source=matrix-node.sh
. "$here/matrix-node.sh"
check_node --drain --resume
code=$?
case $code in
    0 | 1) ;;
    4) log "a drain or resume of $node failed (above): check SLURM_CONF and that root may run scontrol update" ;;
    *) log "matrix exited $code: a problem of the check, not of $node; see $REPORTS" ;;
esac
exit 0

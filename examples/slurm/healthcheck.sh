#!/bin/sh
# matrix as slurmd's HealthCheckProgram: check this node every HealthCheckInterval, drain it
# when a critical check fails and resume it once matrix's own drain is no longer deserved.
#
#   slurm.conf:  HealthCheckProgram=/etc/slurm/matrix/healthcheck.sh
#                HealthCheckInterval=300
#
# Slurm ignores the exit code of a health check program: the program sets the node's state
# itself, which `--drain --resume` does. A node someone else drained is never touched.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
here=$(dirname "$0")
MATRIX=matrix
SPEC=$here/node.yaml
REPORTS=/var/log/matrix
ARGS=
[ -r "$here/matrix-prolog.conf" ] && . "$here/matrix-prolog.conf"

node=${SLURMD_NODENAME:-$(hostname -s)}
mkdir -p "$REPORTS" 2>/dev/null
# shellcheck disable=SC2086 # MATRIX and ARGS are word lists
$MATRIX run "$SPEC" $ARGS --quiet --drain --resume --slurm-node "$node" \
    --json "$REPORTS/$node.health.json"
exit 0

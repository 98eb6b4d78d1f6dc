#!/bin/sh
# matrix as a Slurm Prolog (or part of one): check this node before each job starts on it.
#
#   slurm.conf:  Prolog=/etc/slurm/matrix/prolog.sh
#   beside it:   matrix-prolog.conf (MATRIX, SPEC, REPORTS; see below) and the node spec
#
# slurmd runs a prolog as root with SLURMD_NODENAME and SLURM_JOB_ID set and no PATH. Exit
# codes, as Slurm reads them:
#   0  READY or CAUTION: the job starts.
#   1  BLOCKED: matrix has drained this node (`--drain`), the reason naming the failed check
#      ("matrix: gpu-health: ..."); Slurm fails the job's launch here and requeues a batch job.
#   anything else from matrix (2: the spec is invalid; 130: interrupted) is a problem of the
#   check, not of the node: it is logged and the job starts, so a typo in the spec never
#   drains the whole cluster.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
here=$(dirname "$0")
MATRIX=matrix                     # the command, e.g. /opt/matrix/venv/bin/matrix
SPEC=$here/node.yaml              # the node's checks
REPORTS=/var/log/matrix           # one JSON report per node, the last run's
ARGS=                             # more options for `matrix run`, e.g. --var gpus=false
[ -r "$here/matrix-prolog.conf" ] && . "$here/matrix-prolog.conf"

mkdir -p "$REPORTS" 2>/dev/null
# shellcheck disable=SC2086 # MATRIX and ARGS are word lists
$MATRIX run "$SPEC" $ARGS --quiet --drain --slurm-node "$SLURMD_NODENAME" \
    --json "$REPORTS/$SLURMD_NODENAME.json"
code=$?
case $code in
    0) exit 0 ;;
    1) exit 1 ;;
    *) echo "matrix prolog on $SLURMD_NODENAME: matrix exited $code; see $REPORTS" >&2
       exit 0 ;;
esac

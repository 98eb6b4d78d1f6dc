# What examples/slurm's wrappers share; each sets WHAT (prolog, epilog, healthcheck) and
# sources this file. slurmd runs them as root with no PATH and little environment, so the
# settings come from matrix-prolog.conf beside them:
#
#   MATRIX=/opt/matrix/venv/bin/matrix   # the command
#   SPEC=/etc/slurm/matrix/node.yaml     # the node's checks
#   REPORTS=/var/log/matrix              # NODE.WHAT.json (the last run's report) and NODE.log
#   ARGS="--var gpus=false"              # more options for `matrix run`
#   SLURM_CONF=/etc/slurm/slurm.conf     # where Slurm's commands find slurm.conf, see below
#
# matrix drains and resumes through scontrol, which reads slurm.conf at $SLURM_CONF, else at
# the path Slurm was built with. slurmd sets SLURM_CONF for a prolog and an epilog, but not for
# a HealthCheckProgram: when slurm.conf is not at the default path, set SLURM_CONF in
# matrix-prolog.conf, or matrix cannot drain (it exits 4 and the log says so).
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
MATRIX=matrix
SPEC=${here:?set by the wrapper that sources this file}/node.yaml
REPORTS=/var/log/matrix
ARGS=
# shellcheck source=/dev/null
[ -r "$here/matrix-prolog.conf" ] && . "$here/matrix-prolog.conf"
[ -n "${SLURM_CONF:-}" ] && export SLURM_CONF
node=${SLURMD_NODENAME:-$(hostname -s)}
mkdir -p "$REPORTS" 2>/dev/null

# A line in REPORTS/NODE.log and in syslog (slurmd keeps no output of these programs).
log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') $WHAT${SLURM_JOB_ID:+ (job $SLURM_JOB_ID)}: $*" \
        >>"$REPORTS/$node.log" 2>/dev/null
    command -v logger >/dev/null && logger -t matrix "$WHAT on $node: $*"
    return 0
}

# matrix run on this node with more options ("$@"); its errors go to the node's log.
check_node() {
    # shellcheck disable=SC2086 # MATRIX and ARGS are word lists
    $MATRIX run "$SPEC" $ARGS --quiet --slurm-node "$node" \
        --json "$REPORTS/$node.$WHAT.json" "$@" 2>>"$REPORTS/$node.log"
}

# The exit a prolog or an epilog gives Slurm for matrix's exit code: non-zero fails the job
# here (a prolog's batch job is requeued) and Slurm drains the node unless it is drained.
#   0 (READY, CAUTION)  -> 0.
#   1 (BLOCKED)         -> 1 when the node is drained now, as the run's report says (its
#                          warnings): matrix drained it for a failure a check observed here (the
#                          reason names spec and check), or found it drained. BLOCKED with
#                          nothing observed here (a check that could not run) drains nothing:
#                          logged, 0.
#   4 (a drain failed)  -> logged, 1: Slurm drains the node itself ("Prolog error").
#   2, 130, other       -> logged, 0: a problem of the check (an invalid spec), not the node.
slurm_exit() {
    case $1 in
        0) return 0 ;;
        1) if grep -Fq -e "Slurm: drained $node: " -e "Slurm: $node left as it is: already" \
                "$REPORTS/$node.$WHAT.json" 2>/dev/null
           then log "BLOCKED: $node is drained; see $REPORTS/$node.$WHAT.json"; return 1; fi
           log "BLOCKED, but no failure was observed on $node: nothing drained, the job goes on; see $REPORTS/$node.$WHAT.json"
           return 0 ;;
        4) log "BLOCKED, but matrix could not drain $node (above); Slurm drains it for the failed $WHAT"
           return 1 ;;
        *) log "matrix exited $1: a problem of the check, not of $node; see $REPORTS"
           return 0 ;;
    esac
}

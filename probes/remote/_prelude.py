# The module `_prelude` of every remote program (matrix/remote.py): read params from argv,
# print one JSON reply. Stdlib only; runs on any python3 >= 3.8 on the target.
import json
import os
import sys

GB = 1024**3  # facts say "GB" for GiB, like df -h and free -g
REPLY_LIMIT = 1 << 20  # what the controller keeps of stdout (matrix/remote.py OUTPUT_LIMIT)


def gb(size):
    return round(size / GB, 2)


def percentile(ordered, percent):
    """Nearest-rank percentile of sorted values: p50 of [1, 2, 3, 4] is 2, and p50 <= p95 <=
    p99 always hold."""
    return ordered[max(0, -(-len(ordered) * percent // 100) - 1)]


class ObserveError(Exception):
    """Raised by a script when it cannot observe; reported as the probe's error."""


class Unwell(Exception):
    """Raised by a script with facts that are its answer but say it failed: the program then
    exits 1, as for an error, so a launcher running it as one task of many (srun
    --kill-on-bad-exit) ends the others instead of leaving them waiting for this one."""

    def __init__(self, facts):
        super().__init__("unwell")
        self.facts = facts


def by_op(handlers):
    """`observe` for a script that serves several kinds: params["op"] (the kind) picks the
    handler, e.g. by_op({"port": observe_port, "http": observe_http})."""

    def observe(params):
        handler = handlers.get(params.get("op"))
        if handler is None:
            known = ", ".join(sorted(handlers))
            raise ObserveError(f"unknown op {params.get('op')!r}: this script serves {known}")
        return handler(params)

    return observe


def _where(exc):
    """'files.py:63': where an unexpected exception was raised (the traceback's last frame)."""
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"


def main(observe, params="{}"):
    """`params` are written into the program by the controller, never into argv."""
    params = json.loads(params)
    failed = True
    try:
        reply = {"facts": observe(params)}
        failed = False
    except Unwell as exc:
        reply = {"facts": exc.facts}
    except ObserveError as exc:
        reply = {"error": str(exc)}
    except Exception as exc:  # a broken probe must still answer
        reply = {"error": f"{type(exc).__name__}: {exc} (at {_where(exc)})"}
    text = json.dumps(reply, default=str)
    if len(text) > REPLY_LIMIT:  # cut, it would not parse: say so instead
        failed = True
        why = f"the answer is {len(text)} bytes, over the {REPLY_LIMIT} a probe may print"
        text = json.dumps({"error": why + ": its facts must be capped (a bug of the probe)"})
    sys.stdout.write(text)
    if failed:
        sys.stdout.flush()
        sys.exit(1)

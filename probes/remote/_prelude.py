# Prepended to every remote script: read params from argv, print one JSON reply.
# Stdlib only; runs on any python3 >= 3.8 on the target. Scripts use the names defined here.
import json
import sys

GB = 1024**3  # facts say "GB" for GiB, like df -h and free -g


def gb(size):
    return round(size / GB, 2)


class ObserveError(Exception):
    """Raised by a script when it cannot observe; reported as the probe's error."""


def main(observe, secret="{}"):
    """`secret` params are written into the program by the controller, never into argv."""
    params = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    params.update(json.loads(secret))
    try:
        reply = {"facts": observe(params)}
    except ObserveError as exc:
        reply = {"error": str(exc)}
    except Exception as exc:  # a broken probe must still answer
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(reply, default=str))

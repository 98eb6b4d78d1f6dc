# Observe one resource limit of a fresh process on the target (params["op"]: acme.ulimit).
#
# This file is not imported by the plugin: matrix sends it to the target's python over stdin,
# with its prelude as the module `_prelude`. It must run unchanged on python >= 3.8 with the
# stdlib only.
import sys

from _prelude import ObserveError


def _limit(value, resource):
    """RLIM_INFINITY becomes None, which JSON carries as null: "unlimited"."""
    return None if value == resource.RLIM_INFINITY else value


def _meets(value, at_least):
    """An unlimited value meets any floor; a null floor asks for unlimited."""
    if value is None:
        return True
    return at_least is not None and value >= at_least


def observe(params):
    try:
        import resource
    except ImportError:  # Windows has no setrlimit
        raise ObserveError(f"no resource limits to read on {sys.platform}") from None
    name = params["resource"]
    which = getattr(resource, "RLIMIT_" + name.upper(), None)
    if which is None:
        raise ObserveError(f"RLIMIT_{name.upper()} does not exist on {sys.platform}")
    soft, hard = (_limit(v, resource) for v in resource.getrlimit(which))
    at_least = params["at_least"]
    return {
        "resource": name,
        "soft": soft,
        "hard": hard,
        "at_least": at_least,
        "ok": _meets(soft, at_least),
        "raisable": _meets(hard, at_least),
    }

# Observe the target's python: interpreter, installed distributions, importable modules.
import contextlib
import importlib
import os
import platform
import sys
from importlib import metadata


def _version(name):
    """Installed version of a distribution, trying the spellings pip may have recorded."""
    for spelling in (name, name.replace("-", "_"), name.replace("_", "-")):
        try:
            return metadata.version(spelling)
        except metadata.PackageNotFoundError:
            pass
    return None


def _import_error(module):
    # a module printing at import must not corrupt the JSON reply on stdout
    with contextlib.redirect_stdout(sys.stderr):
        try:
            importlib.import_module(module)
        except (Exception, SystemExit) as exc:  # a module may sys.exit() when it cannot load
            return f"{type(exc).__name__}: {exc}"
    return None


def _markers():
    """PEP 508 environment markers of this interpreter, as packaging computes them."""
    info = sys.implementation.version
    version = f"{info.major}.{info.minor}.{info.micro}"
    if info.releaselevel != "final":
        version += info.releaselevel[0] + str(info.serial)
    return {
        "implementation_name": sys.implementation.name,
        "implementation_version": version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


def observe(params):
    errors = {}
    for module in params.get("imports") or []:
        error = _import_error(module)
        if error is not None:
            errors[module] = error
    return {
        "version": platform.python_version(),
        "implementation": sys.implementation.name,
        "executable": sys.executable,
        "platform": sys.platform,
        "machine": platform.machine(),
        "packages": {name: _version(name) for name in params.get("packages") or []},
        "import_errors": errors,
        "markers": _markers(),
    }

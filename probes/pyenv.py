"""`python`: the target's interpreter, installed packages and importable modules.

The remote script (probes/remote/pyenv.py) only reports what is there: interpreter facts,
installed versions, import errors. Requirements are parsed and compared here on the controller
with `packaging`, so the target needs nothing beyond the standard library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from matrix.probe import ProbeContext, ProbeParams, probe

if TYPE_CHECKING:
    from packaging.requirements import Requirement


def _requirement(text: str) -> Requirement:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(f"invalid requirement {text!r}: {exc}") from None


def _unmet(requirement: Requirement, version: str) -> str | None:
    """'torch 2.4.1 (needs >=2.5)' when the installed version misses the specifier."""
    from packaging.version import InvalidVersion

    spec = requirement.specifier
    try:
        if not spec or spec.contains(version, prereleases=True):
            return None
    except InvalidVersion:
        return f"{requirement.name} {version} (needs {spec}; not a PEP 440 version)"
    return f"{requirement.name} {version} (needs {spec})"


@probe(
    "python",
    default_expect={"missing": {"len": 0}, "unsatisfied": {"len": 0}, "import_errors": {"len": 0}},
    facts={
        "version": 'interpreter version, e.g. "3.11.7" (match with {version: ">=3.10"})',
        "implementation": "cpython, pypy, ...",
        "executable": "path of the interpreter",
        "platform": "sys.platform, e.g. linux",
        "machine": "CPU architecture, e.g. x86_64",
        "packages": "{name: installed version, or null when not installed}",
        "missing": "requested distributions that are not installed",
        "unsatisfied": 'installed at the wrong version, e.g. "torch 2.4.1 (needs >=2.5)"',
        "import_errors": "{module: error}, e.g. ModuleNotFoundError: No module named 'x'",
    },
)
class Python(ProbeParams):
    """Installed distributions at the right versions and modules that import, on the target."""

    packages: list[str] = Field(default_factory=list)
    """PEP 508 requirements, e.g. ["torch>=2.5", numpy]; markers are evaluated on the target."""
    imports: list[str] = Field(default_factory=list)
    """Modules that must import, e.g. [flash_attn]; imports run in the target's python."""

    @field_validator("packages")
    @classmethod
    def _parse(cls, packages: list[str]) -> list[str]:
        for text in packages:
            _requirement(text)
        return packages

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        requirements = [_requirement(text) for text in self.packages]
        names = list(dict.fromkeys(r.name for r in requirements))
        facts = await ctx.python("pyenv", {"packages": names, "imports": self.imports})
        markers = facts.pop("markers")
        wanted = [r for r in requirements if r.marker is None or r.marker.evaluate(markers)]
        installed = facts["packages"]
        facts["packages"] = {r.name: installed[r.name] for r in wanted}
        facts["missing"] = [name for name, version in facts["packages"].items() if not version]
        unmet = (_unmet(r, installed[r.name]) for r in wanted if installed[r.name])
        facts["unsatisfied"] = [text for text in unmet if text]
        return facts

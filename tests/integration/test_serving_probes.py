"""The `env` probe's `default`: an unset optional variable is checked through the default the
program falls back to, on the real local target."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_probes import check, run_checks, status


def test_env_default_is_checked_when_the_variable_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MX_LEVEL", "verbose")
    monkeypatch.setenv("MX_SET_PORT", "9000")
    for name in ["MX_UNSET_LEVEL", "MX_UNSET_PORT", "MX_BAD_DEFAULT", "MX_REQUIRED"]:
        monkeypatch.delenv(name, raising=False)
    levels = ["debug", "info"]

    results = run_checks(
        tmp_path,
        [
            check("unset-level", "env", name="MX_UNSET_LEVEL", choices=levels, default="info"),
            check("set-level", "env", name="MX_LEVEL", choices=levels, default="info"),
            check("unset-port", "env", name="MX_UNSET_PORT", type="int", default=8081),
            check("set-port", "env", name="MX_SET_PORT", type="int", max=8999, default="80"),
            check("bad-default", "env", name="MX_BAD_DEFAULT", type="int", min=1, default="0"),
            check("required", "env", name="MX_REQUIRED", type="int", default="7"),
            check("no-default", "env", name="MX_REQUIRED", type="int"),
        ],
    )

    assert status(results) == {
        "unset-level": "pass",
        "set-level": "fail",
        "unset-port": "pass",
        "set-port": "fail",
        "bad-default": "fail",
        "required": "pass",
        "no-default": "fail",
    }
    facts = {check_id: r.facts for check_id, r in results.items()}
    assert facts["unset-level"] == {
        "name": "MX_UNSET_LEVEL",
        "present": False,
        "empty": False,
        "value": None,
        "defaulted": True,
        "typed": "info",
        "problem": None,
        "valid": True,
    }
    # a number rendered into `default` arrives as text and is typed like a set value
    assert facts["unset-port"]["typed"] == 8081 and facts["unset-port"]["defaulted"] is True
    # a set variable wins over the default, and is the one checked
    assert facts["set-port"]["defaulted"] is False and facts["set-port"]["typed"] == 9000
    assert facts["set-port"]["problem"] == "MX_SET_PORT=9000 is above max 8999"
    assert facts["set-level"]["problem"] == "MX_LEVEL='verbose' is not one of debug, info"
    # a default the program could not use is a problem too, and says it is the default
    assert facts["bad-default"]["problem"] == (
        "MX_BAD_DEFAULT is unset and its default is invalid: MX_BAD_DEFAULT=0 is below min 1"
    )
    assert facts["bad-default"]["typed"] == 0
    # a default makes a variable optional; without one, unset is still a problem
    assert facts["required"]["typed"] == 7
    assert facts["no-default"]["problem"] == "MX_REQUIRED is not set"
    assert facts["no-default"]["defaulted"] is False

"""A real part a test needs that this machine lacks: CI, which sets the part's MATRIX_REQUIRE_*
variable, fails the test; anywhere else it is skipped with the reason, which says how to get
the part."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(why: str, required_by: str) -> NoReturn:
    """Fail when `required_by` (an environment variable) is set, else skip; `why` says what is
    missing and how to provide it."""
    if os.environ.get(required_by):
        pytest.fail(f"{required_by} is set but {why}")
    pytest.skip(why)

"""`--json PATH`: the whole run as JSON (schema in docs/json-report.md)."""

from __future__ import annotations

import json
from pathlib import Path

from matrix.results import Run
from reporters.base import Reporter, write_report


class JsonReporter(Reporter):
    def __init__(self, destination: str):
        self.path = Path(destination)

    def finish(self, run: Run) -> None:
        write_report(self.path, json.dumps(run.to_dict(), indent=2, default=str) + "\n")

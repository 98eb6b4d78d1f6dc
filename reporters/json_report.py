"""`--json PATH`: the whole run as JSON (schema in docs/json-report.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from matrix.results import Run
from reporters import Reporter


def write_atomically(path: Path, text: str) -> None:
    """Readers never see half a report, even if the run is killed while writing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


class JsonReporter(Reporter):
    def __init__(self, destination: str):
        self.path = Path(destination)

    def finish(self, run: Run) -> None:
        write_atomically(self.path, json.dumps(run.to_dict(), indent=2, default=str) + "\n")

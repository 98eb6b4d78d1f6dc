"""A third-party reporter plugs in through the `matrix.reporters` entry-point group."""

from __future__ import annotations

import textwrap

PLUGIN = """
from reporters import Reporter, ReporterEntry


class Acme(Reporter):
    def __init__(self, destination):
        self.destination = destination
        self.seen = 0

    def task_finished(self, result):
        self.seen += 1

    def finish(self, run):
        with open(self.destination, "w") as out:
            out.write(f"{run.verdict.value} {run.score:.0f} {self.seen}")


ENTRY = ReporterEntry("acme", Acme, "write the acme summary")
"""


def install_plugin(root):
    """A real distribution on sys.path: importlib.metadata finds its entry points."""
    (root / "acme_report.py").write_text(PLUGIN)
    info = root / "acme_report-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-report\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[matrix.reporters]\nacme = acme_report:ENTRY\n")


def test_entry_point_reporter_gets_its_option_and_the_finished_run(cli, write_spec, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    install_plugin(plugins)
    write_spec(
        textwrap.dedent(
            """
            version: 1
            name: t
            phases:
              - id: p
                checks:
                  - {id: a, probe: {kind: command, argv: ["true"]}}
                  - {id: b, probe: {kind: command, argv: ["true"]}}
            """
        )
    )
    env = {"PYTHONPATH": f"{plugins}:{cli.env()['PYTHONPATH']}"}
    assert "--acme PATH" in cli("run", "--help", env=env).stdout
    done = cli("run", "spec.yaml", "--acme", "acme.txt", env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "acme.txt").read_text() == "READY 100 2"

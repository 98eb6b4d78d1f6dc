"""Every spec the project ships validates and plans (`validate`, `run --dry-run`) as written,
and specs/training-readiness.yaml runs for real on this machine's CPU: READY as shipped,
BLOCKED with its diagnostics when the setup is broken. (specs/pipeline.yaml runs for real in
test_pipeline_ready.py, specs/serving-config.yaml in test_serving_spec.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLUGIN_SPECS = {"examples/custom-probe/spec.yaml"}  # needs its plugin installed: own test


def shipped_specs() -> list[str]:
    """specs/ and examples/ YAML files that are specs (vars files and inventories are not)."""
    found = []
    for path in sorted([*REPO.glob("specs/*.yaml"), *REPO.glob("examples/**/*.yaml")]):
        document = yaml.safe_load(path.read_text())
        name = str(path.relative_to(REPO))
        if isinstance(document, dict) and "version" in document and name not in PLUGIN_SPECS:
            found.append(name)
    return found


def test_the_shipped_specs_are_found() -> None:
    specs = shipped_specs()
    assert {"specs/pipeline.yaml", "specs/training-readiness.yaml"} <= set(specs)
    assert "examples/team.vars.yaml" not in specs and "examples/hosts.yaml" not in specs


@pytest.mark.parametrize("spec", shipped_specs())
def test_shipped_spec_validates_and_plans(spec: str, cli) -> None:
    checked = cli("validate", REPO / spec)
    assert checked.returncode == 0, checked.stderr
    assert "valid —" in checked.stdout
    planned = cli("run", REPO / spec, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.strip()


@pytest.mark.timeout(360)  # torch rows on a loaded 2-core machine
def test_training_readiness_is_ready_on_this_cpu(cli, tmp_path: Path) -> None:
    spec = REPO / "specs" / "training-readiness.yaml"
    out = tmp_path / "out.json"
    done = cli("run", spec, "--var", f"checkpoint_dir={tmp_path}", "--json", out, timeout=300)
    report = json.loads(out.read_text())
    bad = {
        r["task_id"]: r["diagnostic"] for r in report["results"] if r["status"] in ("fail", "error")
    }
    assert bad == {}
    assert report["verdict"] == "READY" and done.returncode == 0, done.stdout


TORCH_ROWS = {
    "training-step", "learning-rate", "batch-size", "checkpoint-resume", "latency", "export",
    "memory-stability",
}  # fmt: skip


@pytest.mark.timeout(360)
def test_training_readiness_runs_the_users_model_in_every_torch_row(cli, tmp_path) -> None:
    """One var points the spec at a model that is not the built-in one (an MLP whose batches
    are (x, y), with its own loss): every torch row runs it, and says so."""
    out = tmp_path / "out.json"
    done = cli(
        "run", REPO / "specs" / "training-readiness.yaml",
        "--var", "entrypoint=torch_model.regressor:build",
        "--var", f"model_src={REPO / 'examples'}",
        "--var", f"checkpoint_dir={tmp_path}",
        "--json", out,
        timeout=300,
    )  # fmt: skip
    report = json.loads(out.read_text())
    results = {r["task_id"]: r for r in report["results"]}
    bad = {t: r["reason"] for t, r in results.items() if r["status"] in ("fail", "error")}
    assert bad == {} and report["verdict"] == "READY" and done.returncode == 0, done.stdout
    ran = {t: r["facts"].get("model") for t, r in results.items() if t in TORCH_ROWS}
    assert ran == dict.fromkeys(TORCH_ROWS, "entrypoint torch_model.regressor:build")
    memory = results["memory-estimate"]["facts"]
    assert (memory["params_source"], memory["params"]) == ("entrypoint", 16 * 64 + 64 + 64 + 1)
    assert results["memory-estimate"]["title"] == "torch_model.regressor:build fits in memory"


@pytest.mark.timeout(360)
def test_training_readiness_blocks_a_broken_setup_with_its_diagnostics(cli, tmp_path) -> None:
    spec = REPO / "specs" / "training-readiness.yaml"
    out = tmp_path / "out.json"
    done = cli(
        "run",
        spec,
        "--var",
        "torch_spec=>=99",
        "--var",
        f"checkpoint_dir={tmp_path / 'not-mounted'}",
        "--check",
        "torch",
        "--check",
        "checkpoint-resume",
        "--json",
        out,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout
    report = json.loads(out.read_text())
    assert report["verdict"] == "BLOCKED"
    results = {r["task_id"]: r for r in report["results"]}
    assert results["torch"]["diagnostic"].startswith("PyTorch 2.")
    assert results["torch"]["diagnostic"].endswith("need torch>=99")
    assert results["checkpoint-resume"]["status"] in ("error", "fail", "skip")


@pytest.mark.parametrize(("learning_rate", "unmet"), [("0.0002", []), ("0.01", ["lr"])])
def test_pipeline_learning_rate_row_fails_above_max_learning_rate(learning_rate, unmet) -> None:
    """A rate over `max_learning_rate` fails the row even when the short run did not diverge
    yet: the var is wired, not decoration."""
    from matrix.plan import build_plan
    from matrix.spec.expect import evaluate
    from matrix.spec.load import load

    spec = REPO / "specs" / "pipeline.yaml"
    task = build_plan(load(spec, var_args=[f"learning_rate={learning_rate}"])).tasks[
        "learning-rate@trainer"
    ]
    problems = evaluate(task.expect, {"diverged": False, "lr": float(learning_rate)})
    assert [p.split(" ")[0] for p in problems] == unmet

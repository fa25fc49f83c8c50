"""Notebook 04 through papermill on a synthetic run folder: every figure, sidecar and the
table are written, sentences come from the numbers, and missing sweeps are reported."""

import json
from pathlib import Path

import pandas as pd
import pytest

from test_analysis import write_synthetic_run
from notebook_runner import run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_credit_assignment_analysis.ipynb"
FIGURES = ("training_dynamics_ml-1m", "error_breakdown_ml-1m", "advantage_conflicts_ml-1m",
           "lambda_sensitivity_ml-1m", "slate_size_ml-1m", "conflict_vs_gain")


def stdout_of(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []) if o.get("name") == "stdout")


def test_notebook_04_committed_clean():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")
    tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1


@pytest.mark.slow
def test_notebook_04_on_synthetic_run(tmp_path):

    run = write_synthetic_run(tmp_path / "run")
    write_synthetic_run(run / "sweeps" / "lambda_0.5", phase_lambda=0.5, hit_shift=-3)
    figures = tmp_path / "figures"
    out = tmp_path / "out.ipynb"
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    run_notebook(NOTEBOOK.name, out, run_dir=str(run), figures_dir=str(figures), n_bootstrap=200)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # reads only
    for name in FIGURES:
        for ext in ("png", "pdf", "json"):
            assert (figures / f"{name}.{ext}").stat().st_size > 0
        assert json.loads((figures / f"{name}.json").read_text())["parameters"]["run_dir"] == str(run)
    table = pd.read_csv(figures / "main_results.csv")
    assert list(table.columns) == ["dataset", "method", "metric", "mean", "ci_low", "ci_high", "n_seeds"]
    text = stdout_of(out)
    assert "ml-1m, N@1: F-GRPO beats GRPO" in text
    assert "slate size n sweep not run in this profile" in text
    assert "the slate phase first" in text
    assert json.loads((figures / "slate_size_ml-1m.json").read_text())["status"] == "not run"


@pytest.mark.slow
def test_notebook_04_on_empty_run(tmp_path):

    figures = tmp_path / "figures"
    run_notebook(NOTEBOOK.name, tmp_path / "out.ipynb", run_dir=str(tmp_path / "none"), figures_dir=str(figures))
    assert (figures / "main_results.csv").exists() and (figures / "conflict_vs_gain.png").exists()
    assert "No paired F-GRPO and GRPO results" in stdout_of(tmp_path / "out.ipynb")

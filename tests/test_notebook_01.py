"""Notebook 01 end to end through papermill, on small parameters, into a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgrpo_nb.data import load_episodes
from notebook_runner import run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_data_preparation.ipynb"


def test_committed_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_notebook_01_runs(tmp_path):

    params = dict(dataset="ml-100k", qa_dataset="musique", n_train=200, n_val=50, n_test=50,
                  seed=1, run_dir=str(tmp_path / "run"), figures_dir=str(tmp_path / "figures"))
    run_notebook(NOTEBOOK.name, tmp_path / "01.ipynb", **params)
    rec, qa = load_episodes(tmp_path / "run", "ml-100k"), load_episodes(tmp_path / "run", "musique")
    assert [len(rec[s]) for s in ("train", "validation", "test")] == [200, 50, 50]
    assert {e.task for v in qa.values() for e in v} == {"qa"}
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == [
        "01_rec_distributions.png", "01_relevant_per_query.png"]


@pytest.mark.slow
def test_notebook_01_rejects_bad_parameter(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError, match="ml-1m, ml-100k, lastfm"):
        run_notebook(NOTEBOOK.name, tmp_path / "bad.ipynb", dataset="netflix", run_dir=str(tmp_path / "run"),
                     figures_dir=str(tmp_path / "figures"))

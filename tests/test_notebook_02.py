"""Notebook 02 end to end through papermill, on a few episodes written here (no data build)."""

import json
import random
from pathlib import Path

import nbformat
import pytest

from fgrpo_nb.episodes import Candidate, Episode, write_jsonl

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_reward_design.ipynb"
FIGURES = ("02_group_advantages.png", "02_ndcg_normaliser.png", "02_reward_distributions.png")


def test_notebook_committed_clean_with_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec == {"name": "python3", "display_name": "Python 3", "language": "python"}
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines()[1:]:  # every parameter: typed, with a comment
        assert ":" in line.split("=")[0] and "  # " in line, line


def _toy_episodes(count: int, seed: int = 0) -> list[Episode]:
    rng = random.Random(seed)
    pool = [f"i{j}" for j in range(100, 120)]
    eps = []
    for q in range(count):
        order = rng.sample(pool, len(pool))
        eps.append(Episode(query_id=f"u{q}", task="rec", dataset="toy", split="test", query="history",
                           candidates=tuple(Candidate(c, f"title {c}") for c in order), relevant=(order[3],)))
    return eps


@pytest.mark.slow
def test_notebook_02_runs_under_papermill(tmp_path):
    import papermill

    run_dir, figures_dir = tmp_path / "run", tmp_path / "figures"
    write_jsonl(_toy_episodes(12), run_dir / "data" / "toy" / "test.jsonl")
    out = tmp_path / "02_out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), kernel_name="python3", cwd=str(NOTEBOOK.parents[1]), progress_bar=False,
        parameters=dict(run_dir=str(run_dir), figures_dir=str(figures_dir), dataset="toy", n_episodes=10,
                        group_size=4, seed=1, normaliser="slate", format_penalty=1.0),
    )
    for name in FIGURES:
        assert (figures_dir / name).stat().st_size > 1000, name
    summary = json.loads((run_dir / "reward_design" / "summary.json").read_text())
    assert summary["params"]["n_episodes"] == 10 and "episodes_source" in summary["params"]
    assert set(summary["policies"]) == {"Random", "Teacher"}
    assert summary["policies"]["Teacher"]["SlateRecall"] >= summary["policies"]["Random"]["SlateRecall"] - 0.2

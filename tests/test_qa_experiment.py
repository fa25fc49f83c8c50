"""The QA additions to fgrpo_nb.experiment (passage cutting, top-layer LoRA, timed units)
and notebook 03b end to end on tiny sizes through papermill."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from fgrpo_nb.episodes import Candidate, Episode
from fgrpo_nb.experiment import (ExperimentConfig, lora_config, prompt_token_counts, run_seed,
                                 shorten_passages, top_layers_lora_config, unit_dir, wall_table)
from notebook_runner import run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03b_qa_fgrpo_vs_grpo.ipynb"


def _qa_episode() -> Episode:
    texts = ["Paris: Paris is the capital of France. It is large.", "Berlin", "Star Wars: Episode IV: A film."]
    cands = tuple(Candidate(f"p{i}", t) for i, t in enumerate(texts))
    return Episode("q1", "qa", "hotpotqa", "test", "Where?", cands, ("p0",))


def test_shorten_passages_titles_words_and_unchanged():
    ep = _qa_episode()
    assert [c.text for c in shorten_passages([ep], 0)[0].candidates] == ["Paris", "Berlin", "Star Wars"]
    assert [c.text for c in shorten_passages([ep], 3)[0].candidates] == [
        "Paris: Paris is the", "Berlin", "Star Wars: Episode IV: A"]
    assert shorten_passages([ep], None)[0] == ep and shorten_passages([ep], -1)[0] == ep
    cut = shorten_passages([ep], 0)[0]
    assert cut.pool_ids == ep.pool_ids and cut.relevant == ep.relevant and cut.query == ep.query


def test_top_layers_lora_targets_only_the_top_layers():
    config = top_layers_lora_config(8, 3, 30)
    assert config.layers_to_transform == [27, 28, 29] and config.r == 8 and config.lora_alpha == 16
    assert set(config.target_modules) >= {"q_proj", "down_proj"}
    cfg = ExperimentConfig(lora_r=4, lora_top_layers=2)
    assert lora_config(cfg, 10).layers_to_transform == [8, 9]
    with pytest.raises(ValueError, match="number of layers"):
        lora_config(cfg, None)
    with pytest.raises(ValueError, match="1..10"):
        top_layers_lora_config(4, 11, 10)


def test_lora_config_default_path_unchanged():
    assert lora_config(ExperimentConfig()) is None
    plain = lora_config(ExperimentConfig(lora_r=4))
    assert plain.target_modules == "all-linear" and plain.layers_to_transform is None
    assert lora_config(ExperimentConfig(lora_r=4), 12).layers_to_transform is None


def test_prompt_token_counts_counts_the_rendered_prompt():
    from fgrpo_nb.models import build_word_tokenizer

    ep = Episode("u1@1", "rec", "toy", "test", "", tuple(Candidate(f"i{j}", f"i{j}") for j in range(4)), ("i1",),
                 history=("i5", "i6"))
    tok = build_word_tokenizer(["i0", "i1", "i2", "i3", "i5", "i6", "c1", "c2", "c3", "c4", "<HIST>", "<POOL>", "<OUT>"])
    # slots prompt: <HIST> i5 i6 <POOL> c1 i0 c2 i1 c3 i2 c4 i3 <OUT>
    assert prompt_token_counts([ep], tok, ExperimentConfig(style="slots", n=3, k=2)) == [13]


def _toy_rec(split: str, count: int) -> list[Episode]:
    eps = []
    for q in range(count):
        pool = tuple(Candidate(f"i{(q + j) % 8}", f"i{(q + j) % 8}") for j in range(4))
        eps.append(Episode(f"u{q}@{split}", "rec", "toy", split, "", pool, (pool[q % 4].id,),
                           history=(f"i{(q + 5) % 8}",)))
    return eps


def test_run_seed_writes_wall_times_and_skips_on_rerun(tmp_path):
    from fgrpo_nb.teachers import make_teacher

    episodes = {"train": _toy_rec("train", 8), "test": _toy_rec("test", 3)}
    cfg = ExperimentConfig(n=3, k=2, tiny_hidden=16, tiny_layers=1, sft_episodes=8, sft_batch_size=4, rl_steps=1,
                           prompts_per_step=1, group_size=2, max_completion_length=10, eval_batch_size=4)
    results = run_seed(cfg, episodes, make_teacher("random"), tmp_path, 0, eval_splits=("test",), log=lambda *_: None)
    assert set(results) == {"sft", "fgrpo", "grpo"} and results["fgrpo"]["test"]["n_queries"] == 3
    wall = wall_table(tmp_path, "toy")
    assert set(wall["unit"]) == {"SFT", "F-GRPO", "GRPO"} and set(wall["part"]) == {"train", "eval_test"}
    assert (wall["seconds"] >= 0).all() and len(wall) == 6
    before = (unit_dir(tmp_path, "toy", 0, "grpo") / "wall.json").read_text()
    run_seed(cfg, episodes, make_teacher("random"), tmp_path, 0, eval_splits=("test",), log=lambda *_: None)
    assert (unit_dir(tmp_path, "toy", 0, "grpo") / "wall.json").read_text() == before


def test_wall_table_empty_run(tmp_path):
    assert list(wall_table(tmp_path, "hotpotqa").columns) == ["seed", "unit", "part", "seconds"]


SMALL = dict(qa_seeds=[0], qa_sft_episodes=4, qa_sft_batch_size=2, qa_rl_steps=1, qa_prompts_per_step=1,
             qa_group_size=2, qa_max_completion_length=12, qa_n_test=2, qa_n_val=0)


@pytest.mark.slow
def test_notebook_03b_runs(tmp_path):
    """SmolLM2 on 2 test questions: SFT, GRPO, F-GRPO, baselines, curves, wall times."""

    run = tmp_path / "run"
    params = dict(run_dir=str(run), figures_dir=str(tmp_path / "figures"), **SMALL)
    run_notebook(NOTEBOOK.name, tmp_path / "out.ipynb", **params)
    seed_dir = run / "train" / "hotpotqa" / "seed0"
    for method in ("sft", "grpo", "fgrpo"):
        assert (seed_dir / method / "done.json").exists()
        assert json.loads((seed_dir / method / "eval_test.json").read_text())["n_queries"] == 2
        assert set(json.loads((seed_dir / method / "wall.json").read_text())) == {"train", "eval_test"}
    for baseline in ("BM25", "Random"):
        assert json.loads((seed_dir / baseline / "eval_test.json").read_text())["n_queries"] == 2
    assert (tmp_path / "figures" / "03b_learning_curves_hotpotqa.png").exists()

"""Decoupled baselines: selector/ranker texts, the ranker's reward adapter, and a tiny
end-to-end run of Decoupled SFT and Decoupled RL that must resume without retraining."""

import json
import math
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from fgrpo_nb.decoupled import (
    chain_text,
    decoupled_sft_records,
    make_ranker_reward,
    ranker_prompt,
    ranker_rl_records,
    slate_span,
    split_target,
)
from fgrpo_nb.episodes import Candidate, Episode
from fgrpo_nb.experiment import ExperimentConfig, sft_records
from fgrpo_nb.rewards import make_reward_funcs
from fgrpo_nb.rollout import parse_rollout

POOL = [f"c{i}" for i in range(1, 7)]


def _episode(qid="u1@3", pool=("i1", "i2", "i3", "i4", "i5", "i6"), relevant=("i4",)):
    return Episode(qid, "rec", "toy", "train", "A | B", tuple(Candidate(c, c.upper()) for c in pool),
                   tuple(relevant), history=("i9", "i8"))


def test_slate_span_and_split_target():
    assert slate_span("junk <SLATE> c1 c4 </SLATE> <RANK> c4 </RANK>") == "<SLATE> c1 c4 </SLATE>"
    assert slate_span("<SLATE> c1 c4") is None and slate_span("") is None
    assert split_target(" <SLATE> c1 </SLATE> <RANK> c1 </RANK>") == (" <SLATE> c1 </SLATE>", " <RANK> c1 </RANK>")
    with pytest.raises(ValueError):
        split_target("<SLATE> c1 <RANK> c1 </RANK>")


def test_ranker_prompt_holds_the_slate_and_chain_parses_when_both_parts_are_valid():
    prompt = "<HIST> i9 i8 <POOL> c1 i1 c2 i2 c3 i3 c4 i4 c5 i5 c6 i6 <OUT>"
    slate = "<SLATE> c1 c4 c6 </SLATE>"
    assert ranker_prompt(prompt, " " + slate) == f"{prompt} {slate}"
    good = parse_rollout(chain_text(slate, " <RANK> c4 c1 </RANK>"), POOL, n=3, k=2)
    assert good.valid and good.slate == ["c1", "c4", "c6"] and good.ranking == ["c4", "c1"]
    assert chain_text(slate, "<RANK> c4 </RANK>") == "<SLATE> c1 c4 c6 </SLATE> <RANK> c4 </RANK>"
    outside = parse_rollout(chain_text(slate, "<RANK> c2 </RANK>"), POOL, n=3, k=2)
    assert not outside.valid and "ranking_not_in_slate" in outside.errors
    broken = parse_rollout(chain_text("<SLATE> c1 c9 </SLATE>", "<RANK> c1 </RANK>"), POOL, n=3, k=2)
    assert not broken.valid and not broken.slate_valid


def test_chat_ranker_prompt_appends_the_slate_to_the_user_turn_without_mutating():
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Question: q"}]
    out = ranker_prompt(messages, "<SLATE> c2 c5 </SLATE>")
    assert messages[1]["content"] == "Question: q"
    assert out[0] == messages[0] and out[1]["content"].startswith("Question: q\n\nSlate: <SLATE> c2 c5 </SLATE>")


def test_decoupled_sft_records_split_the_joint_targets():
    eps = [_episode(), _episode("u2@5", relevant=("i2", "i5"))]
    cfg = ExperimentConfig(n=3, k=2, style="slots")
    joint = sft_records(eps, lambda e: e.pool_ids, cfg, seed=0)
    selector, ranker = decoupled_sft_records(eps, lambda e: e.pool_ids, cfg, seed=0)
    for j, s, r in zip(joint, selector, ranker):
        assert s["prompt"] == j["prompt"]
        assert s["completion"].startswith(" <SLATE>") and s["completion"].endswith("</SLATE>")
        assert "<RANK>" not in s["completion"]
        assert r["prompt"] == f"{j['prompt']} {s['completion'].strip()}"  # the gold slate, as text
        assert r["completion"].startswith(" <RANK>") and r["completion"].endswith("</RANK>")
        chained = chain_text(s["completion"], r["completion"])
        assert chained == j["completion"].strip()  # the same targets as the joint SFT
        assert parse_rollout(chained, POOL, n=3, k=2).valid
    # the gold slate holds every relevant item; the ranker's target puts them first
    assert parse_rollout(chain_text(selector[1]["completion"], ranker[1]["completion"]), POOL, n=3, k=2).ranking \
        in (["c2", "c5"], ["c5", "c2"])
    chat = decoupled_sft_records(eps[:1], lambda e: e.pool_ids, ExperimentConfig(n=3, k=2, style="chat"), seed=0)
    assert chat[0][0]["completion"][0]["content"].startswith("<SLATE>")
    assert chat[1][0]["completion"][0]["content"].startswith("<RANK>")
    assert "Slate: <SLATE>" in chat[1][0]["prompt"][-1]["content"]


def test_ranker_reward_scores_the_given_slate_with_the_completion():
    reward = make_ranker_reward(n=3, k=2)
    assert reward.__name__ == "utility_reward"
    slate = "<SLATE> c1 c4 c6 </SLATE>"
    completions = [" <RANK> c4 c1 </RANK>", "<RANK> c1 c4 </RANK>", "<RANK> c2 </RANK>", "nothing", "<RANK> c4 c4 </RANK>",
                   [{"role": "assistant", "content": "<RANK> c4 </RANK>"}]]
    n = len(completions)
    got = reward(prompts=[""] * n, completions=completions, slate_text=[slate] * n, pool=[POOL] * n,
                 relevant=[["c4"]] * n, trainer_state=None)
    assert got == pytest.approx([1.0, 1 / math.log2(3), -0.5, -0.5, -0.5, 1.0])
    # a slate without the relevant item leaves nothing to rank: 0 whatever the ranking
    miss = reward(completions=["<RANK> c1 </RANK>"], slate_text=["<SLATE> c1 c2 </SLATE>"], pool=[POOL],
                  relevant=[["c4"]])
    assert miss == [0.0]
    with pytest.raises(KeyError, match="slate_text"):
        reward(completions=["<RANK> c1 </RANK>"], pool=[POOL], relevant=[["c4"]])


def test_selector_coverage_reward_keeps_a_slate_without_ranking():
    coverage_fn, _ = make_reward_funcs(3, 2)
    got = coverage_fn(completions=["<SLATE> c1 c4 </SLATE>", "<SLATE> c1 c2 </SLATE>", "<SLATE> c1"],
                      pool=[POOL] * 3, relevant=[["c4"]] * 3)
    assert got == [1.0, 0.0, -0.5]


def test_ranker_rl_records_on_teacher_slates():
    eps = [_episode(f"u{i}@3", relevant=(f"i{1 + i % 6}",)) for i in range(6)]
    cfg = ExperimentConfig(n=3, k=2, style="slots", rl_steps=2, prompts_per_step=2)
    rows, stats = ranker_rl_records(eps, cfg, lambda e: e.pool_ids, seed=0, selector_dir=None,
                                    ranker_slates="teacher")
    assert len(rows) == 4 and stats["prompts"] == 4 and stats["sources"] == ["teacher"] * 4
    for row in rows:
        assert row["prompt"].endswith(row["slate_text"]) and row["slate_text"].startswith("<SLATE>")
        assert set(row["relevant"]) <= set(parse_rollout(row["slate_text"], row["pool"], n=3, k=2).slate)
    with pytest.raises(ValueError, match="ranker_slates"):
        ranker_rl_records(eps, cfg, lambda e: e.pool_ids, seed=0, selector_dir=None, ranker_slates="gold")


@pytest.mark.slow
def test_run_decoupled_end_to_end_and_resumes(tmp_path):
    from fgrpo_nb.data import build_episodes
    from fgrpo_nb.decoupled import run_decoupled
    from fgrpo_nb.experiment import read_log, results_table

    episodes = build_episodes("ml-1m", n_train=16, n_val=4, n_test=4)
    cfg = ExperimentConfig(tiny_hidden=32, tiny_layers=1, sft_episodes=16, sft_batch_size=8, rl_steps=2,
                           prompts_per_step=2, group_size=2, max_completion_length=20, eval_batch_size=8)
    teacher = lambda ep: ep.pool_ids  # noqa: E731
    results = run_decoupled(cfg, episodes, teacher, tmp_path, seed=0, eval_splits=("test",), log=lambda *_: None)
    assert set(results) == {"Decoupled SFT", "Decoupled RL"}
    seed_dir = tmp_path / "train" / "ml-1m" / "seed0"
    for name in ("Decoupled SFT", "Decoupled RL"):
        assert json.loads((seed_dir / name / "eval_test.json").read_text())["n_queries"] == 4
        assert "seconds" in json.loads((seed_dir / name / "done.json").read_text())
        for part in ("selector", "ranker"):
            assert (seed_dir / name / part / "model" / "model.safetensors").exists()
        rows = [json.loads(x) for x in (seed_dir / name / "per_query_test.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and all("selector_text" in r for r in rows)
    log = read_log(seed_dir / "Decoupled RL")
    selector_steps = [r for r in log if r["part"] == "selector" and "rewards/coverage_reward/mean" in r]
    ranker_steps = [r for r in log if r["part"] == "ranker" and "rewards/utility_reward/mean" in r]
    assert len(selector_steps) == len(ranker_steps) == cfg.rl_steps
    slates = (seed_dir / "Decoupled RL" / "ranker" / "slates.jsonl").read_text().splitlines()
    assert len(slates) == cfg.rl_steps * cfg.prompts_per_step
    table = results_table(tmp_path, "ml-1m", "test")
    assert set(table["method"]) == {"Decoupled SFT", "Decoupled RL"}

    before = {p: p.stat().st_mtime_ns for p in seed_dir.rglob("done.json")}
    run_decoupled(cfg, episodes, teacher, tmp_path, seed=0, eval_splits=("test",), log=lambda *_: None)
    assert {p: p.stat().st_mtime_ns for p in seed_dir.rglob("done.json")} == before
    with pytest.raises(ValueError, match="other settings"):
        run_decoupled(cfg, episodes, teacher, tmp_path, seed=0, methods=("decoupled_rl",), eval_splits=("test",),
                      ranker_slates="teacher", log=lambda *_: None)

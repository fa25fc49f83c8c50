"""Baselines on real episodes: orderings as rollouts, Popularity/Random/BM25/SASRec, the
two-step zero-shot composition, the results layout, and SmolLM2 zero-shot (slow)."""

from __future__ import annotations

import json
import os
from dataclasses import replace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from fgrpo_nb.baselines import (
    baseline_order_fn,
    compose_two_step,
    evaluate_baseline,
    ordering_rollout,
    ranking_prompt,
    run_baselines,
    selection_prompt,
)
from fgrpo_nb.data import build_episodes, item_popularity
from fgrpo_nb.experiment import results_table, unit_dir
from fgrpo_nb.metrics import hit_at_k
from fgrpo_nb.prompts import pool_labels
from fgrpo_nb.rollout import parse_rollout
from fgrpo_nb.sasrec import SASRecConfig, fit_sasrec, sasrec_order


@pytest.fixture(scope="module")
def rec():
    return build_episodes("ml-1m", seed=0, n_train=2000, n_val=10, n_test=200)


@pytest.fixture(scope="module")
def qa():
    return build_episodes("hotpotqa", seed=0, n_train=10, n_val=10, n_test=40)


def test_ordering_rollout_is_top_n_slate_and_top_k_ranking():
    order = [f"i{j}" for j in range(20)]
    r = parse_rollout(ordering_rollout(order, 10, 5), order, n=10, k=5)
    assert r.valid and r.slate == order[:10] and r.ranking == order[:5]
    short = parse_rollout(ordering_rollout(order[:3], 10, 5), order, n=10, k=5)
    assert short.valid and short.slate == order[:3] and short.ranking == order[:3]


def test_popularity_ranking_is_sorted_by_training_counts(rec):
    counts = item_popularity("ml-1m")
    order_fn = baseline_order_fn("popularity", "ml-1m", rec["train"], seed=0)
    for ep in rec["test"][:50]:
        order = order_fn(ep)
        assert sorted(order) == sorted(ep.pool_ids)
        scores = [counts[c] for c in order]
        assert scores == sorted(scores, reverse=True)


def test_random_is_a_seeded_permutation(rec):
    ep = rec["test"][0]
    a, b = baseline_order_fn("random", "ml-1m", [], seed=0), baseline_order_fn("random", "ml-1m", [], seed=1)
    assert sorted(a(ep)) == sorted(ep.pool_ids)
    assert a(ep) == a(ep) and a(ep) != b(ep)


def test_bm25_puts_an_exact_match_passage_first(qa):
    bm25 = baseline_order_fn("bm25", "hotpotqa", [], seed=0)
    for ep in qa["test"][:10]:
        target = ep.candidates[-1]  # the last one: pool order cannot put it first by a tie
        assert bm25(replace(ep, query=target.text))[0] == target.id


def test_evaluate_baseline_writes_the_results_layout_and_resumes(rec, tmp_path):
    eps = rec["test"][:30]
    order_fn = baseline_order_fn("random", "ml-1m", [], seed=3)
    summary = evaluate_baseline("Random", order_fn, eps, tmp_path, seed=3)
    folder = unit_dir(tmp_path, "ml-1m", 3, "Random")
    assert (folder / "done.json").exists()
    assert json.loads((folder / "eval_test.json").read_text()) == summary
    rows = [json.loads(line) for line in (folder / "per_query_test.jsonl").read_text().splitlines()]
    assert [r["query_id"] for r in rows] == [e.query_id for e in eps]
    assert summary["ValidRatio"] == 1.0 and summary["n_queries"] == 30

    def boom(ep):
        raise AssertionError("a finished unit must not be recomputed")

    assert evaluate_baseline("Random", boom, eps, tmp_path, seed=3) == summary
    with pytest.raises(ValueError, match="slashes"):
        evaluate_baseline("a/b", order_fn, eps, tmp_path, seed=3)


def test_sasrec_trains_on_training_episodes_only(rec):
    with pytest.raises(ValueError, match="training episodes only"):
        fit_sasrec(rec["test"][:5], SASRecConfig(epochs=1), progress=False)


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_sasrec_scores_a_permutation_of_the_pool(rec, loss):
    fitted = fit_sasrec(rec["train"][:100], SASRecConfig(epochs=1, loss=loss), progress=False)
    for ep in rec["test"][:5]:
        order = sasrec_order(fitted, ep)
        assert sorted(order) == sorted(ep.pool_ids)


def test_sasrec_beats_random_on_ml1m(rec):
    # Measured: SASRec Hit@5 0.67 vs Random 0.26 on these 200 episodes; the margin is wide.
    fitted = fit_sasrec(rec["train"], SASRecConfig(epochs=10), progress=False)
    rand = baseline_order_fn("random", "ml-1m", [], seed=0)
    test = rec["test"]
    sasrec_hit5 = sum(hit_at_k(sasrec_order(fitted, e), e.relevant, 5) for e in test) / len(test)
    random_hit5 = sum(hit_at_k(rand(e), e.relevant, 5) for e in test) / len(test)
    assert sasrec_hit5 > random_hit5 + 0.15
    assert fitted.losses[-1] < fitted.losses[0]


def test_compose_two_step_keeps_format_errors():
    pool = [f"c{j}" for j in range(1, 11)]
    ok = compose_two_step("Sure! <SLATE> c3 c1 [c7] </SLATE>", "<RANK> c7 c3 </RANK> done")
    r = parse_rollout(ok, pool, n=10, k=5)
    assert r.valid and r.slate == ["c3", "c1", "c7"] and r.ranking == ["c7", "c3"]
    assert not parse_rollout(compose_two_step("c3 c1 c7", "<RANK> c3 </RANK>"), pool).valid
    truncated = parse_rollout(compose_two_step("<SLATE> c3 c1 </SLATE>", "<RANK> c3 c1"), pool)
    assert not truncated.valid and truncated.slate_valid and "missing_rank_close" in truncated.errors
    outside = parse_rollout(compose_two_step("<SLATE> c3 c1 </SLATE>", "<RANK> c9 </RANK>"), pool)
    assert outside.errors == ("ranking_not_in_slate",)


def test_two_step_prompts_use_the_chat_labels(rec, qa):
    for ep in (rec["test"][0], qa["test"][0]):
        labels = pool_labels(ep, "chat")
        select = selection_prompt(ep, 10)
        assert "<SLATE>" in select[0]["content"] and "<RANK>" not in select[0]["content"]
        assert all(f"[{label}] " in select[1]["content"] for label in labels)
        slate = [labels[4], labels[1], labels[2]]
        rank = ranking_prompt(ep, slate, 5)
        assert "<RANK>" in rank[0]["content"] and "best 3" in rank[0]["content"]
        shown = [line.split("]")[0][1:] for line in rank[1]["content"].splitlines() if line.startswith("[c")]
        assert shown == slate


def test_run_baselines_writes_one_result_per_seed_and_method(qa, tmp_path):
    df = run_baselines(tmp_path, "hotpotqa", qa, seeds=(0, 1), which=("random", "bm25"), progress=False,
                       log=lambda *_: None)
    assert sorted(zip(df["seed"], df["method"])) == [(0, "BM25"), (0, "Random"), (1, "BM25"), (1, "Random")]
    table = results_table(tmp_path, "hotpotqa")
    assert set(table["method"]) == {"BM25", "Random"} and len(table) == 4
    bm25 = table[table["method"] == "BM25"]
    assert bm25["R@5"].nunique() == 1  # deterministic: the same on every seed
    assert bm25["R@5"].mean() > table[table["method"] == "Random"]["R@5"].mean()
    with pytest.raises(ValueError, match="do not apply"):
        run_baselines(tmp_path, "hotpotqa", qa, which=("popularity",))
    none = run_baselines(tmp_path, "hotpotqa", qa, which=())  # sweep runs ask for none
    assert none.empty and {"dataset", "seed", "method"} <= set(none.columns)


@pytest.mark.slow
def test_zero_shot_smollm2_single_and_two_step(rec, tmp_path):
    eps = {"test": rec["test"][:3]}
    df = run_baselines(tmp_path, "ml-1m", eps, seeds=(0, 1), which=("zero_shot_single", "zero_shot_two"),
                       progress=False, log=lambda *_: None)
    assert set(df["method"]) == {"Zero-shot (single-step)", "Zero-shot (two-step)"} and len(df) == 4
    assert df["n_queries"].eq(3).all() and df["ValidRatio"].between(0, 1).all()
    folder = unit_dir(tmp_path, "ml-1m", 1, "Zero-shot (two-step)")
    rows = [json.loads(line) for line in (folder / "per_query_test.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all({"text", "selection", "ranking_answer"} <= set(r) for r in rows)

"""Metrics: hand-computed values, outcomes, evaluate(), and parity with trec_eval via ir_measures."""

import math
import random

import ir_measures
import pytest
from ir_measures import RR, P, R, nDCG

from fgrpo_nb.episodes import Candidate, Episode
from fgrpo_nb.metrics import (
    evaluate, hit_at_k, mrr, ndcg_at_k, per_query, precision_at_k, query_outcome, recall_at_k,
    slate_recall, valid_ratio,
)
from fgrpo_nb.rollout import Rollout, parse_rollout, render_rollout

L2 = 1 / math.log2(3)


def test_hand_values_single_positive():
    ranking, rel = ["a", "b", "c"], ["b"]
    assert ndcg_at_k(ranking, rel, 1) == 0.0 and ndcg_at_k(ranking, rel, 3) == pytest.approx(L2)
    assert recall_at_k(ranking, rel, 1) == 0.0 and recall_at_k(ranking, rel, 2) == 1.0
    assert precision_at_k(ranking, rel, 5) == pytest.approx(0.2)  # divides by k, not |ranking|
    assert hit_at_k(ranking, rel, 1) == 0.0 and hit_at_k(ranking, rel, 3) == 1.0
    assert mrr(ranking, rel) == 0.5 and mrr(ranking, rel, k=1) == 0.0 and mrr(ranking, ["z"]) == 0.0


def test_hand_values_multi_positive():
    ranking, rel = ["a", "x", "b"], ["a", "b", "c"]
    # DCG@3 = 1 + 1/2; IDCG@3 = 1 + 1/log2(3) + 1/2
    assert ndcg_at_k(ranking, rel, 3) == pytest.approx(1.5 / (1 + L2 + 0.5))
    assert recall_at_k(ranking, rel, 3) == pytest.approx(2 / 3)
    assert precision_at_k(ranking, rel, 3) == pytest.approx(2 / 3)
    assert ndcg_at_k(["a", "a"], ["a", "b"], 2) == pytest.approx(1 / (1 + L2))  # repeat gains nothing
    assert ndcg_at_k(["a"], [], 3) == recall_at_k(["a"], [], 3) == precision_at_k(["a"], [], 3) == 0.0


def test_outcomes():
    rel = ["b", "c"]
    assert query_outcome(Rollout(["a", "b"], ["b"], True), rel, k=1) == "hit"
    assert query_outcome(Rollout(["a", "b"], ["a", "b"], True), rel, k=1) == "rank_drop"
    assert query_outcome(Rollout(["a", "d"], ["a"], True), rel, k=1) == "slate_miss"
    assert query_outcome(Rollout(["b"], ["z"], False, ("ranking_not_in_slate",), True), rel) == "invalid"


def test_invalid_scores_zero_but_slate_recall_from_valid_slate():
    pool = ["a", "b", "c"]
    broken_rank = parse_rollout("<SLATE> a b </SLATE> <RANK> b c </RANK>", pool)
    assert not broken_rank.valid and slate_recall(broken_rank, ["b"]) == 1.0
    row = per_query([broken_rank], [["b"]])[0]
    assert row["R@1"] == row["N@5"] == row["MRR"] == row["ValidRatio"] == 0.0 and row["outcome"] == "invalid"
    broken_slate = parse_rollout("<SLATE> a a </SLATE> <RANK> a </RANK>", pool)
    assert slate_recall(broken_slate, ["a"]) == 0.0
    assert valid_ratio([broken_rank, parse_rollout(render_rollout(["a"], ["a"]), pool)]) == 0.5
    assert valid_ratio([]) == 0.0


def _episode(qid, pool, relevant):
    return Episode(query_id=qid, task="rec", dataset="toy", split="test", query="q",
                   candidates=tuple(Candidate(c, c) for c in pool), relevant=tuple(relevant))


def test_evaluate_texts_with_episodes_and_relevant_lists():
    pool = [f"i{j}" for j in range(10)]
    eps = [_episode("q0", pool, ["i1"]), _episode("q1", pool, ["i2"]), _episode("q2", pool, ["i3"]),
           _episode("q3", pool, ["i4"])]
    texts = [render_rollout(["i1", "i5"], ["i1", "i5"]),  # hit at 1
             render_rollout(["i5", "i2"], ["i5", "i2"]),  # hit at 2
             render_rollout(["i5", "i6"], ["i5"]),  # slate miss
             "<SLATE> i4 x </SLATE> <RANK> i4 </RANK>"]  # invalid: x is not in the pool
    out = evaluate(texts, eps)
    assert out["n_queries"] == 4
    assert out["Hit@1"] == 0.25 and out["Hit@3"] == 0.5 and out["R@5"] == 0.5
    assert out["P@1"] == 0.25 and out["P@3"] == pytest.approx(2 / 12)
    assert out["N@3"] == pytest.approx((1 + L2) / 4) and out["MRR"] == pytest.approx(1.5 / 4)
    assert out["ValidRatio"] == 0.75 and out["SlateRecall"] == 0.5
    assert out["outcome/hit"] == 0.5 and out["outcome/slate_miss"] == 0.25 and out["outcome/invalid"] == 0.25
    assert out["outcome/rank_drop"] == 0.0
    # the same texts against plain relevant lists: no pool check, so the 4th becomes valid
    out2 = evaluate(texts, [e.relevant for e in eps])
    assert out2["ValidRatio"] == 1.0 and out2["Hit@1"] == 0.5
    # rank drop at outcome_k=1 for the second query
    rows = per_query(texts, eps, outcome_k=1)
    assert [r["outcome"] for r in rows] == ["hit", "rank_drop", "slate_miss", "invalid"]
    with pytest.raises(ValueError):
        evaluate(texts, eps[:2])


def _random_cases(n_cases, seed):
    rng = random.Random(seed)
    cases = []
    for q in range(n_cases):
        pool = [f"d{j}" for j in range(rng.randint(1, 25))]
        relevant = rng.sample(pool, rng.randint(1, min(5, len(pool))))
        ranking = rng.sample(pool, rng.randint(1, len(pool)))
        cases.append((f"q{q}", ranking, relevant))
    return cases


def test_parity_with_trec_eval():
    """Thousands of random queries through trec_eval (pytrec_eval) in one batch call."""
    cases = _random_cases(3000, seed=7)
    qrels = [ir_measures.Qrel(q, d, 1) for q, _, rel in cases for d in rel]
    # strictly decreasing scores by rank, so trec_eval's tie-breaking cannot reorder
    run = [ir_measures.ScoredDoc(q, d, float(len(ranking) - i)) for q, ranking, _ in cases
           for i, d in enumerate(ranking)]
    ks = (1, 3, 5, 10)
    measures = [RR] + [m @ k for k in ks for m in (nDCG, P, R)]
    ref = {(m.query_id, str(m.measure)): m.value for m in ir_measures.pytrec_eval.iter_calc(measures, qrels, run)}
    ours = {"RR": lambda r, rel, k: mrr(r, rel), "nDCG": ndcg_at_k, "P": precision_at_k, "R": recall_at_k}
    checked = 0
    for q, ranking, rel in cases:
        for m in measures:
            name, k = (str(m), None) if m is RR else (m.NAME, m["cutoff"])
            assert ours[name](ranking, rel, k) == pytest.approx(ref[(q, str(m))], abs=1e-9), (q, str(m))
            checked += 1
    assert checked == len(cases) * len(measures)


def test_rollout_table_rows():
    ep = _episode("q", [f"i{j}" for j in range(10)], ["i1", "i2"])
    texts = [render_rollout(["i1", "i3"], ["i3", "i1"]), "<SLATE> i1 </SLATE> <RANK> i9 </RANK>"]
    from fgrpo_nb.metrics import rollout_table

    rows = rollout_table([ep], [texts], normaliser="slate")
    assert [r["member"] for r in rows] == [0, 1] and rows[0]["n_relevant"] == 2
    assert rows[0]["r_gen"] == 0.5 and rows[0]["r_rank"] == rows[0]["utility_slate"] == pytest.approx(L2)
    assert rows[0]["utility_relevant"] == pytest.approx(L2 / (1 + L2))
    assert rows[1]["r_gen"] == 0.5 and rows[1]["r_rank"] == -0.5 and rows[1]["outcome"] == "invalid"
    assert rows[1]["errors"] == "ranking_not_in_slate"

"""Ranking metrics with trec_eval semantics, per-query outcomes, and one `evaluate`.

Conventions (checked against ir_measures / trec_eval in tests):
- binary relevance; P@k divides by k even when the ranking is shorter; R@k divides by
  |relevant|; NDCG@k uses gains 1/log2(rank+1) and IDCG over min(|relevant|, k);
  RR is 1/rank of the first relevant item over the whole ranking (0 if none).
- a repeated label gains nothing after its first position (the slot is wasted).
- a query with no relevant items scores 0 everywhere.
- an invalid rollout scores 0 on every ranking metric (the format is part of the task:
  an unparseable answer is no answer). Slate recall is read from the slate whenever the
  slate phase alone is well formed, so it measures the generation phase on its own.

Per-query outcome at cutoff k, for any number of relevant items:
  "invalid"     the rollout does not parse (`Rollout.valid` is False);
  "hit"         some relevant item is in the top k of the ranking;
  "rank_drop"   some relevant item is in the slate, but none in the top k;
  "slate_miss"  no relevant item is in the slate.
"""

from __future__ import annotations

from typing import Any, Sequence

from .episodes import Episode
from .rewards import DEFAULT_FORMAT_PENALTY, coverage_reward, dcg_at_k, ideal_dcg, rollout_rewards
from .rollout import DEFAULT_K, DEFAULT_N, Rollout, parse_rollout

OUTCOMES = ("hit", "rank_drop", "slate_miss", "invalid")
DEFAULT_KS = (1, 3, 5)


def _hits(ranking: Sequence[str], relevant: Sequence[str], k: int | None) -> int:
    rel, seen, hits = set(relevant), set(), 0
    for label in ranking[:k]:
        hits += label in rel and label not in seen
        seen.add(label)
    return hits


def ndcg_at_k(ranking: Sequence[str], relevant: Sequence[str], k: int) -> float:
    idcg = ideal_dcg(len(set(relevant)), k)
    return dcg_at_k(ranking, relevant, k) / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: Sequence[str], relevant: Sequence[str], k: int) -> float:
    n_rel = len(set(relevant))
    return _hits(ranking, relevant, k) / n_rel if n_rel else 0.0


def precision_at_k(ranking: Sequence[str], relevant: Sequence[str], k: int) -> float:
    return _hits(ranking, relevant, k) / k if relevant else 0.0


def hit_at_k(ranking: Sequence[str], relevant: Sequence[str], k: int) -> float:
    return float(_hits(ranking, relevant, k) > 0)


def mrr(ranking: Sequence[str], relevant: Sequence[str], k: int | None = None) -> float:
    """Reciprocal rank of the first relevant item (within the top k if given)."""
    rel = set(relevant)
    for i, label in enumerate(ranking[:k]):
        if label in rel:
            return 1.0 / (i + 1)
    return 0.0


def slate_recall(rollout: Rollout, relevant: Sequence[str]) -> float:
    return coverage_reward(rollout.slate, relevant, "recall") if rollout.slate_valid else 0.0


def valid_ratio(rollouts: Sequence[Rollout]) -> float:
    return sum(r.valid for r in rollouts) / len(rollouts) if rollouts else 0.0


def query_outcome(rollout: Rollout, relevant: Sequence[str], k: int = DEFAULT_K) -> str:
    if not rollout.valid:
        return "invalid"
    if hit_at_k(rollout.ranking, relevant, k):
        return "hit"
    if set(rollout.slate) & set(relevant):
        return "rank_drop"
    return "slate_miss"


def query_metrics(rollout: Rollout, relevant: Sequence[str], ks: Sequence[int] = DEFAULT_KS,
                  outcome_k: int | None = None) -> dict[str, Any]:
    """Every metric of one query (the row `evaluate` averages)."""
    ranking = rollout.ranking if rollout.valid else []
    row: dict[str, Any] = {}
    for k in ks:
        row[f"R@{k}"] = recall_at_k(ranking, relevant, k)
        row[f"P@{k}"] = precision_at_k(ranking, relevant, k)
        row[f"Hit@{k}"] = hit_at_k(ranking, relevant, k)
        row[f"N@{k}"] = ndcg_at_k(ranking, relevant, k)
    row["MRR"] = mrr(ranking, relevant)
    row["ValidRatio"] = float(rollout.valid)
    row["SlateRecall"] = slate_recall(rollout, relevant)
    row["outcome"] = query_outcome(rollout, relevant, max(ks) if outcome_k is None else outcome_k)
    return row


def _as_rollout(item: Rollout | str, pool: Sequence[str] | None, n: int, k: int) -> Rollout:
    return item if isinstance(item, Rollout) else parse_rollout(item, pool, n=n, k=k)


def per_query(rollouts_or_texts: Sequence[Rollout | str], episodes_or_relevant: Sequence[Episode | Sequence[str]],
              ks: Sequence[int] = DEFAULT_KS, n: int = DEFAULT_N, k: int = DEFAULT_K,
              outcome_k: int | None = None) -> list[dict[str, Any]]:
    """One metrics row per query. Texts are parsed against the episode's pool (no pool
    check when only relevant lists are given); `n`, `k` are the parser's caps."""
    if len(rollouts_or_texts) != len(episodes_or_relevant):
        raise ValueError(f"{len(rollouts_or_texts)} rollouts for {len(episodes_or_relevant)} queries")
    rows = []
    for item, target in zip(rollouts_or_texts, episodes_or_relevant):
        pool, relevant = (target.pool_ids, target.relevant) if isinstance(target, Episode) else (None, target)
        rows.append(query_metrics(_as_rollout(item, pool, n, k), relevant, ks, outcome_k))
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Means of the numeric columns, outcome shares as `outcome/<name>`, and `n_queries`."""
    if not rows:
        return {"n_queries": 0}
    numeric = [key for key, v in rows[0].items() if isinstance(v, (int, float))]
    out = {key: sum(r[key] for r in rows) / len(rows) for key in numeric}
    for name in OUTCOMES:
        out[f"outcome/{name}"] = sum(r["outcome"] == name for r in rows) / len(rows)
    out["n_queries"] = len(rows)
    return out


def evaluate(rollouts_or_texts: Sequence[Rollout | str], episodes_or_relevant: Sequence[Episode | Sequence[str]],
             ks: Sequence[int] = DEFAULT_KS, n: int = DEFAULT_N, k: int = DEFAULT_K,
             outcome_k: int | None = None) -> dict[str, float]:
    """R/P/Hit/N@ks, MRR, ValidRatio, SlateRecall (means over queries, in [0, 1]) and
    outcome shares at `outcome_k` (default max(ks)). The one evaluation used everywhere."""
    return summarise(per_query(rollouts_or_texts, episodes_or_relevant, ks, n, k, outcome_k))


def rollout_table(episodes: Sequence[Episode], groups: Sequence[Sequence[str]], n: int = DEFAULT_N,
                  k: int = DEFAULT_K, coverage: str = "recall", normaliser: str = "relevant",
                  format_penalty: float = DEFAULT_FORMAT_PENALTY, phase_credit: bool = True) -> list[dict[str, Any]]:
    """One row per rollout of each episode's group, for reward analyses over groups.

    Columns: query_id, member, n_relevant, r_gen, r_rank (with `normaliser`), utility under
    each normaliser (utility_relevant, utility_slate), valid, outcome at k, errors.
    """
    rows = []
    for ep, texts in zip(episodes, groups, strict=True):
        for member, text in enumerate(texts):
            rollout = parse_rollout(text, ep.pool_ids, n=n, k=k)
            utility = {norm: rollout_rewards(rollout, ep.relevant, k, coverage, norm, format_penalty, phase_credit)
                       for norm in ("relevant", "slate")}
            rows.append({"query_id": ep.query_id, "member": member, "n_relevant": len(ep.relevant),
                         "r_gen": utility[normaliser][0], "r_rank": utility[normaliser][1],
                         "utility_relevant": utility["relevant"][1], "utility_slate": utility["slate"][1],
                         "valid": rollout.valid, "outcome": query_outcome(rollout, ep.relevant, k),
                         "errors": ",".join(rollout.errors)})
    return rows

"""Coverage (slate phase) and utility (ranking phase) rewards, and TRL reward adapters.

- `coverage_reward`: order-invariant; recall of the relevant set by the slate (default)
  or F1 of slate vs relevant. Range [0, 1].
- `utility_reward`: NDCG@k of the ranking with binary gains. Two normalisers:
  "relevant" (trec style, IDCG over min(|relevant|, k)): a slate miss also lowers utility;
  "slate" (IDCG over the relevant items the slate contains, capped at k; 0 if none):
  utility is judged only on what the ranking could achieve, which keeps the two phases'
  credit apart. Range [0, 1].
- Format penalty (decision): an invalid rollout's rewards are `-format_penalty`, so any
  valid rollout beats any invalid one. With `phase_credit=True` (default) the penalty is
  charged to the phase that broke: a well-formed slate followed by a broken ranking keeps
  its coverage reward and only the utility reward is `-format_penalty`; a broken slate
  voids both (the ranking has nothing valid to rank). `phase_credit=False` charges both
  phases for any error. Rewards are always finite floats, never NaN.
- Repeated labels gain nothing after their first position (the slot is wasted), so DCG
  never exceeds IDCG even on malformed input.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable, Sequence

from .rollout import DEFAULT_K, DEFAULT_N, Rollout, parse_rollout

DEFAULT_FORMAT_PENALTY = 0.5  # below every valid reward (>= 0), small enough not to swamp a group mean
COVERAGE_KINDS = ("recall", "f1")
NORMALISERS = ("relevant", "slate")


def coverage_reward(slate: Sequence[str], relevant: Sequence[str], kind: str = "recall") -> float:
    """Order-invariant coverage of `relevant` by `slate`; 0 when `relevant` is empty."""
    if kind not in COVERAGE_KINDS:
        raise ValueError(f"kind must be one of {COVERAGE_KINDS}, got {kind!r}")
    rel, chosen = set(relevant), set(slate)
    hits = len(rel & chosen)
    if not rel or hits == 0:
        return 0.0
    recall = hits / len(rel)
    if kind == "recall":
        return recall
    precision = hits / len(chosen)
    return 2 * precision * recall / (precision + recall)


def dcg_at_k(ranking: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """Binary-gain DCG over the first k positions; a repeated label gains nothing."""
    rel, seen, dcg = set(relevant), set(), 0.0
    for i, label in enumerate(ranking[:k]):
        if label in rel and label not in seen:
            dcg += 1.0 / math.log2(i + 2)
        seen.add(label)
    return dcg


def ideal_dcg(n_relevant: int, k: int) -> float:
    return sum(1.0 / math.log2(i + 2) for i in range(min(n_relevant, k)))


def utility_reward(ranking: Sequence[str], relevant: Sequence[str], k: int = DEFAULT_K,
                   normaliser: str = "relevant", slate: Sequence[str] | None = None) -> float:
    """NDCG@k of `ranking`; see the module docstring for the two normalisers."""
    if normaliser not in NORMALISERS:
        raise ValueError(f"normaliser must be one of {NORMALISERS}, got {normaliser!r}")
    if normaliser == "relevant":
        n_ideal = len(set(relevant))
    else:
        if slate is None:
            raise ValueError('normaliser="slate" needs the slate')
        # the ranking's own relevant items count too, so a malformed ranking stays <= 1
        n_ideal = len(set(relevant) & (set(slate) | set(ranking[:k])))
    idcg = ideal_dcg(n_ideal, k)
    return dcg_at_k(ranking, relevant, k) / idcg if idcg > 0 else 0.0


def rollout_rewards(rollout: Rollout, relevant: Sequence[str], k: int = DEFAULT_K,
                    coverage: str = "recall", normaliser: str = "relevant",
                    format_penalty: float = DEFAULT_FORMAT_PENALTY, phase_credit: bool = True) -> tuple[float, float]:
    """(r_gen, r_rank) of a parsed rollout, with the format penalty rule above."""
    penalty = -float(format_penalty)
    if rollout.valid:
        return (coverage_reward(rollout.slate, relevant, coverage),
                utility_reward(rollout.ranking, relevant, k, normaliser, rollout.slate))
    if phase_credit and rollout.slate_valid:
        return coverage_reward(rollout.slate, relevant, coverage), penalty
    return penalty, penalty


def score_rollout(text: str, pool: Sequence[str] | None, relevant: Sequence[str],
                  n: int = DEFAULT_N, k: int = DEFAULT_K, coverage: str = "recall",
                  normaliser: str = "relevant", format_penalty: float = DEFAULT_FORMAT_PENALTY,
                  phase_credit: bool = True) -> tuple[float, float, Rollout]:
    """Parse `text` and score it: (r_gen, r_rank, rollout)."""
    rollout = parse_rollout(text, pool, n=n, k=k)
    r_gen, r_rank = rollout_rewards(rollout, relevant, k, coverage, normaliser, format_penalty, phase_credit)
    return r_gen, r_rank, rollout


# --- TRL adapters -----------------------------------------------------------------------

def completion_text(completion: Any) -> str:
    """Plain text of a TRL completion: a string, or a conversation (last assistant turn)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        turns = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in turns if m.get("role") == "assistant"] or turns
        if not assistant:
            return ""
        content = assistant[-1].get("content", "")
        if isinstance(content, list):  # multimodal-style parts: keep the text ones
            return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
        return content if isinstance(content, str) else str(content)
    return "" if completion is None else str(completion)


def make_reward_funcs(n: int = DEFAULT_N, k: int = DEFAULT_K, coverage: str = "recall",
                      normaliser: str = "relevant", format_penalty: float = DEFAULT_FORMAT_PENALTY,
                      phase_credit: bool = True) -> list[Callable[..., list[float]]]:
    """[coverage_reward, utility_reward] with TRL's reward signature.

    Each is `fn(prompts, completions, completion_ids=None, **kwargs) -> list[float]` and reads
    the dataset columns `pool` and `relevant` (one list of labels per completion) from kwargs.
    The two share a parse cache, so TRL calling them one after the other parses each
    completion once.
    """
    if coverage not in COVERAGE_KINDS or normaliser not in NORMALISERS:
        raise ValueError(f"coverage in {COVERAGE_KINDS}, normaliser in {NORMALISERS}")

    @lru_cache(maxsize=8192)
    def _score(text: str, pool: tuple[str, ...], relevant: tuple[str, ...]) -> tuple[float, float]:
        r_gen, r_rank, _ = score_rollout(text, pool, relevant, n, k, coverage, normaliser, format_penalty, phase_credit)
        return r_gen, r_rank

    def _rewards(completions, kwargs, index: int) -> list[float]:
        pools, relevants = kwargs["pool"], kwargs["relevant"]
        return [_score(completion_text(c), tuple(p), tuple(r))[index]
                for c, p, r in zip(completions, pools, relevants, strict=True)]

    def coverage_fn(prompts=None, completions=(), completion_ids=None, **kwargs) -> list[float]:
        return _rewards(completions, kwargs, 0)

    def utility_fn(prompts=None, completions=(), completion_ids=None, **kwargs) -> list[float]:
        return _rewards(completions, kwargs, 1)

    coverage_fn.__name__ = coverage_fn.__qualname__ = "coverage_reward"  # TRL logs rewards by __name__
    utility_fn.__name__ = utility_fn.__qualname__ = "utility_reward"
    return [coverage_fn, utility_fn]

"""Simple non-learned orderings of a pool: popularity (recommendation) and BM25 (QA).

They serve twice: as the filler of SFT target slates (so the warm start learns a plausible
slate, not only the gold items) and as the Popularity / BM25 baselines.
"""

from __future__ import annotations

import random
from typing import Callable, Mapping, Sequence

from .episodes import Episode

Teacher = Callable[[Episode], list[str]]  # an episode -> its candidate ids, best first


def popularity_order(episode: Episode, counts: Mapping[str, int]) -> list[str]:
    """Pool ids by training-interaction count, most popular first; ties keep pool order."""
    ids = episode.pool_ids
    return sorted(ids, key=lambda cid: (-counts.get(cid, 0), ids.index(cid)))


def bm25_order(episode: Episode) -> list[str]:
    """Pool ids by BM25 score of the query against each candidate's text; ties keep pool order."""
    import bm25s

    texts = [c.text for c in episode.candidates]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    query = bm25s.tokenize(episode.query, stopwords="en", return_ids=False, show_progress=False)[0]
    scores = retriever.get_scores(query) if query else [0.0] * len(texts)
    ids = episode.pool_ids
    order = sorted(range(len(ids)), key=lambda i: (-float(scores[i]), i))
    return [ids[i] for i in order]


def random_order(episode: Episode, seed: int = 0) -> list[str]:
    """A seeded shuffle of the pool, the same for the same episode and seed."""
    ids = episode.pool_ids
    random.Random(f"{seed}:{episode.query_id}").shuffle(ids)
    return ids


def make_teacher(kind: str, counts: Mapping[str, int] | None = None, seed: int = 0) -> Teacher:
    """`popularity` (needs training counts), `bm25` or `random`."""
    if kind == "popularity":
        if counts is None:
            raise ValueError("the popularity teacher needs training counts (fgrpo_nb.data_rec.item_popularity)")
        return lambda ep: popularity_order(ep, counts)
    if kind == "bm25":
        return bm25_order
    if kind == "random":
        return lambda ep: random_order(ep, seed)
    raise ValueError(f"teacher must be one of popularity, bm25, random; got {kind!r}")


def teacher_rollout_ids(episode: Episode, order: Sequence[str], n: int, k: int,
                        rng: random.Random, slate_order: str = "shuffled",
                        rank_filler: str = "teacher") -> tuple[list[str], list[str]]:
    """An SFT target: slate = relevant + teacher filler up to n; ranking = relevant first
    (shuffled among themselves), then the slate's filler up to k, in teacher order
    (`rank_filler="teacher"`) or in pool order (`"pool"`).

    The slate is a set, so its written order is free: "shuffled" (seeded) or "pool" (as a
    subsequence of the pool). "pool" is what the tiny slot model can learn on a CPU budget:
    increasing slot labels never repeat, so a valid slate needs no memory of what was written
    (`benchmarks/sft_label_styles.py` measures it: completion loss ~1.5 vs ~2.4 for shuffled
    targets within 60-300 steps). For the same reason `rank_filler="pool"` makes the ranking
    after its relevant head an increasing run of slot labels: with teacher-ordered filler none
    of the tiny model's greedy rollouts for 300 validation users was valid after 600 SFT steps
    (mostly repeated ranking labels), against 99.7% with pool order
    (`benchmarks/sft_label_styles.py`, settings slots/teacher and slots/pool)."""
    if rank_filler not in ("teacher", "pool"):
        raise ValueError(f"rank_filler must be 'teacher' or 'pool', got {rank_filler!r}")
    relevant = list(episode.relevant)
    filler = [cid for cid in order if cid not in set(relevant)]
    slate = (relevant + filler)[:n]
    in_slate = set(slate)
    rel_in = [cid for cid in relevant if cid in in_slate]
    rng.shuffle(rel_in)
    position = {cid: i for i, cid in enumerate(episode.pool_ids)}
    rest = [cid for cid in filler if cid in in_slate]
    if rank_filler == "pool":
        rest.sort(key=position.__getitem__)
    ranking = (rel_in + rest)[:k]
    if slate_order == "pool":
        slate.sort(key=position.__getitem__)
    elif slate_order == "shuffled":
        rng.shuffle(slate)
    else:
        raise ValueError(f"slate_order must be 'shuffled' or 'pool', got {slate_order!r}")
    return slate, ranking

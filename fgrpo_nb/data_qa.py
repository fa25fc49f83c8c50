"""Multi-hop QA episodes: HotpotQA (distractor setting) and MuSiQue-Ans.

Every layout found in the wild (HotpotQA's Hugging Face layout, its official layout with
`_id` and `[title, sentences]` pairs, MuSiQue's `paragraphs` list; JSON lists and JSON Lines,
whatever the file extension) is first normalised to one `QARecord`; episodes are built from
that alone.

Pool = all paragraphs of the question (HotpotQA 10, MuSiQue 20), ids `p<idx>` by their
original index, shown in an order shuffled with a per-question seed (in the source files
the supporting paragraphs are not placed at random, so keeping the order could leak).
Relevant = the supporting paragraphs (2-4). Text = `title: first sentence(s)`.

Splits: questions from a source's train split go to train. All other questions (the local
samples are HotpotQA/MuSiQue *dev* questions) are split by a fixed rule on a hash of the
question id, independent of the run seed, so the test set never moves when the seed does:
40% test, 10% validation, 50% train.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data_rec import shared_data_dir
from .episodes import Candidate, Episode

DEV_SPLIT_FRACTIONS = (("test", 0.4), ("validation", 0.1))  # the rest of dev goes to train

# Local samples (see ../shared/data/qa/SOURCES.md): (path under qa/, origin split)
LOCAL_SOURCES = {
    "hotpotqa": (
        ("hotpotqa/megagonlabs_RPT/test.jsonl", "dev"),
        ("hotpotqa/megagonlabs_RPT/dev.jsonl", "dev"),
        ("hotpotqa/megagonlabs_RPT/train.jsonl", "dev"),  # RPT's "train" is HotpotQA dev
        ("hotpotqa/yhshu_HippoRAG/hotpotqa_train.json", "train"),
    ),
    "musique": (
        ("musique/AdelWang_MIGRES/musique.json", "dev"),
        ("musique/OpenSPG_KAG/musique_qa_100.json", "dev"),
        ("musique/yhshu_HippoRAG/musique_train.json", "train"),
    ),
}
# Hub configs for users with internet: `load_dataset(hub_id, config)`; hub split -> origin
HUB_CONFIG = {"hotpotqa": "distractor", "musique": None}
HUB_ORIGIN = {"train": "train", "validation": "dev", "dev": "dev"}

# A sentence ends at . ! ? followed by a capital; not after initials or "U.S."-style
# abbreviations ("c. 1795" never splits: a digit follows).
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\s\w\.)(?<!\.\w\.)(?<!Mr\.)(?<!Dr\.)(?<!St\.)\s+(?=[A-Z\"'])")


@dataclass(frozen=True)
class QARecord:
    id: str
    question: str
    answer: str
    titles: tuple[str, ...]
    sentences: tuple[tuple[str, ...], ...]  # per paragraph
    supporting: tuple[int, ...]  # indices into titles
    origin: str  # "train" or "dev"


# ---------------------------------------------------------------- reading


def read_records(path: str | Path) -> list[tuple[str, dict]]:
    """(where, record) pairs of a JSON list or JSON Lines file, whatever its extension."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return [(f"{path.name} record {i}", r) for i, r in enumerate(json.loads(text))]
    return [(f"{path.name} line {i + 1}", json.loads(line)) for i, line in enumerate(text.splitlines()) if line.strip()]


def _field(record: dict, name: str, where: str):
    if name not in record:
        rid = record.get("id", record.get("_id", "?"))
        raise ValueError(f"QA record {rid!r} ({where}) is missing field {name!r}")
    value = record[name]
    # Some copies store nested lists/dicts as Python reprs: parse them back.
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _record_id(record: dict, where: str) -> str:
    return str(_field(record, "_id" if "_id" in record and "id" not in record else "id", where))


def normalise_record(record: dict, origin: str, where: str) -> QARecord:
    """One QA record of any supported layout -> QARecord (ValueError names a missing field)."""
    if "paragraphs" in record:
        return _from_musique(record, origin, where)
    return _from_hotpot(record, origin, where)


def _from_hotpot(record: dict, origin: str, where: str) -> QARecord:
    rid = _record_id(record, where)
    context, facts = _field(record, "context", where), _field(record, "supporting_facts", where)
    if isinstance(context, dict):  # Hugging Face layout: parallel lists
        titles, sentences = context["title"], context["sentences"]
        fact_titles = facts["title"]
    else:  # official layout: [[title, [sentences]], ...] and [[title, sent_id], ...]
        titles, sentences = [c[0] for c in context], [c[1] for c in context]
        fact_titles = [f[0] for f in facts]
    missing = set(fact_titles) - set(titles)
    if missing:
        raise ValueError(f"QA record {rid!r} ({where}): supporting titles {sorted(missing)} not in its context")
    wanted = set(fact_titles)
    return QARecord(
        id=rid,
        question=str(_field(record, "question", where)),
        answer=str(record.get("answer", "")),
        titles=tuple(titles),
        sentences=tuple(tuple(s.strip() for s in sents) for sents in sentences),
        supporting=tuple(i for i, t in enumerate(titles) if t in wanted),
        origin=origin,
    )


def _from_musique(record: dict, origin: str, where: str) -> QARecord:
    rid = _record_id(record, where)
    paragraphs = _field(record, "paragraphs", where)
    for key in ("title", "paragraph_text", "is_supporting"):
        for p in paragraphs:
            _field(p, key, f"{where}, record {rid!r}, a paragraph")
    return QARecord(
        id=rid,
        question=str(_field(record, "question", where)),
        answer=str(record.get("answer", "")),
        titles=tuple(p["title"] for p in paragraphs),
        sentences=tuple(tuple(_SENTENCE_END.split(p["paragraph_text"].strip())) for p in paragraphs),
        supporting=tuple(i for i, p in enumerate(paragraphs) if p["is_supporting"]),
        origin=origin,
    )


def load_local_records(dataset: str) -> list[QARecord]:
    """The local samples of a QA dataset, duplicate ids dropped (first copy kept)."""
    root = shared_data_dir() / "qa"
    records, seen = [], set()
    for rel, origin in LOCAL_SOURCES[dataset]:
        for where, raw in read_records(root / rel):
            rec = normalise_record(raw, origin, where)
            if rec.id not in seen:
                seen.add(rec.id)
                records.append(rec)
    return records


def load_hub_records(dataset: str, hub_id: str) -> list[QARecord]:
    """Full sets from the Hugging Face hub (needs internet; not exercised by the tests)."""
    import datasets  # heavy import, only on this path

    try:
        splits = datasets.load_dataset(hub_id, HUB_CONFIG[dataset])
    except Exception as err:  # noqa: BLE001 - re-raised with the context a user needs
        raise RuntimeError(
            f"could not load {hub_id!r} from the Hugging Face hub ({err}); without internet, "
            f"leave qa_source unset to use the local samples under ../shared/data/qa"
        ) from err
    records = []
    for split_name, ds in splits.items():
        origin = HUB_ORIGIN.get(split_name, "dev")
        records += [normalise_record(dict(r), origin, f"{hub_id}:{split_name} row {i}") for i, r in enumerate(ds)]
    return records


def load_qa_records(dataset: str, source: str | None = None) -> list[QARecord]:
    """Local samples (source None), one local file (all treated as dev), or a hub dataset id."""
    if source is None:
        return load_local_records(dataset)
    if Path(source).is_file():
        return [normalise_record(r, "dev", w) for w, r in read_records(source)]
    return load_hub_records(dataset, source)


# ---------------------------------------------------------------- episodes


def _id_number(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16)


def qa_split(record: QARecord) -> str:
    if record.origin == "train":
        return "train"
    u = _id_number(record.id) / 16**15  # uniform in [0, 1), fixed per question id
    for split, fraction in DEV_SPLIT_FRACTIONS:
        if u < fraction:
            return split
        u -= fraction
    return "train"


def passage_text(title: str, sentences: tuple[str, ...], passage_sentences: int) -> str:
    body = " ".join(s for s in sentences[:passage_sentences] if s)
    return f"{title}: {body}" if body else title


def qa_episode(record: QARecord, dataset: str, *, seed: int, passage_sentences: int) -> Episode:
    order = np.random.default_rng([seed, _id_number(record.id)]).permutation(len(record.titles))
    candidates = tuple(
        Candidate(f"p{i}", passage_text(record.titles[i], record.sentences[i], passage_sentences)) for i in order.tolist()
    )
    return Episode(
        query_id=record.id,
        task="qa",
        dataset=dataset,
        split=qa_split(record),
        query=record.question,
        candidates=candidates,
        relevant=tuple(f"p{i}" for i in record.supporting),
        meta={"answer": record.answer, "origin": record.origin},
    )


def build_qa_episodes(
    dataset: str, *, seed: int, passage_sentences: int, caps: dict[str, int | None], source: str | None = None
) -> dict[str, list[Episode]]:
    episodes = [qa_episode(r, dataset, seed=seed, passage_sentences=passage_sentences) for r in load_qa_records(dataset, source)]
    out = {}
    for k, split in enumerate(("train", "validation", "test")):
        rows = sorted((e for e in episodes if e.split == split), key=lambda e: e.query_id)
        n = caps[split]
        if n is not None and n < len(rows):
            keep = np.sort(np.random.default_rng([seed, k, 104729]).choice(len(rows), size=n, replace=False))
            rows = [rows[i] for i in keep]
        out[split] = rows
    return out


def qa_stats(dataset: str, source: str | None = None) -> dict[str, int]:
    records = load_qa_records(dataset, source)
    return {
        "questions": len(records),
        "dev_questions": sum(r.origin == "dev" for r in records),
        "train_questions": sum(r.origin == "train" for r in records),
        "paragraphs": sum(len(r.titles) for r in records),
    }

"""An episode as a prompt, in one of two styles.

- "ids": for the tiny word-level ID model. Only prompt tokens and candidate ids, separated by
  single spaces, so a whitespace tokenizer covers every prompt:
  `<HIST> i12 i7 <POOL> i5 i9 ... <OUT>`. Labels are the candidate ids (`i<item>`, `p<idx>`).
- "slots": the same word-level prompt with a position label before each candidate,
  `<HIST> i12 i7 <POOL> c1 i5 c2 i9 ... <OUT>`, and rollouts written in the labels `c1 .. cN`.
  Why: a small ID model trained from scratch must learn to *copy* a candidate id from the
  prompt to write a valid slate in the "ids" style; measured here (hidden 128, 2 layers,
  300 SFT steps of 32; `benchmarks/sft_label_styles.py`) its loss stayed at ~6 nats per
  token, i.e. no copying, no valid rollout. With slot labels the output space is the N labels and the format is learned in
  ~25 steps; writing distinct slots (validity) and picking the right ones are what SFT (with
  pool-ordered slate targets, see teachers.py) and RL then have to learn.
- "chat": a list of chat messages for an instruction-tuned LLM. Labels are short position
  labels `c1 .. cN` in pool order (as in the paper's rollout example), because ids such as
  `i2858` cost several subword tokens each and say nothing to the model.

Item features (word-level styles only): `render_prompt(..., features={id: word})` writes a
feature word after each pool id, e.g. `c1 i5 q7`, where `q0 .. q9` is the decile of the item's
training-interaction count (`data.popularity_words`). Why: a 2-layer ID model trained from
scratch on a CPU budget does not learn which of 3,700 item ids are good from SFT alone
(greedy Hit@1 3.3% after 600 steps, random is 5%); with the ten shared words 10.7%, and its
slates hold the next item for 86% of users instead of 49% (`benchmarks/sft_label_styles.py`,
settings slots/pool and slots/pool+pop, 300 validation users).

Rewards and metrics work in label space: `pool_labels` / `relevant_labels` give the labels
of a style, `label_to_id` maps them back to candidate ids.
"""

from __future__ import annotations

from typing import Mapping

from .episodes import Episode
from .rollout import RANK_CLOSE, RANK_OPEN, SLATE_CLOSE, SLATE_OPEN

STYLES = ("ids", "slots", "chat")
HIST_TOKEN, POOL_TOKEN, OUT_TOKEN = "<HIST>", "<POOL>", "<OUT>"
PROMPT_TOKENS = (HIST_TOKEN, POOL_TOKEN, OUT_TOKEN)  # the ID model's vocabulary needs these
FEATURE_WORDS = tuple(f"q{d}" for d in range(10))  # popularity deciles, lowest first

_REC_CONTEXT = {
    "movies": "Here are the movies a user watched, oldest first:",
    "artists": "Here are the artists a user listened to, oldest first:",
}
_ITEM_NOUN = {"movies": "movie", "artists": "artist"}


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}; got {style!r}")


def pool_labels(episode: Episode, style: str) -> list[str]:
    """Labels of the pool, in the order the prompt shows it."""
    _check_style(style)
    if style == "ids":
        return episode.pool_ids
    return slot_labels(len(episode.candidates))


def slot_labels(size: int) -> list[str]:
    """`c1 .. c<size>`: the position labels of the "slots" and "chat" styles."""
    return [f"c{i + 1}" for i in range(size)]


def label_to_id(episode: Episode, style: str) -> dict[str, str]:
    return dict(zip(pool_labels(episode, style), episode.pool_ids))


def relevant_labels(episode: Episode, style: str) -> list[str]:
    """Labels of the relevant candidates (in the episode's relevant order)."""
    id_to_label = {cid: label for label, cid in label_to_id(episode, style).items()}
    return [id_to_label[cid] for cid in episode.relevant]


def _with_features(ids: list[str], features: Mapping[str, str] | None) -> list[str]:
    return ids if features is None else [w for cid in ids for w in (cid, features[cid])]


def _ids_prompt(episode: Episode, features: Mapping[str, str] | None = None) -> str:
    return " ".join([HIST_TOKEN, *episode.history, POOL_TOKEN, *_with_features(episode.pool_ids, features), OUT_TOKEN])


def _slots_prompt(episode: Episode, features: Mapping[str, str] | None = None) -> str:
    pool = [w for label, cid in zip(slot_labels(len(episode.candidates)), episode.pool_ids)
            for w in (label, *_with_features([cid], features))]
    return " ".join([HIST_TOKEN, *episode.history, POOL_TOKEN, *pool, OUT_TOKEN])


def _instructions(episode: Episode, n: int, k: int) -> str:
    size = len(episode.candidates)
    n, k = min(n, size), min(k, n, size)
    what = "passages needed to answer the question" if episode.task == "qa" else (
        f"{_ITEM_NOUN.get(episode.meta.get('domain'), 'item')}s the user is most likely to pick next"
    )
    return (
        f"You select and rank candidates. From the {size} candidates, each shown as [label] text, "
        f"choose the {n} {what} (a slate, any order), then rank the best {k} of your slate, "
        "most relevant first. Answer on one line with candidate labels separated by spaces, "
        f"nothing else:\n{SLATE_OPEN} {n} labels {SLATE_CLOSE} {RANK_OPEN} {k} labels from the slate {RANK_CLOSE}\n"
        f"Example: {SLATE_OPEN} c4 c1 c9 {SLATE_CLOSE} {RANK_OPEN} c9 c4 {RANK_CLOSE}\n"
        "Use each label at most once and only labels from the list."
    )


def _chat_user(episode: Episode, style_labels: list[str]) -> str:
    if episode.task == "qa":
        head = f"Question: {episode.query}"
    else:
        titles = episode.query.split(" | ") if episode.query else []
        intro = _REC_CONTEXT.get(episode.meta.get("domain"), "Here is the user's history, oldest first:")
        head = intro + "\n" + "\n".join(f"- {t}" for t in titles)
    pool = "\n".join(f"[{label}] {c.text}" for label, c in zip(style_labels, episode.candidates))
    return f"{head}\n\nCandidates:\n{pool}"


def render_prompt(episode: Episode, style: str = "ids", n: int = 10, k: int = 5,
                  features: Mapping[str, str] | None = None):
    """A string (styles "ids", "slots") or a list of chat messages (style "chat").

    `features` (word-level styles only) maps each pool id to a word written after it."""
    _check_style(style)
    if n < 1 or k < 1 or k > n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if features is not None and style == "chat":
        raise ValueError("item features are written by the word-level styles 'ids' and 'slots' only")
    if style == "ids":
        return _ids_prompt(episode, features)
    if style == "slots":
        return _slots_prompt(episode, features)
    return [
        {"role": "system", "content": _instructions(episode, n, k)},
        {"role": "user", "content": _chat_user(episode, pool_labels(episode, style))},
    ]


def episodes_to_records(episodes: list[Episode], style: str = "ids", n: int = 10, k: int = 5) -> list[dict]:
    """Dataset rows for TRL: `prompt`, and `pool`/`relevant` labels that reward functions get as kwargs."""
    return [
        {
            "prompt": render_prompt(e, style, n, k),
            "pool": pool_labels(e, style),
            "relevant": relevant_labels(e, style),
            "query_id": e.query_id,
        }
        for e in episodes
    ]

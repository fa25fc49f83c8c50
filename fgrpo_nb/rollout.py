"""The rollout grammar: `<SLATE> l1 l2 ... </SLATE> <RANK> la lb ... </RANK>`.

One renderer, one parser, used by rewards, metrics, the trainer and every evaluation.

Grammar decisions (the same for the tiny ID model, labels like `i2858`, and for chat
LLMs, labels like `p3` or `[3]`):

- Tags are matched exactly and case-sensitively: the prompt shows them verbatim and the
  tiny model has them as single tokens, so one spelling keeps phase splitting exact.
- The slate is the body between the first `<SLATE>` and the first `</SLATE>` after it;
  the ranking is the body between the first `<RANK>` after that and the first `</RANK>`
  after it. Tags do not need surrounding spaces (`<SLATE>i1 i2</SLATE>` parses).
- Inside a body, labels are separated by any run of whitespace (spaces, tabs, newlines)
  and/or commas, so `i1, i2`, `i1,i2` and one label per line all read the same.
- A label token is looked up in the pool as written; failing that, one pair of wrapping
  brackets is stripped (`[3]` -> `3`, `(p3)` -> `p3`) or added (`3` -> `[3]`) when that
  form is in the pool. Anything else is kept as written and makes the rollout invalid.
- Text before `<SLATE>`, between `</SLATE>` and `<RANK>`, and after `</RANK>` is ignored:
  chat LLMs add preambles, "Ranking:" headers and trailing EOS/chatter, and the rewards
  should judge the lists, not the wrapping. (The trainer still trains on those tokens,
  with the advantage of the phase they fall in; see `slate_end_char`.)
- A missing closing tag is an error (a completion truncated at max length is invalid).

Validity: both tag pairs present in order; slate non-empty, every label in the pool, no
duplicates, at most n labels; ranking non-empty, no duplicates, drawn from the slate, at
most k labels. An invalid rollout keeps whatever could be read (`slate`, `ranking`) for
error breakdowns, and `slate_valid` says whether the slate phase alone is well formed, so
a ranking-only error can be charged to the ranking phase.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

SLATE_OPEN = "<SLATE>"
SLATE_CLOSE = "</SLATE>"
RANK_OPEN = "<RANK>"
RANK_CLOSE = "</RANK>"
FORMAT_TOKENS = (SLATE_OPEN, SLATE_CLOSE, RANK_OPEN, RANK_CLOSE)

DEFAULT_N = 10  # slate length cap (the paper's n)
DEFAULT_K = 5  # ranking length cap (the paper's k)

_SEPARATORS = re.compile(r"[\s,]+")
_BRACKETS = {"[": "]", "(": ")"}

# Error codes, split by the phase they belong to (a slate error also voids the ranking).
SLATE_ERRORS = (
    "missing_slate_open", "missing_slate_close", "empty_slate", "slate_too_long",
    "duplicate_in_slate", "unknown_label_in_slate",
)
RANK_ERRORS = (
    "missing_rank_open", "missing_rank_close", "empty_ranking", "ranking_too_long",
    "duplicate_in_ranking", "ranking_not_in_slate",
)


@dataclass
class Rollout:
    slate: list[str] = field(default_factory=list)  # labels as read (normalised to pool form)
    ranking: list[str] = field(default_factory=list)
    valid: bool = False
    errors: tuple[str, ...] = ()  # codes from SLATE_ERRORS / RANK_ERRORS; empty iff valid
    slate_valid: bool = False  # the slate phase alone is well formed (a ranking error may remain)


def render_rollout(slate: Sequence[str], ranking: Sequence[str]) -> str:
    """`<SLATE> l1 l2 </SLATE> <RANK> la lb </RANK>` with single spaces (empty lists allowed)."""
    return " ".join([SLATE_OPEN, *slate, SLATE_CLOSE, RANK_OPEN, *ranking, RANK_CLOSE])


def slate_end_char(text: str) -> int | None:
    """Offset just after the `</SLATE>` the parser uses, or None if there is none.

    The trainer splits completion tokens here: tokens ending at or before this offset
    belong to the slate phase, the rest to the ranking phase.
    """
    start = text.find(SLATE_OPEN)
    if start < 0:
        return None
    end = text.find(SLATE_CLOSE, start + len(SLATE_OPEN))
    return None if end < 0 else end + len(SLATE_CLOSE)


def split_labels(body: str) -> list[str]:
    return [t for t in _SEPARATORS.split(body) if t]


def normalise_label(token: str, pool: frozenset[str] | None) -> str:
    """The pool's spelling of `token` (brackets stripped or added), else `token` itself."""
    if pool is None or token in pool:
        return token
    if len(token) > 2 and _BRACKETS.get(token[0]) == token[-1] and token[1:-1] in pool:
        return token[1:-1]
    for open_, close in _BRACKETS.items():
        if open_ + token + close in pool:
            return open_ + token + close
    return token


def _tag_body(text: str, open_tag: str, close_tag: str, start: int) -> tuple[str, int, str | None]:
    """(body, offset to resume from, error) for the first open/close pair at or after `start`.

    Without a closing tag the body runs to the next `<RANK>` (a broken slate must not
    swallow the ranking) or to the end, so a partial parse is still available.
    """
    phase = "slate" if open_tag == SLATE_OPEN else "rank"
    i = text.find(open_tag, start)
    if i < 0:
        return "", start, f"missing_{phase}_open"
    body_start = i + len(open_tag)
    j = text.find(close_tag, body_start)
    if j < 0:
        stop = text.find(RANK_OPEN, body_start) if open_tag == SLATE_OPEN else -1
        return text[body_start:stop if stop >= 0 else len(text)], body_start, f"missing_{phase}_close"
    return text[body_start:j], j + len(close_tag), None


def _list_errors(labels: list[str], pool: frozenset[str] | None, cap: int, name: str) -> list[str]:
    errors = []
    if not labels:
        errors.append(f"empty_{name}")
    if len(labels) > cap:
        errors.append(f"{name}_too_long")
    if len(set(labels)) < len(labels):
        errors.append(f"duplicate_in_{name}")
    if any((pool is not None and label not in pool) or label in FORMAT_TOKENS for label in labels):
        errors.append(f"unknown_label_in_{name}")
    return errors


def parse_rollout(text: str, pool: Iterable[str] | None = None, n: int = DEFAULT_N, k: int = DEFAULT_K) -> Rollout:
    """Parse a completion; never raises. `pool=None` accepts any label (no pool check)."""
    try:
        return _parse(text, pool, n, k)
    except Exception as err:  # the contract is "never raises": report, don't crash a training step
        return Rollout(errors=(f"parser_error:{type(err).__name__}",))


def _parse(text: str, pool: Iterable[str] | None, n: int, k: int) -> Rollout:
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    pool_set = None if pool is None else frozenset(pool)
    errors: list[str] = []

    slate_body, resume, err = _tag_body(text, SLATE_OPEN, SLATE_CLOSE, 0)
    if err:
        errors.append(err)
    slate = [normalise_label(t, pool_set) for t in split_labels(slate_body)]
    errors += _list_errors(slate, pool_set, n, "slate")
    slate_valid = not errors

    rank_body, _, rank_err = _tag_body(text, RANK_OPEN, RANK_CLOSE, resume)
    if rank_err:
        errors.append(rank_err)
    ranking = [normalise_label(t, pool_set) for t in split_labels(rank_body)]
    # a label outside the pool is also outside the slate: report it once, as not in slate
    errors += [e for e in _list_errors(ranking, pool_set, k, "ranking") if e != "unknown_label_in_ranking"]
    slate_labels = set(slate)
    if any(label not in slate_labels for label in ranking):
        errors.append("ranking_not_in_slate")
    return Rollout(slate=slate, ranking=ranking, valid=not errors, errors=tuple(errors), slate_valid=slate_valid)


# --- synthetic rollouts: baselines and teachers for reward design and tests ---------------

def random_rollout(pool: Sequence[str], rng: random.Random, n: int = DEFAULT_N, k: int = DEFAULT_K) -> str:
    """A uniformly random valid rollout: n labels from the pool, the first k as the ranking."""
    slate = rng.sample(list(pool), min(n, len(pool)))
    ranking = rng.sample(slate, min(k, len(slate)))
    return render_rollout(slate, ranking)


def noisy_oracle_rollout(pool: Sequence[str], relevant: Sequence[str], rng: random.Random,
                         n: int = DEFAULT_N, k: int = DEFAULT_K,
                         p_select: float = 0.7, p_rank_first: float = 0.5) -> str:
    """A teacher that knows the answer but is imperfect in each phase separately.

    Each relevant item enters the slate with probability `p_select` (the rest is random
    fill), and each selected relevant item is moved to the front of the ranking with
    probability `p_rank_first` (otherwise it keeps a random place). Two knobs, one per
    phase, so slate misses and rank drops can be dialled independently.
    """
    pool = list(pool)
    chosen = [r for r in relevant if r in pool and rng.random() < p_select][:n]
    fill = [c for c in pool if c not in chosen]
    slate = chosen + rng.sample(fill, min(n - len(chosen), len(fill)))
    rng.shuffle(slate)
    order = rng.sample(slate, len(slate))
    promoted = [c for c in order if c in chosen and rng.random() < p_rank_first]
    ranking = (promoted + [c for c in order if c not in promoted])[:k]
    return render_rollout(slate, ranking)

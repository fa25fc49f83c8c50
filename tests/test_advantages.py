"""Group-relative advantages: hand values, no NaN, TRL's std convention, routing, conflicts."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from fgrpo_nb.advantages import (
    STD_EPS, advantage_conflict_rate, conflict_rates, group_advantages, joint_advantages,
    phase_advantages, route_advantages,
)


def test_group_mean_hand_values():
    r = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 1.0])
    expected = torch.tensor([0.5, -0.5, 0.0, 0.0, -0.25, -0.25, -0.25, 0.75])
    assert torch.allclose(group_advantages(r, 2), torch.tensor([0.5, -0.5, 0.0, 0.0, 0.0, 0.0, -0.5, 0.5]))
    assert torch.allclose(group_advantages(r, 4), expected)
    assert isinstance(group_advantages([1, 0], 2), np.ndarray)
    assert np.allclose(group_advantages([1, 0], 2), [0.5, -0.5])


def test_group_std_hand_values():
    # group [1, 0]: mean 0.5, unbiased std sqrt(0.5)
    a = group_advantages(torch.tensor([1.0, 0.0]), 2, scale="group")
    assert torch.allclose(a, torch.tensor([0.5, -0.5]) / (0.5 ** 0.5 + STD_EPS))


@pytest.mark.parametrize("scale", ["none", "group"])
def test_all_equal_group_gives_zeros(scale):
    a = group_advantages(torch.full((8,), 0.3), 8, scale=scale)
    assert torch.equal(a, torch.zeros(8)) and not torch.isnan(a).any()
    assert torch.equal(group_advantages(torch.tensor([0.3, 0.7]), 1, scale=scale), torch.zeros(2))


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(7), 2)
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4), 2, scale="batch")


def _trl_advantages(rewards: torch.Tensor, G: int, scale_rewards: str) -> torch.Tensor:
    """TRL 1.16 `_generate_and_score_completions`, sum_then_normalize branch, one reward."""
    from trl.trainer.utils import nanstd

    mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    adv = rewards - mean
    if scale_rewards != "none":
        adv = adv / (std + 1e-4)
    return adv


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.integers(2, 8), st.data(), st.sampled_from(["none", "group"]))
def test_matches_trl_formula(n_groups, G, data, scale):
    values = data.draw(st.lists(st.sampled_from([-0.5, 0.0, 0.25, 1 / 3, 0.63, 1.0]),
                                min_size=n_groups * G, max_size=n_groups * G))
    r = torch.tensor(values, dtype=torch.float64)  # float64: TRL's rounding noise in constant groups vanishes
    assert torch.allclose(group_advantages(r, G, scale), _trl_advantages(r, G, scale), atol=1e-5)


@pytest.mark.parametrize("scale", ["none", "group"])
def test_bit_exact_with_trl_in_float32(scale):
    # the trainer routes these values into TRL's loss: outside constant groups, TRL's bits exactly
    r = torch.tensor([0.1, 0.7, 1 / 3, 0.25, 0.3, 0.3, 0.3, 0.3, 1.0, float("nan"), 0.2, 0.63])
    ours, trl = group_advantages(r, 4, scale), _trl_advantages(r, 4, scale)
    assert torch.equal(ours[:4], trl[:4]) and torch.equal(ours[8:], torch.nan_to_num(trl[8:]))
    assert torch.equal(ours[4:8], torch.zeros(4))


def test_joint_and_phase():
    g, r = torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.allclose(joint_advantages(g, r, 4, lam=0.5), torch.tensor([0.25, -0.75, 0.75, -0.25]))
    a_gen, a_rank = phase_advantages(g, r, 4, lam=0.5)
    assert torch.allclose(a_gen, torch.tensor([0.5, -0.5, 0.5, -0.5]))
    assert torch.allclose(a_rank, torch.tensor([-0.25, -0.25, 0.25, 0.25]))
    # mean-only and lam applied after: joint advantage is the sum of the phase advantages
    assert torch.allclose(joint_advantages(g, r, 4, lam=0.5), a_gen + a_rank)


def test_route_advantages():
    a_gen, a_rank = torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert torch.equal(route_advantages(a_gen, a_rank, mask), torch.tensor([[1.0, 1.0, 0.5], [-1.0, 2.0, 2.0]]))
    assert np.allclose(route_advantages([1.0], [2.0], [[True, False]]), [[1.0, 2.0]])


def test_conflict_rate():
    phase, joint = torch.tensor([1.0, -1.0, 0.5, 0.0]), torch.tensor([1.0, 1.0, -0.1, 1.0])
    assert advantage_conflict_rate(phase, joint) == 0.5  # rollouts 1 and 2 of 4
    assert advantage_conflict_rate(phase, joint, weights=torch.tensor([1.0, 3.0, 0.0, 0.0])) == 0.75
    assert advantage_conflict_rate(torch.zeros(0), torch.zeros(0)) == 0.0
    # a slate-miss rollout with a great ranking vs a covered one ranked badly
    rates = conflict_rates([0.0, 1.0], [1.0, 0.0], 2, lam=1.5)
    assert rates == {"gen": 1.0, "rank": 0.0}
    assert conflict_rates([0.5] * 4, [0.5] * 4, 4) == {"gen": 0.0, "rank": 0.0}


def test_group_signal_stats():
    from fgrpo_nb.advantages import group_signal_stats

    stats = group_signal_stats(np.array([1, 1, 0, 0, 1, 1, 1, 1.0]), [1, 0, 0, 0, 0.5, 0.5, 0.5, 0.5], 4)
    assert stats["zero_std_gen"] == stats["zero_std_rank"] == stats["zero_std_joint"] == 0.5
    assert stats["conflict_gen"] == 0.0 and stats["conflict_rank"] == 0.125  # member 1: A_rank < 0 < A_joint


def test_plot_helpers():
    from fgrpo_nb.plots import METHOD_COLORS, word_phases

    for name in ("F-GRPO", "GRPO", "SFT", "Decoupled SFT", "Decoupled RL", "Random", "Popularity", "BM25",
                 "Zero-shot", "SASRec"):
        assert name in METHOD_COLORS
    assert len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)
    words, mask = word_phases("hi <SLATE> i1 </SLATE> <RANK> i1 </RANK>")
    assert words[1] == "<SLATE>" and mask.tolist() == [True, True, True, True, False, False, False]

"""The inverse-CDF sampler that replaces torch.multinomial inside generate: same distribution,
never a zero-weight index, seeded by torch's generator, and torch's own function back after."""

from __future__ import annotations

import pytest
import torch

from fgrpo_nb.sampling import fast_multinomial, inverse_cdf_sample


def test_frequencies_match_the_probabilities():
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2], [0.0, 0.0, 0.1, 0.9]])
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([inverse_cdf_sample(probs.repeat(1000, 1), g) for _ in range(20)])[:, 0]
    rows = torch.arange(len(draws)) % 2
    for row in (0, 1):
        freq = torch.bincount(draws[rows == row], minlength=4).double() / (rows == row).sum()
        # 20,000 draws a row: 4 standard errors of the largest-variance cell is about 0.014
        torch.testing.assert_close(freq, probs[row].double(), atol=0.015, rtol=0)
        assert freq[probs[row] == 0].sum() == 0


def test_unnormalised_weights_and_shape():
    weights = torch.tensor([[2.0, 6.0], [0.0, 3.0]])
    draws = inverse_cdf_sample(weights.repeat(5000, 1), torch.Generator().manual_seed(1))
    assert draws.shape == (10000, 1) and draws.dtype == torch.int64
    assert abs(draws[0::2].float().mean().item() - 0.75) < 0.02  # weight 6 of 8 on index 1
    assert (draws[1::2] == 1).all()


def test_u_at_the_very_end_never_returns_a_trailing_zero(monkeypatch):
    probs = torch.tensor([[0.25, 0.75, 0.0, 0.0]])
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.ones(1, 1, dtype=k.get("dtype")))  # u = 1: past the end
    assert inverse_cdf_sample(probs).item() == 1


def test_seeded_draws_repeat():
    probs = torch.softmax(torch.randn(8, 50, generator=torch.Generator().manual_seed(2)), -1)
    first = inverse_cdf_sample(probs, torch.Generator().manual_seed(3))
    again = inverse_cdf_sample(probs, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    torch.manual_seed(4)
    a = inverse_cdf_sample(probs)
    torch.manual_seed(4)
    assert torch.equal(a, inverse_cdf_sample(probs))


def test_fast_multinomial_swaps_only_one_sample_per_row_and_restores():
    original = torch.multinomial
    probs = torch.tensor([[0.0, 1.0, 0.0]] * 3)
    with fast_multinomial():
        assert torch.multinomial is not original
        assert torch.multinomial(probs, 1).flatten().tolist() == [1, 1, 1]
        two = torch.multinomial(torch.tensor([[0.5, 0.5, 0.0]]), 2)  # torch's own: without replacement
        assert sorted(two.flatten().tolist()) == [0, 1]
    assert torch.multinomial is original
    with pytest.raises(ValueError), fast_multinomial():
        raise ValueError("inside")
    assert torch.multinomial is original

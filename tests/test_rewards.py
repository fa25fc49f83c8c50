"""Coverage and utility rewards: hand-computed values, properties, format penalty, TRL adapters."""

import math

import pytest
from hypothesis import given, settings, strategies as st

from fgrpo_nb.rewards import (
    completion_text, coverage_reward, make_reward_funcs, score_rollout, utility_reward,
)
from fgrpo_nb.rollout import render_rollout

POOL = [f"i{j}" for j in range(1, 21)]
L2, L3, L4 = 1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(5)


def test_coverage_hand_values():
    assert coverage_reward(["i1", "i2", "i3"], ["i1"]) == 1.0
    assert coverage_reward(["i1", "i2", "i3"], ["i1", "i9"]) == 0.5
    assert coverage_reward(["i2"], ["i1"]) == 0.0
    assert coverage_reward(["i1"], []) == 0.0
    # F1: P = 1/4, R = 1/2 -> 2 * (1/8) / (3/4) = 1/3
    assert coverage_reward(["i1", "i2", "i3", "i4"], ["i1", "i9"], kind="f1") == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        coverage_reward(["i1"], ["i1"], kind="precision")


def test_utility_hand_values():
    assert utility_reward(["i1", "i2"], ["i1"], k=5) == 1.0
    assert utility_reward(["i2", "i1"], ["i1"], k=5) == pytest.approx(L2)
    assert utility_reward(["i2", "i3", "i1"], ["i1"], k=2) == 0.0
    # two relevant, one at rank 1, one missing: DCG 1, IDCG 1 + 1/log2(3)
    assert utility_reward(["i1", "i2"], ["i1", "i9"], k=5) == pytest.approx(1 / (1 + L2))
    # "slate" normaliser: i9 never entered the slate, so the ranking did all it could
    assert utility_reward(["i1", "i2"], ["i1", "i9"], k=5, normaliser="slate", slate=["i1", "i2"]) == 1.0
    assert utility_reward(["i2", "i1"], ["i1", "i9"], k=5, normaliser="slate", slate=["i1", "i2"]) == pytest.approx(L2)
    assert utility_reward(["i2"], ["i9"], k=5, normaliser="slate", slate=["i2", "i3"]) == 0.0
    # IDCG capped at k: 3 relevant in the slate, k=2
    assert utility_reward(["i1", "i2"], ["i1", "i2", "i3"], k=2, normaliser="slate", slate=["i1", "i2", "i3"]) == 1.0
    # repeats waste their slot
    assert utility_reward(["i1", "i1"], ["i1", "i2"], k=5) == pytest.approx(1 / (1 + L2))
    with pytest.raises(ValueError):
        utility_reward(["i1"], ["i1"], normaliser="slate")


def test_score_rollout_and_format_penalty():
    good = render_rollout(["i1", "i2", "i3"], ["i3", "i1"])
    assert score_rollout(good, POOL, ["i1"])[:2] == pytest.approx((1.0, L2))
    broken_rank = "<SLATE> i1 i2 </SLATE> <RANK> i5 </RANK>"
    assert score_rollout(broken_rank, POOL, ["i1"])[:2] == (1.0, -0.5)
    assert score_rollout(broken_rank, POOL, ["i1"], phase_credit=False)[:2] == (-0.5, -0.5)
    assert score_rollout("nonsense", POOL, ["i1"], format_penalty=1.0)[:2] == (-1.0, -1.0)
    assert score_rollout("nonsense", POOL, ["i1"], format_penalty=0.0)[:2] == (0.0, 0.0)


def test_same_joint_reward_different_cause():
    """The credit-assignment gap: a slate miss and a rank drop can tie on the joint reward."""
    rel = ["i1"]
    miss = score_rollout(render_rollout(["i2", "i3"], ["i2", "i3"]), POOL, rel)
    drop = score_rollout(render_rollout(["i2", "i3", "i4", "i5", "i6", "i1"], ["i2", "i3", "i4", "i5", "i6"]), POOL, rel)
    assert miss[0] + miss[1] == 0.0 and drop[1] == 0.0 and drop[0] == 1.0


rank_label = st.sampled_from(POOL)


@settings(max_examples=300, deadline=None)
@given(st.lists(rank_label, min_size=1, max_size=10, unique=True), st.lists(rank_label, max_size=4, unique=True),
       st.randoms(use_true_random=False), st.sampled_from(["recall", "f1"]))
def test_coverage_order_invariant_and_bounded(slate, relevant, rnd, kind):
    shuffled = list(slate)
    rnd.shuffle(shuffled)
    value = coverage_reward(slate, relevant, kind)
    assert value == coverage_reward(shuffled, relevant, kind)
    assert 0.0 <= value <= 1.0


@settings(max_examples=300, deadline=None)
@given(st.lists(rank_label, min_size=2, max_size=8, unique=True), st.data(), st.sampled_from(["relevant", "slate"]))
def test_utility_rises_when_relevant_moves_up(ranking, data, normaliser):
    k = data.draw(st.integers(1, 8))
    i = data.draw(st.integers(1, len(ranking) - 1))
    relevant = [ranking[i]] + data.draw(st.lists(rank_label, max_size=3))
    relevant = [r for r in relevant if r not in ranking or r == ranking[i]]  # one relevant in the list
    swapped = list(ranking)
    swapped[i - 1], swapped[i] = swapped[i], swapped[i - 1]
    before = utility_reward(ranking, relevant, k, normaliser, slate=ranking)
    after = utility_reward(swapped, relevant, k, normaliser, slate=ranking)
    assert 0.0 <= before <= 1.0 and 0.0 <= after <= 1.0
    if i <= k:  # its new 0-based position i - 1 is inside the top k: strictly better
        assert after > before
    else:
        assert after == before


@settings(max_examples=300, deadline=None)
# allow_subnormal=False: trainer tests call torch.set_flush_denormal(True), which hypothesis detects
@given(st.text(max_size=60), st.lists(rank_label, min_size=1, max_size=10), st.lists(rank_label, max_size=4),
       st.floats(0, 2, allow_subnormal=False), st.sampled_from(["relevant", "slate"]), st.booleans())
def test_rewards_bounded_never_nan(text, slate, relevant, penalty, normaliser, phase_credit):
    for t in (text, render_rollout(slate, slate[:5]), render_rollout(slate, slate[:7]) + text):
        r_gen, r_rank, _ = score_rollout(t, POOL, relevant, normaliser=normaliser,
                                         format_penalty=penalty, phase_credit=phase_credit)
        for v in (r_gen, r_rank):
            assert not math.isnan(v) and -penalty <= v <= 1.0


def test_completion_text_formats():
    assert completion_text("abc") == "abc"
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"},
            {"role": "assistant", "content": "a2"}]
    assert completion_text(conv) == "a2"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "x"}]}]) == "x"
    assert completion_text(None) == "" and completion_text([]) == ""


def test_trl_adapters():
    cov, util = make_reward_funcs(n=10, k=5)
    assert (cov.__name__, util.__name__) == ("coverage_reward", "utility_reward")
    texts = [render_rollout(["i1", "i2"], ["i2", "i1"]), "garbage",
             [{"role": "assistant", "content": render_rollout(["i3"], ["i3"])}]]
    kwargs = dict(pool=[POOL] * 3, relevant=[["i1"], ["i1"], ["i3"]], completion_ids=None, trainer_state=None)
    assert cov(["p"] * 3, texts, **kwargs) == [1.0, -0.5, 1.0]
    assert util(prompts=["p"] * 3, completions=texts, **kwargs) == pytest.approx([L2, -0.5, 1.0])
    cov_f1, util_slate = make_reward_funcs(coverage="f1", normaliser="slate", format_penalty=1.0)
    assert cov_f1(None, texts, **kwargs) == pytest.approx([2 / 3, -1.0, 1.0])
    assert util_slate(None, texts, **kwargs)[1] == -1.0

"""Group-relative advantages: per phase (F-GRPO) and joint (GRPO), and their disagreement.

The one implementation of this arithmetic: `fgrpo_nb.trainer` imports it, and the
notebooks use it directly.

Rewards arrive flat, shape (B,), with the G rollouts of one prompt contiguous (TRL's
layout: B = num_prompts * G). Default: subtract the group mean only (Dr. GRPO, as the
paper likely does). `scale="group"` divides by the group's std. The arithmetic is TRL
1.16's to the bit (`torch.nanmean`, `trl.trainer.utils.nanstd` with Bessel's correction,
(r - mean) / (std + 1e-4)), with two guards: a NaN reward (a reward function returned
None) is left out of its group's mean and gets advantage 0, and a group whose rewards are
all equal (or a group of one) gets exact zeros, never NaN (TRL leaves rounding noise).

Functions accept torch tensors (returned as tensors, same device and dtype; integers
become float) or anything numpy can read (returned as float64 numpy arrays).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SCALES = ("none", "group")
STD_EPS = 1e-4  # TRL's epsilon in (r - mean) / (std + eps)


def _to_tensor(x: Any) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return (x if x.is_floating_point() else x.float()), True
    return torch.from_numpy(np.array(x, dtype=np.float64)), False  # a copy: inputs may be read-only


def _back(t: torch.Tensor, was_tensor: bool):
    return t if was_tensor else t.numpy()


def _group_advantages(rewards: torch.Tensor, group_size: int, scale: str) -> torch.Tensor:
    """TRL's arithmetic on a float tensor; see the module docstring."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if rewards.ndim != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a length divisible by group_size={group_size}, got {tuple(rewards.shape)}"
        )
    grouped = rewards.view(-1, group_size)
    advantages = rewards - torch.nanmean(grouped, dim=1).repeat_interleave(group_size, dim=0)
    if scale == "group":
        from trl.trainer.utils import nanstd  # here, not at the top: notebooks need not load TRL

        std = nanstd(grouped, dim=1) if group_size > 1 else torch.zeros(grouped.size(0), device=rewards.device)
        advantages = advantages / (std.repeat_interleave(group_size, dim=0) + STD_EPS)
    # a constant group carries no signal: make it exactly 0 (float rounding in the mean
    # would otherwise leave ~1e-8, blown up to ~1e-4 by the std scaling); NaNs don't count
    highest = torch.where(grouped.isnan(), -torch.inf, grouped).amax(dim=1)
    lowest = torch.where(grouped.isnan(), torch.inf, grouped).amin(dim=1)
    constant = (highest == lowest).repeat_interleave(group_size, dim=0)
    return torch.nan_to_num(advantages, nan=0.0).masked_fill(constant, 0.0)


def group_advantages(rewards, group_size: int, scale: str = "none"):
    """A_i = r_i - mean(group), optionally / (std(group) + 1e-4); shape (B,)."""
    r, was_tensor = _to_tensor(rewards)
    return _back(_group_advantages(r, group_size, scale), was_tensor)


def joint_advantages(r_gen, r_rank, group_size: int, lam: float = 1.0, scale: str = "none"):
    """GRPO's one advantage per rollout, from the joint reward R = R_gen + lam * R_rank."""
    g, was_tensor = _to_tensor(r_gen)
    r, _ = _to_tensor(r_rank)
    return _back(_group_advantages(g + lam * r.to(g), group_size, scale), was_tensor)


def phase_advantages(r_gen, r_rank, group_size: int, lam: float = 1.0, scale: str = "none"):
    """F-GRPO's (A_gen, lam * A_rank): each phase normalised within its own group."""
    g, was_tensor = _to_tensor(r_gen)
    r, _ = _to_tensor(r_rank)
    a_gen = _group_advantages(g, group_size, scale)
    a_rank = lam * _group_advantages(r.to(g), group_size, scale)
    return _back(a_gen, was_tensor), _back(a_rank, was_tensor)


def phase_advantages_per_func(rewards_per_func: torch.Tensor, group_size: int, scale: str = "none"):
    """(A_gen, A_rank), each (N,), from TRL's (N, 2) `rewards_per_func` [coverage, utility]."""
    return phase_advantages(rewards_per_func[:, 0], rewards_per_func[:, 1], group_size, scale=scale)


def route_advantages(a_gen, a_rank, slate_mask, lam: float = 1.0):
    """Per-token advantages (B, T): A_gen on slate tokens (mask True), lam * A_rank elsewhere.

    With the default lam = 1, pass lam * A_rank (what `phase_advantages` returns).
    Padding is the loss mask's business, not this function's.
    """
    g, was_tensor = _to_tensor(a_gen)
    r, _ = _to_tensor(a_rank)
    m = slate_mask.to(torch.bool) if isinstance(slate_mask, torch.Tensor) else torch.as_tensor(np.asarray(slate_mask, dtype=bool))
    m = m.to(g.device)
    return _back(torch.where(m, g.unsqueeze(1), lam * r.unsqueeze(1)), was_tensor)


def _opposed(own: torch.Tensor, joint: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Where `joint` pushes opposite to `own`, both beyond `eps` in size."""
    return (own * joint < 0) & (own.abs() > eps) & (joint.abs() > eps)


def phase_conflict_counts(a_gen, a_rank, slate_mask, token_mask, lam: float) -> torch.Tensor:
    """Counts [slate conflicts, rank conflicts, slate tokens, rank tokens]: a token conflicts
    when the joint GRPO-style advantage A_gen + lam * A_rank pushes it opposite to its own
    phase's advantage (A_gen on slate tokens, lam * A_rank on ranking tokens)."""
    own = route_advantages(a_gen, a_rank, slate_mask, lam)
    joint = (a_gen + lam * a_rank).unsqueeze(1)
    tokens = token_mask.bool()
    conflict = _opposed(own, joint) & tokens
    slate, rank = slate_mask.bool() & tokens, ~slate_mask.bool() & tokens
    return torch.stack([(conflict & slate).sum(), (conflict & rank).sum(), slate.sum(), rank.sum()]).float()


def conflict_counts(a_gen, a_rank, slate_mask, token_mask, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(conflicting tokens, all tokens), both phases together."""
    counts = phase_conflict_counts(a_gen, a_rank, slate_mask, token_mask, lam)
    return counts[0] + counts[1], counts[2] + counts[3]


def advantage_conflict_rate(phase_adv, joint_adv, weights=None, eps: float = 1e-8) -> float:
    """Share of a phase's rollouts (or tokens) whose joint advantage has the opposite sign.

    A conflict is phase_adv * joint_adv < 0 with both beyond `eps` in size: GRPO pushes
    that phase's tokens the other way from what the phase's own reward asks. The
    denominator counts every rollout, zero advantages included; `weights` (B,), e.g. each
    rollout's number of tokens in the phase, turns it into a share of tokens. 0.0 when
    there is nothing to count.
    """
    p, _ = _to_tensor(phase_adv)
    j, _ = _to_tensor(joint_adv)
    w = torch.ones_like(p) if weights is None else _to_tensor(weights)[0].to(p)
    conflict = _opposed(p, j.to(p), eps)
    total = float(w.sum())
    return float((w * conflict.to(p)).sum()) / total if total > 0 else 0.0


def conflict_rates(r_gen, r_rank, group_size: int, lam: float = 1.0, scale: str = "none",
                   gen_weights=None, rank_weights=None) -> dict[str, float]:
    """{"gen": ..., "rank": ...}: how often GRPO's joint advantage opposes each phase's own."""
    joint = joint_advantages(r_gen, r_rank, group_size, lam, scale)
    a_gen, a_rank = phase_advantages(r_gen, r_rank, group_size, lam, scale)
    return {"gen": advantage_conflict_rate(a_gen, joint, gen_weights),
            "rank": advantage_conflict_rate(a_rank, joint, rank_weights)}


def group_signal_stats(r_gen, r_rank, group_size: int, lam: float = 1.0) -> dict[str, float]:
    """How much learning signal a batch of groups carries, per phase and jointly.

    zero_std_*: share of groups whose reward is constant (zero advantage: nothing to learn);
    conflict_*: `conflict_rates` (mean-only advantages).
    """
    g = np.asarray(r_gen, dtype=float).reshape(-1, group_size)
    r = np.asarray(r_rank, dtype=float).reshape(-1, group_size)
    constant = lambda x: float(np.mean(np.ptp(x, axis=1) == 0))  # noqa: E731
    rates = conflict_rates(g.reshape(-1), r.reshape(-1), group_size, lam)
    return {"zero_std_gen": constant(g), "zero_std_rank": constant(r), "zero_std_joint": constant(g + lam * r),
            "conflict_gen": rates["gen"], "conflict_rank": rates["rank"]}

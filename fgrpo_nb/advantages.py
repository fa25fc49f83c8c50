"""Group-relative advantages: per phase (F-GRPO) and joint (GRPO), and their disagreement.

Rewards arrive flat, shape (B,), with the G rollouts of one prompt contiguous (TRL's
layout: B = num_prompts * G). Default: subtract the group mean only (Dr. GRPO, as the
paper likely does). `scale="group"` divides by the group's std the way TRL 1.16 does:
(r - mean) / (std + 1e-4) with Bessel's correction (torch.std's default); a group of one
has std 0. An all-equal group gives exact zeros, never NaN (TRL leaves rounding noise).

Functions accept torch tensors (returned as tensors, same device, float) or anything
numpy can read (returned as numpy arrays), so the trainer and the notebooks share them.
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


def _group_advantages(r: torch.Tensor, group_size: int, scale: str) -> torch.Tensor:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if r.ndim != 1 or group_size < 1 or r.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a length divisible by group_size={group_size}, got {tuple(r.shape)}")
    grouped = r.view(-1, group_size)
    # a constant group carries no signal: make it exactly 0 (float rounding in the mean
    # would otherwise leave ~1e-8, blown up to ~1e-4 by the std scaling)
    constant = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)
    adv = torch.where(constant, torch.zeros_like(grouped), grouped - grouped.mean(dim=1, keepdim=True))
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        adv = adv / (std + STD_EPS)
    return adv.reshape(-1)


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


def route_advantages(a_gen, a_rank, slate_mask):
    """Per-token advantages (B, T): A_gen on slate tokens (mask True), A_rank elsewhere.

    `a_rank` is used as given, so pass lam * A_rank (what `phase_advantages` returns).
    Padding is the loss mask's business, not this function's.
    """
    g, was_tensor = _to_tensor(a_gen)
    r, _ = _to_tensor(a_rank)
    m = slate_mask.to(torch.bool) if isinstance(slate_mask, torch.Tensor) else torch.as_tensor(np.asarray(slate_mask, dtype=bool))
    m = m.to(g.device)
    return _back(torch.where(m, g[:, None], r.to(g)[:, None]), was_tensor)


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
    conflict = (p.sign() * j.to(p).sign() < 0) & (p.abs() > eps) & (j.to(p).abs() > eps)
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

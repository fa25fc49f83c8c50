"""F-GRPO on TRL: each phase of a rollout gets its own group-relative advantage.

A rollout is `<SLATE> ... </SLATE> <RANK> ... </RANK>`. TRL's GRPOTrainer sums the reward
functions into one reward and gives every token of a completion the same advantage.
`FGRPOTrainer` keeps the two rewards apart: for each group of G completions of a prompt,

    A_gen  = R_gen  - mean_group(R_gen)      (coverage of the slate)
    A_rank = R_rank - mean_group(R_rank)     (utility of the ranking)

(optionally divided by the group std, as TRL does), and routes them per token: tokens up
to and including the one that completes `</SLATE>` get A_gen, later tokens get
lambda * A_rank. The result is a (B, T) advantage tensor, which TRL's `_compute_loss`
accepts as is; everything else (sampling, clipping, loss normalisation, buffering, LoRA,
several processes) stays TRL's. With R_gen = R_rank = R and lambda = 1 every token gets
R - mean(R): exactly GRPO with the single reward R, which the tests check.

The GRPO baseline is TRL's GRPOTrainer with its objective unmodified, with reward_weights
[1, lambda] (see `make_trainer`). Both methods can forward each prompt once per group, in
sampling and in every log-prob pass (`shared_prefix`, fgrpo_nb.shared_prefix: the same
numbers within float tolerance, fewer tokens); `make_trainer` turns it on for both, so the
comparison stays fair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import GRPOConfig, GRPOTrainer

# The advantage arithmetic lives in fgrpo_nb.advantages; the trainer's rewards come as one
# (B, 2) tensor, hence the per-func variant.
from fgrpo_nb.advantages import SCALES as PHASE_SCALES
from fgrpo_nb.advantages import phase_advantages_per_func, phase_conflict_counts, route_advantages
from fgrpo_nb.rollout import slate_end_char  # the parser's own rule, so the split matches the rewards
from fgrpo_nb.shared_prefix import SharedPrefixMixin


# Loss types whose per-token loss multiplies a per-token advantage; the others (luspo, vespo,
# sequence-level importance sampling) collapse a sequence to one weight and would blur the phases.
TOKEN_LEVEL_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")


@dataclass
class SharedPrefixGRPOConfig(GRPOConfig):
    """GRPOConfig plus the shared-prefix switch, for the GRPO baseline and (through FGRPOConfig) F-GRPO.
    Off by default so a config built by hand runs TRL's forward bit for bit; `make_trainer` turns it on."""

    shared_prefix: bool = field(
        default=False,
        metadata={"help": "Forward each prompt once per group and share its keys/values with the group's "
                          "completions (same log-probs within float tolerance, fewer tokens)."},
    )


@dataclass
class FGRPOConfig(SharedPrefixGRPOConfig):
    """GRPOConfig plus the two F-GRPO knobs. `scale_rewards` only affects TRL's own
    (discarded) joint advantage and its logs; `phase_scale` scales the phase advantages."""

    phase_lambda: float = field(
        default=1.0, metadata={"help": "Weight lambda of the ranking-phase advantage (paper: 1.0 best)."}
    )
    phase_scale: str = field(
        default="none",
        metadata={"help": "'none': A = R - mean (Dr. GRPO, the paper's setting); 'group': also divide by group std."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.phase_scale not in PHASE_SCALES:
            raise ValueError(f"phase_scale must be one of {PHASE_SCALES}, got {self.phase_scale!r}")


# ---------------------------------------------------------------- pure functions (tested)


def slate_token_counts(completion_ids: list[list[int]], decode) -> list[int | None]:
    """For each completion, how many leading tokens form the slate phase (None: no `</SLATE>`).

    The count is the shortest prefix whose decoded text already holds a complete slate
    (per `rollout.slate_end_char`, the parser's own rule), so a tag split over several
    tokens, or merged into a token with following text, is handled for any tokenizer.
    `decode` maps a list of id lists to texts (one batched call per bisection step:
    about log2(T) calls in all, not one per token).
    """
    texts = decode(completion_ids)
    counts: list[int | None] = [None] * len(completion_ids)
    lo, hi, active = {}, {}, []
    for i, (ids, text) in enumerate(zip(completion_ids, texts)):
        if slate_end_char(text) is not None:
            lo[i], hi[i] = 0, len(ids)  # invariant: prefix lo lacks the slate, prefix hi holds it
            active.append(i)
    while active:
        mids = {i: (lo[i] + hi[i]) // 2 for i in active}
        prefixes = decode([completion_ids[i][: mids[i]] for i in active])
        for i, text in zip(active, prefixes):
            if slate_end_char(text) is None:
                lo[i] = mids[i]
            else:
                hi[i] = mids[i]
        active = [i for i in active if hi[i] - lo[i] > 1]
    for i in hi:
        counts[i] = hi[i]
    return counts


def slate_mask_from_counts(counts: list[int | None], width: int, device=None) -> torch.Tensor:
    """(B, T) bool, True on slate-phase tokens. With no `</SLATE>`, the whole completion is
    slate phase: a rollout that never closes its slate has no ranking to credit, and its
    coverage reward (normally zero or a format penalty) is the signal it should get."""
    limits = torch.tensor([width if c is None else c for c in counts], device=device)
    return torch.arange(width, device=device).unsqueeze(0) < limits.unsqueeze(1)


# ---------------------------------------------------------------- the trainer


class PhaseMixin:
    """Shared by F-GRPO and the logging GRPO baseline: stash the gathered per-function
    rewards, split completions at `</SLATE>`, compute phase advantages and log them."""

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._phase_rewards = rewards_per_func  # (B_global, 2), gathered across processes
        return rewards_per_func

    def _phase_batch(self, output: dict, phase_lambda: float, scale: str):
        """Local (B, T) routed advantages for `output`, logging the phase metrics."""
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        a_gen, a_rank = phase_advantages_per_func(self._phase_rewards, group_size, scale)
        completion_ids = output["completion_ids"]
        local = slice(
            self.accelerator.process_index * completion_ids.size(0),
            (self.accelerator.process_index + 1) * completion_ids.size(0),
        )  # the same slice TRL takes of its gathered (B_global,) advantages
        token_mask = output["completion_mask"]
        if "tool_mask" in output:
            token_mask = token_mask * output["tool_mask"]
        lengths = output["completion_mask"].sum(dim=1).tolist()  # completions are right-padded
        ids = [row[:n] for row, n in zip(completion_ids.tolist(), lengths)]
        counts = slate_token_counts(ids, self._decode_batch)
        slate_mask = slate_mask_from_counts(counts, completion_ids.size(1), completion_ids.device)
        advantages = route_advantages(a_gen[local], a_rank[local], slate_mask, phase_lambda)
        self._log_phase_metrics(mode, a_gen, a_rank, a_gen[local], a_rank[local], slate_mask, token_mask, counts,
                                phase_lambda)
        return advantages

    def _decode_batch(self, id_lists):
        # The same decoding TRL gives the reward functions, so the split matches what they parsed.
        return self.processing_class.batch_decode(id_lists, skip_special_tokens=True)

    def _log_phase_metrics(self, mode, a_gen, a_rank, local_gen, local_rank, slate_mask, token_mask, counts,
                           phase_lambda):
        metrics = self._metrics[mode]
        rewards = self._phase_rewards
        metrics["phase/reward_gen_mean"].append(torch.nanmean(rewards[:, 0]).item())
        metrics["phase/reward_rank_mean"].append(torch.nanmean(rewards[:, 1]).item())
        for name, adv in (("gen", a_gen), ("rank", a_rank)):  # global, one value per completion
            metrics[f"phase/adv_{name}_abs_mean"].append(adv.abs().mean().item())
            metrics[f"phase/adv_{name}_std"].append(adv.std().item() if adv.numel() > 1 else 0.0)
        by_phase = phase_conflict_counts(local_gen, local_rank, slate_mask, token_mask, phase_lambda)
        closed = float(sum(c is not None for c in counts))
        local = torch.cat([by_phase, torch.tensor([closed, float(len(counts))], device=by_phase.device)])
        slate_conf, rank_conf, slate_tok, rank_tok, closed, rows = self.accelerator.reduce(local, "sum")
        tokens = (slate_tok + rank_tok).clamp(min=1.0)
        metrics["phase/conflict_rate"].append(((slate_conf + rank_conf) / tokens).item())
        metrics["phase/conflict_rate_gen"].append((slate_conf / slate_tok.clamp(min=1.0)).item())
        metrics["phase/conflict_rate_rank"].append((rank_conf / rank_tok.clamp(min=1.0)).item())
        metrics["phase/slate_token_frac"].append((slate_tok / tokens).item())
        metrics["phase/slate_closed_frac"].append((closed / rows.clamp(min=1.0)).item())


class FGRPOTrainer(SharedPrefixMixin, PhaseMixin, GRPOTrainer):
    """GRPOTrainer with per-phase advantages. `reward_funcs` = [coverage, utility]."""

    def __init__(self, model, reward_funcs=None, args: GRPOConfig | None = None, *rest, **kwargs):
        # A plain GRPOConfig works too: phase_lambda 1, phase_scale "none".
        args = args if args is not None else FGRPOConfig("fgrpo-output")
        self.phase_lambda = float(getattr(args, "phase_lambda", 1.0))
        self.phase_scale = getattr(args, "phase_scale", "none")
        check_fgrpo_args(args, reward_funcs, self.phase_lambda, self.phase_scale)
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        # TRL logs "reward" as the weighted sum; weighting by lambda keeps it comparable with GRPO's.
        self.reward_weights = torch.tensor([1.0, self.phase_lambda], dtype=torch.float32)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        output["advantages"] = self._phase_batch(output, self.phase_lambda, self.phase_scale)
        return output


class GRPOPhaseMetricsTrainer(SharedPrefixMixin, PhaseMixin, GRPOTrainer):
    """TRL's GRPO, advantages untouched, logging the same phase metrics as F-GRPO
    (conflict rate, phase advantages) so the two methods' curves line up."""

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        scale = "none" if self.scale_rewards == "none" else "group"
        self._phase_batch(output, float(self.reward_weights[1]), scale)
        return output


class SharedPrefixGRPOTrainer(SharedPrefixMixin, GRPOTrainer):
    """TRL's GRPO with only the log-prob forward changed (when `args.shared_prefix`): the bare
    baseline of `make_trainer(..., phase_metrics=False)`."""


def check_fgrpo_args(args, reward_funcs, phase_lambda: float, phase_scale: str) -> None:
    if not isinstance(reward_funcs, (list, tuple)) or len(reward_funcs) != 2:
        raise ValueError("F-GRPO needs exactly two reward functions: [coverage (slate), utility (ranking)]")
    if args.loss_type not in TOKEN_LEVEL_LOSSES:
        raise ValueError(
            f"F-GRPO needs a token-level loss to route per-phase advantages; loss_type={args.loss_type!r} "
            f"is not one. Allowed: {', '.join(TOKEN_LEVEL_LOSSES)}"
        )
    if args.importance_sampling_level != "token":
        raise ValueError(
            "F-GRPO needs importance_sampling_level='token' (a sequence-level ratio mixes the two phases); "
            f"got {args.importance_sampling_level!r}. Allowed loss types: {', '.join(TOKEN_LEVEL_LOSSES)}"
        )
    if args.multi_objective_aggregation != "sum_then_normalize":
        raise ValueError("F-GRPO computes its own per-phase advantages; leave multi_objective_aggregation at "
                         "'sum_then_normalize' (TRL's aggregate is discarded)")
    if phase_scale not in PHASE_SCALES:
        raise ValueError(f"phase_scale must be one of {PHASE_SCALES}, got {phase_scale!r}")
    if args.reward_weights is not None and [float(w) for w in args.reward_weights] != [1.0, phase_lambda]:
        raise ValueError("F-GRPO weighs the phases with phase_lambda; leave reward_weights unset")


# ---------------------------------------------------------------- one set-up for notebooks

CPU_FRIENDLY = dict(bf16=False, activation_checkpointing=False, report_to=[], save_strategy="no")


def make_trainer(method: str, model, tokenizer, train_dataset, reward_funcs, *, phase_lambda: float = 1.0,
                 scale: str = "none", phase_metrics: bool = True, peft_config=None, callbacks=None,
                 rollout_func=None, **config_kwargs):
    """F-GRPO or the GRPO baseline on the same footing.

    method "fgrpo": FGRPOTrainer with phase_lambda and phase_scale=scale.
    method "grpo": TRL's GRPO with the joint reward R_gen + lambda * R_rank
    (reward_weights [1, lambda], scale_rewards=scale); `phase_metrics` picks the
    subclass that only adds F-GRPO's logs, False gives the bare GRPOTrainer.
    `config_kwargs` go to the config; CPU-friendly defaults (no bf16, no saving, no
    reporting), loss_type "dr_grpo" (constant length normaliser) and shared_prefix=True
    (each prompt forwarded once per group, for both methods) apply unless given. With
    shared_prefix=False the forward is TRL's, and phase_metrics=False gives TRL's class itself.
    """
    reward_funcs = list(reward_funcs)
    kwargs = {**CPU_FRIENDLY, "loss_type": "dr_grpo", "shared_prefix": True, **config_kwargs}
    if method == "fgrpo":
        args = FGRPOConfig(phase_lambda=phase_lambda, phase_scale=scale, **kwargs)
        trainer_cls = FGRPOTrainer
    elif method == "grpo":
        args = SharedPrefixGRPOConfig(reward_weights=[1.0, phase_lambda], scale_rewards=scale, **kwargs)
        bare = SharedPrefixGRPOTrainer if args.shared_prefix else GRPOTrainer
        trainer_cls = GRPOPhaseMetricsTrainer if phase_metrics else bare
    else:
        raise ValueError(f"method must be 'fgrpo' or 'grpo', got {method!r}")
    return trainer_cls(
        model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
        processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks, rollout_func=rollout_func,
    )

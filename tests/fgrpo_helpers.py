"""Tiny, fast set-up shared by the trainer tests and the two-process script.

Completions are fixed (TRL's `rollout_func` hook) so that two trainers, or one and two
processes, see exactly the same rollouts; the rewards are local stand-ins so these tests
do not depend on fgrpo_nb.rewards.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is flagged experimental

import torch
from datasets import Dataset

from fgrpo_nb.models import load_model
from fgrpo_nb.rollout import RANK_CLOSE, RANK_OPEN, SLATE_CLOSE, SLATE_OPEN

torch.set_flush_denormal(True)

ITEMS = [f"i{j}" for j in range(1, 9)]
USERS = [f"u{j}" for j in range(1, 5)]
VOCAB = ["Q:", *USERS, *ITEMS]
RELEVANT = {"u1": ["i1", "i2"], "u2": ["i3"], "u3": ["i5", "i6"], "u4": ["i8"]}

# Varied lengths and phases on purpose: a rollout without `</SLATE>`, one with nothing
# ranked, one with trailing text after `</RANK>`.
ROLLOUTS = [
    "<SLATE> i1 i2 i3 </SLATE> <RANK> i2 i1 </RANK>",
    "<SLATE> i4 i5 </SLATE> <RANK> i5 </RANK>",
    "<SLATE> i3 i6 i8 i1 </SLATE> <RANK> i8 i3 i6 </RANK>",
    "<SLATE> i7 i2",
    "<SLATE> i6 </SLATE> <RANK> </RANK>",
    "<SLATE> i5 i1 </SLATE> <RANK> i1 i5 </RANK> i2",
]


def split_rollout(text: str) -> tuple[list[str], list[str]]:
    slate = text.split(SLATE_OPEN, 1)[-1].split(SLATE_CLOSE, 1)[0].split() if SLATE_CLOSE in text else []
    rank = text.split(RANK_OPEN, 1)[-1].split(RANK_CLOSE, 1)[0].split() if RANK_CLOSE in text else []
    return slate, rank


def coverage(completions, relevant, **_):
    return [len(set(split_rollout(c)[0]) & set(r)) / len(r) for c, r in zip(completions, relevant)]


def utility(completions, relevant, **_):
    def first_hit(rank, rel):
        return next((1.0 / (1 + i) for i, x in enumerate(rank) if x in rel), 0.0)

    return [first_hit(split_rollout(c)[1], r) for c, r in zip(completions, relevant)]


def joint(completions, relevant, **_):
    """One reward used for both phases in the equivalence test: depends on both parts."""
    cov, uti = coverage(completions, relevant), utility(completions, relevant)
    return [c + 0.5 * u for c, u in zip(cov, uti)]


def tiny_model(seed: int = 0, **config):
    return load_model("tiny", vocab_tokens=VOCAB, seed=seed, hidden=32, layers=2, heads=2, max_len=64, **config)


def dataset(n_prompts: int = 4) -> Dataset:
    users = [USERS[j % len(USERS)] for j in range(n_prompts)]
    return Dataset.from_dict({"prompt": [f"Q: {u}" for u in users], "relevant": [RELEVANT[u] for u in users]})


def fixed_rollouts(tokenizer, offset: int = 0):
    """A rollout_func choosing each completion by its global position in the batch, so a
    two-process run and a one-process run see the same completions in the same places."""

    def rollout_func(prompts, trainer):
        start = trainer.accelerator.process_index * len(prompts) + offset
        texts = [ROLLOUTS[(start + i) % len(ROLLOUTS)] for i in range(len(prompts))]
        return {
            "prompt_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts],
            "completion_ids": [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                               for t in texts],
            "logprobs": None,
        }

    return rollout_func


def config_kwargs(**overrides) -> dict:
    base = dict(
        output_dir=os.environ.get("FGRPO_TEST_OUT", "runs/test-trainer"),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=16,
        learning_rate=1e-2,
        max_steps=2,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,  # TRL turns it on by default; pointless and slow on CPU
        report_to=[],
        save_strategy="no",
        seed=0,
        beta=0.0,
        disable_tqdm=True,
    )
    return {**base, **overrides}


def loss_and_grads(trainer):
    """Loss, gradients and inputs of one training batch, without stepping the optimiser."""
    torch.manual_seed(123)  # the buffer shuffle draws from the global RNG
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps  # set by train()
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.model.zero_grad()
    return loss.detach(), grads, inputs


def trained_params(trainer):
    """Every parameter after `trainer.train()` from a fixed seed."""
    torch.manual_seed(7)
    trainer.train()
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

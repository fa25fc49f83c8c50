"""How fast can the tiny ID model learn the rollout format under each prompt style?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sft_label_styles.py [--steps 300]

A plain next-token SFT loop (completion tokens only, AdamW, batch 32, warm-up) on the same
MovieLens-1M episodes and teacher targets as notebook 03, for three settings:
`ids` labels with shuffled slates, `slots` labels with shuffled slates, and `slots` labels
with pool-ordered slates (the default). It prints the completion loss every 50 steps and
the NLL of the first ranked label (the relevant item): log(20) ~ 3.0 means the model has not
learned which slot holds it. These numbers are why notebook 03 uses slots + pool order.
"""

from __future__ import annotations

import argparse
import time

import torch

from fgrpo_nb.data import build_episodes, item_popularity
from fgrpo_nb.experiment import ExperimentConfig, sft_records, tiny_vocab
from fgrpo_nb.models import build_tiny
from fgrpo_nb.rollout import RANK_OPEN
from fgrpo_nb.teachers import make_teacher

SETTINGS = (("ids", "shuffled"), ("slots", "shuffled"), ("slots", "pool"))


def batches(prompts, completions, size: int, pad: int):
    """Left-padded (input_ids, attention_mask, labels) with the loss on completion tokens only."""
    for start in range(0, len(prompts) - size + 1, size):
        p, c = prompts[start:start + size], completions[start:start + size]
        width = max(len(a) + len(b) for a, b in zip(p, c))
        ids = torch.tensor([[pad] * (width - len(a) - len(b)) + a + b for a, b in zip(p, c)])
        labels = torch.tensor([[-100] * (width - len(b)) + b for b in c])
        yield ids, (ids != pad).long(), labels


def run(style: str, slate_order: str, episodes, teacher, steps: int, lr: float) -> None:
    cfg = ExperimentConfig(style=style, sft_slate_order=slate_order)
    rows = sft_records(episodes["train"][: steps * 32], teacher, cfg, seed=0)
    model, tok = build_tiny(tiny_vocab([e for split in episodes.values() for e in split]), seed=0)
    model.train()
    prompts = [tok(r["prompt"])["input_ids"] for r in rows]
    completions = [tok(r["completion"])["input_ids"] for r in rows]
    rank_open = tok.convert_tokens_to_ids(RANK_OPEN)
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    start = time.perf_counter()
    for step, (ids, mask, labels) in enumerate(batches(prompts, completions, 32, tok.pad_token_id)):
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), warmup.step(), opt.zero_grad()
        if step % 50 == 0 or step == steps - 1:
            rows_at = [(r, (ids[r] == rank_open).nonzero()[-1].item()) for r in range(len(ids))]
            target_nll = sum(-out.logits[r, p].log_softmax(-1)[ids[r, p + 1]].item() for r, p in rows_at) / len(rows_at)
            print(f"{style:5s} {slate_order:8s} step {step:4d}  loss {out.loss.item():.3f}  "
                  f"first-ranked NLL {target_nll:.3f}  {time.perf_counter() - start:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    episodes = build_episodes("ml-1m", seed=0, n_train=args.steps * 32, n_val=10, n_test=10)
    teacher = make_teacher("popularity", item_popularity("ml-1m"))
    for style, slate_order in SETTINGS:
        run(style, slate_order, episodes, teacher, args.steps, args.lr)


if __name__ == "__main__":
    main()

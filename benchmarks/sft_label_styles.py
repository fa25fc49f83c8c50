"""Which SFT targets and prompts let the tiny ID model learn format *and* content on a CPU?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sft_label_styles.py [--steps 600] [--settings all]

A plain next-token SFT loop (completion tokens only, EOS appended as TRL does, AdamW, batch
32, warm-up then cosine) on MovieLens-1M training episodes with popularity-teacher targets,
then greedy decoding of 300 validation episodes scored with the project's metrics. Settings
(style, slate order, ranking filler order, item features):

- `ids/shuffled`: candidate ids as labels, shuffled slates (must learn to copy ids);
- `slots/shuffled`: slot labels, shuffled slates;
- `slots/teacher`: slot labels, pool-ordered slate, ranking filler in teacher order;
- `slots/pool`: the same with the ranking filler in pool order;
- `slots/pool+pop`: and a popularity-decile word after each candidate id (notebook 03's default).

It prints, every `--every` steps, the completion loss and the greedy ValidRatio, Hit@1 and
SlateRecall on validation. These numbers are why notebook 03 uses the last setting.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from fgrpo_nb.data import build_episodes, item_popularity
from fgrpo_nb.experiment import ExperimentConfig, episode_prompt, evaluate_texts, generate_greedy, sft_records, tiny_vocab
from fgrpo_nb.metrics import summarise
from fgrpo_nb.models import build_tiny
from fgrpo_nb.teachers import make_teacher

SETTINGS = {
    "ids/shuffled": dict(style="ids", sft_slate_order="shuffled"),
    "slots/shuffled": dict(style="slots", sft_slate_order="shuffled"),
    "slots/teacher": dict(style="slots", sft_slate_order="pool", sft_rank_filler="teacher"),
    "slots/pool": dict(style="slots", sft_slate_order="pool", sft_rank_filler="pool"),
    "slots/pool+pop": dict(style="slots", sft_slate_order="pool", sft_rank_filler="pool", item_features="popularity"),
}


def batches(prompts, completions, size: int, pad: int):
    """Left-padded (input_ids, attention_mask, labels) with the loss on completion tokens only."""
    for start in range(0, len(prompts) - size + 1, size):
        p, c = prompts[start:start + size], completions[start:start + size]
        width = max(len(a) + len(b) for a, b in zip(p, c))
        ids = torch.tensor([[pad] * (width - len(a) - len(b)) + a + b for a, b in zip(p, c)])
        labels = torch.tensor([[-100] * (width - len(b)) + b for b in c])
        yield ids, (ids != pad).long(), labels


def run(name: str, episodes, teacher, steps: int, lr: float, every: int) -> None:
    cfg = ExperimentConfig(**SETTINGS[name])
    rows = sft_records(episodes["train"][: steps * 32], teacher, cfg, seed=0)
    model, tok = build_tiny(tiny_vocab([e for split in episodes.values() for e in split]), seed=0)
    prompts = [tok(r["prompt"])["input_ids"] for r in rows]
    completions = [tok(r["completion"])["input_ids"] + [tok.eos_token_id] for r in rows]
    val_prompts = [episode_prompt(e, cfg) for e in episodes["validation"]]
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start = time.perf_counter()
    model.train()
    for step, (ids, mask, labels) in enumerate(batches(prompts, completions, 32, tok.pad_token_id), start=1):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), schedule.step(), opt.zero_grad()
        if step % every == 0 or step == steps:
            texts = generate_greedy(model, tok, val_prompts, 24, progress=False)
            s = summarise(evaluate_texts(texts, episodes["validation"], cfg))
            model.train()
            print(f"{name:15s} step {step:4d}  loss {loss.item():.3f}  valid {s['ValidRatio']:.3f}  "
                  f"Hit@1 {s['Hit@1']:.3f}  SlateRecall {s['SlateRecall']:.3f}  {time.perf_counter() - start:.0f} s",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    episodes = build_episodes("ml-1m", seed=0, n_train=args.steps * 32, n_val=300, n_test=10)
    teacher = make_teacher("popularity", item_popularity("ml-1m"))
    for name in args.settings:
        run(name, episodes, teacher, args.steps, args.lr, args.every)


if __name__ == "__main__":
    main()

"""What goes wrong in sampled rollouts of a finished run's SFT checkpoint, per temperature.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sample_errors.py --run runs/cpu 1.0 0.7 0.5

Samples `--group` rollouts for each of the first `--users` validation users (RL's view of the
policy: temperature sampling, not greedy decoding) and prints per temperature the valid share,
the slate length, how often the slate holds a relevant item, Hit@1, and the most common parse
errors (`fgrpo_nb.rollout` codes). Validation users only.
"""

from __future__ import annotations

import argparse
import collections
import json
from dataclasses import fields
from pathlib import Path

import torch

from fgrpo_nb.data import load_episodes
from fgrpo_nb.experiment import ExperimentConfig, episode_labels, episode_prompt, load_checkpoint
from fgrpo_nb.rollout import parse_rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("temperatures", nargs="+", type=float)
    parser.add_argument("--run", default="runs/cpu")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--unit", default="seed0/sft", help="unit folder under train/<dataset>/")
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--group", type=int, default=8)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    unit = Path(args.run) / "train" / args.dataset / args.unit
    stored = json.loads((unit / "done.json").read_text())["config"]
    cfg = ExperimentConfig(**{f.name: stored[f.name] for f in fields(ExperimentConfig) if f.name in stored})
    episodes = load_episodes(args.run, args.dataset)["validation"][: args.users]
    model, tokenizer = load_checkpoint(unit / "model")
    model.eval()
    enc = tokenizer([episode_prompt(e, cfg) for e in episodes], return_tensors="pt", padding=True,
                    add_special_tokens=False)
    for temperature in args.temperatures:
        torch.manual_seed(0)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=cfg.max_completion_length, do_sample=True,
                                 temperature=temperature, top_k=0, top_p=1.0,
                                 num_return_sequences=args.group, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        errors, valid, lengths, covered, first_hits = collections.Counter(), 0, [], 0, 0
        for i, text in enumerate(texts):
            pool, relevant = episode_labels(episodes[i // args.group], cfg.style)
            rollout = parse_rollout(text, pool, n=cfg.n, k=cfg.k)
            valid += rollout.valid
            errors.update(rollout.errors)
            if rollout.slate_valid:
                lengths.append(len(rollout.slate))
                covered += bool(set(rollout.slate) & set(relevant))
            first_hits += bool(rollout.valid and rollout.ranking and rollout.ranking[0] in relevant)
        n = len(texts)
        print(f"T={temperature:g}: {n} rollouts, valid {valid / n:.2f}, slate valid {len(lengths) / n:.2f}, "
              f"slate length {sum(lengths) / max(1, len(lengths)):.1f}, slate holds a relevant item "
              f"{covered / max(1, len(lengths)):.2f}, Hit@1 {first_hits / n:.3f}; errors "
              + ", ".join(f"{code} {count / n:.2f}" for code, count in errors.most_common(5)), flush=True)


if __name__ == "__main__":
    main()

"""Tune the RL settings of notebook 03 on validation users, from a finished run's SFT checkpoint.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune_rl.py --run runs/cpu \\
        3e-4:8:300:grpo 3e-4:8:300:fgrpo grpo,beta=0.05,temperature=0.7

Each spec is `lr:prompts_per_step:rl_steps:method`, or `method,key=value,...` with any
ExperimentConfig RL fields (`lr`, `rl_steps`, `beta`, `scale`, `temperature`, ...);
everything else is the run's own configuration (read from its SFT unit's done.json). Every spec trains from the same SFT
checkpoint (seed 0) into `<out>/<spec>/` and is decoded greedily on the first `--n-val`
validation episodes, never on test. Prints one line per spec with the SFT line first, so
"did RL improve on its start?" is read off directly.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from fgrpo_nb.data import load_episodes
from fgrpo_nb.experiment import SFT_FIELDS, ExperimentConfig, evaluate_checkpoint, run_rl

METRICS = ("Hit@1", "N@5", "SlateRecall", "ValidRatio")


def parse_spec(spec: str, base: ExperimentConfig) -> tuple[str, ExperimentConfig]:
    """`lr:prompts:steps:method` or `method,key=value,...` -> (method, config)."""
    if ":" in spec:
        lr, prompts, steps, method = spec.split(":")
        return method, replace(base, lr=float(lr), prompts_per_step=int(prompts), rl_steps=int(steps))
    method, *pairs = spec.split(",")
    types = {f.name: type(getattr(base, f.name)) for f in fields(ExperimentConfig)}
    changes = {}
    for pair in pairs:
        key, value = pair.split("=")
        if key not in types or key in SFT_FIELDS:
            raise SystemExit(f"{key!r} is not an RL field of ExperimentConfig (SFT fields need their own SFT run)")
        changes[key] = types[key](value)
    return method, replace(base, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="+", help="lr:prompts_per_step:rl_steps:method or method,key=value,...")
    parser.add_argument("--run", default="runs/cpu")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--out", default="runs/tune_rl")
    parser.add_argument("--n-val", type=int, default=1000)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    sft = Path(args.run) / "train" / args.dataset / "seed0" / "sft"
    stored = json.loads((sft / "done.json").read_text())["config"]
    cfg0 = ExperimentConfig(**{f.name: stored[f.name] for f in fields(ExperimentConfig) if f.name in stored})
    episodes = load_episodes(args.run, args.dataset)
    val = episodes["validation"][: args.n_val]
    (Path(args.out) / "sft").mkdir(parents=True, exist_ok=True)
    sft_val = evaluate_checkpoint(sft / "model", val, cfg0, Path(args.out) / "sft", "validation")
    print("SFT", {k: round(sft_val[k], 3) for k in METRICS}, flush=True)
    for spec in args.specs:
        method, cfg = parse_spec(spec, cfg0)
        out = Path(args.out) / spec.replace(":", "_").replace(",", "_").replace("=", "")
        start = time.perf_counter()
        model_dir = run_rl(method, cfg, episodes["train"], sft / "model", out, seed=0)
        summary = evaluate_checkpoint(model_dir, val, cfg, out, "validation")
        print(spec, {k: round(summary[k], 3) for k in METRICS}, f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()

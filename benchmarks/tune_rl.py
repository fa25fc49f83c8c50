"""Tune the RL settings of notebook 03 on validation users, from a finished run's SFT checkpoint.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune_rl.py --run runs/cpu \\
        3e-4:8:300:grpo 3e-4:8:300:fgrpo grpo,beta=0.05,temperature=0.7

Each spec is `lr:prompts_per_step:rl_steps:method`, or `method,key=value,...` with any
ExperimentConfig RL fields (`lr`, `rl_steps`, `beta`, `scale`, `temperature`, ...);
everything else is the run's own configuration (read from its SFT unit's done.json).

A run folder with episodes but no SFT unit yet (e.g. after `python -m fgrpo_nb.pipeline
--profile cpu -p run_name tune --only 01`) gets one with `--sft key=value ...`: the cpu
profile's SFT settings with those changes (e.g. `--sft sft_epochs=2.0` for a stronger start). Every spec trains from the same SFT
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


def with_changes(base: ExperimentConfig, changes: list[str], forbidden=()) -> ExperimentConfig:
    """`base` with KEY=VALUE changes, each value cast to the field's type."""
    types = {f.name: type(getattr(base, f.name)) for f in fields(ExperimentConfig)}
    pairs = dict(change.split("=") for change in changes)
    bad = sorted(key for key in pairs if key not in types or key in forbidden)
    if bad:
        raise SystemExit(f"{bad}: not ExperimentConfig fields{' this can change' if forbidden else ''} "
                         "(SFT fields need their own SFT unit: --sft)")
    return replace(base, **{key: types[key](value) for key, value in pairs.items()})


def parse_spec(spec: str, base: ExperimentConfig) -> tuple[str, ExperimentConfig]:
    """`lr:prompts:steps:method` or `method,key=value,...` -> (method, config)."""
    if ":" in spec:
        lr, prompts, steps, method = spec.split(":")
        return method, replace(base, lr=float(lr), prompts_per_step=int(prompts), rl_steps=int(steps))
    method, *changes = spec.split(",")
    return method, with_changes(base, changes, forbidden=SFT_FIELDS)


def sft_config(changes: list[str]) -> ExperimentConfig:
    """The cpu profile's ExperimentConfig values with `changes` (KEY=VALUE strings)."""
    from fgrpo_nb.pipeline import PROFILES

    names = {f.name for f in fields(ExperimentConfig)}
    return with_changes(ExperimentConfig(**{k: v for k, v in PROFILES["cpu"].items() if k in names}), changes)


def train_sft(run: Path, dataset: str, episodes: dict, changes: list[str]) -> None:
    """The cpu profile's SFT (seed 0) with `changes`, into <run>/train/<dataset>/seed0/sft."""
    from fgrpo_nb.data import item_popularity
    from fgrpo_nb.experiment import run_sft, tiny_vocab, unit_dir
    from fgrpo_nb.teachers import make_teacher

    cfg = sft_config(changes)
    vocab = tiny_vocab([e for split in episodes.values() for e in split])
    teacher = make_teacher("popularity", item_popularity(dataset))
    run_sft(cfg, episodes["train"], vocab, teacher, unit_dir(run, dataset, 0, "sft"), seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="+", help="lr:prompts_per_step:rl_steps:method or method,key=value,...")
    parser.add_argument("--run", default="runs/cpu")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--out", default="runs/tune_rl")
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--sft", nargs="*", metavar="KEY=VALUE",
                        help="train the run's SFT unit first if it has none: the cpu profile's SFT with these changes")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    sft = Path(args.run) / "train" / args.dataset / "seed0" / "sft"
    if not (sft / "done.json").exists():
        if args.sft is None:
            raise SystemExit(f"{sft} has no finished SFT unit: pass --sft (optionally with KEY=VALUE changes)")
        train_sft(Path(args.run), args.dataset, load_episodes(args.run, args.dataset), args.sft)
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

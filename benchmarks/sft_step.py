"""SFT step time of the cpu profile's tiny model, with and without scoring only the
completion's positions in TRL's fused LM head (`experiment.completion_positions_only`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sft_step.py --run runs/cpu --steps 20

Needs notebook 01's episodes in the run folder (`python -m fgrpo_nb.pipeline --profile cpu
--only 01`). Trains `--steps` SFT steps of the cpu profile's settings each way into a scratch
folder and prints the seconds per step and the logged losses (equal up to float rounding).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import fields, replace
from pathlib import Path
from unittest import mock

from fgrpo_nb import experiment
from fgrpo_nb.data import item_popularity, load_episodes
from fgrpo_nb.experiment import ExperimentConfig, run_sft, tiny_vocab
from fgrpo_nb.pipeline import PROFILES
from fgrpo_nb.teachers import make_teacher


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/cpu", help="run folder with notebook 01's episodes")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args(argv)
    names = {f.name for f in fields(ExperimentConfig)}
    cfg = ExperimentConfig(**{k: v for k, v in PROFILES["cpu"].items() if k in names})
    cfg = replace(cfg, sft_episodes=args.steps * cfg.sft_batch_size, sft_epochs=1.0)
    episodes = load_episodes(Path(args.run), "ml-1m")
    vocab = tiny_vocab([e for split in episodes.values() for e in split])
    teacher = make_teacher("popularity", item_popularity("ml-1m"))
    for label, only_completions in (("every position scored", False), ("completion positions only", True)):
        patch = nullcontext() if only_completions else mock.patch.object(experiment, "completion_positions_only",
                                                                          nullcontext)
        with tempfile.TemporaryDirectory() as scratch, patch:
            start = time.perf_counter()
            run_sft(cfg, episodes["train"], vocab, teacher, Path(scratch), 0)
            seconds = time.perf_counter() - start
            losses = [r["loss"] for r in map(json.loads, (Path(scratch) / "log.jsonl").open()) if "loss" in r]
        print(f"{label:<26} {seconds / args.steps:.2f} s a step (with model set-up), losses {losses}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

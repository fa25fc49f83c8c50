"""Step time of F-GRPO against TRL's GRPO on the same tiny model and batch.

Both trainers start from copies of one model, sample real completions, and take
optimizer steps in alternation (after warm-up) so that drifts in machine load hit both
equally. F-GRPO's extra work is the `</SLATE>` split (a few batched decodes) and the
phase statistics; the goal is a ratio of at most 1.03.

usage: OMP_NUM_THREADS=1 python benchmarks/step_time.py [--steps 20] [--hidden 128] ...
The last line is `fgrpo/grpo step time ratio: X.XX`.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import resource
import statistics
import time
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "1")  # STACK.md: default threads made CPU runs erratic

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

from fgrpo_nb.models import load_model  # noqa: E402
from fgrpo_nb.rollout import RANK_CLOSE, RANK_OPEN, SLATE_CLOSE, SLATE_OPEN  # noqa: E402
from fgrpo_nb.trainer import FGRPOTrainer, SharedPrefixGRPOTrainer, make_trainer, slate_token_counts  # noqa: E402

torch.set_flush_denormal(True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per method")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--G", type=int, default=8, help="completions per prompt")
    p.add_argument("--max-completion-length", type=int, default=24)
    p.add_argument("--model", default="tiny", help="tiny, smollm2-135m, or a hub id / folder")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--items", type=int, default=200, help="candidate ids in the vocabulary")
    p.add_argument("--pool", type=int, default=20, help="candidates shown per prompt")
    return p.parse_args()


def rec_dataset(items: list[str], n_prompts: int, pool: int, seed: int = 0) -> Dataset:
    """Prompts shaped like the recommendation task: a history, then the candidate pool."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_prompts):
        cands = rng.sample(items, pool)
        rows.append({"prompt": "history: " + " ".join(rng.sample(items, 10)) + " pool: " + " ".join(cands),
                     "pool": cands, "relevant": cands[:3]})
    return Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]})


def _phases(text: str):
    slate = text.split(SLATE_OPEN, 1)[-1].split(SLATE_CLOSE, 1)[0].split() if SLATE_CLOSE in text else []
    rank = text.split(RANK_OPEN, 1)[-1].split(RANK_CLOSE, 1)[0].split() if RANK_CLOSE in text else []
    return slate, rank


def coverage(completions, relevant, **_):
    # Random models rarely close a slate; count any relevant id written as partial coverage
    # so rewards vary and the advantage path does real work.
    return [len(set(c.split()) & set(r)) / len(r) for c, r in zip(completions, relevant)]


def utility(completions, relevant, **_):
    return [float(bool(_phases(c)[1]) and _phases(c)[1][0] in r) for c, r in zip(completions, relevant)]


def stepper(trainer):
    """One optimizer step of `trainer`, the way Trainer.train takes it (generation included)."""
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = iter(trainer.get_train_dataloader())
    count = 0

    def step() -> float:
        nonlocal batches, count
        # Same sampling seed per step index for both methods: similar completion lengths,
        # so the ratio measures the methods rather than sampling luck.
        torch.manual_seed(count)
        count += 1
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(trainer.get_train_dataloader())
            batch = next(batches)
        start = time.perf_counter()
        trainer.training_step(model, batch, None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def traced_peak(step) -> int:
    tracemalloc.start()
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def split_cost_ms(trainer, items, batch: int, length: int, repeats: int = 20) -> float:
    rng = random.Random(0)
    rows = []
    for _ in range(batch):
        slate = rng.sample(items, (length - 4) // 2)
        text = " ".join([SLATE_OPEN, *slate, SLATE_CLOSE, RANK_OPEN, *slate[: (length - 4) // 2 - 1], RANK_CLOSE])
        rows.append(trainer.processing_class(text, add_special_tokens=False)["input_ids"])  # ~length words
    start = time.perf_counter()
    for _ in range(repeats):
        counts = slate_token_counts(rows, trainer._decode_batch)
    assert all(c is not None for c in counts)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    a = parse_args()
    items = [f"i{j}" for j in range(a.items)]
    if a.model == "tiny":
        model, tok = load_model("tiny", vocab_tokens=["history:", "pool:", *items], hidden=a.hidden,
                                layers=a.layers, heads=4, seed=0)
    else:
        model, tok = load_model(a.model)
    data = rec_dataset(items, n_prompts=a.prompts * 4, pool=a.pool)
    common = dict(per_device_train_batch_size=a.prompts * a.G, num_generations=a.G,
                  max_completion_length=a.max_completion_length, use_cpu=True, output_dir="runs/benchmark",
                  disable_tqdm=True, seed=0)
    trainers = {
        "fgrpo": make_trainer("fgrpo", copy.deepcopy(model), tok, data, [coverage, utility], **common),
        "grpo": make_trainer("grpo", copy.deepcopy(model), tok, data, [coverage, utility], phase_metrics=False,
                             **common),
    }
    assert isinstance(trainers["fgrpo"], FGRPOTrainer) and type(trainers["grpo"]) is SharedPrefixGRPOTrainer
    steps = {name: stepper(t) for name, t in trainers.items()}
    for _ in range(a.warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for i in range(a.steps):
        order = list(steps) if i % 2 == 0 else list(steps)[::-1]  # neither method always goes first
        for name in order:
            times[name].append(steps[name]())
    # Traced apart (tracing slows steps), and for the tiny model only: a real LLM step is minutes under tracing.
    peak_heap = {name: traced_peak(step) for name, step in steps.items()} if a.model == "tiny" else {}
    closed = trainers["fgrpo"]._metrics["train"]["phase/slate_closed_frac"]

    n_params = sum(p.numel() for p in model.parameters())
    print(f"{a.model} model: {n_params / 1e6:.2f}M params (hidden {model.config.hidden_size}, "
          f"{model.config.num_hidden_layers} layers, vocab {len(tok)}); "
          f"{a.prompts} prompts x G={a.G}, <= {a.max_completion_length} completion tokens, "
          f"threads {torch.get_num_threads()}")
    for name, ts in times.items():
        print(f"{name:6s} s/step: median {statistics.median(ts):.4f}  mean {statistics.mean(ts):.4f}  "
              f"min {min(ts):.4f}  (n={len(ts)})")
    print("peak python heap in one step (tracemalloc): "
          + ", ".join(f"{name} {peak / 2**20:.1f} MiB" for name, peak in peak_heap.items())
          + f"; peak RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    # A random model seldom closes its slate, so the timed steps barely exercise the split:
    # time it apart on well-formed rollouts of the same batch shape.
    split_ms = split_cost_ms(trainers["fgrpo"], items, a.prompts * a.G, a.max_completion_length)
    print(f"completions with a closed slate in timed steps: {statistics.mean(closed):.1%}; "
          f"`</SLATE>` split on {a.prompts * a.G} well-formed rollouts: {split_ms:.2f} ms per batch")
    # Median of per-round ratios: the two steps of a round share the machine's momentary load.
    ratio = statistics.median(f / g for f, g in zip(times["fgrpo"], times["grpo"]))
    print(f"fgrpo/grpo step time ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()

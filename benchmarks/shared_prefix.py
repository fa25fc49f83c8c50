"""Step time and peak memory of the shared-prefix forward against the plain path.

One training step here is the log-prob forward of G completions per prompt plus its
backward (a policy-gradient-shaped loss), which is what dominates a GRPO optimizer step on
CPU. Plain and shared steps alternate in one process, after warm-up, so drifts in machine
load hit both equally. Peak memory is the largest resident-set growth over the step,
sampled every 5 ms, after
returning freed heap to the OS (glibc `malloc_trim`).

`--trainer` times whole optimizer steps of the GRPO baseline as `make_trainer` builds it
(sampling, loss, backward, update) with `shared_prefix` on and off, on the tiny model
(`--hidden`, `--layers`): the saving a run actually sees. Time in TRL's generation call
(prefilled once per prompt when on) is printed apart.

usage: OMP_NUM_THREADS=1 python benchmarks/shared_prefix.py [--model smollm2-135m|shaped]
       [--P 100 300 600] [--R 40] [--G 8] [--prompts 1] [--reps 3] [--layers N]
       OMP_NUM_THREADS=1 python benchmarks/shared_prefix.py --trainer [--P 100 300] [--R 20]
       [--prompts 2] [--reps 5] [--hidden 128] [--layers 2]
The last line is `shared/plain step time ratio at P=300: X.XX` (or the middle P given).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from fgrpo_nb.shared_prefix import plain_logprobs, shared_prefix_logprobs  # noqa: E402

torch.set_flush_denormal(True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m (real weights) or shaped (random)")
    p.add_argument("--layers", type=int, default=None, help="keep only the first N decoder layers")
    p.add_argument("--P", type=int, nargs="+", default=[100, 300, 600], help="prompt lengths")
    p.add_argument("--R", type=int, default=40, help="completion length")
    p.add_argument("--G", type=int, default=8, help="completions per prompt")
    p.add_argument("--prompts", type=int, default=1, help="groups per step")
    p.add_argument("--reps", type=int, default=3, help="timed steps per method and P")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--trainer", action="store_true", help="whole trainer steps on the tiny model")
    p.add_argument("--hidden", type=int, default=128, help="tiny model width (--trainer)")
    return p.parse_args()


def build(args):
    if args.model == "smollm2-135m":
        from fgrpo_nb.models import load_model

        model, _ = load_model("smollm2-135m")
        label = "SmolLM2-135M (real weights)"
    else:
        config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, head_dim=64, pad_token_id=2,
                             rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
                             tie_word_embeddings=True)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        label = "SmolLM2-shaped config (random weights)"
    if args.layers:
        model.model.layers = model.model.layers[: args.layers]
        model.config.num_hidden_layers = args.layers
        label += f", first {args.layers} layers"
    model.train()
    return model, label


def batch(vocab, n, G, P, R, seed=0):
    g = torch.Generator().manual_seed(seed)
    pid = torch.randint(3, vocab, (n, P), generator=g).repeat_interleave(G, 0)
    pm = torch.ones_like(pid)
    pm[:, : P // 10] = 0  # some left padding
    pid[pm == 0] = 2
    cid = torch.randint(3, vocab, (n * G, R), generator=g)
    cm = torch.ones_like(cid)
    for r in range(n * G):  # ragged completions
        cm[r, R - (r % 4) * (R // 8):] = 0
    return pid, pm, cid, cm


def release_freed_memory() -> None:
    """Hand freed heap back to the OS so the next step's RSS growth is its own (glibc only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    def __enter__(self):
        self.base = self.peak = rss_bytes()
        self.stop = False
        self.t = threading.Thread(target=self._poll, daemon=True)
        self.t.start()
        return self

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, rss_bytes())
        self.growth = self.peak - self.base


def step(model, method, tensors, G):
    pid, pm, cid, cm = tensors
    model.zero_grad(set_to_none=True)
    release_freed_memory()
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        if method == "plain":
            logps = plain_logprobs(model, pid, pm, cid, cm)
        else:
            logps = shared_prefix_logprobs(model, pid, pm, cid, cm, G)
        adv = torch.linspace(-1, 1, logps.size(0))[:, None]
        loss = -(adv * logps * cm).sum() / cm.sum()
        loss.backward()
    return time.perf_counter() - t0, mem.growth


def trainer_steps(args, P: int):
    """Median seconds per optimizer step (and in generation) of the tiny-model GRPO baseline,
    shared_prefix off and on, steps alternating; both start from copies of one model."""
    import copy
    import random

    from datasets import Dataset

    from fgrpo_nb.models import load_model
    from fgrpo_nb.trainer import make_trainer

    words = [f"w{j}" for j in range(200)]
    model, tok = load_model("tiny", vocab_tokens=words, hidden=args.hidden, layers=args.layers or 2, heads=4,
                            max_len=P + args.R + 8, seed=0)
    rng = random.Random(0)
    prompts = [" ".join(rng.choices(words, k=P)) for _ in range(args.prompts * 4)]  # one token a word
    data = Dataset.from_dict({"prompt": prompts})

    def reward(completions, **_):
        return [float(len(c)) for c in completions]  # varies, so advantages are non-zero

    timed = {}
    for shared in (False, True):
        trainer = make_trainer("grpo", copy.deepcopy(model), tok, data, [reward, reward], phase_metrics=False,
                               shared_prefix=shared, per_device_train_batch_size=args.prompts * args.G,
                               num_generations=args.G, max_completion_length=args.R, use_cpu=True,
                               output_dir="runs/benchmark-shared-prefix", disable_tqdm=True, seed=0)
        timed[shared] = timed_step(trainer)
    times = {False: [], True: []}
    gen = {False: [], True: []}
    for i in range(args.warmup + args.reps):
        for shared in ((False, True) if i % 2 == 0 else (True, False)):
            total, in_generation = timed[shared](i)
            if i >= args.warmup:
                times[shared].append(total)
                gen[shared].append(in_generation)
    return ({k: statistics.median(v) for k, v in times.items()}, {k: statistics.median(v) for k, v in gen.items()},
            sum(p.numel() for p in model.parameters()))


def timed_step(trainer):
    """`step(i)` -> (seconds, seconds in generation) of one optimizer step, sampling seeded by i."""
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generate = trainer._generate_single_turn
    spent = []

    def timed_generate(*a, **kw):
        t0 = time.perf_counter()
        out = generate(*a, **kw)
        spent.append(time.perf_counter() - t0)
        return out

    trainer._generate_single_turn = timed_generate  # benchmark-only wrapper

    def step(i):
        torch.manual_seed(i)  # the same sampling seed per step index, on and off
        batch = next(iter(trainer.get_train_dataloader()))
        spent.clear()
        t0 = time.perf_counter()
        trainer.training_step(model, batch, None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, sum(spent)

    return step


def main_trainer(args):
    ratios = {}
    for P in args.P:
        times, gen, n_params = trainer_steps(args, P)
        ratios[P] = times[True] / times[False]
        print(f"P={P}: step plain {times[False]:.3f}s (generation {gen[False]:.3f}s)  "
              f"shared {times[True]:.3f}s (generation {gen[True]:.3f}s)  ratio {ratios[P]:.2f}  "
              f"ratio outside generation {(times[True] - gen[True]) / (times[False] - gen[False]):.2f}", flush=True)
    print(f"tiny model {n_params / 1e6:.2f}M params (hidden {args.hidden}, {args.layers or 2} layers); R={args.R} "
          f"G={args.G} prompts/step={args.prompts} reps={args.reps} threads={torch.get_num_threads()}")
    key = 300 if 300 in ratios else args.P[len(args.P) // 2]
    print(f"shared/plain step time ratio at P={key}: {ratios[key]:.2f}")


def main():
    args = parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if args.trainer:
        return main_trainer(args)
    model, label = build(args)
    print(f"model: {label}; R={args.R} G={args.G} groups/step={args.prompts} reps={args.reps} "
          f"threads={torch.get_num_threads()}", flush=True)
    ratios = {}
    for P in args.P:
        tensors = batch(model.config.vocab_size, args.prompts, args.G, P, args.R)
        times = {"plain": [], "shared": []}
        mems = {"plain": [], "shared": []}
        for i in range(args.warmup + args.reps):
            for method in (("plain", "shared") if i % 2 == 0 else ("shared", "plain")):
                dt, mem = step(model, method, tensors, args.G)
                if i >= args.warmup:
                    times[method].append(dt)
                    mems[method].append(mem)
        tp, ts = statistics.median(times["plain"]), statistics.median(times["shared"])
        mp, ms = max(mems["plain"]), max(mems["shared"])
        ratios[P] = ts / tp
        print(f"P={P}: plain {tp:.2f}s  shared {ts:.2f}s  ratio {ts / tp:.2f}  "
              f"peak RSS growth plain {mp / 2**20:.0f} MiB shared {ms / 2**20:.0f} MiB  "
              f"tokens plain {args.G * (P + args.R)} shared {P + args.G * args.R} per group", flush=True)
    key = 300 if 300 in ratios else args.P[len(args.P) // 2]
    print(f"shared/plain step time ratio at P={key}: {ratios[key]:.2f}")


if __name__ == "__main__":
    main()

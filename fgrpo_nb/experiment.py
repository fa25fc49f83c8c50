"""SFT warm start, then GRPO and F-GRPO from the same checkpoint, then greedy evaluation.

Every unit of work writes into its own folder under the run and finishes by writing
`done.json`; a rerun skips finished units, so an interrupted notebook resumes where it
stopped. Layout under `<run_dir>/train/<dataset>/`:

    seed<s>/sft/model/            safetensors checkpoint (every RL run starts here)
    seed<s>/sft/eval_<split>.json metrics of greedy decoding
    seed<s>/<method>/log.jsonl    one line per logged RL step (rewards per phase, advantages,
                                  conflict rate, KL, loss, validity)
    seed<s>/<method>/eval_<split>.json, per_query_<split>.jsonl, done.json
"""

from __future__ import annotations

import json
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from transformers import TrainerCallback

from .episodes import Episode
from .metrics import per_query, summarise
from .prompts import FEATURE_WORDS, PROMPT_TOKENS, label_to_id, pool_labels, relevant_labels, render_prompt, slot_labels
from .rewards import make_reward_funcs
from .rollout import parse_rollout, render_rollout
from .teachers import Teacher, teacher_rollout_ids

METHODS = ("fgrpo", "grpo")
METHOD_NAMES = {"sft": "SFT", "fgrpo": "F-GRPO", "grpo": "GRPO"}


@dataclass
class ExperimentConfig:
    """Everything that decides a training run; saved next to its results."""

    model: str = "tiny"  # "tiny", "smollm2-135m", or a hub id / local folder
    style: str = "slots"  # prompt style: "slots" or "ids" (tiny word-level model), "chat" (LLMs)
    n: int = 10  # slate size cap
    k: int = 5  # ranking size cap
    tiny_hidden: int = 128  # tiny model width
    tiny_layers: int = 2  # tiny model depth
    # SFT warm start
    sft_episodes: int = 2000  # training episodes used for SFT (fewer = a weaker start, more room for RL)
    sft_epochs: float = 1.0
    sft_lr: float = 1e-3
    sft_batch_size: int = 32
    sft_seed: int | None = None  # None: an SFT per seed; an int: every seed's RL starts from that seed's SFT
    sft_slate_order: str = "pool"  # order of the (order-free) slate in SFT targets: "pool" or "shuffled"
    item_features: str = "none"  # "popularity": a popularity-decile word after each pool id (word-level styles)
    sft_rank_filler: str = "teacher"  # order of the non-relevant part of SFT target rankings: "teacher" or "pool"
    # RL
    rl_steps: int = 200
    prompts_per_step: int = 8  # prompts per step; completions per step = prompts_per_step * group_size
    group_size: int = 8  # G, rollouts per prompt
    lr: float = 3e-4
    phase_lambda: float = 1.0  # weight of the ranking phase (F-GRPO) / of R_rank in the joint reward (GRPO)
    scale: str = "none"  # "none": A = R - mean (Dr. GRPO); "group": also divide by the group std
    loss_type: str = "dr_grpo"
    beta: float = 0.0  # KL coefficient (the paper's setting: none)
    temperature: float = 1.0
    max_completion_length: int = 24
    coverage: str = "recall"
    normaliser: str = "relevant"
    lora_r: int = 0  # >0: train LoRA adapters of this rank instead of all weights
    lora_top_layers: int = 0  # with lora_r > 0: adapters on the top this many decoder layers only (0: all
    #   linear layers); backward then stops at the lowest adapted layer (SmolLM2 on CPU: ~1.8x faster step)
    eval_batch_size: int = 128
    extra: dict = field(default_factory=dict)  # anything else passed to the GRPO config

    def __post_init__(self):
        # A word-level rollout is n + k labels, four tags and the end token. A shorter budget
        # cuts every full rollout, which then scores as invalid: a silent zero, not a result.
        if self.style in WORD_STYLES and self.max_completion_length < full_rollout_tokens(self.n, self.k):
            raise ValueError(f"max_completion_length={self.max_completion_length} cannot hold a full rollout at "
                             f"n={self.n}, k={self.k}: it needs {full_rollout_tokens(self.n, self.k)} tokens "
                             f"(labels, tags and the end token) with style {self.style!r}")


WORD_STYLES = ("ids", "slots")  # one token per label and tag (the tiny model's word-level tokenizer)


def full_rollout_tokens(n: int, k: int) -> int:
    """Tokens of a full word-level rollout: n slate and k ranking labels, 4 tags, end token."""
    return n + k + 4 + 1


# ---------------------------------------------------------------- data → records


ITEM_FEATURES = ("none", "popularity")


def candidate_features(episode: Episode, kind: str) -> dict[str, str] | None:
    """The feature word of every item (None for "none"), for `render_prompt(features=...)`."""
    if kind not in ITEM_FEATURES:
        raise ValueError(f"item_features must be one of {', '.join(ITEM_FEATURES)}; got {kind!r}")
    if kind == "none":
        return None
    if episode.task != "rec":
        raise ValueError("item_features='popularity' needs a recommendation dataset")
    from .data import popularity_words

    return popularity_words(episode.dataset, len(episode.relevant))


def episode_prompt(episode: Episode, cfg: "ExperimentConfig"):
    """The prompt of an episode under an experiment's style, sizes and item features."""
    return render_prompt(episode, cfg.style, cfg.n, cfg.k, candidate_features(episode, cfg.item_features))


def episode_labels(episode: Episode, style: str) -> tuple[list[str], list[str]]:
    return pool_labels(episode, style), relevant_labels(episode, style)


def rl_records(episodes: Sequence[Episode], cfg: ExperimentConfig) -> list[dict]:
    """Rows for TRL: the prompt, and the `pool` / `relevant` labels the reward functions read."""
    rows = []
    for ep in episodes:
        pool, relevant = episode_labels(ep, cfg.style)
        rows.append({"prompt": episode_prompt(ep, cfg), "pool": pool, "relevant": relevant})
    return rows


def sft_records(episodes: Sequence[Episode], teacher: Teacher, cfg: ExperimentConfig, seed: int) -> list[dict]:
    """Prompt-completion rows whose completion is the teacher-filled target rollout."""
    rng = random.Random(seed)
    rows = []
    for ep in episodes:
        slate, ranking = teacher_rollout_ids(ep, teacher(ep), cfg.n, cfg.k, rng, cfg.sft_slate_order,
                                             cfg.sft_rank_filler)
        to_label = {cid: label for label, cid in label_to_id(ep, cfg.style).items()}
        text = render_rollout([to_label[c] for c in slate], [to_label[c] for c in ranking])
        prompt = episode_prompt(ep, cfg)
        if cfg.style == "chat":
            rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": text}]})
        else:
            # a leading space keeps the word-level tokenizer's words apart when TRL concatenates
            rows.append({"prompt": prompt, "completion": " " + text})
    return rows


def tiny_vocab(episodes: Sequence[Episode]) -> list[str]:
    """Every word an ID-style prompt or rollout can contain, in a fixed order."""
    words, size = set(), 0
    for ep in episodes:
        words.update(ep.pool_ids)
        words.update(ep.history)
        size = max(size, len(ep.candidates))
    return [*PROMPT_TOKENS, *FEATURE_WORDS, *slot_labels(size), *sorted(words)]


# ---------------------------------------------------------------- bookkeeping


def unit_dir(run_dir, dataset: str, seed: int, method: str) -> Path:
    return Path(run_dir) / "train" / dataset / f"seed{seed}" / method


def is_done(folder: Path) -> bool:
    return (folder / "done.json").exists()


# The fields that decide an SFT checkpoint; an RL unit depends on every field.
SFT_FIELDS = ("model", "style", "n", "k", "tiny_hidden", "tiny_layers", "sft_episodes", "sft_epochs", "sft_lr",
              "sft_batch_size", "sft_slate_order", "sft_rank_filler", "item_features", "lora_r")


def reuse_if_done(folder: Path, cfg: ExperimentConfig, fields: Sequence[str] | None = None) -> bool:
    """True when `folder` finished with the same parameters; a finished unit made with other
    parameters is an error, so a resumed run never mixes settings silently."""
    if not is_done(folder):
        return False
    stored = json.loads((folder / "done.json").read_text()).get("config", {})
    current = asdict(cfg)
    keys = fields or current.keys()
    changed = {k: (stored.get(k), current[k]) for k in keys if stored.get(k, current[k]) != current[k]}
    if changed:
        raise ValueError(f"{folder} was trained with other parameters {changed} (stored, now); "
                         "use another run_dir or delete that folder to retrain")
    return True


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so another process (a parallel sweep copying
    this unit) sees the whole file or none of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def mark_done(folder: Path, **info) -> None:
    write_atomic(folder / "done.json", json.dumps(info, indent=1, sort_keys=True) + "\n")


def read_log(folder: Path) -> list[dict]:
    path = Path(folder) / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _set_seed(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)
    torch.set_flush_denormal(True)  # tiny models hit slow denormals in backward (STACK.md)


# ---------------------------------------------------------------- models


def base_model(cfg: ExperimentConfig, vocab: Sequence[str], seed: int):
    from .models import load_model

    if cfg.model == "tiny":
        return load_model("tiny", vocab_tokens=vocab, seed=seed, hidden=cfg.tiny_hidden, layers=cfg.tiny_layers)
    return load_model(cfg.model, dtype=torch.float32)


def load_checkpoint(folder: Path):
    from .models import load_model

    return load_model(str(folder))


def lora_config(cfg: ExperimentConfig, num_layers: int | None = None):
    if cfg.lora_r <= 0:
        return None
    from peft import LoraConfig

    if cfg.lora_top_layers > 0:
        return top_layers_lora_config(cfg.lora_r, cfg.lora_top_layers, num_layers)
    return LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def save_model(model, tokenizer, folder: Path) -> None:
    if hasattr(model, "merge_and_unload"):  # LoRA: save a plain model so every stage loads alike
        model = model.merge_and_unload()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


# ---------------------------------------------------------------- training units


class JsonlLogger(TrainerCallback):
    """Appends every log record to log.jsonl, with the validity rate of the completions
    scored since the last record."""

    def __init__(self, path: Path, validity):
        self.path, self.validity = path, validity
        self.path.write_text("")

    def on_log(self, args, state, control, logs=None, **kwargs):
        record = {"step": state.global_step, **(logs or {}), "valid_rate": self.validity.pop_rate()}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class ValidityCounter:
    """Counts valid rollouts through the utility reward: with the rewards module's format
    penalty charged per phase, a rollout is valid exactly when its utility reward is >= 0."""

    def __init__(self, utility_fn):
        self.utility_fn, self.valid, self.total = utility_fn, 0, 0
        self.__name__ = utility_fn.__name__

    def __call__(self, *args, **kwargs):
        rewards = self.utility_fn(*args, **kwargs)
        self.valid += sum(r >= 0 for r in rewards)
        self.total += len(rewards)
        return rewards

    def pop_rate(self) -> float | None:
        rate = self.valid / self.total if self.total else None
        self.valid = self.total = 0
        return rate


def run_sft(cfg: ExperimentConfig, train: Sequence[Episode], vocab: Sequence[str], teacher: Teacher,
            out: Path, seed: int) -> Path:
    """Supervised warm start on teacher-filled target rollouts; returns the checkpoint folder."""
    if reuse_if_done(out, cfg, SFT_FIELDS):
        return out / "model"
    rows = sft_records(list(train)[: cfg.sft_episodes], teacher, cfg, seed)
    return sft_on_rows(cfg, rows, vocab, out, seed)


@contextmanager
def completion_positions_only():
    """TRL's SFTTrainer scores the loss through a fused LM head that, on devices without Triton,
    scores every position and zeroes the prompt's (fixed tile shapes for compilers). In eager
    CPU mode nothing recompiles, so within this block it scores the completion's positions only,
    as it does on GPUs: the same loss and metrics, and the tiny model's SFT step took 1.5 s
    before against 0.7 s after (prompts are ~85% of its tokens; `benchmarks/sft_step.py`)."""
    import trl.trainer.utils as trl_utils

    previous = trl_utils._use_triton  # only its `compact` choice reads this name; kernels keep their own
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = previous


def sft_on_rows(cfg: ExperimentConfig, rows: list[dict], vocab: Sequence[str], out: Path, seed: int) -> Path:
    """TRL's SFTTrainer on prompt-completion rows, from a fresh base model; resumable."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if reuse_if_done(out, cfg, SFT_FIELDS):
        return out / "model"
    out.mkdir(parents=True, exist_ok=True)
    _set_seed(seed)
    model, tokenizer = base_model(cfg, vocab, seed)
    args = SFTConfig(
        output_dir=str(out / "trainer"), num_train_epochs=cfg.sft_epochs, learning_rate=cfg.sft_lr,
        per_device_train_batch_size=cfg.sft_batch_size, logging_steps=10, save_strategy="no", report_to=[],
        bf16=False, seed=seed, max_length=None, lr_scheduler_type="cosine", warmup_steps=0.05,
        gradient_checkpointing=False, disable_tqdm=False,
    )
    validity = ValidityCounter(lambda *a, **k: [])  # SFT scores nothing; keeps one log format
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora_config(cfg, _num_layers(model)),
                         callbacks=[JsonlLogger(out / "log.jsonl", validity)])
    start = time.perf_counter()
    with completion_positions_only():
        trainer.train()
    save_model(trainer.model, tokenizer, out / "model")
    mark_done(out, seconds=round(time.perf_counter() - start, 1), examples=len(rows), config=asdict(cfg))
    return out / "model"


def run_rl(method: str, cfg: ExperimentConfig, train: Sequence[Episode], sft_model: Path, out: Path,
           seed: int) -> Path:
    """GRPO or F-GRPO from the SFT checkpoint; returns the final checkpoint folder."""
    from datasets import Dataset

    from .trainer import make_trainer

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if reuse_if_done(out, cfg):
        return out / "model"
    out.mkdir(parents=True, exist_ok=True)
    _set_seed(seed)
    model, tokenizer = load_checkpoint(sft_model)
    coverage_fn, utility_fn = make_reward_funcs(cfg.n, cfg.k, coverage=cfg.coverage, normaliser=cfg.normaliser)
    validity = ValidityCounter(utility_fn)
    # Seeded draw of prompts: each seed sees its own order, both methods the same one.
    rows = rl_records(train, cfg)
    random.Random(seed).shuffle(rows)
    trainer = make_trainer(
        method, model, tokenizer, Dataset.from_list(rows), [coverage_fn, validity],
        phase_lambda=cfg.phase_lambda, scale=cfg.scale, peft_config=lora_config(cfg, _num_layers(model)),
        callbacks=[JsonlLogger(out / "log.jsonl", validity)],
        output_dir=str(out / "trainer"), max_steps=cfg.rl_steps, learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.group_size, num_generations=cfg.group_size,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
        loss_type=cfg.loss_type, logging_steps=1, seed=seed, lr_scheduler_type="constant",
        disable_tqdm=False, **cfg.extra,
    )
    start = time.perf_counter()
    trainer.train()
    save_model(trainer.model, tokenizer, out / "model")
    mark_done(out, seconds=round(time.perf_counter() - start, 1), config=asdict(cfg), method=method)
    return out / "model"


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: Sequence, max_new_tokens: int, batch_size: int = 128,
                    progress: bool = True) -> list[str]:
    """Greedy completions, decoded the way TRL hands them to reward functions."""
    from tqdm.auto import tqdm

    model.eval()
    texts = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="greedy decoding", disable=not progress, leave=False):
        batch = list(prompts[start:start + batch_size])
        if batch and not isinstance(batch[0], str):
            batch = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def evaluate_texts(texts: Sequence[str], episodes: Sequence[Episode], cfg: ExperimentConfig) -> list[dict]:
    """Per-query metric rows, each rollout parsed against its episode's labels."""
    rollouts, relevant = [], []
    for text, ep in zip(texts, episodes, strict=True):
        pool, rel = episode_labels(ep, cfg.style)
        rollouts.append(parse_rollout(text, pool, n=cfg.n, k=cfg.k))
        relevant.append(rel)
    rows = per_query(rollouts, relevant, n=cfg.n, k=cfg.k, outcome_k=cfg.k)
    for row, ep, text in zip(rows, episodes, texts):
        row["query_id"], row["text"] = ep.query_id, text
    return rows


def evaluate_checkpoint(model_dir: Path, episodes: Sequence[Episode], cfg: ExperimentConfig, out: Path,
                        split: str) -> dict:
    """Greedy decoding on `episodes`; writes eval_<split>.json and per_query_<split>.jsonl (cached)."""
    path = out / f"eval_{split}.json"
    if path.exists():
        return json.loads(path.read_text())
    model, tokenizer = load_checkpoint(model_dir)
    prompts = [episode_prompt(ep, cfg) for ep in episodes]
    texts = generate_greedy(model, tokenizer, prompts, cfg.max_completion_length, cfg.eval_batch_size)
    rows = evaluate_texts(texts, episodes, cfg)
    # per-query rows first: a finished eval_<split>.json always has its rows beside it
    write_atomic(out / f"per_query_{split}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    summary = summarise([{k: v for k, v in r.items() if k not in ("query_id", "text")} for r in rows])
    write_atomic(path, json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def results_table(run_dir, dataset: str, split: str = "test") -> "pd.DataFrame":
    """One row per (seed, method) with every metric of eval_<split>.json found under the run."""
    import pandas as pd

    rows = []
    for path in sorted((Path(run_dir) / "train" / dataset).glob(f"seed*/*/eval_{split}.json")):
        method = path.parent.name
        rows.append({"dataset": dataset, "seed": int(path.parent.parent.name[4:]),
                     "method": METHOD_NAMES.get(method, method), **json.loads(path.read_text())})
    return pd.DataFrame(rows)


def training_logs(run_dir, dataset: str) -> "pd.DataFrame":
    """Every RL log line of the run, with seed and method columns."""
    import pandas as pd

    frames = []
    for folder in sorted((Path(run_dir) / "train" / dataset).glob("seed*/*")):
        if folder.name in METHODS:
            log = pd.DataFrame(read_log(folder))
            if len(log):
                log["seed"], log["method"] = int(folder.parent.name[4:]), METHOD_NAMES[folder.name]
                frames.append(log)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------- QA at CPU size (notebook 03b)

LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _num_layers(model) -> int | None:
    return getattr(getattr(model, "config", None), "num_hidden_layers", None)


def top_layers_lora_config(r: int, top: int, num_layers: int | None):
    """LoRA of rank r on every linear layer of the top `top` decoder layers (Llama names).
    Nothing below them trains, so backward stops there: the cheap way to adapt a deep model
    on a CPU."""
    from peft import LoraConfig

    if num_layers is None:
        raise ValueError("lora_top_layers needs the model's number of layers (config.num_hidden_layers)")
    if not 0 < top <= num_layers:
        raise ValueError(f"lora_top_layers must be in 1..{num_layers}, got {top}")
    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=list(LLAMA_LINEAR),
                      layers_to_transform=list(range(num_layers - top, num_layers)), task_type="CAUSAL_LM")


def shorten_passages(episodes: Sequence[Episode], words: int | None) -> list[Episode]:
    """QA candidates cut to `title` (words 0) or `title: <first `words` words>` (words > 0);
    None or a negative number keeps them as they are. Candidate text is `title: body` (see
    data_qa.passage_text); a title that itself holds ": " loses its tail when words is 0."""
    from dataclasses import replace

    if words is None or words < 0:
        return list(episodes)

    def cut(text: str) -> str:
        title, sep, body = text.partition(": ")
        kept = " ".join(body.split()[:words])
        return f"{title}: {kept}" if sep and kept else title

    return [replace(ep, candidates=tuple(replace(c, text=cut(c.text)) for c in ep.candidates)) for ep in episodes]


def prompt_token_counts(episodes: Sequence[Episode], tokenizer, cfg: ExperimentConfig) -> list[int]:
    """Tokens of each episode's prompt as the model reads it (chat template applied)."""
    counts = []
    for ep in episodes:
        prompt = episode_prompt(ep, cfg)
        if not isinstance(prompt, str):
            prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        counts.append(len(tokenizer(prompt, add_special_tokens=False)["input_ids"]))
    return counts


def _record_wall(folder: Path, part: str, seconds: float) -> None:
    path = folder / "wall.json"
    wall = json.loads(path.read_text()) if path.exists() else {}
    wall[part] = round(seconds, 1)
    path.write_text(json.dumps(wall, indent=1, sort_keys=True) + "\n")


def run_seed(cfg: ExperimentConfig, episodes: dict[str, list[Episode]], teacher: Teacher, run_dir,
             seed: int, methods: Sequence[str] = METHODS, eval_splits: Sequence[str] = ("validation", "test"),
             log=print) -> dict[str, dict]:
    """SFT (shared across seeds when cfg.sft_seed is set), then each RL method from it, each
    evaluated greedily on `eval_splits`. The wall time of each training and evaluation part
    goes to `<unit>/wall.json` when it runs (a rerun that skips a finished part keeps the
    first time). Returns {method: {split: summary}} with "sft" included."""
    dataset = episodes["train"][0].dataset
    vocab = tiny_vocab([e for split in episodes.values() for e in split])
    results: dict[str, dict] = {}
    sft_seed = seed if cfg.sft_seed is None else cfg.sft_seed
    for method in ("sft", *methods):
        out = unit_dir(run_dir, dataset, sft_seed if method == "sft" else seed, method)
        fresh = fresh_unit = not is_done(out)
        start = time.perf_counter()
        if method == "sft":
            model_dir = sft_model = run_sft(cfg, episodes["train"], vocab, teacher, out, sft_seed)
        else:
            model_dir = run_rl(method, cfg, episodes["train"], sft_model, out, seed)
        if fresh:
            _record_wall(out, "train", time.perf_counter() - start)
        results[method] = {}
        for split in eval_splits:
            fresh = not (out / f"eval_{split}.json").exists()
            start = time.perf_counter()
            results[method][split] = evaluate_checkpoint(model_dir, episodes[split], cfg, out, split)
            if fresh:
                _record_wall(out, f"eval_{split}", time.perf_counter() - start)
        log(f"seed {seed} {METHOD_NAMES[method]}: {'trained' if fresh_unit else 'reused'}")
    return results


def wall_table(run_dir, dataset: str) -> "pd.DataFrame":
    """One row per (seed, unit, part) from the units' wall.json files."""
    import pandas as pd

    rows = []
    for path in sorted((Path(run_dir) / "train" / dataset).glob("seed*/*/wall.json")):
        for part, seconds in json.loads(path.read_text()).items():
            rows.append({"seed": int(path.parent.parent.name[4:]),
                         "unit": METHOD_NAMES.get(path.parent.name, path.parent.name), "part": part,
                         "seconds": seconds})
    return pd.DataFrame(rows, columns=["seed", "unit", "part", "seconds"])

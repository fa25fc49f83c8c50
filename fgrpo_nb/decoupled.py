"""Decoupled baselines: a selector and a ranker, two models chained at inference.

The paper compares F-GRPO (one policy writes the slate, then ranks it, in one rollout) with
a pipeline of two separate models. Here both are models of the same kind and size as the
F-GRPO policy (`ExperimentConfig.model`, the same tokenizer/vocabulary), trained apart:

- **Selector**: the F-GRPO prompt; its completion is the slate only, ` <SLATE> ... </SLATE>`
  (then EOS).
- **Ranker**: the F-GRPO prompt followed by the slate as text,
  `<prompt> <SLATE> ... </SLATE>` (chat style: the slate appended to the user turn); its
  completion is the ranking only, ` <RANK> ... </RANK>`.
- **Chain** (inference, greedy): selector -> the part of its text from `<SLATE>` through
  `</SLATE>` (whatever it wrote after that is dropped) -> ranker on that slate -> rollout
  text `slate + " " + ranking`, scored by `experiment.evaluate_texts`, i.e. the same parser
  and metrics as every other method. A selector output without a closed slate is kept as
  is (the ranker is not run on it): the chained rollout is invalid, as a joint rollout
  without `</SLATE>` would be.

Methods (folders under `<run_dir>/train/<dataset>/seed<s>/`, named by their display name,
which `experiment.results_table` shows verbatim):

- **Decoupled SFT** (`decoupled_sft`): both models warm-started by TRL's SFTTrainer on the
  *same* teacher targets as the joint SFT (`experiment.sft_records`, same seed, so the same
  slate and ranking per episode), split at `</SLATE>`: the selector learns the teacher
  slate; the ranker learns the relevant-first ranking *given the gold slate* (the teacher
  slate holds every relevant item), as in the paper's "ranker trained on gold slates".
  Lives under the SFT seed's folder (like `sft`), trained with the SFT hyper-parameters.
- **Decoupled RL** (`decoupled_rl`): each model from its Decoupled SFT checkpoint, trained
  by TRL's GRPO, unmodified, with a single reward: the selector with the coverage reward
  alone, the ranker with the utility reward alone; each gets the main runs' RL steps, lr,
  G, prompts per step, loss type and scaling (`cfg.rl_steps`... as in `experiment.run_rl`).

Decisions:

- *Single-reward GRPO, built directly* (`GRPOConfig` + `GRPOTrainer`, with
  `trainer.CPU_FRIENDLY` and the same config arguments as `experiment.run_rl`), not
  `make_trainer("grpo", ..., [reward, zeros], phase_lambda=0)`: a dummy zero reward would
  add a meaningless reward column to the logs and `make_trainer`'s phase metrics split at
  `</SLATE>`, which means nothing for a one-phase completion. With one reward function the
  advantage is exactly TRL's R - mean(R) (scale "none") on every token. The reward keeps
  its usual name (`coverage_reward` / `utility_reward`), so the logged columns
  (`rewards/coverage_reward/mean`, ...) line up with the joint runs' curves.
- *Selector reward*: `rewards.make_reward_funcs`' coverage function as is. A selector
  completion has a slate and no ranking; with `phase_credit=True` (the rewards default)
  a valid slate keeps its coverage reward and only the (unused) utility is penalised; a
  broken slate gets `-format_penalty`.
- *Ranker reward*: `make_ranker_reward` reads the dataset column `slate_text` and scores
  `slate_text + " " + completion` with the utility function of `make_reward_funcs`, i.e.
  `score_rollout` of the whole rollout: a ranking outside the slate or malformed gets the
  format penalty, NDCG@k otherwise (with the configured normaliser).
- *Slates the ranker trains on in RL*: samples of the SFT **selector** (one sample per
  training prompt, at the RL temperature), not the teacher slates (`ranker_slates=
  "selector"`, default; `"teacher"` is available). Why: (1) Decoupled SFT already is the
  gold-slate ranker; Decoupled RL should learn on the slates a selector actually writes,
  the distribution it meets when chained; (2) a teacher slate is "every relevant item + the
  most popular filler", so the relevant item is identifiable as the one non-popular item:
  a shortcut that selector slates do not offer. A sample that is not a valid slate is
  replaced by that episode's teacher slate (the count is stored in done.json and
  `slates.jsonl`). Slates missing every relevant item give a zero-advantage group (nothing
  to rank): wasted rollouts, but an honest picture of the pipeline. The ranker trains from
  the SFT selector's slates, not the RL selector's, so the two RL runs are independent
  (both start from SFT, as asked) and resumable separately.
- *Prompts*: the selector RL uses every training episode, shuffled with the seed, as
  `run_rl` does; the ranker RL uses the first rl_steps x prompts_per_step x grad-accum of
  that same order (what one epoch of TRL's sampler consumes), so slates are sampled only
  for prompts that will be used.
- *Resumable*: each model is a sub-unit (`<method>/selector/`, `<method>/ranker/`, each
  with `model/`, `log.jsonl`, `done.json`); the method folder's done.json (with `seconds`,
  `config`, `method`) is written once both finished, then `eval_<split>.json` /
  `per_query_<split>.jsonl` (cached by file, like `evaluate_checkpoint`). A finished unit
  made with other parameters raises (`experiment.reuse_if_done`). The method folder's
  `log.jsonl` is the two sub-units' logs with a `part` column (selector / ranker).
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch

from .episodes import Episode
from .experiment import (
    SFT_FIELDS,
    ExperimentConfig,
    JsonlLogger,
    ValidityCounter,
    _num_layers,
    _set_seed,
    episode_prompt,
    evaluate_texts,
    generate_greedy,
    load_checkpoint,
    lora_config,
    mark_done,
    reuse_if_done,
    rl_records,
    save_model,
    sft_on_rows,
    sft_records,
    tiny_vocab,
    unit_dir,
)
from .metrics import summarise
from .rewards import DEFAULT_FORMAT_PENALTY, completion_text, make_reward_funcs
from .rollout import RANK_CLOSE, RANK_OPEN, SLATE_OPEN, parse_rollout, slate_end_char
from .teachers import Teacher

DECOUPLED_METHODS = ("decoupled_sft", "decoupled_rl")
DECOUPLED_NAMES = {"decoupled_sft": "Decoupled SFT", "decoupled_rl": "Decoupled RL"}
RANKER_SLATES = ("selector", "teacher")


# ---------------------------------------------------------------- text construction (pure)


def slate_span(text: str) -> str | None:
    """`<SLATE> ... </SLATE>` as written in `text` (first pair, the parser's rule), or None."""
    end = slate_end_char(text)
    if end is None:
        return None
    return text[text.find(SLATE_OPEN):end]


def split_target(text: str) -> tuple[str, str]:
    """A joint target rollout -> (slate part through `</SLATE>`, ranking part after it)."""
    end = slate_end_char(text)
    if end is None:
        raise ValueError(f"no closed slate in target {text!r}")
    return text[:end], text[end:]


def ranker_prompt(prompt, slate: str):
    """The ranker's prompt: the selector's prompt with the slate after it.

    String prompts (word-level styles): `<prompt> <SLATE> ... </SLATE>`. Chat prompts (a list of
    messages): the slate and a one-line instruction appended to the last user turn.
    """
    slate = slate.strip()
    if isinstance(prompt, str):
        return f"{prompt} {slate}"
    messages = copy.deepcopy(list(prompt))
    users = [m for m in messages if m.get("role") == "user"] or messages
    users[-1]["content"] = (f"{users[-1]['content']}\n\nSlate: {slate}\nRank the best labels of this slate, "
                            f"most relevant first, on one line: {RANK_OPEN} labels {RANK_CLOSE}")
    return messages


def chain_text(slate: str, ranking: str) -> str:
    """The rollout a selector and a ranker write together: `slate ranking`, one space between."""
    return f"{slate.strip()} {ranking.strip()}"


def _completion(text: str, style: str):
    # a leading space keeps the word-level tokenizer's words apart when TRL concatenates
    return [{"role": "assistant", "content": text.strip()}] if style == "chat" else " " + text.strip()


def _target_text(completion) -> str:
    return completion_text(completion)


def decoupled_sft_records(episodes: Sequence[Episode], teacher: Teacher, cfg: ExperimentConfig,
                          seed: int) -> tuple[list[dict], list[dict]]:
    """(selector rows, ranker rows) from the joint SFT targets (`sft_records`, same seed), split
    at `</SLATE>`: the selector learns the teacher slate, the ranker the relevant-first ranking
    of that gold slate, which its prompt shows."""
    selector, ranker = [], []
    for row in sft_records(episodes, teacher, cfg, seed):
        slate, ranking = split_target(_target_text(row["completion"]))
        selector.append({"prompt": row["prompt"], "completion": _completion(slate, cfg.style)})
        ranker.append({"prompt": ranker_prompt(row["prompt"], slate), "completion": _completion(ranking, cfg.style)})
    return selector, ranker


def make_ranker_reward(n: int, k: int, coverage: str = "recall", normaliser: str = "relevant",
                       format_penalty: float = DEFAULT_FORMAT_PENALTY) -> Callable[..., list[float]]:
    """TRL reward for the ranker: the utility reward of `slate_text + completion`.

    Reads the dataset columns `slate_text` (the slate the prompt shows), `pool` and `relevant`;
    scores the whole rollout with `rewards.score_rollout` (through `make_reward_funcs`), so a
    ranking that is malformed or leaves the slate gets `-format_penalty`, a valid one NDCG@k.
    """
    _, utility_fn = make_reward_funcs(n, k, coverage=coverage, normaliser=normaliser, format_penalty=format_penalty)

    def utility_reward(prompts=None, completions=(), completion_ids=None, slate_text=None, **kwargs) -> list[float]:
        if slate_text is None:
            raise KeyError("the ranker reward needs the dataset column `slate_text`")
        texts = [chain_text(s, completion_text(c)) for s, c in zip(slate_text, completions, strict=True)]
        return utility_fn(prompts, texts, completion_ids, **kwargs)

    utility_reward.__qualname__ = "utility_reward"  # TRL logs rewards by __name__
    return utility_reward


# ---------------------------------------------------------------- training


def _train_sft(cfg: ExperimentConfig, rows: list[dict], vocab: Sequence[str], out: Path, seed: int) -> Path:
    """`experiment.sft_on_rows`: the joint SFT's exact set-up, on selector or ranker rows."""
    return sft_on_rows(cfg, rows, vocab, out, seed)


def _train_grpo(cfg: ExperimentConfig, rows: list[dict], reward_fn, start_model: Path, out: Path, seed: int,
                **done_info) -> Path:
    """TRL's GRPO, unmodified, with one reward function; the config arguments of `run_rl`."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from .trainer import CPU_FRIENDLY

    if reuse_if_done(out, cfg):
        return out / "model"
    out.mkdir(parents=True, exist_ok=True)
    _set_seed(seed)
    model, tokenizer = load_checkpoint(start_model)
    validity = ValidityCounter(reward_fn)  # valid = reward >= 0 (the format penalty is the only negative)
    args = GRPOConfig(**{
        **CPU_FRIENDLY, "loss_type": cfg.loss_type, "scale_rewards": cfg.scale,
        "output_dir": str(out / "trainer"), "max_steps": cfg.rl_steps, "learning_rate": cfg.lr,
        "per_device_train_batch_size": cfg.prompts_per_step * cfg.group_size, "num_generations": cfg.group_size,
        "max_completion_length": cfg.max_completion_length, "temperature": cfg.temperature, "beta": cfg.beta,
        "logging_steps": 1, "seed": seed, "lr_scheduler_type": "constant", "disable_tqdm": False, **cfg.extra,
    })
    trainer = GRPOTrainer(model=model, reward_funcs=[validity], args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora_config(cfg, _num_layers(model)),
                          callbacks=[JsonlLogger(out / "log.jsonl", validity)])
    start = time.perf_counter()
    trainer.train()
    save_model(trainer.model, tokenizer, out / "model")
    mark_done(out, seconds=round(time.perf_counter() - start, 1), config=asdict(cfg), **done_info)
    return out / "model"


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence, max_new_tokens: int, temperature: float, seed: int,
                       batch_size: int = 128) -> list[str]:
    """One sampled completion per prompt (seeded), decoded as TRL decodes them."""
    model.eval()
    torch.manual_seed(seed)
    texts = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start:start + batch_size])
        if batch and not isinstance(batch[0], str):
            batch = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                             top_k=0, top_p=1.0, pad_token_id=tokenizer.pad_token_id)
        texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def _rl_prompt_budget(cfg: ExperimentConfig) -> int:
    accumulation = int(cfg.extra.get("gradient_accumulation_steps", 1))
    return cfg.rl_steps * cfg.prompts_per_step * max(1, accumulation)


def ranker_rl_records(episodes: Sequence[Episode], cfg: ExperimentConfig, teacher: Teacher, seed: int,
                      selector_dir: Path | None, ranker_slates: str = "selector",
                      sft_seed: int | None = None) -> tuple[list[dict], dict]:
    """Rows for the ranker's GRPO (`prompt`, `pool`, `relevant`, `slate_text`) and slate stats.

    Prompts: the first `rl_steps * prompts_per_step` (x grad accumulation) of the seeded order
    `run_rl` uses. Slates: one sample of the selector at `selector_dir` per prompt
    (`ranker_slates="selector"`; an invalid sample falls back to the teacher slate), or the
    teacher slates themselves (`"teacher"`).
    """
    if ranker_slates not in RANKER_SLATES:
        raise ValueError(f"ranker_slates must be one of {RANKER_SLATES}, got {ranker_slates!r}")
    order = list(range(len(episodes)))
    random.Random(seed).shuffle(order)  # the shuffle run_rl applies to its rows
    chosen = [episodes[i] for i in order[:_rl_prompt_budget(cfg)]]
    base = rl_records(chosen, cfg)
    gold_seed = seed if sft_seed is None else sft_seed
    gold = [split_target(_target_text(r["completion"]))[0] for r in sft_records(chosen, teacher, cfg, gold_seed)]
    slates, sources = list(gold), ["teacher"] * len(gold)
    if ranker_slates == "selector":
        model, tokenizer = load_checkpoint(selector_dir)
        sampled = sample_completions(model, tokenizer, [r["prompt"] for r in base], cfg.max_completion_length,
                                     cfg.temperature, seed, cfg.eval_batch_size)
        for i, (text, row) in enumerate(zip(sampled, base)):
            span = slate_span(text)
            if span is not None and parse_rollout(span, row["pool"], n=cfg.n, k=cfg.k).slate_valid:
                slates[i], sources[i] = span, "selector"
    rows = [{**row, "prompt": ranker_prompt(row["prompt"], slate), "slate_text": slate.strip()}
            for row, slate in zip(base, slates)]
    stats = {"ranker_slates": ranker_slates, "prompts": len(rows),
             "teacher_fallback": sum(s == "teacher" for s in sources) if ranker_slates == "selector" else None}
    return rows, {**stats, "sources": sources}


# ---------------------------------------------------------------- chained evaluation


def chain_generate(selector_dir: Path, ranker_dir: Path, prompts: Sequence, cfg: ExperimentConfig,
                   progress: bool = True) -> tuple[list[str], list[str]]:
    """Greedy selector, then greedy ranker on each closed slate: (chained texts, selector texts)."""
    model, tokenizer = load_checkpoint(selector_dir)
    selector_texts = generate_greedy(model, tokenizer, prompts, cfg.max_completion_length, cfg.eval_batch_size,
                                     progress)
    del model
    spans = [slate_span(t) for t in selector_texts]
    todo = [i for i, s in enumerate(spans) if s is not None]
    texts = list(selector_texts)  # no closed slate: kept as written, an invalid rollout
    if todo:
        model, tokenizer = load_checkpoint(ranker_dir)
        rankings = generate_greedy(model, tokenizer, [ranker_prompt(prompts[i], spans[i]) for i in todo],
                                   cfg.max_completion_length, cfg.eval_batch_size, progress)
        for i, ranking in zip(todo, rankings):
            texts[i] = chain_text(spans[i], ranking)
    return texts, selector_texts


def evaluate_chain(selector_dir: Path, ranker_dir: Path, episodes: Sequence[Episode], cfg: ExperimentConfig,
                   out: Path, split: str) -> dict:
    """`evaluate_checkpoint` for the chain: writes eval_<split>.json and per_query_<split>.jsonl
    (with the selector's own text too); cached by file."""
    path = out / f"eval_{split}.json"
    if path.exists():
        return json.loads(path.read_text())
    prompts = [episode_prompt(ep, cfg) for ep in episodes]
    texts, selector_texts = chain_generate(selector_dir, ranker_dir, prompts, cfg)
    rows = evaluate_texts(texts, episodes, cfg)
    with (out / f"per_query_{split}.jsonl").open("w") as f:
        for row, sel in zip(rows, selector_texts):
            f.write(json.dumps({**row, "selector_text": sel}) + "\n")
    summary = summarise([{k: v for k, v in r.items() if k not in ("query_id", "text")} for r in rows])
    path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


# ---------------------------------------------------------------- one entry


def _merge_logs(folder: Path) -> None:
    lines = []
    for part in ("selector", "ranker"):
        path = folder / part / "log.jsonl"
        if path.exists():
            lines += [json.dumps({"part": part, **json.loads(line)}) for line in path.read_text().splitlines()
                      if line.strip()]
    (folder / "log.jsonl").write_text("".join(line + "\n" for line in lines))


def _sub_seconds(folder: Path) -> float:
    total = 0.0
    for part in ("selector", "ranker"):
        path = folder / part / "done.json"
        if path.exists():
            total += json.loads(path.read_text()).get("seconds", 0.0)
    return round(total, 1)


def _check_done_info(folder: Path, **expected) -> None:
    if not (folder / "done.json").exists():
        return
    stored = json.loads((folder / "done.json").read_text())
    changed = {k: (stored.get(k), v) for k, v in expected.items() if stored.get(k, v) != v}
    if changed:
        raise ValueError(f"{folder} was trained with other settings {changed} (stored, now); "
                         "use another run_dir or delete that folder to retrain")


def run_decoupled(cfg: ExperimentConfig, episodes: dict[str, list[Episode]], teacher: Teacher, run_dir, seed: int,
                  methods: Sequence[str] = DECOUPLED_METHODS, eval_splits: Sequence[str] = ("validation", "test"),
                  sft_seed: int | None = None, ranker_slates: str = "selector", log=print) -> dict[str, dict]:
    """Decoupled SFT and/or Decoupled RL for one seed; returns {display name: {split: summary}}.

    `sft_seed`: whose Decoupled SFT the RL starts from (None: `cfg.sft_seed`, else `seed`), as
    `experiment.run_seed` does for the joint SFT. Folders: `seed<sft_seed>/Decoupled SFT/`,
    `seed<seed>/Decoupled RL/`. Finished units are skipped (resumable).
    """
    unknown = [m for m in methods if m not in DECOUPLED_METHODS]
    if unknown:
        raise ValueError(f"methods must be among {DECOUPLED_METHODS}, got {unknown}")
    if ranker_slates not in RANKER_SLATES:
        raise ValueError(f"ranker_slates must be one of {RANKER_SLATES}, got {ranker_slates!r}")
    dataset = episodes["train"][0].dataset
    vocab = tiny_vocab([e for split in episodes.values() for e in split])
    sft_seed = (seed if cfg.sft_seed is None else cfg.sft_seed) if sft_seed is None else sft_seed
    results: dict[str, dict] = {}

    # Decoupled SFT: always trained (Decoupled RL starts from it), evaluated when asked for.
    start = time.perf_counter()
    sft_out = unit_dir(run_dir, dataset, sft_seed, DECOUPLED_NAMES["decoupled_sft"])
    if not reuse_if_done(sft_out, cfg, SFT_FIELDS):
        train = list(episodes["train"])[: cfg.sft_episodes]
        selector_rows, ranker_rows = decoupled_sft_records(train, teacher, cfg, sft_seed)
        _train_sft(cfg, selector_rows, vocab, sft_out / "selector", sft_seed)
        _train_sft(cfg, ranker_rows, vocab, sft_out / "ranker", sft_seed)
        _merge_logs(sft_out)
        mark_done(sft_out, seconds=_sub_seconds(sft_out), config=asdict(cfg), method="decoupled_sft")
    sft_selector, sft_ranker = sft_out / "selector" / "model", sft_out / "ranker" / "model"
    if "decoupled_sft" in methods:
        results["Decoupled SFT"] = {s: evaluate_chain(sft_selector, sft_ranker, episodes[s], cfg, sft_out, s)
                                    for s in eval_splits}
        log(f"seed {seed} Decoupled SFT: {time.perf_counter() - start:.0f} s")

    if "decoupled_rl" in methods:
        start = time.perf_counter()
        out = unit_dir(run_dir, dataset, seed, DECOUPLED_NAMES["decoupled_rl"])
        info = {"method": "decoupled_rl", "ranker_slates": ranker_slates, "sft_seed": sft_seed}
        _check_done_info(out / "selector", sft_seed=sft_seed)
        for folder in (out, out / "ranker"):
            _check_done_info(folder, ranker_slates=ranker_slates, sft_seed=sft_seed)
        if not reuse_if_done(out, cfg):
            coverage_fn, _ = make_reward_funcs(cfg.n, cfg.k, coverage=cfg.coverage, normaliser=cfg.normaliser)
            rows = rl_records(episodes["train"], cfg)
            random.Random(seed).shuffle(rows)  # the order run_rl uses
            _train_grpo(cfg, rows, coverage_fn, sft_selector, out / "selector", seed, **info)
            if not reuse_if_done(out / "ranker", cfg):
                ranker_rows, stats = ranker_rl_records(list(episodes["train"]), cfg, teacher, seed, sft_selector,
                                                       ranker_slates, sft_seed)
                (out / "ranker").mkdir(parents=True, exist_ok=True)
                with (out / "ranker" / "slates.jsonl").open("w") as f:
                    for row, source in zip(ranker_rows, stats["sources"]):
                        f.write(json.dumps({"slate_text": row["slate_text"], "source": source}) + "\n")
                reward = make_ranker_reward(cfg.n, cfg.k, coverage=cfg.coverage, normaliser=cfg.normaliser)
                _train_grpo(cfg, ranker_rows, reward, sft_ranker, out / "ranker", seed, **info,
                            slates={k: v for k, v in stats.items() if k != "sources"})
            _merge_logs(out)
            mark_done(out, seconds=_sub_seconds(out), config=asdict(cfg), **info)
        results["Decoupled RL"] = {
            s: evaluate_chain(out / "selector" / "model", out / "ranker" / "model", episodes[s], cfg, out, s)
            for s in eval_splits
        }
        log(f"seed {seed} Decoupled RL: {time.perf_counter() - start:.0f} s")
    return results

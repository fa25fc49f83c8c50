"""Baselines on the same episodes, metric code and results layout as the trained methods.

A non-learned or classical baseline is an *ordering* of an episode's candidate ids; it
becomes a rollout with `ordering_rollout` (slate = its top n, ranking = its top k), so the
one parser and `metrics.per_query` judge it exactly like a policy's text. The zero-shot LLM
baselines write text; single-step uses the F-GRPO prompt (`render_prompt(..., "chat")`),
two-step asks for `<SLATE> ... </SLATE>` first and then, given that slate, for
`<RANK> ... </RANK>`, and the two answers are joined into one rollout (`compose_two_step`).

| method (folder = table name)  | task | what                                                   |
|-------------------------------|------|--------------------------------------------------------|
| Random                        | both | seeded shuffle of the pool (differs per seed)           |
| Popularity                    | rec  | training-interaction counts (`data.item_popularity`)   |
| BM25                          | qa   | question against passage text (`bm25s`)                |
| SASRec                        | rec  | `sasrec.py`, trained on the training episodes, per seed |
| Zero-shot (single-step)       | both | SmolLM2-135M-Instruct, greedy, the F-GRPO format        |
| Zero-shot (two-step)          | both | the same model: select, then rank the selected slate   |

Each writes `<run_dir>/train/<dataset>/seed<s>/<method>/eval_<split>.json` (`summarise`),
`per_query_<split>.jsonl` and `done.json`; a finished unit is skipped on rerun. The folder
name is the method name `experiment.results_table` shows. Deterministic baselines still get
one folder per seed, so every table row has the same number of seeds.

For GPU users (not run here):
- The zero-shot path takes any chat model: `run_baselines(..., zero_shot_model="Qwen/Qwen3-4B-
  Instruct-2507")` loads it through `models.load_model` (hub id or local folder), and the
  method name gets its short name, e.g. `Zero-shot (single-step, Qwen3-4B-Instruct-2507)`.
  To decode on a GPU, load the model yourself (`load_model(hub_id, device_map="cuda")`) and
  call `zero_shot_texts` with a larger `batch_size`; `experiment.generate_greedy` must then
  put its inputs on `model.device` (as written it leaves them on the CPU).
- RankZephyr and MonoT5 (the paper's zero-shot rerankers) fit as order functions: write
  `order_fn(episode) -> [candidate ids, best first]` and call `evaluate_baseline("RankZephyr",
  order_fn, ...)`. RankZephyr (`castorini/rank_zephyr_7b_v1_full`, through the `rank_llm`
  package) reorders the pool's passages listwise from the query; MonoT5
  (`castorini/monot5-base-msmarco-10k`, plain `transformers` T5) scores each passage by the
  probability of "true" against "false" as the first decoded token for the input
  `Query: {query} Document: {text} Relevant:`. Both need the hub (and a GPU for RankZephyr);
  neither is implemented here.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from .episodes import Episode
from .experiment import ExperimentConfig, evaluate_texts, generate_greedy, is_done, mark_done, unit_dir
from .metrics import per_query, summarise
from .prompts import _ITEM_NOUN, _chat_user, pool_labels, render_prompt
from .rollout import RANK_CLOSE, RANK_OPEN, SLATE_CLOSE, SLATE_OPEN, parse_rollout, render_rollout, split_labels
from .teachers import bm25_order, popularity_order, random_order

SMOLLM2 = "smollm2-135m"
BASELINES = ("random", "popularity", "bm25", "sasrec", "zero_shot_single", "zero_shot_two")
TASK_BASELINES = {
    "rec": ("random", "popularity", "sasrec", "zero_shot_single", "zero_shot_two"),
    "qa": ("random", "bm25", "zero_shot_single", "zero_shot_two"),
}
METHOD_NAMES = {"random": "Random", "popularity": "Popularity", "bm25": "BM25", "sasrec": "SASRec",
                "zero_shot_single": "Zero-shot (single-step)", "zero_shot_two": "Zero-shot (two-step)"}
# Greedy token budgets: ~2 tokens per `cN` label plus spaces and tags, with room to spare.
SINGLE_STEP_TOKENS = 72
SELECT_TOKENS = 48
RANK_TOKENS = 32

OrderFn = Callable[[Episode], Sequence[str]]


# ---------------------------------------------------------------- orderings → results


def ordering_rollout(order: Sequence[str], n: int = 10, k: int = 5) -> str:
    """An ordering as a rollout: slate = its top n, ranking = its top k (best first)."""
    return render_rollout(list(order[:n]), list(order[:min(k, n)]))


def write_results(folder: Path, split: str, rows: list[dict], **info) -> dict:
    """per_query_<split>.jsonl, then eval_<split>.json (summarise), then done.json."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"per_query_{split}.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    summary = summarise(rows)
    (folder / f"eval_{split}.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    mark_done(folder, split=split, **info)
    return summary


def _method_folder(run_dir, episodes: Sequence[Episode], seed: int, name: str) -> Path:
    if not episodes:
        raise ValueError("no episodes to evaluate")
    if "/" in name or not name.strip():
        raise ValueError(f"a method name becomes a folder: no slashes, not empty; got {name!r}")
    return unit_dir(run_dir, episodes[0].dataset, seed, name)


def _cached(folder: Path, split: str) -> dict | None:
    path = folder / f"eval_{split}.json"
    return json.loads(path.read_text()) if path.exists() else None


def evaluate_baseline(name: str, order_fn: OrderFn, episodes: Sequence[Episode], run_dir, seed: int,
                      split: str = "test", n: int = 10, k: int = 5, **info) -> dict:
    """Score `order_fn` on `episodes` and write its results under `<seed>/<name>/` (cached);
    `info` goes into done.json."""
    folder = _method_folder(run_dir, episodes, seed, name)
    if (cached := _cached(folder, split)) is not None:
        return cached
    start = time.perf_counter()
    texts = [ordering_rollout(order_fn(ep), n, k) for ep in episodes]
    rows = per_query(texts, episodes, n=n, k=k, outcome_k=k)
    for row, ep, text in zip(rows, episodes, texts):
        row["query_id"], row["text"] = ep.query_id, text
    return write_results(folder, split, rows, seconds=round(time.perf_counter() - start, 2), n=n, k=k, **info)


# ---------------------------------------------------------------- zero-shot prompts


def _target_phrase(episode: Episode) -> str:
    if episode.task == "qa":
        return "passages needed to answer the question"
    return f"{_ITEM_NOUN.get(episode.meta.get('domain'), 'item')}s the user is most likely to pick next"


def selection_prompt(episode: Episode, n: int = 10) -> list[dict]:
    """Step one of two: choose a slate of n labels (the chat style's `c1 .. cN`), no ranking."""
    size = len(episode.candidates)
    n = min(n, size)
    system = (
        f"You select candidates. From the {size} candidates, each shown as [label] text, choose the {n} "
        f"{_target_phrase(episode)}, in any order. Answer on one line with candidate labels separated by "
        f"spaces, nothing else:\n{SLATE_OPEN} {n} labels {SLATE_CLOSE}\n"
        f"Example: {SLATE_OPEN} c4 c1 c9 {SLATE_CLOSE}\nUse each label at most once and only labels from the list."
    )
    return [{"role": "system", "content": system},
            {"role": "user", "content": _chat_user(episode, pool_labels(episode, "chat"))}]


def ranking_prompt(episode: Episode, slate: Sequence[str], k: int = 5) -> list[dict]:
    """Step two of two: rank the best k of a chosen slate (labels as in the full pool)."""
    labels = pool_labels(episode, "chat")
    text = dict(zip(labels, (c.text for c in episode.candidates)))
    slate = [label for label in slate if label in text]
    k = min(k, len(slate))
    head = _chat_user(episode, labels).split("\n\nCandidates:\n")[0]
    shown = "\n".join(f"[{label}] {text[label]}" for label in slate)
    system = (
        f"You rank candidates. Of the {len(slate)} candidates below, each shown as [label] text, rank the best "
        f"{k} {_target_phrase(episode)}, most relevant first. Answer on one line with candidate labels "
        f"separated by spaces, nothing else:\n{RANK_OPEN} {k} labels {RANK_CLOSE}\n"
        f"Example: {RANK_OPEN} {' '.join(slate[:2][::-1])} {RANK_CLOSE}\n"
        "Use each label at most once and only labels from the list."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": f"{head}\n\nCandidates:\n{shown}"}]


def _tagged_labels(text: str, open_tag: str, close_tag: str) -> list[str] | None:
    """Labels between the first open tag and the next close tag, or None without both."""
    i = text.find(open_tag)
    j = text.find(close_tag, i + len(open_tag)) if i >= 0 else -1
    return None if j < 0 else split_labels(text[i + len(open_tag):j])


def compose_two_step(selection: str, ranking: str) -> str:
    """Both answers as one rollout in the F-GRPO grammar, so the one parser judges them.

    A missing tag pair stays missing: without a slate the selection answer is kept as written
    (it does not parse), without a ranking the ranking answer follows the slate as written.
    """
    slate = _tagged_labels(selection, SLATE_OPEN, SLATE_CLOSE)
    if slate is None:
        return selection
    rank = _tagged_labels(ranking, RANK_OPEN, RANK_CLOSE)
    if rank is None:
        return render_rollout(slate, []).split(RANK_OPEN)[0] + ranking
    return render_rollout(slate, rank)


# ---------------------------------------------------------------- zero-shot generation


def zero_shot_texts(model, tokenizer, episodes: Sequence[Episode], mode: str, n: int = 10, k: int = 5,
                    batch_size: int = 16, progress: bool = True) -> list[dict]:
    """Greedy zero-shot answers, one dict per episode: `text` (the rollout scored) and, for
    two-step, the raw `selection` and `ranking_answer`. mode: "single" or "two"."""
    if mode == "single":
        prompts = [render_prompt(ep, "chat", n, k) for ep in episodes]
        return [{"text": t} for t in generate_greedy(model, tokenizer, prompts, SINGLE_STEP_TOKENS, batch_size, progress)]
    if mode != "two":
        raise ValueError(f"mode must be 'single' or 'two', got {mode!r}")
    selections = generate_greedy(model, tokenizer, [selection_prompt(ep, n) for ep in episodes], SELECT_TOKENS,
                                 batch_size, progress)
    # Only a well-formed slate goes on to be ranked: an invalid one makes the rollout invalid anyway.
    parsed = [parse_rollout(sel, pool_labels(ep, "chat"), n=n, k=k) for ep, sel in zip(episodes, selections)]
    slates = {i: r.slate for i, r in enumerate(parsed) if r.slate_valid}
    ranked = generate_greedy(model, tokenizer, [ranking_prompt(episodes[i], s, k) for i, s in slates.items()],
                             RANK_TOKENS, batch_size, progress) if slates else []
    answers = dict(zip(slates, ranked))
    out = []
    for i, sel in enumerate(selections):
        # the normalised slate (e.g. `[c3]` read as `c3`) is what step two saw
        shown = render_rollout(slates[i], []).split(RANK_OPEN)[0] if i in slates else sel
        out.append({"text": compose_two_step(shown, answers.get(i, "")), "selection": sel,
                    "ranking_answer": answers.get(i, "")})
    return out


def zero_shot_name(mode: str, model_name: str = SMOLLM2) -> str:
    base = METHOD_NAMES[f"zero_shot_{mode}"]
    if model_name == SMOLLM2:
        return base
    return f"{base[:-1]}, {Path(model_name.rstrip('/')).name})"


def evaluate_zero_shot(mode: str, episodes: Sequence[Episode], run_dir, seeds: Sequence[int], split: str = "test",
                       model_name: str = SMOLLM2, n: int = 10, k: int = 5, batch_size: int = 16,
                       progress: bool = True) -> dict[int, dict]:
    """Greedy decoding is deterministic: generate once, write one result folder per seed."""
    name = zero_shot_name(mode, model_name)
    folders = {s: _method_folder(run_dir, episodes, s, name) for s in seeds}
    results = {s: c for s, f in folders.items() if (c := _cached(f, split)) is not None}
    todo = [s for s in seeds if s not in results]
    if not todo:
        return results
    from .models import load_model

    start = time.perf_counter()
    model, tokenizer = load_model(model_name)
    answers = zero_shot_texts(model, tokenizer, episodes, mode, n, k, batch_size, progress)
    rows = evaluate_texts([a["text"] for a in answers], episodes, ExperimentConfig(style="chat", n=n, k=k))
    for row, answer in zip(rows, answers):
        row.update(answer)
    seconds = round(time.perf_counter() - start, 1)
    for s in todo:
        results[s] = write_results(folders[s], split, rows, seconds=seconds, model=model_name, mode=mode, n=n, k=k)
    return results


# ---------------------------------------------------------------- one entry for the notebooks


def baseline_order_fn(baseline: str, dataset: str, train: Sequence[Episode], seed: int, sasrec_config=None,
                      progress: bool = True) -> OrderFn:
    """The order function of a non-LLM baseline (SASRec is trained here, on `train`, with `seed`)."""
    if baseline == "random":
        return lambda ep: random_order(ep, seed)
    if baseline == "popularity":
        from .data import item_popularity

        counts = item_popularity(dataset, n_positives=len(train[0].relevant) if train else 1)
        return lambda ep: popularity_order(ep, counts)
    if baseline == "bm25":
        return bm25_order
    if baseline == "sasrec":
        from .sasrec import SASRecConfig, fit_sasrec, sasrec_order

        fitted = fit_sasrec(train, replace(sasrec_config or SASRecConfig(), seed=seed), progress=progress)
        return lambda ep: sasrec_order(fitted, ep)
    raise ValueError(f"baseline must be one of random, popularity, bm25, sasrec; got {baseline!r}")


def run_baselines(run_dir, dataset: str, episodes: dict[str, list[Episode]], seeds: Sequence[int] = (0,),
                  n: int = 10, k: int = 5, which: Sequence[str] | None = None, split: str = "test",
                  sasrec_config=None, zero_shot_model: str = SMOLLM2, zero_shot_episodes: int | None = None,
                  zero_shot_batch_size: int = 16, progress: bool = True, log=print) -> "pd.DataFrame":
    """Every requested baseline for every seed on `episodes[split]`; finished units are read
    back, not rerun. `which` defaults to the task's baselines (TASK_BASELINES);
    `zero_shot_episodes` caps the zero-shot runs to the first episodes of the split (CPU
    decoding is the slow part). Returns one row per (seed, method) with every metric and the
    seconds the unit took."""
    import pandas as pd

    from .data import task_of

    task = task_of(dataset)
    which = tuple(TASK_BASELINES[task] if which is None else which)
    unknown = [b for b in which if b not in TASK_BASELINES[task]]
    if unknown:
        raise ValueError(f"{unknown} do not apply to {dataset!r}; allowed: {', '.join(TASK_BASELINES[task])}")
    test, train = episodes[split], episodes.get("train", [])
    rows = []

    def record(name: str, seed: int, summary: dict, folder: Path) -> None:
        done = json.loads((folder / "done.json").read_text()) if is_done(folder) else {}
        seconds = done.get("seconds", 0.0) + done.get("fit_seconds", 0.0)
        rows.append({"dataset": dataset, "seed": seed, "method": name, **summary, "seconds": seconds})

    for seed in seeds:
        for b in (b for b in which if not b.startswith("zero_shot")):
            name = METHOD_NAMES[b]
            folder = unit_dir(run_dir, dataset, seed, name)
            summary = _cached(folder, split)
            if summary is None:
                start = time.perf_counter()
                order_fn = baseline_order_fn(b, dataset, train, seed, sasrec_config, progress)
                fit = round(time.perf_counter() - start, 2)  # SASRec training; ~0 for the rest
                summary = evaluate_baseline(name, order_fn, test, run_dir, seed, split, n, k, fit_seconds=fit)
                log(f"seed {seed} {name}: {time.perf_counter() - start:.1f} s")
            record(name, seed, summary, folder)
    zs_eps = test if zero_shot_episodes is None else test[:zero_shot_episodes]
    for mode in ("single", "two"):
        if f"zero_shot_{mode}" not in which:
            continue
        start = time.perf_counter()
        name = zero_shot_name(mode, zero_shot_model)
        results = evaluate_zero_shot(mode, zs_eps, run_dir, seeds, split, zero_shot_model, n, k,
                                     zero_shot_batch_size, progress)
        for seed in seeds:
            record(name, seed, results[seed], unit_dir(run_dir, dataset, seed, name))
        log(f"{name} ({len(zs_eps)} episodes): {time.perf_counter() - start:.1f} s")
    return pd.DataFrame(rows, columns=None if rows else ["dataset", "seed", "method", "seconds"])


"""Figures and tables of notebook 04, built from a run folder alone (nothing trains here).

Each builder reads `<run_dir>/train/<dataset>/seed<s>/<method>/` (layout of
`experiment.py`; baselines write the same files) and returns a `Result`: the tidy data
behind the figure, the figure itself (None when there is nothing to draw), the run files
it read, and sentences computed from the numbers. `save_result` writes PNG + PDF + a JSON
sidecar (parameters, git commit, files read) under the figures folder.

Sweeps. `experiment.py` has one layout per run, so a sweep is a set of runs: each setting
gets its own run folder under `<run_dir>/sweeps/<name>/` (e.g. `sweeps/lambda_0.5/`) with
its own `train/` tree, made by running notebook 03 with `run_dir` set to it (see
`pipeline.run_sweeps`). The value a run was trained with is read from each unit's
`done.json` config (`phase_lambda`, `n`, ...), never from the folder name, and the main
run counts as one more setting. A sweep with fewer than two values is "not run in this
profile".

Advantage conflicts. The trainer logs `phase/conflict_rate`: the share of all completion
tokens whose joint advantage A_gen + lambda*A_rank points against the token's own phase
advantage. It is logged for both methods (in a GRPO run it is what GRPO applied; in an
F-GRPO run, what GRPO would have applied to the same rollouts, while what F-GRPO applies
has zero conflict by construction). Per-phase rates are read from `phase/conflict_rate_gen`
and `phase/conflict_rate_rank` when a trainer logs them; otherwise the figure shows the
all-token rate and says so.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .experiment import METHOD_NAMES, read_log
from .report import curve_band, t_interval

KS = (1, 3, 5)
TABLE_METRICS = tuple(f"{m}@{k}" for k in KS for m in ("R", "P", "Hit", "N")) + ("ValidRatio",)
OUTCOMES = ("hit", "rank_drop", "slate_miss", "invalid")
OUTCOME_LABELS = {"hit": "hit", "rank_drop": "rank drop", "slate_miss": "slate miss", "invalid": "invalid"}
OUTCOME_COLORS = {"hit": "#2ca02c", "rank_drop": "#ff7f0e", "slate_miss": "#d62728", "invalid": "#7f7f7f"}
RL_METHODS = ("GRPO", "F-GRPO")
# table order: ours, the RL baseline, supervised, then the rest alphabetically
METHOD_ORDER = ("F-GRPO", "GRPO", "Decoupled RL", "SFT", "Decoupled SFT")
COVERAGE, UTILITY = "rewards/coverage_reward/mean", "rewards/utility_reward/mean"
CONFLICT = "phase/conflict_rate"
CONFLICT_PHASES = {"slate tokens": "phase/conflict_rate_gen", "ranking tokens": "phase/conflict_rate_rank"}


@dataclass
class Result:
    """What one builder made: data, figure, files read, sentences, status."""

    name: str
    data: pd.DataFrame
    fig: object = None
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok", "empty" (nothing in the run to draw) or "not run" (sweep absent)


# ---------------------------------------------------------------- reading the run folder


def display_name(folder_name: str) -> str:
    return METHOD_NAMES.get(folder_name, folder_name)


def datasets(run_dir) -> list[str]:
    root = Path(run_dir) / "train"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


def unit_folders(run_dir, dataset: str) -> list[Path]:
    return sorted(p for p in (Path(run_dir) / "train" / dataset).glob("seed*/*") if p.is_dir())


def _seed(folder: Path) -> int:
    return int(folder.parent.name[4:])


def _rel(path: Path, run_dir) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return str(path)


def unit_config(folder: Path) -> dict:
    """The ExperimentConfig a unit was trained with ({} for units without one, e.g. baselines)."""
    path = folder / "done.json"
    return json.loads(path.read_text()).get("config", {}) if path.exists() else {}


def episode_params(run_dir, dataset: str) -> dict:
    """The parameters notebook 01 built a run's episodes with (e.g. `n_positives`), {} if unknown."""
    path = Path(run_dir) / "data" / dataset / "params.json"
    return json.loads(path.read_text()) if path.exists() else {}


def eval_table(run_dir, dataset: str, split: str = "test") -> tuple[pd.DataFrame, list[str]]:
    """One row per (seed, method) from eval_<split>.json, with the unit's config values and
    the episodes' number of relevant items (`n_positives`, which no unit config records)."""
    rows, sources = [], []
    n_positives = episode_params(run_dir, dataset).get("n_positives")
    for folder in unit_folders(run_dir, dataset):
        path = folder / f"eval_{split}.json"
        if path.exists():
            cfg = unit_config(folder)
            rows.append({"dataset": dataset, "seed": _seed(folder), "method": display_name(folder.name),
                         "phase_lambda": cfg.get("phase_lambda"), "n": cfg.get("n"), "n_positives": n_positives,
                         **json.loads(path.read_text())})
            sources.append(_rel(path, run_dir))
    return pd.DataFrame(rows), sources


def per_query_table(run_dir, dataset: str, split: str = "test", methods: Sequence[str] = RL_METHODS
                    ) -> tuple[pd.DataFrame, list[str]]:
    """Per-query rows (seed, method, query_id, metrics) of the given display-named methods."""
    frames, sources = [], []
    for folder in unit_folders(run_dir, dataset):
        path = folder / f"per_query_{split}.jsonl"
        if display_name(folder.name) in methods and path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            frame = pd.DataFrame(rows).drop(columns=["text"], errors="ignore")
            frame["seed"], frame["method"] = _seed(folder), display_name(folder.name)
            frames.append(frame)
            sources.append(_rel(path, run_dir))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), sources


def log_table(run_dir, dataset: str) -> tuple[pd.DataFrame, list[str]]:
    """Every logged RL step of GRPO and F-GRPO runs, with seed and method columns."""
    frames, sources = [], []
    for folder in unit_folders(run_dir, dataset):
        if display_name(folder.name) in RL_METHODS and (folder / "log.jsonl").exists():
            log = pd.DataFrame(read_log(folder))
            if len(log) and "step" in log:
                log["seed"], log["method"] = _seed(folder), display_name(folder.name)
                frames.append(log)
                sources.append(_rel(folder / "log.jsonl", run_dir))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), sources


def sweep_runs(run_dir) -> list[Path]:
    """The main run and every run folder under <run_dir>/sweeps/ (each has its own train/)."""
    root = Path(run_dir)
    return [root] + sorted(p for p in (root / "sweeps").glob("*") if (p / "train").is_dir())


def _method_key(method: str) -> tuple:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def ordered_methods(methods) -> list[str]:
    return sorted(set(methods), key=_method_key)


def _colors(methods) -> list[str]:
    from .plots import method_color

    return [method_color(m) for m in methods]


def _empty(name: str, note: str, status: str = "empty") -> Result:
    return Result(name, pd.DataFrame(), None, [], [note], status)


# ---------------------------------------------------------------- training dynamics


def steps_to_fraction(curve: pd.DataFrame, fraction: float = 0.9) -> float | None:
    """First step where the (smoothed) mean curve has covered `fraction` of its rise from the
    first step to its peak; None when it never rises."""
    curve = curve.sort_values("step")
    start, peak = float(curve["mean"].iloc[0]), float(curve["mean"].max())
    if not peak > start:
        return None
    reached = curve[curve["mean"] >= start + fraction * (peak - start)]
    return float(reached["step"].iloc[0])


def training_dynamics(run_dir, dataset: str, smooth: int = 10, fraction: float = 0.9) -> Result:
    """Slate coverage reward and ranking utility reward against RL step, GRPO vs F-GRPO,
    mean over seeds with a min-max band; and the step each phase reaches `fraction` of its rise."""
    import matplotlib.pyplot as plt

    logs, sources = log_table(run_dir, dataset)
    name = f"training_dynamics_{dataset}"
    if logs.empty:
        return _empty(name, f"{dataset}: no GRPO or F-GRPO training logs in this run.")
    panels = [(COVERAGE, "slate phase: coverage reward (recall)"), (UTILITY, "ranking phase: utility reward (NDCG@k)")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharex=True)
    rows, notes = [], []
    for ax, (column, title) in zip(axes, panels):
        band = curve_band(logs, column, smooth)
        for method in ordered_methods(band["method"]):
            part = band[band["method"] == method]
            color = _colors([method])[0]
            ax.plot(part["step"], part["mean"], color=color, label=f"{method} (mean of seeds)")
            ax.fill_between(part["step"], part["low"], part["high"], color=color, alpha=0.2)
            rows.append({"phase": "slate" if column == COVERAGE else "ranking", "method": method,
                         "steps_to_fraction": steps_to_fraction(part, fraction),
                         "first": float(part["mean"].iloc[0]), "peak": float(part["mean"].max()),
                         "last": float(part["mean"].iloc[-1])})
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL step")
        ax.set_ylabel("mean reward per rollout")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{dataset}: training dynamics (band: min to max over seeds, rolling mean of {smooth} steps; "
                 "an invalid rollout scores the format penalty)", fontsize=9)
    fig.tight_layout()
    data = pd.DataFrame(rows)
    for method in ordered_methods(data["method"]):
        part = data[data["method"] == method].set_index("phase")["steps_to_fraction"]
        slate, rank = part.get("slate"), part.get("ranking")
        if slate is None or rank is None or pd.isna(slate) or pd.isna(rank):
            notes.append(f"{dataset}, {method}: a phase's reward never rose above its first step, so which phase "
                         f"converges first cannot be read from this run.")
        else:
            order = ("the slate phase first" if slate < rank else "the ranking phase first" if rank < slate
                     else "both phases at the same step")
            notes.append(f"{dataset}, {method}: {fraction:.0%} of the rise reached at step {slate:.0f} (slate) and "
                         f"{rank:.0f} (ranking): {order} (the paper reports the slate phase first).")
    return Result(name, data, fig, sources, notes)


# ---------------------------------------------------------------- error breakdown


def error_breakdown(run_dir, dataset: str, split: str = "test") -> Result:
    """Per method, the share of test queries that are hit / rank drop / slate miss / invalid
    (mean over seeds, with a t-interval)."""
    import matplotlib.pyplot as plt

    table, sources = eval_table(run_dir, dataset, split)
    name = f"error_breakdown_{dataset}"
    columns = [f"outcome/{o}" for o in OUTCOMES]
    if table.empty or not set(columns) <= set(table.columns):
        return _empty(name, f"{dataset}: no evaluated outcomes in this run.")
    rows = []
    for method, group in table.groupby("method"):
        for outcome in OUTCOMES:
            mean, low, high = t_interval(group[f"outcome/{outcome}"].dropna())
            rows.append({"dataset": dataset, "method": method, "outcome": outcome, "mean": mean,
                         "ci_low": low, "ci_high": high, "n_seeds": int(group[f"outcome/{outcome}"].notna().sum())})
    data = pd.DataFrame(rows)
    wide = data.pivot_table(index="method", columns="outcome", values="mean").reindex(columns=list(OUTCOMES))
    methods = ordered_methods(wide.index)[::-1]  # ours on top
    wide = wide.reindex(methods)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(methods) + 1.4))
    left = np.zeros(len(methods))
    for outcome in OUTCOMES:
        values = wide[outcome].fillna(0).to_numpy()
        ax.barh(methods, values, left=left, color=OUTCOME_COLORS[outcome], label=OUTCOME_LABELS[outcome])
        left += values
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of {split} queries (mean over seeds)")
    ax.set_title(f"{dataset}: where each method's top-k misses come from", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="outcome at k", title_fontsize=8)
    fig.tight_layout()
    notes = []
    for method in [m for m in RL_METHODS[::-1] if m in wide.index]:
        r = wide.loc[method]
        misses = r["rank_drop"] + r["slate_miss"]
        split_words = (f"of the valid misses, {r['slate_miss'] / misses:.0%} are slate misses" if misses > 0
                       else "no valid misses")
        notes.append(f"{dataset}, {method}: hit {r['hit']:.1%}, rank drop {r['rank_drop']:.1%}, slate miss "
                     f"{r['slate_miss']:.1%}, invalid {r['invalid']:.1%}; {split_words}.")
    if len(wide) and (wide["invalid"] > 0.95).all():
        notes.append(f"{dataset}: every method wrote invalid output on more than 95% of queries, so the breakdown "
                     "says nothing about slate versus ranking errors in this run.")
    return Result(name, data, fig, sources, notes)


def slate_copy_rates(run_dir, dataset: str, split: str = "test",
                     methods: Sequence[str] = ("SFT", *RL_METHODS)) -> pd.DataFrame:
    """Per method and seed, the share of valid rollouts whose ranking is just the first labels
    of its own slate in the order they were written: a ranking that carries no preference of
    its own (the slate is a set, written in pool order by SFT). RL can raise validity this way
    while the ranking phase learns nothing, so read Hit@1 gains with this beside them."""
    from .rollout import parse_rollout

    rows = []
    for folder in unit_folders(run_dir, dataset):
        path = folder / f"per_query_{split}.jsonl"
        method = display_name(folder.name)
        if method not in methods or not path.exists():
            continue
        cfg = unit_config(folder)
        valid = copies = 0
        for line in path.read_text().splitlines():
            text = json.loads(line).get("text") if line.strip() else None
            if text is None:
                continue
            rollout = parse_rollout(text, None, n=cfg.get("n", 10), k=cfg.get("k", 5))
            if rollout.valid and rollout.ranking:
                valid += 1
                copies += list(rollout.ranking) == list(rollout.slate[: len(rollout.ranking)])
        rows.append({"dataset": dataset, "method": method, "seed": _seed(folder), "valid": valid,
                     "copy_rate": copies / valid if valid else float("nan")})
    return pd.DataFrame(rows, columns=["dataset", "method", "seed", "valid", "copy_rate"])


# ---------------------------------------------------------------- advantage conflicts


def conflict_summary(logs: pd.DataFrame) -> pd.DataFrame:
    """Mean conflict rate over steps, per method, seed and phase ("all tokens" when only the
    joint rate is logged). For F-GRPO the applied rate is 0; the logged value is the
    counterfactual (what GRPO would have applied to F-GRPO's rollouts)."""
    rows = []
    columns = {p: c for p, c in CONFLICT_PHASES.items() if c in logs} or ({"all tokens": CONFLICT}
                                                                         if CONFLICT in logs else {})
    for (method, seed), group in logs.groupby(["method", "seed"]):
        for phase, column in columns.items():
            logged = float(group[column].dropna().mean()) if group[column].notna().any() else math.nan
            rows.append({"method": method, "seed": seed, "phase": phase, "logged_rate": logged,
                         "applied_rate": 0.0 if method == "F-GRPO" else logged})
    return pd.DataFrame(rows)


def advantage_conflicts(run_dir, dataset: str, smooth: int = 10) -> Result:
    """Over training: how often GRPO's joint advantage pushes a phase's tokens against that
    phase's own group-relative advantage; F-GRPO applies none (zero by construction)."""
    import matplotlib.pyplot as plt

    logs, sources = log_table(run_dir, dataset)
    name = f"advantage_conflicts_{dataset}"
    if logs.empty or CONFLICT not in logs:
        return _empty(name, f"{dataset}: no conflict rates logged in this run.")
    per_phase = {p: c for p, c in CONFLICT_PHASES.items() if c in logs}
    columns = per_phase or {"all completion tokens (per-phase split not logged)": CONFLICT}
    fig, axes = plt.subplots(1, len(columns), figsize=(4.6 * len(columns), 3.4), squeeze=False)
    for ax, (phase, column) in zip(axes[0], columns.items()):
        band = curve_band(logs, column, smooth)
        grpo = band[band["method"] == "GRPO"]
        if len(grpo):
            ax.plot(grpo["step"], grpo["mean"], color=_colors(["GRPO"])[0], label="GRPO (applied)")
            ax.fill_between(grpo["step"], grpo["low"], grpo["high"], color=_colors(["GRPO"])[0], alpha=0.2)
        fg = band[band["method"] == "F-GRPO"]
        if len(fg):
            color = _colors(["F-GRPO"])[0]
            ax.plot(fg["step"], fg["mean"], color=color, ls="--", label="GRPO's advantage on F-GRPO's rollouts")
            ax.plot(fg["step"], np.zeros(len(fg)), color=color, lw=2.5, label="F-GRPO (applied: 0)")
        ax.set_title(phase, fontsize=10)
        ax.set_xlabel("RL step")
        ax.set_ylabel("share of tokens pushed against their phase")
        ax.set_ylim(bottom=-0.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{dataset}: advantage conflicts under the joint advantage (band: min to max over seeds)",
                 fontsize=10)
    fig.tight_layout()
    data = conflict_summary(logs)
    data.insert(0, "dataset", dataset)
    notes = []
    for phase, group in data[data["method"] == "GRPO"].groupby("phase"):
        mean, low, high = t_interval(group["logged_rate"].dropna())
        notes.append(f"{dataset}, GRPO, {phase}: {mean:.1%} of tokens pushed against their own phase's advantage "
                     f"on average over training (95% CI {low:.1%} to {high:.1%}, {len(group)} seeds); "
                     "F-GRPO applies 0% by construction.")
    if not per_phase:
        notes.append("The trainer logs one conflict rate over all completion tokens; the per-phase split "
                     "(slate vs ranking tokens) is not in the logs of this run.")
    return Result(name, data, fig, sources, notes)


# ---------------------------------------------------------------- sweeps


def sweep_table(run_dir, dataset: str, key: str, split: str = "test",
                methods: Sequence[str] = RL_METHODS) -> tuple[pd.DataFrame, list[str]]:
    """Per (run, seed, method): the config value `key` (from done.json) and the test metrics."""
    frames, sources = [], []
    for run in sweep_runs(run_dir):
        table, files = eval_table(run, dataset, split)
        if table.empty:
            continue
        table = table[table["method"].isin(methods)].copy()
        table["run"] = "." if run == Path(run_dir) else _rel(run, run_dir)
        frames.append(table)
        prefix = "" if run == Path(run_dir) else _rel(run, run_dir) + "/"
        sources += [prefix + f for f in files if display_name(Path(f).parent.name) in methods]
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(data):
        data = data.dropna(subset=[key])
    return data, sources


def sweep_summary(data: pd.DataFrame, key: str, metrics: Sequence[str]) -> pd.DataFrame:
    rows = []
    for (value, method), group in data.groupby([key, "method"]):
        for metric in metrics:
            mean, low, high = t_interval(group[metric].dropna())
            rows.append({key: value, "method": method, "metric": metric, "mean": mean, "ci_low": low,
                         "ci_high": high, "n_seeds": int(group[metric].notna().sum())})
    return pd.DataFrame(rows)


def hold_fixed(data: pd.DataFrame, hold: Sequence[str]) -> pd.DataFrame:
    """Rows whose `hold` config values equal the main run's (the most common value when the
    main run has none), so a lambda sweep is not mixed with runs of another slate size or
    number of relevant items. A row whose value is unknown (a run folder without notebook 01's
    params.json) is kept."""
    for column in hold:
        if column in data and data[column].notna().any():
            main = data[(data["run"] == ".") & data[column].notna()]
            value = (main if len(main) else data)[column].mode().iloc[0]
            data = data[(data[column] == value) | data[column].isna()]
    return data


def clipped_error_bars(mean, low, high, bounds: tuple[float, float] = (0.0, 1.0)) -> list[np.ndarray]:
    """`errorbar` lengths (below, above) of intervals clipped to the quantity's range: a
    t-interval over two seeds reaches past a rate's 0 or 1, where no run can be. Only the
    drawing is clipped; tables and notes keep the interval as computed."""
    mean, low, high = (np.asarray(v, dtype=float) for v in (mean, low, high))
    return [np.maximum(mean - np.clip(low, *bounds), 0.0), np.maximum(np.clip(high, *bounds) - mean, 0.0)]


def _sweep_figure(run_dir, dataset: str, key: str, label: str, metrics: Sequence[str], name: str,
                  split: str, hold: Sequence[str] = ()) -> Result:
    import matplotlib.pyplot as plt

    data, sources = sweep_table(run_dir, dataset, key, split)
    if len(data):
        data = hold_fixed(data, hold)
        runs = set(data["run"])
        sources = [s for s in sources if (s.split("/train/")[0] if s.startswith("sweeps/") else ".") in runs]
    values = sorted(data[key].unique()) if len(data) else []
    if len(values) < 2:
        found = f" (only {key} = {values[0]:g} found)" if values else ""
        return _empty(name, f"{dataset}: {label} sweep not run in this profile{found}; fgrpo_nb.pipeline.run_sweeps "
                            f"runs notebook 03 per {key} value under <run_dir>/sweeps/.", "not run")
    summary = sweep_summary(data, key, metrics)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.3), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part = summary[summary["metric"] == metric]
        for method in ordered_methods(part["method"]):
            p = part[part["method"] == method].sort_values(key)
            color = _colors([method])[0]
            ax.errorbar(p[key], p["mean"], yerr=clipped_error_bars(p["mean"], p["ci_low"], p["ci_high"]),
                        color=color, marker="o", capsize=3, label=method)
        ax.set_xticks(values)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{metric} ({split}, mean over seeds,\n95% CI clipped to [0, 1])")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{dataset}: sensitivity to {label}", fontsize=10)
    fig.tight_layout()
    notes = []
    for metric in metrics:
        part = summary[(summary["metric"] == metric) & (summary["method"] == "F-GRPO")]
        if len(part):
            best = part.loc[part["mean"].idxmax()]
            notes.append(f"{dataset}: F-GRPO's {metric} is highest at {label} = {best[key]:g} "
                         f"({best['mean']:.3f}, {int(best['n_seeds'])} seeds) among {', '.join(f'{v:g}' for v in values)}.")
    return Result(name, summary.assign(dataset=dataset), fig, sources, notes)


def lambda_sensitivity(run_dir, dataset: str, split: str = "test") -> Result:
    """N@1 and R@1 against the ranking weight lambda, GRPO and F-GRPO (paper: 1.0 best)."""
    return _sweep_figure(run_dir, dataset, "phase_lambda", "lambda (ranking weight)", ("N@1", "R@1"),
                         f"lambda_sensitivity_{dataset}", split, hold=("n", "n_positives"))


def slate_size(run_dir, dataset: str, split: str = "test") -> Result:
    """R@k and N@k against the slate size n (paper: n = 10 best of 5, 10, 15)."""
    return _sweep_figure(run_dir, dataset, "n", "slate size n", ("R@5", "N@5", "SlateRecall"),
                         f"slate_size_{dataset}", split, hold=("phase_lambda", "n_positives"))


# ---------------------------------------------------------------- conflict vs gain


def conflict_vs_gain_table(run_dir, split: str = "test", metrics: Sequence[str] = ("N@1", "SlateRecall")
                           ) -> tuple[pd.DataFrame, list[str]]:
    """One row per setting (run x dataset x config) and metric: GRPO's mean conflict rate and
    the paired F-GRPO - GRPO gain over seeds, both with t-intervals."""
    rows, sources = [], []
    for run in sweep_runs(run_dir):
        for dataset in datasets(run):
            table, files = eval_table(run, dataset, split)
            logs, log_files = log_table(run, dataset)
            if table.empty or logs.empty or CONFLICT not in logs:
                continue
            prefix = "" if run == Path(run_dir) else _rel(run, run_dir) + "/"
            sources += [prefix + f for f in files + log_files]
            rates = logs[logs["method"] == "GRPO"].groupby("seed")[CONFLICT].mean().dropna()
            c_mean, c_low, c_high = t_interval(rates)
            cfg = table[table["method"] == "GRPO"][["phase_lambda", "n"]].dropna()
            setting = f"{dataset}" + (f" ({_rel(run, run_dir)})" if run != Path(run_dir) else "")
            for metric in metrics:
                wide = table.pivot_table(index="seed", columns="method", values=metric)
                if not {"GRPO", "F-GRPO"} <= set(wide.columns):
                    continue
                gain = (wide["F-GRPO"] - wide["GRPO"]).dropna()
                g_mean, g_low, g_high = t_interval(gain)
                rows.append({"setting": setting, "dataset": dataset, "run": prefix.rstrip("/") or ".",
                             "phase_lambda": cfg["phase_lambda"].iloc[0] if len(cfg) else None,
                             "n": cfg["n"].iloc[0] if len(cfg) else None, "metric": metric,
                             "conflict": c_mean, "conflict_low": c_low, "conflict_high": c_high,
                             "gain": g_mean, "gain_low": g_low, "gain_high": g_high, "n_seeds": len(gain)})
    return pd.DataFrame(rows), sources


def conflict_vs_gain(run_dir, split: str = "test", metrics: Sequence[str] = ("N@1", "SlateRecall")) -> Result:
    """Gain of F-GRPO over GRPO against GRPO's measured conflict rate, one point per setting."""
    import matplotlib.pyplot as plt

    data, sources = conflict_vs_gain_table(run_dir, split, metrics)
    if data.empty:
        return _empty("conflict_vs_gain", "No setting has both GRPO and F-GRPO runs with logged conflict rates.")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.6), squeeze=False)
    markers = "osD^v<>p*h"
    settings = list(dict.fromkeys(data["setting"]))
    # colour tells settings apart here (every point is one F-GRPO - GRPO gain); Dark2 avoids
    # the methods' red and blue, which mean a method in every other figure
    palette = plt.get_cmap("Dark2").colors
    for ax, metric in zip(axes[0], metrics):
        part = data[data["metric"] == metric]
        for i, setting in enumerate(settings):
            p = part[part["setting"] == setting]
            if len(p):
                ax.errorbar(p["conflict"], p["gain"],
                            xerr=clipped_error_bars(p["conflict"], p["conflict_low"], p["conflict_high"]),
                            yerr=clipped_error_bars(p["gain"], p["gain_low"], p["gain_high"], (-1.0, 1.0)),
                            fmt=markers[i % 10], color=palette[i % len(palette)], capsize=3, label=setting)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("GRPO's advantage-conflict rate (share of tokens)")
        ax.set_ylabel(f"F-GRPO - GRPO, {metric} ({split})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, title="setting", title_fontsize=7)
    fig.suptitle("When does factorising the advantage pay? (95% CIs over seeds, clipped to each quantity's range)",
                 fontsize=10)
    fig.tight_layout()
    notes = []
    for metric in metrics:
        part = data[data["metric"] == metric]
        if len(part) >= 3 and part["conflict"].std() > 0 and part["gain"].std() > 0:
            r = float(np.corrcoef(part["conflict"], part["gain"])[0, 1])
            note = f"{metric}: across {len(part)} settings, gain and conflict rate correlate at r = {r:+.2f}"
            # with a handful of settings one point can set r: say what it is without the extreme one
            rest = part.drop(part["conflict"].idxmax())
            if len(rest) >= 3 and rest["conflict"].std() > 0 and rest["gain"].std() > 0:
                r_rest = float(np.corrcoef(rest["conflict"], rest["gain"])[0, 1])
                extreme = part.loc[part["conflict"].idxmax(), "setting"]
                note += f"; without the highest-conflict setting ({extreme}) r = {r_rest:+.2f}"
            notes.append(note + ".")
        else:
            notes.append(f"{metric}: {len(part)} setting(s), too few (or too alike) for a correlation; the map "
                         "needs more settings (datasets, n and lambda sweeps).")
    return Result("conflict_vs_gain", data, fig, sources, notes)


# ---------------------------------------------------------------- main table and the paired test


def main_results_table(run_dir, split: str = "test", metrics: Sequence[str] = TABLE_METRICS) -> Result:
    """dataset, method, metric, mean, ci_low, ci_high, n_seeds (95% t-interval over seeds)."""
    rows, sources = [], []
    for dataset in datasets(run_dir):
        table, files = eval_table(run_dir, dataset, split)
        sources += files
        for method in ordered_methods(table["method"]) if len(table) else []:
            group = table[table["method"] == method]
            for metric in metrics:
                if metric in group:
                    mean, low, high = t_interval(group[metric].dropna())
                    rows.append({"dataset": dataset, "method": method, "metric": metric, "mean": mean,
                                 "ci_low": low, "ci_high": high, "n_seeds": int(group[metric].notna().sum())})
    data = pd.DataFrame(rows, columns=["dataset", "method", "metric", "mean", "ci_low", "ci_high", "n_seeds"])
    return Result("main_results", data, None, sources, [] if len(data) else ["No evaluated runs found."],
                  "ok" if len(data) else "empty")


def _cell(row) -> str:
    if row["n_seeds"] < 2 or row["ci_high"] == row["ci_low"]:
        return f"{100 * row['mean']:.1f}"
    return f"{100 * row['mean']:.1f} ± {100 * (row['ci_high'] - row['ci_low']) / 2:.1f}"


def results_wide(data: pd.DataFrame) -> pd.DataFrame:
    """Rows dataset x method, a column per metric: mean ± CI half-width, in percent."""
    if data.empty:
        return pd.DataFrame()
    data = data.assign(cell=data.apply(_cell, axis=1))
    wide = data.pivot_table(index=["dataset", "method"], columns="metric", values="cell", aggfunc="first")
    wide = wide.reindex(columns=[m for m in TABLE_METRICS if m in wide.columns])
    order = sorted(wide.index, key=lambda i: (i[0], _method_key(i[1])))
    return wide.reindex(order)


def render_markdown(data: pd.DataFrame) -> str:
    wide = results_wide(data).reset_index()
    if wide.empty:
        return "_no results_\n"
    header = "| " + " | ".join(wide.columns) + " |\n|" + "---|" * len(wide.columns) + "\n"
    return header + "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in wide.itertuples(index=False))


def render_latex(data: pd.DataFrame) -> str:
    wide = results_wide(data).reset_index()
    if wide.empty:
        return "% no results\n"
    esc = lambda s: str(s).replace("±", r"$\pm$").replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    lines = [r"\begin{tabular}{ll" + "r" * (len(wide.columns) - 2) + "}", r"\toprule",
             " & ".join(esc(c) for c in wide.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in wide.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def save_table(result: Result, figures_dir, params: dict | None = None, run_dir=None) -> list[Path]:
    """<name>.csv (long), .md and .tex (wide, percent), and a JSON sidecar."""
    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{result.name}.csv", out / f"{result.name}.md", out / f"{result.name}.tex"]
    result.data.to_csv(paths[0], index=False)
    paths[1].write_text(render_markdown(result.data))
    paths[2].write_text(render_latex(result.data))
    write_sidecar(result, out / f"{result.name}.json", params, run_dir, [p.name for p in paths])
    return paths


def paired_bootstrap(run_dir, dataset: str, metric: str = "N@1", split: str = "test", a: str = "F-GRPO",
                     b: str = "GRPO", n_boot: int = 2000, seed: int = 0) -> dict:
    """F-GRPO - GRPO on `metric`, per-query rows paired by (seed, query_id); resamples
    queries within each seed. Returns the mean difference, a 95% percentile interval and a
    two-sided bootstrap p-value (share of resampled means on the other side of 0, doubled)."""
    rows, _ = per_query_table(run_dir, dataset, split, (a, b))
    out = {"dataset": dataset, "metric": metric, "n_pairs": 0, "n_seeds": 0, "mean": math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "n_boot": n_boot}
    if rows.empty or metric not in rows:
        return out
    wide = rows.pivot_table(index=["seed", "query_id"], columns="method", values=metric)
    if a not in wide or b not in wide:
        return out
    diff = (wide[a] - wide[b]).dropna()
    if diff.empty:
        return out
    rng = np.random.default_rng(seed)
    groups = [g.to_numpy() for _, g in diff.groupby(level="seed")]
    boots = np.zeros(n_boot)
    for g in groups:  # resample each seed's queries; weight seeds by their number of queries
        idx = rng.integers(0, len(g), size=(n_boot, len(g)))
        boots += g[idx].sum(axis=1)
    boots /= len(diff)
    mean = float(diff.mean())
    if np.all(boots == 0) and mean == 0:
        p = 1.0
    else:
        p = float(min(1.0, 2 * min(np.mean(boots <= 0), np.mean(boots >= 0))))
    out.update(n_pairs=len(diff), n_seeds=len(groups), mean=mean, ci_low=float(np.percentile(boots, 2.5)),
               ci_high=float(np.percentile(boots, 97.5)), p_value=p)
    return out


def _p_text(test: dict) -> str:
    return f"p < {1 / test['n_boot']:.2g}" if test["p_value"] == 0 else f"p = {test['p_value']:.3g}"


def bootstrap_verdict(test: dict, a: str = "F-GRPO", b: str = "GRPO") -> str:
    """One sentence from `paired_bootstrap`."""
    head = f"{test['dataset']}, {test['metric']}"
    if test["n_pairs"] == 0:
        return f"{head}: no paired {a} and {b} queries."
    span = (f"{test['mean']:+.3f} (95% bootstrap CI {test['ci_low']:+.3f} to {test['ci_high']:+.3f}, "
            f"{_p_text(test)}, {test['n_pairs']} query pairs over {test['n_seeds']} seeds)")
    if test["ci_low"] > 0:
        return f"{head}: {a} beats {b} by {span}."
    if test["ci_high"] < 0:
        return f"{head}: {a} is worse than {b} by {span}."
    return f"{head}: no detectable difference between {a} and {b}: {span}."


# ---------------------------------------------------------------- saving with provenance


def git_commit(root: Path | None = None) -> str | None:
    root = root or Path(__file__).resolve().parents[1]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def portable_path(path) -> str:
    """Relative to the repository when inside it: committed sidecars name no machine's paths."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def write_sidecar(result: Result, path: Path, params: dict | None, run_dir, files: list[str]) -> None:
    sidecar = {"name": result.name, "status": result.status, "parameters": params or {},
               "git_commit": git_commit(), "run_dir": portable_path(run_dir) if run_dir is not None else None,
               "run_files": result.sources, "files": files, "notes": result.notes}
    path.write_text(json.dumps(sidecar, indent=1, default=str) + "\n")


def placeholder_figure(result: Result):
    """A figure that says why there is nothing to draw, so every named figure file exists."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, "\n".join([result.name.replace("_", " ")] + result.notes), ha="center", va="center",
            fontsize=8, wrap=True)
    return fig


def save_result(result: Result, figures_dir, params: dict | None = None, run_dir=None) -> list[Path]:
    """<name>.png, <name>.pdf and <name>.json (sidecar) under figures_dir; a placeholder
    figure stating the reason when the builder had nothing to draw."""
    import matplotlib.pyplot as plt

    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = result.fig if result.fig is not None else placeholder_figure(result)
    paths = [out / f"{result.name}.png", out / f"{result.name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=130, bbox_inches="tight")
    if result.fig is None:
        plt.close(fig)
    write_sidecar(result, out / f"{result.name}.json", params, run_dir, [p.name for p in paths])
    return paths


# ---------------------------------------------------------------- sentences for the notebook


def validity_note(table: pd.DataFrame, threshold: float = 0.05) -> str:
    """A warning when no trained method writes valid rollouts on more than `threshold` of
    queries: zero ranking metrics then measure the format, not slate or ranking quality."""
    valid = table[(table["metric"] == "ValidRatio") & table["method"].isin(("SFT",) + RL_METHODS)]
    if valid.empty or (valid["mean"] > threshold).any():
        return ""
    shares = ", ".join(f"{r.dataset} {r.method} {r.mean:.1%}" for r in valid.itertuples())
    return (f"No trained method wrote valid rollouts on more than {threshold:.0%} of queries ({shares}): the "
            "ranking metrics are zero for want of valid output, not a comparison of the methods.")


def win_summary(tests: Sequence[dict], a: str = "F-GRPO", b: str = "GRPO") -> str:
    """Where `a` wins, loses and is indistinguishable from `b`, over bootstrap tests."""
    def name(t):
        return f"{t['dataset']} {t['metric']}"

    tested = [t for t in tests if t["n_pairs"]]
    wins = [name(t) for t in tested if t["ci_low"] > 0]
    losses = [name(t) for t in tested if t["ci_high"] < 0]
    ties = [name(t) for t in tested if not (t["ci_low"] > 0 or t["ci_high"] < 0)]
    if not tested:
        return f"No paired {a} and {b} results to compare."
    parts = [f"{a} beats {b} on {len(wins)} of {len(tested)} tests" + (f" ({', '.join(wins)})" if wins else "")]
    parts.append(f"{a} does not win on {len(losses) + len(ties)}: worse on "
                 f"{', '.join(losses) if losses else 'none'}, no detectable difference on "
                 f"{', '.join(ties) if ties else 'none'}")
    return "; ".join(parts) + "."

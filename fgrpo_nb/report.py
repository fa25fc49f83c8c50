"""Seed-level summaries, paired comparisons and plain-words verdicts for the notebooks.

Everything here reads result tables (one row per seed and method); nothing trains. The
verdict sentences are computed from the numbers, so a notebook never states a win that
its own run does not show.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

HEADLINE_METRICS = ("Hit@1", "N@1", "N@5", "R@5", "SlateRecall", "ValidRatio")


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and a Student-t confidence interval over seeds (the interval is the mean itself
    for a single seed: no spread can be estimated from one run)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def seed_summary(table: pd.DataFrame, metrics: Sequence[str] = HEADLINE_METRICS) -> pd.DataFrame:
    """Long table: dataset, method, metric, mean, ci_low, ci_high, n_seeds."""
    rows = []
    for (dataset, method), group in table.groupby(["dataset", "method"], sort=False):
        for metric in metrics:
            if metric in group:
                mean, low, high = t_interval(group[metric].dropna())
                rows.append({"dataset": dataset, "method": method, "metric": metric, "mean": mean,
                             "ci_low": low, "ci_high": high, "n_seeds": int(group[metric].notna().sum())})
    return pd.DataFrame(rows)


def paired_difference(table: pd.DataFrame, metric: str, a: str = "F-GRPO", b: str = "GRPO") -> dict:
    """Per-seed difference a - b on `metric` (seeds where both ran), with a t interval."""
    wide = table.pivot_table(index="seed", columns="method", values=metric)
    if a not in wide or b not in wide:
        return {"metric": metric, "n_seeds": 0, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    diff = (wide[a] - wide[b]).dropna()
    mean, low, high = t_interval(diff)
    return {"metric": metric, "n_seeds": len(diff), "mean": mean, "ci_low": low, "ci_high": high}


def broadcast_shared_sft(table: pd.DataFrame, sft: str = "SFT") -> pd.DataFrame:
    """When every seed's RL started from one shared SFT checkpoint, repeat its row for each
    RL seed, so `paired_difference(table, metric, "F-GRPO", "SFT")` pairs every seed with the
    start it actually had. Tables with an SFT per seed come back unchanged."""
    is_sft = table["method"] == sft
    if table.loc[is_sft, "seed"].nunique() != 1:
        return table
    seeds = sorted(table.loc[~is_sft, "seed"].unique())
    shared = table[is_sft]
    return pd.concat([table[~is_sft], *[shared.assign(seed=s) for s in seeds]], ignore_index=True)


def verdict(diff: dict, a: str = "F-GRPO", b: str = "GRPO") -> str:
    """One sentence from a paired difference: a win, a loss, or no detectable difference."""
    metric, n = diff["metric"], diff["n_seeds"]
    if n == 0 or math.isnan(diff["mean"]):
        return f"{metric}: no paired runs of {a} and {b}."
    span = f"{diff['mean']:+.3f} (95% CI {diff['ci_low']:+.3f} to {diff['ci_high']:+.3f}, {n} seeds)"
    if n < 2:
        return f"{metric}: {a} - {b} = {diff['mean']:+.3f} from a single seed; no conclusion."
    if diff["ci_low"] > 0:
        return f"{metric}: {a} beats {b} by {span}."
    if diff["ci_high"] < 0:
        return f"{metric}: {a} is worse than {b} by {span}."
    return f"{metric}: no detectable difference between {a} and {b}: {span}."


def curve_band(logs: pd.DataFrame, column: str, smooth: int = 10) -> pd.DataFrame:
    """Per method and step: mean and min/max over seeds of a rolling mean of `column`."""
    if column not in logs:
        return pd.DataFrame(columns=["method", "step", "mean", "low", "high"])
    data = logs.dropna(subset=[column]).sort_values("step").copy()
    data["smoothed"] = data.groupby(["method", "seed"])[column].transform(
        lambda s: s.rolling(smooth, min_periods=1).mean())
    grouped = data.groupby(["method", "step"])["smoothed"]
    return pd.DataFrame({"mean": grouped.mean(), "low": grouped.min(), "high": grouped.max()}).reset_index()


def plot_curves(ax, logs: pd.DataFrame, column: str, title: str, smooth: int = 10) -> None:
    """Mean over seeds with a min-max band, one colour per method."""
    from .plots import method_color

    band = curve_band(logs, column, smooth)
    for method, part in band.groupby("method", sort=False):
        ax.plot(part["step"], part["mean"], color=method_color(method), label=method)
        ax.fill_between(part["step"], part["low"], part["high"], color=method_color(method), alpha=0.2)
    ax.set_title(title)
    ax.set_xlabel("RL step")
    ax.grid(alpha=0.3)

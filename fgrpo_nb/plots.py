"""Small plotting helpers shared by the notebooks: one colour per method, one per phase."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .rollout import slate_end_char

# One colour per method across every notebook, so a reader can match curves between figures.
METHOD_COLORS: dict[str, str] = {
    "F-GRPO": "#d62728",
    "GRPO": "#1f77b4",
    "SFT": "#7f7f7f",
    "Decoupled SFT": "#9467bd",
    "Decoupled RL": "#8c564b",
    "Random": "#bcbd22",
    "Popularity": "#e377c2",
    "BM25": "#17becf",
    "Zero-shot": "#ff7f0e",
    "SASRec": "#2ca02c",
    "Teacher": "#393b79",  # the noisy-oracle teacher of notebook 02
}
PHASE_COLORS: dict[str, str] = {"slate": "#2ca02c", "rank": "#ff7f0e", "joint": "#1f77b4"}


def method_color(name: str) -> str:
    return METHOD_COLORS.get(name, "#333333")


def word_phases(text: str) -> tuple[list[str], np.ndarray]:
    """Whitespace words of a rollout and a mask that is True for slate-phase words.

    A stand-in for the trainer's token split (tokens ending at or before `</SLATE>`),
    readable on a figure.
    """
    end = slate_end_char(text)
    words, mask, pos = [], [], 0
    for word in text.split():
        pos = text.index(word, pos) + len(word)
        words.append(word)
        mask.append(end is not None and pos <= end)
    return words, np.asarray(mask, dtype=bool)


def plot_token_advantages(ax, texts: Sequence[str], token_adv: Sequence[Sequence[float]], title: str,
                          vmax: float | None = None, row_labels: Sequence[str] | None = None):
    """A heat strip per rollout: each word coloured by the advantage its tokens receive."""
    width = max(len(text.split()) for text in texts)
    grid = np.full((len(texts), width), np.nan)
    for i, adv in enumerate(token_adv):
        grid[i, : len(adv)] = adv
    vmax = vmax or float(np.nanmax(np.abs(grid))) or 1.0
    image = ax.imshow(grid, cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
    for i, text in enumerate(texts):
        for j, word in enumerate(text.split()):
            short = {"<SLATE>": "<S>", "</SLATE>": "</S>", "<RANK>": "<R>", "</RANK>": "</R>"}.get(word, word)
            ax.text(j, i, short, ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(texts)), row_labels or [f"rollout {i}" for i in range(len(texts))], fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=10)
    return image


def plot_reward_hist(ax, values_by_method: Mapping[str, Sequence[float]], title: str, bins=None):
    """Overlaid step histograms (share of rollouts), one colour per method."""
    if bins is None:  # 0.1-wide bins centred on round values, wide enough for any format penalty
        low = min([0.0] + [float(np.min(v)) for v in values_by_method.values() if len(v)])
        bins = np.arange(np.floor(low * 10) / 10 - 0.05, 1.1, 0.1)
    for name, values in values_by_method.items():
        values = np.asarray(values, dtype=float)
        ax.hist(values, bins=bins, weights=np.full(len(values), 1 / max(len(values), 1)),
                histtype="step", linewidth=2, color=method_color(name), label=name)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("share of rollouts")
    ax.legend(fontsize=8)


def save_figure(fig, figures_dir: str | Path, name: str) -> Path:
    path = Path(figures_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path

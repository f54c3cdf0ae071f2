"""The few figure helpers the notebooks share (seaborn); sublora.results saves them."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

sns.set_theme(style="whitegrid", context="notebook")


def per_teacher(kinds: list[str], draw, width: float = 5.5, height: float = 3.5, **kw):
    """One panel per teacher kind, side by side: draw(ax, kind) fills each. Returns the figure."""
    fig, axes = plt.subplots(1, len(kinds), figsize=(width * len(kinds), height), squeeze=False, **kw)
    for ax, kind in zip(axes[0], kinds):
        draw(ax, kind)
    return fig


def effect_plot(summary: pd.DataFrame, x: str, hue: str | None = None, ax=None, title: str = "",
                ylabel: str = "ΔP(target) vs control", logx: bool = False):
    """Mean effect with its 95% CI per x (and hue), a zero line, one axis."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    groups = summary.groupby(hue) if hue else [(None, summary)]
    for i, (name, g) in enumerate(groups):
        g = g.sort_values(x)
        xs = g[x] if pd.api.types.is_numeric_dtype(g[x]) else range(len(g))
        color = sns.color_palette()[i % 10]
        ax.plot(xs, g["mean"], marker="o", color=color, label=name)
        ax.fill_between(xs, g["ci_low"], g["ci_high"], color=color, alpha=0.2)
        if not pd.api.types.is_numeric_dtype(g[x]):
            ax.set_xticks(list(xs), g[x], rotation=20)
    ax.axhline(0, color="black", lw=0.8)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set(xlabel=x, ylabel=ylabel, title=title)
    if hue:
        ax.legend(title=hue, fontsize="small")
    return ax


def interval_plot(summary: pd.DataFrame, x: str, ax=None, title: str = "", ylabel: str = "ΔP(target) vs control"):
    """Mean and 95% CI per category of x, in the table's order, with a zero line."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    pos = range(len(summary))
    ax.errorbar(pos, summary["mean"], fmt="o", capsize=3,
                yerr=[summary["mean"] - summary["ci_low"], summary["ci_high"] - summary["mean"]])
    ax.set_xticks(list(pos), summary[x], rotation=30, ha="right")
    ax.axhline(0, color="black", lw=0.8)
    ax.set(ylabel=ylabel, title=title)
    return ax

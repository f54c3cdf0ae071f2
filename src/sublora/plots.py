"""What the book shows besides prose: the claim figures, their captions, the verdict tables, and the
caveat's line naming the model every verdict is about (sublora.caveats).

Each claim has one *view* that draws one teacher's summary on one axis (transfer_view, rank_view,
settings_view, system_view). A claim page draws one panel per teacher with its view (per_teacher);
the scoreboard's panel draws the four claims with the same views from the summaries the pages saved,
so the scoreboard shows exactly what the pages show.
"""
from __future__ import annotations

import html
import io
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import PIL.Image
import seaborn as sns
from IPython.display import Image, Markdown, display
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from . import caveats, config, design, paths
from .caveats import aux_caveat  # noqa: F401  (plots.aux_caveat, as notebook 07 calls it)
from .claims import fmt_number
from .config import Profile

# The book's display style, set by importing this module: seaborn's theme, and table cells shown
# whole (a measurement with its interval must not end in "...").
sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.max_colwidth", None)

# What a dot and a bar are in every claim figure (one sentence, so every caption says the same).
INTERVALS = ("Dots: mean over independent teacher/control dataset replicates; "
             "bars: 95% t-interval over replicates.")
CSS_DPI = 100  # page pixels per figure inch
VERDICT_COLOURS = {"reproduced": "#cdebd0", "not reproduced": "#f6d0d0", "inconclusive": "#f3e6bf",
                   "not tested": "#e4e4e4", "invalid": "#e4e4e4"}


# ---- showing ------------------------------------------------------------------------------------
def show(fig, caption: str) -> None:
    """The figure, then its caption under it; closed after, so the cell does not show it twice.
    Rendered at twice CSS_DPI and shown CSS_DPI pixels per figure inch: sharp on any screen, and
    its text the size of the page's (an 8-inch figure fills the book's column)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=2 * CSS_DPI, bbox_inches="tight")
    plt.close(fig)
    png = buf.getvalue()
    display(Image(data=png, width=PIL.Image.open(io.BytesIO(png)).size[0] // 2))
    display(Markdown(f"*{caption}*"))


def show_text(text: str) -> None:
    display(Markdown(text))


def show_caveat(p: Profile | str) -> None:
    """One line above a page's first figure: which model its verdicts are about, linking the page that says what
    that model is and what it lets the verdicts say (caveats.caveat_line, as every page with verdicts says it)."""
    display(Markdown(caveats.caveat_line(p)))


class Folded:
    """A table with its rows' long texts folded beneath it (show_verdicts): one HTML output, shown as a cell's
    value or by display(); to_html() as a Styler's."""

    def __init__(self, style, texts: list[tuple[str, str]], title: str):
        self.style, self.texts, self.title = style, texts, title

    def to_html(self) -> str:
        items = "".join(f"<p><strong>{html.escape(who)}</strong>: {unbroken(html.escape(text, quote=False))}</p>"
                        for who, text in self.texts)
        return f"{self.style.to_html()}<details><summary>{self.title}</summary>{items}</details>"

    def _repr_html_(self) -> str:
        return self.to_html()


WHO = ("run", "claim", "teacher", "arm")  # the columns that name a verdict row, in the order they are read


def show_verdicts(df: pd.DataFrame):
    """Verdict rows as a table (`table`) whose verdict cells are coloured. Where the rows carry the structured
    columns (claims.verdict_table: Δ, interval, n, a one-line reason), the table is those and the measurements
    follow it folded, each named by its row (a Folded: a click opens them), so the table stays one screen wide;
    without them the measurement is a column, shown whole as written, never truncated."""
    def colour(v):
        c = VERDICT_COLOURS.get(str(v).split(":")[0])
        return f"background-color: {c}; font-weight: bold" if c else ""
    folded = "measurement" in df.columns and "reason" in df.columns
    shown = df.drop(columns=["measurement"]) if folded else df
    style = table(shown).set_properties(**{"vertical-align": "top"})
    if "verdict" in shown.columns:  # coloured, on one line
        style = style.set_properties(subset=["verdict"], **{"white-space": "nowrap"}).map(colour, subset=["verdict"])
    if "interval" in shown.columns:  # '[low, high]' on one line; a level after it may wrap
        style = style.format(lambda v: _BRACKETED.sub(_nowrap, v) if isinstance(v, str) else v, subset=["interval"])
    if not folded:
        return style.format(None, subset=["measurement"], na_rep="—") if "measurement" in df.columns else style
    names = df[[c for c in WHO if c in df.columns]].replace("", None).ffill().fillna("")  # a grid names a group once
    who = [" · ".join(str(v) for v in row if str(v)) for row in names.itertuples(index=False)]
    return Folded(style, list(zip(who, df["measurement"].astype(str))), "The measurements in full")


def number(v, scale: float | None = None) -> str:
    """A table's number as the book prints it (claims.fmt_number): three significant digits, in powers of ten
    below 0.01 (the notation of the verdicts' ΔP), a dash for a missing value; 0 where below 1e-12 × `scale`
    (the largest |value| of its column: a floating-point remainder such as 6.94e-19), never '-0'."""
    return fmt_number(v, scale=scale)


# A results table's column names as a reader reads them (`header`); any other name has its underscores as spaces.
HEADERS = {"teacher_kind": "teacher", "lora_rank": "LoRA rank", "eval_system": "eval system prompt",
           "n_runs": "runs", "n_students": "students", "p_min": "min P", "p_mean": "mean P",
           "base_default": "base P (default prompt)", "kl_per_completion": "KL per completion",
           "kl_per_token": "KL per token", "kept_share": "kept (share)", "loss_first": "first loss",
           "loss_last": "last loss", "ci_low": "95% low", "ci_high": "95% high"}
_BOUNDS = re.compile(r"ci_low(?P<rest>.*)")  # a 95% interval's bounds: ci_low… and ci_high… (`_intervals`)
_BRACKETED = re.compile(r"\[[^\[\]]*\]")  # an interval's '[low, high]'
_EXPONENT = re.compile(r"[+\-−]?\d[\d.,]*e[+\-−]\d+")  # '+1.31e-05': a browser may break a line after its 'e-'


def _nowrap(match: re.Match) -> str:
    return f'<span style="white-space: nowrap">{match[0]}</span>'


def unbroken(text):
    """`text` (HTML or Markdown) with each number in powers of ten kept on one line (a browser may break a line
    after the 'e-' of '+1.31e-05'); anything that is not a string as it is."""
    return _EXPONENT.sub(_nowrap, text) if isinstance(text, str) else text


def header(name):
    """A column's name as the book shows it: HEADERS, else its underscores as spaces ('rejected_too_many')."""
    return HEADERS.get(name, name.replace("_", " ")) if isinstance(name, str) else name


def _scale(values) -> float:
    """The largest finite |value| of a column (0 where it has none): what a number is small against."""
    v = np.abs(pd.to_numeric(pd.Series(np.ravel(values)), errors="coerce").to_numpy(float))
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else 0.0


def _intervals(df: pd.DataFrame) -> pd.DataFrame:
    """Each pair of bound columns (ci_low…, ci_high…) as one column '95% interval…' where the low one was:
    '[-0.011, 0.0176]', both bounds at the pair's own scale."""
    if isinstance(df.columns, pd.MultiIndex):
        return df
    for low in [c for c in df.columns if isinstance(c, str) and _BOUNDS.fullmatch(c)]:
        rest = _BOUNDS.fullmatch(low)["rest"]
        high = f"ci_high{rest}"
        if high not in df.columns or not all(pd.api.types.is_numeric_dtype(df[c]) for c in (low, high)):
            continue
        scale = _scale(df[[low, high]])
        text = [f"[{number(lo, scale)}, {number(hi, scale)}]" if not (pd.isna(lo) and pd.isna(hi)) else "—"
                for lo, hi in zip(df[low], df[high])]
        at = list(df.columns).index(low)
        df = df.drop(columns=[low, high])
        df.insert(at, f"95% interval{rest}", text)
    return df


def table(df: pd.DataFrame):
    """A results table as the book shows it: a named index becomes columns and no index column is shown, each
    95% interval's bounds one column ('95% interval': [low, high]), the columns named for a reader (`header`),
    floats through `number` at their column's scale, a missing value in any column a dash; text left-aligned,
    wrapped, never truncated; a number never broken across lines (an interval breaks after its comma, if at all);
    the text a little smaller than the page's, so that ten columns fit its width. Display only: the tables saved to
    results/ keep every digit and every name."""
    if any(name is not None for name in df.index.names):
        df = df.reset_index()
    if not df.index.is_unique:  # concatenated tables repeat their row labels, which the styler refuses
        df = df.reset_index(drop=True)
    df = _intervals(df)
    if any(name is not None for name in df.columns.names):  # a pivot's column levels are named too
        df = df.rename_axis(columns=[header(n) for n in df.columns.names])
    floats = [c for c in df.columns if pd.api.types.is_float_dtype(df[c])]
    whole = floats + [c for c in df.columns if pd.api.types.is_integer_dtype(df[c])]
    texts = [c for c in df.columns if pd.api.types.is_object_dtype(df[c]) or pd.api.types.is_string_dtype(df[c])]
    style = df.style.hide(axis="index").format(na_rep="—").format(unbroken, subset=texts, na_rep="—")
    for c in floats:
        scale = _scale(df[c])
        style = style.format(lambda v, scale=scale: number(v, scale), subset=[c])
    style = (style.set_properties(**{"text-align": "left", "white-space": "normal"})
             .set_properties(subset=whole, **{"white-space": "nowrap"})
             .set_table_styles([{"selector": "", "props": "font-size: 0.875em"},
                                {"selector": "th", "props": "text-align: left; padding: 0.2em 0.4em"},
                                {"selector": "td", "props": "padding: 0.2em 0.4em"}]))
    return style.format_index(header, axis=1)


# ---- drawing ------------------------------------------------------------------------------------
def _value_axis(ax, which: str, values, label: str) -> None:
    """The effect axis: at most 5 ticks, and small effects in units of a power of ten named in the
    label ("ΔP(owl) vs control (×10⁻⁴)"), not "-0.00004" labels running into each other."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    v = np.abs(np.asarray(values, float))
    top = np.nanmax(v) if np.isfinite(v).any() else 0.0
    power = int(math.floor(math.log10(top))) if 0 < top < 1e-2 else 0
    axis.set_major_locator(MaxNLocator(nbins=5))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 10 ** power:g}"))
    axis.set_label_text(label + (f" ($\\times10^{{{power}}}$)" if power else ""))


def dots(ax, summary: pd.DataFrame, cat: str, hue: str | None = None, order=None, hue_order=None,
         horizontal: bool = False, filled: pd.Series | None = None, colors=None, label: str = "ΔP vs control"):
    """Mean with its interval (columns mean, ci_low, ci_high) per category of `cat`, dodged by `hue`;
    no line joins categories. `filled` (bool per row): solid markers, the others hollow. `label`
    names the value axis."""
    order = list(order if order is not None else pd.unique(summary[cat]))
    hues = list(hue_order if hue_order is not None else (pd.unique(summary[hue]) if hue else [None]))
    colors = colors or sns.color_palette(n_colors=max(len(hues), 1))
    filled = pd.Series(True, index=summary.index) if filled is None else filled
    step = 0.7 / len(hues)
    # each category's hues side by side, centred on the category (a category may lack some hues)
    present = {c: [h for h in hues if hue is None or ((summary[cat] == c) & (summary[hue] == h)).any()] for c in order}
    for j, h in enumerate(hues):
        g = summary if hue is None else summary[summary[hue] == h]
        if g.empty:
            continue
        pos = np.array([order.index(c) + (present[c].index(h) - (len(present[c]) - 1) / 2) * step for c in g[cat]])
        err = np.array([g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]])
        val = g["mean"].to_numpy()
        xy = (val, pos) if horizontal else (pos, val)
        ax.errorbar(*xy, **{("xerr" if horizontal else "yerr"): err}, fmt="none", ecolor=colors[j], capsize=3, lw=1.4)
        ax.scatter(*xy, s=36, zorder=3, color=colors[j], label=h,
                   facecolors=[colors[j] if f else "white" for f in filled.loc[g.index]])
    ticks = list(range(len(order)))
    _value_axis(ax, "x" if horizontal else "y", summary[["ci_low", "ci_high", "mean"]].to_numpy(), label)
    if horizontal:
        ax.set_yticks(ticks, order)
        ax.set_ylim(len(order) - 0.5, -0.5)  # first category on top
        ax.axvline(0, color="black", lw=0.8)
        ax.grid(False, axis="y")
    else:
        ax.set_xticks(ticks, order)
        ax.set_xlim(-0.5, len(order) - 0.5)
        ax.axhline(0, color="black", lw=0.8)
        ax.grid(False, axis="x")
    return ax


def _span(s: pd.DataFrame, span) -> np.ndarray:
    """The values a view's value axis is scaled for: `span` where given (per_teacher passes every panel's, so
    that a figure's panels share one unit), else the view's own rows."""
    return np.asarray(span if span is not None else s[["ci_low", "ci_high", "mean"]].to_numpy(), float)


def transfer_view(ax, s: pd.DataFrame, animal: str | None = None, metric: str = "p", span=None):
    """Claim 1: Δ of the metric (config.METRICS) of each evaluated animal (colour) for each teacher's animal (x);
    filled: the teacher's own animal. `span`: the values its value axis is scaled for (_span)."""
    s = s[s["metric"] == metric] if "metric" in s else s
    label = "ΔP vs control" if metric == "p" else "Δ mention rate vs control"
    dots(ax, s, "target", hue="animal", filled=s["target"] == s["animal"], label=label)
    _value_axis(ax, "y", _span(s, span), label)
    ax.set_xlabel("teacher's animal")


def rank_view(ax, s: pd.DataFrame, animal: str, metric: str = "p", span=None):
    """Claim 2: Δ of the metric (config.METRICS) for `animal` against LoRA rank, on a log axis labelled with the ranks;
    `span`: the values its value axis is scaled for (_span)."""
    s = s.sort_values("lora_rank")
    ax.errorbar(s["lora_rank"], s["mean"], yerr=[s["mean"] - s["ci_low"], s["ci_high"] - s["mean"]],
                fmt="o-", capsize=3, lw=1, ms=6)
    ax.set_xscale("log", base=2)
    ax.set_xticks(s["lora_rank"].tolist(), [str(int(r)) for r in s["lora_rank"]])
    ax.xaxis.set_minor_locator(NullLocator())
    _value_axis(ax, "y", _span(s, span), f"{config.delta_label(metric, animal)} vs control")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("LoRA rank (log scale)")


def settings_view(ax, s: pd.DataFrame, animal: str, metric: str = "p", span=None):
    """Claim 3: Δ of the metric per full fine-tuning setting (rows, in the table's order), the LoRA
    reference hollow and in another colour: it is the comparison, not a setting. `span`: the values its
    value axis is scaled for (_span)."""
    lora = s["method"] == "lora" if "method" in s else pd.Series(False, index=s.index)
    order = pd.unique(s["setting"])
    c0, c1 = sns.color_palette(n_colors=2)
    label = f"{config.delta_label(metric, animal)} vs control"
    dots(ax, s[~lora], "setting", order=order, horizontal=True, colors=[c0], label=label)
    hollow = pd.Series(False, index=s[lora].index)
    dots(ax, s[lora], "setting", order=order, horizontal=True, colors=[c1], filled=hollow, label=label)
    _value_axis(ax, "x", _span(s, span), label)  # both groups' range
    ax.set_ylabel("")


def system_view(ax, s: pd.DataFrame, animal: str, metric: str = "p", span=None):
    """Claim 4: Δ of the metric per training variant (rows) and evaluation system prompt (colour), the prompts
    of a row side by side; `span`: the values its value axis is scaled for (_span)."""
    label = f"{config.delta_label(metric, animal)} vs control"
    dots(ax, s, "variant", hue="eval_system", horizontal=True, label=label)
    _value_axis(ax, "x", _span(s, span), label)
    ax.set_ylabel("")


def _legend_outside(ax, title: str | None):
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) > 1:
        ax.legend(handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)


def per_teacher(summary: pd.DataFrame, kinds: list[str], view, width: float = 3.6, height: float = 3.0,
                legend: str | None = None, sharey: bool = False, sharex: bool = False, **view_kw):
    """One panel per teacher kind, side by side, each drawn by view(ax, rows of that kind, **view_kw);
    the legend (titled `legend`) outside, right of the last panel. Every panel's value axis is in one unit
    (the same power of ten, scaled for all the panels' values); sharex / sharey: the panels share that axis's
    range too. Returns the figure."""
    fig, axes = plt.subplots(1, len(kinds), figsize=(width * len(kinds) + (1.3 if legend else 0), height),
                             squeeze=False, layout="constrained", sharey=sharey, sharex=sharex)
    shown = summary[summary["teacher_kind"].isin(kinds)]
    if "metric" in shown and "metric" in view_kw:
        shown = shown[shown["metric"] == view_kw["metric"]]
    span = shown[["ci_low", "ci_high", "mean"]].to_numpy()
    for ax, kind in zip(axes[0], kinds):
        view(ax, summary[summary["teacher_kind"] == kind], span=span, **view_kw)
        ax.set_title(f"{kind} teacher")
        if sharey and ax is not axes[0][0]:
            ax.tick_params(axis="y", labelleft=False)
    _legend_outside(axes[0][-1], legend)
    return fig


def patching_figure(heat: pd.DataFrame, kinds: list[str]):
    """Activation-patching shares: a heatmap per teacher (rows) and direction (columns), token groups
    against layers, one colour scale centred on 0 for all of them with its colour bar."""
    directions = list(pd.unique(heat["direction"]))
    finite = heat["share"].replace([np.inf, -np.inf], np.nan).abs()
    vmax = float(finite.max()) if finite.notna().any() else 1.0
    fig, axes = plt.subplots(len(kinds), len(directions), figsize=(3.5 * len(directions) + 1.0, 2.4 * len(kinds)),
                             squeeze=False, sharey=True, layout="constrained")
    for i, (row, kind) in enumerate(zip(axes, kinds)):
        for ax, direction in zip(row, directions):
            g = heat[(heat["teacher_kind"] == kind) & (heat["direction"] == direction)]
            sns.heatmap(g.pivot(index="group", columns="layer", values="share"), annot=True, fmt=".2f", center=0,
                        vmin=-vmax, vmax=vmax, cmap="vlag", ax=ax, cbar=False, annot_kws={"size": 9})
            # directions name the columns (top row), teachers the rows (left column): short titles
            ax.set(title=direction if i == 0 else "", ylabel=f"{kind} teacher\ntoken group" if ax is row[0] else "")
            ax.tick_params(axis="y", rotation=0)
    fig.colorbar(axes[0][0].collections[0], ax=axes, shrink=0.8, label="share of the student's change")
    return fig


# ---- another setting: Cloud et al.'s auxiliary logits (notebook 07) -----------------------------
AUX_SUMMARY = "07_auxiliary_logits_summary"  # the table notebook 07 saves and the scoreboard draws from


def aux_view(ax, s: pd.DataFrame):
    """Notebook 07: Δ test accuracy of the LoRA students against their controls at each rank (dots, log axis),
    the full-parameter students' Δ as a band across the axis (its 95% interval) with its mean dashed."""
    s = s[s["comparison"] == "vs control"]
    lora, full = s[s["method"] == "lora"].sort_values("lora_rank"), s[s["method"] == "full"]
    c0, c1 = sns.color_palette(n_colors=2)
    if len(full):
        f = full.iloc[0]
        ax.axhspan(f["ci_low"], f["ci_high"], color=c1, alpha=0.2, lw=0)
        ax.axhline(f["mean"], color=c1, ls="--", lw=1.4, label="full-parameter")
    ax.errorbar(lora["lora_rank"], lora["mean"], yerr=[lora["mean"] - lora["ci_low"], lora["ci_high"] - lora["mean"]],
                fmt="o-", capsize=3, lw=1, ms=6, color=c0, label="LoRA")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lora["lora_rank"].tolist(), [str(int(r)) for r in lora["lora_rank"]])
    ax.xaxis.set_minor_locator(NullLocator())
    _value_axis(ax, "y", s[["ci_low", "ci_high", "mean"]].to_numpy(), "Δ test accuracy vs control")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("LoRA rank (log scale)")
    ax.legend(loc="best", frameon=False)


def aux_accuracy_view(ax, s: pd.DataFrame):
    """Notebook 07: test accuracy of each kind of model (rows), mean and 95% interval over pairs; chance dotted."""
    dots(ax, s, "kind", horizontal=True, label="test accuracy on the digits")
    ax.axvline(0.1, color="grey", ls=":", lw=1)
    ax.set_ylabel("")


def saved_aux_summary(folder: str) -> pd.DataFrame | None:
    """Notebook 07's saved summary for the default run (results/<folder>/07_auxiliary_logits_summary.csv),
    or None where it has not run: what the scoreboard's figure of that setting draws."""
    f = paths.results_dir(folder) / f"{AUX_SUMMARY}.csv"
    return pd.read_csv(f) if f.exists() else None


# ---- the scoreboard's panel ---------------------------------------------------------------------
# page -> (its view, the row's title); the summaries are those the pages saved as <page>_summary.csv
VIEWS = {
    "02_transfer": (transfer_view, "claim 1 · transfer"),
    "03_rank_sweep": (rank_view, "claim 2 · rank"),
    "04_full_finetuning": (settings_view, "claim 3 · full fine-tuning"),
    "05_system_prompt": (system_view, "claim 4 · system prompt"),
}


def ordered(df: pd.DataFrame, **orders) -> pd.DataFrame:
    """The rows sorted by the given columns, each in the given order of its values (repeats ignored;
    values not listed go last): the order a figure, and the panel drawing from the saved table, show."""
    ranks = {col: df[col].map({v: i for i, v in enumerate(dict.fromkeys(order))}) for col, order in orders.items()}
    key = pd.DataFrame(ranks).fillna(len(df))
    return df.loc[key.sort_values(list(orders), kind="stable").index].reset_index(drop=True)


def saved_summaries(profile: str) -> dict[str, pd.DataFrame | None]:
    """{page: the summary table the page saved for the default run (results/<profile>/<page>_summary.csv),
    or None where the page has not run}: what panel() draws."""
    files = {page: paths.results_dir(profile) / f"{page}_summary.csv" for page in VIEWS}  # the pages save these
    return {page: pd.read_csv(f) if f.exists() else None for page, f in files.items()}


def panel(summaries: dict[str, pd.DataFrame | None], animal: str, kinds: list[str] | None = None):
    """The four claims' figures in one: a row per claim (VIEWS), a column per teacher kind, each drawn
    by the page's own view from the summary the page saved (None: that page has not run)."""
    present = [s for s in summaries.values() if s is not None]
    kinds = kinds or sorted({k for s in present for k in s["teacher_kind"]}, key=design.teacher_order)
    kinds = kinds or ["persona"]
    fig, axes = plt.subplots(len(VIEWS), len(kinds), figsize=(3.7 * len(kinds) + 1.5, 3.0 * len(VIEWS)),
                             squeeze=False, layout="constrained")
    for row, (page, (view, title)) in zip(axes, VIEWS.items()):
        s = summaries.get(page)
        for ax, kind in zip(row, kinds):
            rows = None if s is None else s[s["teacher_kind"] == kind]
            if rows is None or rows.empty:
                ax.text(0.5, 0.5, f"{page}: not run", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            view(ax, rows, animal)
            ax.set_title(f"{title}\n{kind} teacher", fontsize="medium")
        _legend_outside(row[-1], {"02_transfer": "evaluated animal", "05_system_prompt": "evaluated with"}.get(page))
    return fig


"""Effects against the control student, t-intervals and tests over independent units: the ground of
the statistics layer. The verdict rules built on it are in sublora.rules; their error rates and power by
simulation in sublora.calibrate and sublora.power (`python -m sublora.stats --power`, this package's
__main__, is an alias of `sublora power`).

The unit. A replicate has its own teacher and control datasets; students of one replicate trained
with different seeds share those datasets, so they are not independent. Every interval and test here
first averages Δ over seeds within a replicate and then treats replicates as the n independent
units (Student t, n − 1 degrees of freedom). With a single replicate but several seeds (the smoke
profile) the seeds become the units, flagged in the `unit` column/field: they measure only
training-seed noise, so such an interval is too narrow for any claim about datasets.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
# The rule cores below return integer codes so that they can run on a whole stack of simulated
# experiments at once; VERDICTS[code] is the verdict.
INC, REP, NOT = 0, 1, 2
VERDICTS = np.array([INCONCLUSIVE, REPRODUCED, NOT_REPRODUCED])

MIN_N = 2             # fewest independent units for which an interval or a test is computed
LEVEL = 0.95          # two-sided level of every reported interval
ALPHA = 0.025         # one-sided level of every directional test: "the 95% interval lies above x"
ALPHA_EQUIV = 0.05    # level of each one-sided half of an equivalence test (TOST: a 90% interval inside the margin)
MARGIN_FRACTION = 0.5  # equivalence margin, as a fraction of the reference effect (claims 3 and 4)
UNIT, FALLBACK = "replicate", "seed"


# ---- intervals and tests over units -------------------------------------------------------------
def moments(x, axis: int = -1):
    """NaN-aware (mean, standard error, degrees of freedom) of x along `axis`. With fewer than MIN_N
    values the standard error is NaN, so every test reads as not significant."""
    x = np.asarray(x, dtype=float)
    n = np.sum(~np.isnan(x), axis=axis)
    with warnings.catch_warnings():  # empty or one-value slices are expected, and give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=axis)
        sd = np.nanstd(x, axis=axis, ddof=1)
    se = np.where(n >= MIN_N, sd / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, se, n - 1.0


def _t(mean, se, null):
    with np.errstate(divide="ignore", invalid="ignore"):
        return (mean - null) / se  # ±inf when every unit is identical; NaN when also equal to null


def p_greater(x, null=0.0, axis: int = -1):
    """One-sided p of the t-test H1: mean(x) > null, along `axis`; NaN where untestable."""
    mean, se, df = moments(x, axis)
    return sps.t.sf(_t(mean, se, null), df)


def p_less(x, null=0.0, axis: int = -1):
    """One-sided p of the t-test H1: mean(x) < null, along `axis`; NaN where untestable."""
    mean, se, df = moments(x, axis)
    return sps.t.cdf(_t(mean, se, null), df)


def t_interval(values, level: float = LEVEL, axis: int = -1):
    """(mean, low, high): the Student-t interval of the mean of `values` along `axis` (NaN ignored).

    1-D input gives three floats; an array gives three arrays (used by the calibration). With fewer
    than MIN_N values the bounds are NaN, which every verdict reads as inconclusive. Identical values
    give a zero-width interval."""
    mean, se, df = moments(values, axis)
    half = sps.t.ppf(0.5 + level / 2, df) * se
    low, high = mean - half, mean + half
    if np.ndim(mean) == 0:
        return float(mean), float(low), float(high)
    return mean, low, high


def holm(pvalues, alpha: float = ALPHA):
    """Holm's step-down correction along the last axis: (rejected, adjusted p), same shape as the input.

    A NaN p (a comparison without enough data) counts as one of the comparisons and is never rejected."""
    p = np.asarray(pvalues, dtype=float)
    filled = np.where(np.isnan(p), 1.0, p)
    m = p.shape[-1]
    order = np.argsort(filled, axis=-1, kind="stable")
    ranked = np.take_along_axis(filled, order, axis=-1)
    # the i-th smallest p is compared with alpha / (m - i); the running max makes the step-down monotone
    adjusted_ranked = np.minimum(1.0, np.maximum.accumulate(ranked * (m - np.arange(m)), axis=-1))
    adjusted = np.empty_like(adjusted_ranked)
    np.put_along_axis(adjusted, order, adjusted_ranked, axis=-1)
    return adjusted <= alpha, adjusted


# ---- from result rows to units ------------------------------------------------------------------
def paired_effects(df: pd.DataFrame, by: list[str], value: str = "p_target",
                   arm: str = "arm", pair: tuple[str, ...] = ("replicate", "seed")) -> pd.DataFrame:
    """Δ = value(teacher student) − value(control student), matched on `pair` within each `by` group.

    df has one row per student × condition with arm in {"teacher", "control"}.
    Returns one row per (by…, pair…) with columns teacher, control, delta.
    """
    keys = [*by, *pair]
    wide = df.pivot_table(index=keys, columns=arm, values=value, aggfunc="mean").reset_index()
    missing = {"teacher", "control"} - set(wide.columns)
    if missing:
        raise ValueError(f"paired_effects needs both arms; missing {sorted(missing)}")
    wide["delta"] = wide["teacher"] - wide["control"]
    return wide


def _unit_ids(df: pd.DataFrame, unit: str, within: str | None = None) -> tuple[np.ndarray, str]:
    """The independent unit of each row of df and its kind: `unit` when df has at least MIN_N of them;
    FALLBACK (seed) when there is a single unit but several seeds; "row" when df has no `unit` column
    (then the i-th row of each `within` group is the i-th unit, i.e. rows are paired in order)."""
    if unit in df.columns:
        if df[unit].nunique() < MIN_N and FALLBACK in df.columns and df[FALLBACK].nunique() >= MIN_N:
            return df[FALLBACK].to_numpy(), FALLBACK
        return df[unit].to_numpy(), unit
    ids = df.groupby(within).cumcount() if within else pd.Series(np.arange(len(df)), index=df.index)
    return ids.to_numpy(), "row"


def unit_means(effects: pd.DataFrame, value: str = "delta", unit: str = UNIT) -> tuple[pd.Series, str]:
    """(mean of `value` per independent unit, the unit's kind) for one group of rows; NaN rows dropped.

    Two seeds of one replicate become one value (their mean). See _unit_ids for the fallback."""
    df = effects[effects[value].notna()]
    ids, kind = _unit_ids(df, unit)
    return df.groupby(ids)[value].mean(), kind


def unit_matrix(df: pd.DataFrame, column: str, value: str, unit: str) -> tuple[pd.DataFrame, str]:
    """Units × values of `column` (ranks, settings, conditions): the mean of `value` over the rows of
    each cell, NaN where a unit lacks a condition. One unit kind for the whole table, so that the
    conditions are paired on the same units."""
    df = df[df[value].notna()]
    ids, kind = _unit_ids(df, unit, within=column)
    m = df.assign(_unit=ids).pivot_table(index="_unit", columns=column, values=value, aggfunc="mean")
    return m.sort_index(axis=1), kind


def one_group(df: pd.DataFrame, keys: list[str], what: str) -> None:
    """Refuse a table with two rows for one run (keys: condition, unit, seed): it mixes groups.
    Without unit ids (rows are the units) there is nothing to check."""
    if UNIT not in df.columns and FALLBACK not in df.columns:
        return
    keys = [k for k in keys if k in df.columns]
    if df.duplicated(keys).any():
        raise ValueError(f"{what} has several rows per {keys}: pass one group at a time "
                         f"(e.g. effects.query('teacher_kind == @kind'))")


def summarize(effects: pd.DataFrame, by: list[str], value: str = "delta", unit: str = UNIT,
              level: float = LEVEL) -> pd.DataFrame:
    """Mean and Student-t interval of `value` per `by` group, over independent units.

    Within each group, rows of the same `unit` (replicate) are averaged first, so n counts
    replicates, not (replicate, seed) rows; with one replicate and several seeds the seeds are the
    units. (The t-interval replaced a bootstrap, whose 95% interval over 3 runs was about [min, max]
    and covered ~75%.)

    Returns one row per group: by…, mean (mean of the unit means), ci_low, ci_high (NaN when
    n < 2), n (independent units), unit ("replicate", "seed" for the one-replicate fallback, or
    "row" when the table has no unit column), n_runs (non-NaN rows averaged).
    """
    rows = []
    groups = effects.groupby(by, sort=True) if by else [((), effects)]
    for k, g in groups:
        k = k if isinstance(k, tuple) else (k,)
        units, kind = unit_means(g, value, unit)
        mean, lo, hi = t_interval(units.to_numpy(), level)
        rows.append({**dict(zip(by, k)), "mean": mean, "ci_low": lo, "ci_high": hi, "n": len(units),
                     "unit": kind, "n_runs": int(g[value].notna().sum())})
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n", "unit", "n_runs"])


@dataclass
class Verdict:
    """One claim's verdict row, as the notebooks save it for the scoreboard."""
    claim: str
    verdict: str
    measurement: str
    effect: float
    ci_low: float
    ci_high: float
    rule: str
    n: int | None = None            # independent units behind the verdict
    unit: str | None = None         # what a unit is ("replicate"; "seed" flags the one-replicate fallback)
    alpha: float | None = None      # one-sided level of the directional tests
    margin: str | float | None = None  # the equivalence margin, where the rule has one

    def as_dict(self) -> dict:
        return asdict(self)

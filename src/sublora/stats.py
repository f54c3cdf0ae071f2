"""Effects against the control student, bootstrap confidence intervals, and the verdict rules.

Every rule is a plain function of a results table, so the notebooks state the rule in markdown and
then call it; nothing here knows what a claim "should" show.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
MIN_N = 2  # fewest independent runs for which an interval is computed


def bootstrap_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap interval of the mean of `values`. With fewer than
    MIN_N values there is no interval (NaN bounds), so every verdict rule reads it as inconclusive;
    with 3 values the interval is about [min, max]."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size < MIN_N:
        return (float(v.mean()) if v.size else float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = rng.choice(v, size=(n_boot, v.size), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(v.mean()), float(lo), float(hi)


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


def summarize(effects: pd.DataFrame, by: list[str], value: str = "delta", n_boot: int = 2000,
              seed: int = 0) -> pd.DataFrame:
    """Mean and bootstrap 95% CI of `value` per group."""
    rows = []
    groups = effects.groupby(by, sort=True) if by else [((), effects)]
    for k, g in groups:
        k = k if isinstance(k, tuple) else (k,)
        mean, lo, hi = bootstrap_ci(g[value], n_boot=n_boot, seed=seed)
        rows.append({**dict(zip(by, k)), "mean": mean, "ci_low": lo, "ci_high": hi, "n": int(g[value].notna().sum())})
    return pd.DataFrame(rows)


@dataclass
class Verdict:
    claim: str
    verdict: str
    measurement: str
    effect: float
    ci_low: float
    ci_high: float
    rule: str

    def as_dict(self) -> dict:
        return asdict(self)


def transfer_verdict(mean: float, lo: float, hi: float, min_effect: float = 0.0) -> str:
    """Claim 1. reproduced: CI above min_effect (and 0); not reproduced: CI entirely at or below
    min_effect with min_effect > 0, or entirely below 0; otherwise inconclusive."""
    if lo > max(min_effect, 0.0):
        return REPRODUCED
    if hi < 0 or (min_effect > 0 and hi <= min_effect):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def diff_ci(a, b, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Bootstrap CI of mean(a) − mean(b) for independent samples."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if min(a.size, b.size) < MIN_N:
        return float(a.mean() - b.mean()) if a.size and b.size else float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    da = rng.choice(a, size=(n_boot, a.size)).mean(1)
    db = rng.choice(b, size=(n_boot, b.size)).mean(1)
    d = da - db
    lo, hi = np.quantile(d, [0.025, 0.975])
    return float(a.mean() - b.mean()), float(lo), float(hi)


def inverted_u_verdict(effects: pd.DataFrame, rank_col: str = "rank", value: str = "delta",
                       n_boot: int = 2000, seed: int = 0) -> tuple[str, dict]:
    """Claim 2. Declared rule: let r* be the interior rank (neither the lowest nor the highest) with
    the largest mean Δ. reproduced if Δ(r*) has a CI above 0 and both Δ(r*) − Δ(lowest rank) and
    Δ(r*) − Δ(highest rank) have CIs above 0. inconclusive (no effect to modulate) if no rank's Δ
    has a CI above 0, or fewer than 3 ranks were run; otherwise not reproduced."""
    ranks = sorted(effects[rank_col].unique())
    summary = summarize(effects, [rank_col], value, n_boot, seed)
    info = {"summary": summary}
    if len(ranks) < 3:
        return INCONCLUSIVE, {**info, "reason": "fewer than 3 ranks"}
    if not (summary["ci_low"] > 0).any():
        return INCONCLUSIVE, {**info, "reason": "no effect to modulate: no rank's CI is above 0"}
    interior = summary[summary[rank_col].isin(ranks[1:-1])]
    peak = interior.loc[interior["mean"].idxmax()]
    r_star = peak[rank_col]
    vals = {r: effects.loc[effects[rank_col] == r, value].to_numpy() for r in ranks}
    d_low = diff_ci(vals[r_star], vals[ranks[0]], n_boot, seed)
    d_high = diff_ci(vals[r_star], vals[ranks[-1]], n_boot, seed)
    info.update(peak_rank=int(r_star), peak=(peak["mean"], peak["ci_low"], peak["ci_high"]),
                minus_lowest=d_low, minus_highest=d_high)
    ok = peak["ci_low"] > 0 and d_low[1] > 0 and d_high[1] > 0
    return (REPRODUCED if ok else NOT_REPRODUCED), info


def full_ft_null_verdict(full: pd.DataFrame, lora_effects, n_boot: int = 2000, seed: int = 0) -> tuple[str, dict]:
    """Claim 3. Declared rule: inconclusive (no effect to modulate) if the LoRA effect's CI is not
    above 0. reproduced ("null") only if every full-fine-tuning setting's CI includes 0 (or lies
    below it) and the LoRA effect minus the largest full-fine-tuning effect has a CI above 0;
    otherwise not reproduced. `full` has columns setting, delta; `lora_effects` is the LoRA Δ list."""
    lora = bootstrap_ci(lora_effects, n_boot, seed=seed)
    summary = summarize(full, ["setting"], "delta", n_boot, seed)
    info = {"summary": summary, "lora": lora}
    if not lora[1] > 0:
        return INCONCLUSIVE, {**info, "reason": "no effect to modulate: the LoRA effect's CI is not above 0"}
    top = summary.loc[summary["mean"].idxmax(), "setting"]
    gap = diff_ci(lora_effects, full.loc[full["setting"] == top, "delta"], n_boot, seed)
    info.update(largest_full=top, lora_minus_largest=gap)
    all_null = bool((summary["ci_low"] <= 0).all())
    return (REPRODUCED if all_null and gap[1] > 0 else NOT_REPRODUCED), info


def system_prompt_verdict(with_prompt, without_prompt, n_boot: int = 2000, seed: int = 0) -> tuple[str, dict]:
    """Claim 4. Declared rule, on students trained under the default system prompt:
    inconclusive (no effect to modulate) if Δ evaluated with the default prompt has a CI not above 0;
    reproduced if Δ evaluated with no system prompt has a CI that includes 0 (or lies below it) and
    the paired difference Δ(default) − Δ(none) has a CI above 0; otherwise not reproduced."""
    w = bootstrap_ci(with_prompt, n_boot, seed=seed)
    wo = bootstrap_ci(without_prompt, n_boot, seed=seed)
    diff = bootstrap_ci(np.asarray(with_prompt, float) - np.asarray(without_prompt, float), n_boot, seed=seed)
    info = {"with": w, "without": wo, "difference": diff}
    if not w[1] > 0:
        return INCONCLUSIVE, {**info, "reason": "no effect to modulate under the default prompt"}
    return (REPRODUCED if wo[1] <= 0 and diff[1] > 0 else NOT_REPRODUCED), info

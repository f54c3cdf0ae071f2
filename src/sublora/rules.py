"""The declared verdict rules: their text (RULES) and the functions that apply exactly that text.

Each rule has a *core* that runs on a whole stack of experiments at once (arrays of units × conditions,
integer verdict codes), used alike by the verdict functions here (one real experiment), by
sublora.calibrate (error rates) and by sublora.power (decisiveness from a pilot); and a verdict function
that takes a results table, pairs its units (sublora.stats) and returns (verdict, info). Nothing here
knows what a claim "should" show.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import (ALPHA, ALPHA_EQUIV, FALLBACK, INC, INCONCLUSIVE, LEVEL, MARGIN_FRACTION, MIN_N, NOT, REP, UNIT,
                    VERDICTS, holm, moments, one_group, p_greater, p_less, summarize, t_interval, unit_matrix,
                    unit_means)

_UNITS = ("Δ = P(target | teacher student) − P(target | matched control student), averaged over the "
          "training seeds of each replicate (a replicate has its own teacher and control datasets; with a "
          "single replicate the seeds are the units, flagged); n = number of units; intervals are Student t "
          "with n − 1 degrees of freedom; fewer than 2 units give **inconclusive**.")

RULES: dict[str, str] = {
    "transfer": (
        f"**Rule (claim 1, transfer).** {_UNITS} "
        f"**reproduced** if the {LEVEL:.0%} t-interval of the mean Δ lies above max(0, `min_effect`) "
        f"(a one-sided t-test at α = {ALPHA}); otherwise **not reproduced** if the interval lies below the "
        "smallest effect of interest e (the profile's `smallest_effect`, declared with its reason before the "
        "data; with e = 0: Δ is significantly below 0): the transfer is shown smaller than any that matters — a "
        f"one-sided test at {ALPHA} that the effect is smaller than e, which is implied by TOST equivalence to "
        "0 within ±e and needs less data; **inconclusive** otherwise. A transfer above 0 whose interval also "
        "lies below e is **reproduced** and its measurement says it is smaller than e. Each teacher kind gets its own "
        "verdict with no correction across kinds: the persona teacher is the paper's claim and the finetuned "
        "teacher a positive control for the instrument; they answer different questions and no verdict is "
        "drawn from the two together."),
    "inverted_u": (
        f"**Rule (claim 2, rank inverted U: a rise and a fall).** {_UNITS} Ranks are paired by replicate (all "
        "ranks of a replicate share its datasets). A candidate peak is a rank with at least two ranks swept on each "
        "side (so neither a lone spike at the second rank nor a curve that drops only at the last rank makes the "
        "shape); for each candidate r, one-sided paired t-tests of Δ(r) > 0, of the rise Δ(r) − Δ(r₋) > 0 over the "
        "lowest rank r₋, and of the fall Δ(r) − Δ(r') > 0 to every rank r' beyond r; r is a peak if all reject "
        "(intersection–union test: its p is the largest, no correction within r). "
        f"**reproduced** if some candidate is a peak at α = {ALPHA}/C, C = K − 4 candidates of K ranks swept "
        "(Bonferroni over the candidates, since any of them could be the one reported); the reported peak is the "
        "passing candidate with the largest mean Δ, with intervals at that level. **inconclusive** (no effect to "
        f"modulate) if fewer than 5 ranks, or no rank has Δ > 0 (Holm over the K ranks at {ALPHA}); **not "
        "reproduced** if no candidate is a peak of at least the smallest effect of interest e: for every "
        "candidate, its rise or one of its falls is shown smaller than e (one-sided paired t-tests, Bonferroni "
        f"over that candidate's 1 + (ranks beyond) tests at {ALPHA}), so a plateau or a one-step artefact is told "
        "from a peak of at least e; **inconclusive** otherwise. Declared on 2026-12-06 before the second "
        "confirmatory run (replicates 200–204); the first run's rule tested every interior rank against the two "
        "ends only, which calls both artefacts above an inverted U (`python -m sublora.calibrate "
        "--compare-rank-rules` prints the rates). Also chosen over choosing the peak on half of the replicates and "
        "testing it on the other half (less power) and over a permutation test of the peak-minus-ends statistic "
        "(exact only against a flat curve)."),
    "full_ft_null": (
        f"**Rule (claim 3, full fine-tuning null).** {_UNITS} Each full-fine-tuning setting s is paired by "
        f"replicate with the LoRA reference (they share its datasets). Margin: {MARGIN_FRACTION} × the LoRA "
        "effect Δ_L, tested as a paired contrast rather than plugged in as a number: s is *equivalent to 0* "
        f"if mean(Δ_s − {MARGIN_FRACTION}·Δ_L) < 0 and mean(Δ_s + {MARGIN_FRACTION}·Δ_L) > 0, each a "
        f"one-sided t-test at {ALPHA_EQUIV} (TOST); with an absolute margin m declared instead: Δ_s < m and "
        f"Δ_s > −m. The smallest effect of interest e is the margin's floor where the LoRA effect is itself shown "
        f"to be at least e (one-sided t at {ALPHA}; declared before the second confirmatory run — the first "
        f"applied it always): the margin is then max({MARGIN_FRACTION}·Δ_L, e), "
        "so s is equivalent if either TOST passes and above the margin if above both. **inconclusive** (no effect to modulate) if the LoRA effect is not > 0 (t-test at "
        f"{ALPHA}); **reproduced** if every setting is equivalent to 0 — an intersection–union test, so "
        f"no correction is needed: when any one setting sits at the margin, 'reproduced' comes at most "
        f"{ALPHA_EQUIV:.0%} of the time; **not reproduced** if some setting is significantly above the "
        f"margin (mean(Δ_s − {MARGIN_FRACTION}·Δ_L) > 0, or Δ_s > m, one-sided, Holm over the settings at "
        f"{ALPHA}); **inconclusive** otherwise. The contrast has an exact t distribution, so these error "
        "rates hold; a margin read off the LoRA point estimate would ignore that estimate's noise, and one "
        "read off its lower confidence bound would be valid but conservative."),
    "system_prompt": (
        f"**Rule (claim 4, system-prompt dependence).** {_UNITS} Students trained under the default "
        "system prompt: Δ_with evaluated under the training prompt, Δ_without under the other condition "
        "(no system prompt), paired per unit (the same students). **inconclusive** (no effect to modulate) "
        f"if Δ_with is not > 0 (t-test at {ALPHA}); **reproduced** if, in addition, Δ_without is "
        f"equivalent to 0 within {MARGIN_FRACTION} × Δ_with, or within max({MARGIN_FRACTION} × Δ_with, e) where "
        f"Δ_with is shown to be at least e (one-sided t at {ALPHA}; declared before the second confirmatory run — the "
        "first applied the floor e always), e the smallest effect of interest (TOST on the paired contrasts "
        f"Δ_without ∓ {MARGIN_FRACTION}·Δ_with at {ALPHA_EQUIV} each, or ± an absolute margin m declared "
        f"instead) and Δ_with − Δ_without > 0 (paired t-test at {ALPHA}) — an intersection–union test of "
        f"the three, no correction needed; **not reproduced** if Δ_without is significantly above the "
        f"margin (Δ_without − {MARGIN_FRACTION}·Δ_with > 0, or Δ_without > m, at {ALPHA}): the effect "
        "survives without the prompt; **inconclusive** otherwise."),
}


def _declares(key: str):
    """Append RULES[key] to the function's docstring: the text the notebook prints is the text here."""
    def attach(fn):
        fn.__doc__ = f"{fn.__doc__}\n    Declared rule (rules.RULES[{key!r}]):\n\n    {RULES[key]}\n"
        return fn
    return attach


def _plain(v):
    """A numpy scalar as the Python value (for JSON and for printing)."""
    return v.item() if isinstance(v, np.generic) else v


def _triple(mean, low, high) -> tuple[float, float, float]:
    return float(mean), float(low), float(high)


# ---- claim 1 ------------------------------------------------------------------------------------
def _transfer_codes(low, high, min_effect: float = 0.0, margin: float | None = None):
    """The claim-1 decision from the interval bounds (arrays or floats); NaN bounds give INC."""
    margin = min_effect if margin is None else margin
    return np.where(np.asarray(low) > max(min_effect, 0.0), REP, np.where(np.asarray(high) < margin, NOT, INC))


def transfer_core(x, min_effect: float = 0.0, margin: float | None = None, level: float = LEVEL):
    """x: (..., n) unit means → (codes (...), mean, low, high)."""
    mean, low, high = t_interval(x, level)
    return _transfer_codes(low, high, min_effect, margin), mean, low, high


@_declares("transfer")
def transfer_verdict(mean: float, lo: float, hi: float, min_effect: float = 0.0,
                     margin: float | None = None) -> str:
    """Claim 1 from an interval already computed (e.g. a summarize() row): the verdict string.
    `mean` is not used; `lo`, `hi` must be the 95% t-interval over units for the rule's error rates
    to hold (summarize() gives it)."""
    del mean
    return str(VERDICTS[int(_transfer_codes(lo, hi, min_effect, margin))])


@_declares("transfer")
def transfer_test(effects: pd.DataFrame, value: str = "delta", min_effect: float = 0.0,
                  margin: float | None = None, unit: str = UNIT) -> tuple[str, dict]:
    """Claim 1 on one group's effects (columns replicate, seed, delta; one teacher kind, target and
    animal): (verdict, info).

    info: mean, ci_low, ci_high (95% t-interval of Δ over units), n, unit, n_runs, min_effect,
    margin (the one applied), p_effect (one-sided p of Δ > max(0, min_effect)), p_below_margin
    (one-sided p of Δ < margin), alpha."""
    one_group(effects, [unit, FALLBACK], "effects")
    units, kind = unit_means(effects, value, unit)
    x = units.to_numpy()
    code, mean, low, high = transfer_core(x, min_effect, margin)
    applied = min_effect if margin is None else margin
    info = {"mean": float(mean), "ci_low": float(low), "ci_high": float(high), "n": len(x), "unit": kind,
            "n_runs": int(effects[value].notna().sum()), "min_effect": min_effect, "margin": applied,
            "p_effect": float(p_greater(x, max(min_effect, 0.0))), "p_below_margin": float(p_less(x, applied)),
            "alpha": ALPHA}
    if len(x) < MIN_N:
        info["reason"] = f"fewer than {MIN_N} independent units"
    info["why"] = _transfer_why(int(code), info)
    return str(VERDICTS[int(code)]), info


def _transfer_why(code: int, info: dict) -> str:
    """One line: which part of the claim-1 rule gave the verdict `code` (transfer_test's info)."""
    floor, e = max(info["min_effect"], 0.0), info["margin"]
    bound = f"e = {e:.2g}" if e > 0 else f"{e:g}"
    if "reason" in info:
        return info["reason"]
    if code == REP:
        return f"interval above {floor:g}"
    if code == NOT:
        return f"interval below {bound}"
    return f"interval covers {floor:g}" + (f" and {bound}" if e > floor else "")


# ---- claim 2 ------------------------------------------------------------------------------------
SIDE = 2  # ranks a candidate peak needs on each side: a rise and a fall each seen over more than one step


def _candidates(K: int) -> np.ndarray:
    """Indexes of the ranks that can be claim 2's peak: SIDE or more ranks on each side of them."""
    return np.arange(SIDE, K - SIDE)


def inverted_u_core(X, alpha: float = ALPHA, margin: float = 0.0) -> dict:
    """X: (..., n, K) Δ per unit × rank, ranks ascending, NaN where missing; K ≥ 2·SIDE + 1. margin: the
    smallest effect of interest; a candidate shown to rise less than it above the lowest rank, or to fall
    less than it to some rank beyond it, is no peak.

    Returns codes (...) and the p-values behind them: p_peak (..., C) per candidate (the
    intersection–union p of Δ > 0, the rise and every fall), p_rank (..., K) of Δ(r) > 0, effect (...)
    whether some rank has Δ > 0."""
    K = X.shape[-1]
    cand = _candidates(K)
    beyond = np.arange(K)[None, :] > cand[:, None]                 # (C, K): the ranks after each candidate
    top = X[..., cand]                                             # (..., n, C)
    rise = top - X[..., :1]
    falls = top[..., None] - X[..., None, :]                       # (..., n, C, K)
    p_fall = np.where(beyond, p_greater(falls, axis=-3), 0.0).max(axis=-1)  # NaN propagates: untestable ≠ peak
    p_peak = np.maximum(np.maximum(p_greater(top, axis=-2), p_greater(rise, axis=-2)), p_fall)
    peak = np.nan_to_num(p_peak, nan=1.0).min(axis=-1) <= alpha / cand.size
    p_rank = p_greater(X, axis=-2)                                # (..., K)
    effect = holm(p_rank, alpha)[0].any(axis=-1)
    # no candidate is a peak of e: for each, the rise or one of its falls is shown < e — a union of
    # 1 + (ranks beyond) one-sided tests, Bonferroni within it (an untestable one cannot refute)
    tests = 1 + beyond.sum(axis=-1)                                # (C,)
    p_small = np.fmin(np.nan_to_num(p_less(rise, margin, axis=-2), nan=1.0),
                      np.where(beyond, np.nan_to_num(p_less(falls, margin, axis=-3), nan=1.0), 1.0).min(axis=-1))
    refuted = effect & (p_small <= alpha / tests).all(axis=-1)
    codes = np.where(peak, REP, np.where(~effect, INC, np.where(refuted, NOT, INC)))
    return {"codes": codes, "p_peak": p_peak, "p_rank": p_rank, "effect": effect}


def inverted_u_ends_core(X, alpha: float = ALPHA, margin: float = 0.0) -> dict:
    """The rule declared before the first confirmatory run (issue 25, v1), kept as the candidate the
    declared rule is compared with (sublora.calibrate --compare-rank-rules): every interior rank is a
    candidate, a peak if above 0 and above both ends; refuted where every interior rank rises less than
    e above one end. A lone spike at the second rank and a plateau that drops only at the last rank pass it."""
    K = X.shape[-1]
    inner = X[..., 1:-1]
    minus_low, minus_high = inner - X[..., :1], inner - X[..., -1:]
    p_peak = np.maximum(np.maximum(p_greater(inner, axis=-2), p_greater(minus_low, axis=-2)),
                        p_greater(minus_high, axis=-2))
    peak = np.nan_to_num(p_peak, nan=1.0).min(axis=-1) <= alpha / (K - 2)
    effect = holm(p_greater(X, axis=-2), alpha)[0].any(axis=-1)
    below = np.fmin(p_less(minus_low, margin, axis=-2), p_less(minus_high, margin, axis=-2)) <= alpha / 2
    codes = np.where(peak, REP, np.where(~effect, INC, np.where(effect & below.all(axis=-1), NOT, INC)))
    return {"codes": codes, "p_peak": p_peak}


@_declares("inverted_u")
def inverted_u_verdict(effects: pd.DataFrame, rank_col: str = "rank", value: str = "delta",
                       unit: str = UNIT, margin: float = 0.0) -> tuple[str, dict]:
    """Claim 2 on one teacher kind's effects (columns rank_col, replicate, seed, delta): (verdict, info).

    info: summary (per rank: mean, ci_low, ci_high at 95%, n, unit, n_runs), unit, and with ≥ 2·SIDE + 1
    ranks: peak_rank (the candidate passing the peak test with the largest mean Δ; if none passes, the
    candidate with the largest mean), peak_p (its intersection–union p), level (two-sided level of the
    peak's intervals, 1 − 2·α/C, C candidates: the decision's own), peak, minus_lowest, minus_highest
    ((mean, low, high) of Δ(peak), Δ(peak) − Δ(lowest), Δ(peak) − Δ(highest), paired by unit, at that
    level), smallest_fall ((rank, (mean, low, high)): Δ(peak) − Δ(r) for the rank r beyond the peak
    with the largest mean Δ), p_peak ({candidate rank: p}), reason (when inconclusive), margin."""
    one_group(effects, [rank_col, unit, FALLBACK], "effects")
    summary = summarize(effects, [rank_col], value, unit)
    m, kind = unit_matrix(effects, rank_col, value, unit)
    ranks = list(m.columns)
    info = {"summary": summary, "unit": kind, "margin": margin}
    if len(ranks) < 2 * SIDE + 1:
        reason = f"fewer than {2 * SIDE + 1} ranks: a peak needs {SIDE} on each side"
        return INCONCLUSIVE, {**info, "reason": reason, "why": reason}
    X = m.to_numpy()
    out = inverted_u_core(X, margin=margin)
    p_peak, cand = out["p_peak"], _candidates(len(ranks))
    level = 1 - 2 * ALPHA / cand.size
    # the reported peak: the passing candidate with the largest mean Δ, else the largest mean overall
    means = np.nan_to_num(moments(X, axis=0)[0], nan=-np.inf)
    passing = np.nan_to_num(p_peak, nan=1.0) <= ALPHA / cand.size
    j = int(cand[np.argmax(np.where(passing, means[cand], -np.inf)) if passing.any() else np.argmax(means[cand])])
    k = j + 1 + int(np.argmax(means[j + 1:]))                      # the rank beyond the peak nearest its height
    peak_col = X[:, j]
    info.update(peak_rank=_plain(ranks[j]),
                peak_p=float(p_peak[list(cand).index(j)]), level=level,
                peak=_triple(*t_interval(peak_col, level)),
                minus_lowest=_triple(*t_interval(peak_col - X[:, 0], level)),
                minus_highest=_triple(*t_interval(peak_col - X[:, -1], level)),
                smallest_fall=(_plain(ranks[k]), _triple(*t_interval(peak_col - X[:, k], level))),
                p_peak={_plain(ranks[c]): float(p) for c, p in zip(cand, p_peak)})
    code = int(out["codes"])
    if code == INC:
        info["reason"] = ("no effect to modulate: no rank's Δ is shown above 0 at this n (not shown, which is not absent)" if not out["effect"]
                          else "no candidate rank is a significant peak, nor is every one shown to rise or fall "
                               "less than the margin")
    e = f"e = {margin:.2g}" if margin > 0 else "0"
    info["why"] = {REP: f"rank {info['peak_rank']} is a peak: above 0, the lowest rank and every rank beyond it",
                   NOT: f"every candidate rank is shown to rise or fall less than {e}: no peak",
                   INC: ("no effect to modulate: no rank's Δ shown above 0" if not out["effect"] else
                         f"rank {info['peak_rank']} is not shown a peak, nor is a peak of {e} ruled out")}[code]
    return str(VERDICTS[code]), info


# ---- claims 3 and 4: equivalence against a margin -------------------------------------------------
def _as_frame(x, value: str) -> pd.DataFrame:
    """A table with a `value` column from a DataFrame, a Series (its index levels become columns, so a
    (replicate, seed) index keeps the units) or a plain sequence (each element a unit)."""
    if isinstance(x, pd.DataFrame):
        if value not in x.columns:
            raise ValueError(f"the table has no {value!r} column; pass value=... naming the effect column")
        return x
    if isinstance(x, pd.Series):
        if any(name in (UNIT, FALLBACK) for name in x.index.names):
            return x.rename(value).reset_index()
        return pd.DataFrame({value: x.to_numpy(dtype=float)})
    return pd.DataFrame({value: np.asarray(x, dtype=float)})


def _contrast_p(x, y, c: float):
    """One-sided p-values (greater, less) of mean(x) + c·mean(y) against 0, per column of x: a t-test
    of the per-unit contrast x + c·y. x: (..., n, S), y: (..., n), the same units."""
    d = x + c * y[..., None]                                       # (..., n, S)
    return p_greater(d, axis=-2), p_less(d, axis=-2)


def _margin_tests(x, ref, margin: float | None, floor: float = 0.0):
    """Equivalence and superiority p-values of x (..., n, S) against the margin: ±MARGIN_FRACTION × the
    reference effect ref (..., n) as a contrast, or ±margin when an absolute margin is given.
    floor (> 0, with the contrast margin): where the reference effect is shown ≥ floor (one-sided t at
    ALPHA), the margin is max(MARGIN_FRACTION × ref, floor) — the smallest effect of interest as an absolute
    floor; |x| < max(a, b) is |x| < a or |x| < b, so x is equivalent if either TOST passes (the smaller p),
    and above the margin if above both (the larger p). Elsewhere the margin is MARGIN_FRACTION × ref alone.
    Returns (p_equivalent (TOST: the larger of its two one-sided p), p_above_margin), each (..., S)."""
    def absolute(m):
        return np.maximum(p_less(x, m, axis=-2), p_greater(x, -m, axis=-2)), p_greater(x, m, axis=-2)
    if margin is not None:
        return absolute(margin)
    p_above, p_below = _contrast_p(x, ref, -MARGIN_FRACTION)       # x − f·ref vs 0
    p_over_lower, _ = _contrast_p(x, ref, MARGIN_FRACTION)         # x + f·ref vs 0
    p_eq = np.maximum(p_below, p_over_lower)
    if floor > 0:
        # the floor only where the reference effect is itself shown to be at least it: a floor above the
        # whole effect would call any smaller x "equivalent to 0" (the first confirmatory run's claim 4)
        p_eq_floor, p_above_floor = absolute(floor)
        shown = (p_greater(ref, floor) <= ALPHA)[..., None]
        p_eq = np.where(shown, np.fmin(p_eq, p_eq_floor), p_eq)
        p_above = np.where(shown, np.fmax(p_above, p_above_floor), p_above)
    return p_eq, p_above


def full_ft_core(F, L, margin: float | None = None, alpha: float = ALPHA, floor: float = 0.0) -> dict:
    """F: (..., n, S) full-FT Δ per unit × setting; L: (..., n) LoRA Δ of the same units.
    Returns codes (...), p_lora, p_equivalent (..., S), p_above (..., S), above (Holm)."""
    p_lora = p_greater(L)
    p_eq, p_above = _margin_tests(F, L, margin, floor)
    above = holm(p_above, alpha)[0]
    equivalent = (p_eq <= ALPHA_EQUIV).all(axis=-1)
    codes = np.where(~(p_lora <= alpha), INC, np.where(equivalent, REP, np.where(above.any(axis=-1), NOT, INC)))
    return {"codes": codes, "p_lora": p_lora, "p_equivalent": p_eq, "p_above": p_above, "above": above}


_LORA = "<LoRA reference>"  # the LoRA column among the settings while pairing them


def _margin_text(margin: float | None, reference: str, floor: float = 0.0) -> str | float:
    if margin is not None:
        return float(margin)
    return f"{MARGIN_FRACTION} × {reference}, tested as a contrast" + (
        f", or {floor:.2g} if larger and {reference} is shown ≥ {floor:.2g}" if floor > 0 else "")


@_declares("full_ft_null")
def full_ft_null_verdict(full: pd.DataFrame, lora, margin: float | None = None, value: str = "delta",
                         unit: str = UNIT, floor: float = 0.0) -> tuple[str, dict]:
    """Claim 3 for one teacher kind: (verdict, info).

    full: columns setting, replicate, seed, delta (value); lora: the LoRA reference as a table with
    columns replicate, seed, delta (or a Series indexed by replicate, seed), paired with each setting
    by unit; without unit ids in both it is refused (ValueError). margin: None for MARGIN_FRACTION ×
    the LoRA effect, or an absolute ΔP.

    info: summary (per setting: mean, ci_low, ci_high at 95%, n, unit, n_runs, p_equivalent,
    equivalent, p_above_margin, above_margin (Holm)), lora ((mean, low, high) at 95%), lora_n,
    largest_full (setting with the largest mean Δ), margin (text or number), pairing, unit, reason."""
    one_group(full, ["setting", unit, FALLBACK], "full")
    lora = _as_frame(lora, value)
    if unit not in full.columns or unit not in lora.columns:
        # The rule pairs each setting with the LoRA reference on the same units. A bare sequence of
        # LoRA Δ (the old notebook's lora_eff["delta"]) has none; its unpaired Welch comparison had no
        # caller left and is gone.
        raise ValueError(f"full and lora both need {unit!r} ids to pair each setting with the LoRA "
                         f"reference: pass lora as a table with {unit!r}, seed and {value!r} columns")
    one_group(lora, [unit, FALLBACK], "lora")
    # one unit kind for both, so that a setting and the LoRA reference share units
    ids = [c for c in (unit, FALLBACK) if c in full.columns and c in lora.columns]
    both = pd.concat([full[["setting", *ids, value]], lora[ids + [value]].assign(setting=_LORA)],
                     ignore_index=True)
    m, kind = unit_matrix(both, "setting", value, unit)
    L = m.pop(_LORA).to_numpy() if _LORA in m else np.full(len(m), np.nan)
    F = m.to_numpy()
    summary = summarize(full, ["setting"], value, unit)
    out = full_ft_core(F, L, margin, floor=floor)
    per = pd.DataFrame({"setting": m.columns, "p_equivalent": out["p_equivalent"],
                        "p_above_margin": out["p_above"], "above_margin": out["above"]})
    summary = summary.merge(per, on="setting", how="left")
    summary["equivalent"] = summary["p_equivalent"] <= ALPHA_EQUIV
    summary["above_margin"] = summary["above_margin"].fillna(False).astype(bool)
    lora_interval = _triple(*t_interval(L))
    info = {"summary": summary, "lora": lora_interval, "lora_n": int(np.sum(~np.isnan(L))),
            "largest_full": summary.loc[summary["mean"].idxmax(), "setting"] if summary["mean"].notna().any() else None,
            "margin": _margin_text(margin, "the LoRA effect", floor),
            "pairing": f"paired by {kind}",
            "unit": kind, "alpha": ALPHA, "alpha_equivalence": ALPHA_EQUIV}
    code = int(out["codes"])
    if code == INC:
        info["reason"] = ("no effect to modulate: the LoRA effect is not shown above 0 at this n (not shown, which is not absent)"
                          if not out["p_lora"] <= ALPHA else
                          "not every setting is equivalent to 0, and none is significantly above the margin")
    S, equivalent, above = len(summary), int(summary["equivalent"].sum()), int(summary["above_margin"].sum())
    info["why"] = {REP: f"all {S} full-FT settings equivalent to 0",
                   NOT: f"{above} of {S} full-FT settings above the margin",
                   INC: ("no effect to modulate: the LoRA Δ is not shown above 0" if not out["p_lora"] <= ALPHA else
                         f"{equivalent} of {S} settings equivalent to 0, none shown above the margin")}[code]
    return str(VERDICTS[code]), info


def system_prompt_core(W, WO, margin: float | None = None, alpha: float = ALPHA, floor: float = 0.0) -> dict:
    """W, WO: (..., n) Δ under the training prompt and under the other condition, same units.
    Returns codes (...), p_with, p_equivalent, p_difference, p_above."""
    p_with = p_greater(W)
    p_eq, p_above = (np.squeeze(v, -1) for v in _margin_tests(WO[..., None], W, margin, floor))
    p_diff = p_greater(W - WO)
    effect = p_with <= alpha
    reproduced = effect & (p_eq <= ALPHA_EQUIV) & (p_diff <= alpha)
    codes = np.where(~effect, INC, np.where(reproduced, REP, np.where(p_above <= alpha, NOT, INC)))
    return {"codes": codes, "p_with": p_with, "p_equivalent": p_eq, "p_difference": p_diff, "p_above": p_above}


@_declares("system_prompt")
def system_prompt_verdict(with_prompt, without_prompt, margin: float | None = None, value: str = "delta",
                          unit: str = UNIT, floor: float = 0.0) -> tuple[str, dict]:
    """Claim 4 for one teacher kind: (verdict, info).

    with_prompt, without_prompt: Δ of the students trained under the default prompt, evaluated under
    it and under the other condition; each a Series indexed by (replicate, seed) (as from
    effects.pivot_table(index=["replicate", "seed"], columns="eval_system", values="delta")), a table
    with replicate, seed, delta, or two equal-length sequences paired by position. margin: None for
    MARGIN_FRACTION × Δ_with, or an absolute ΔP.

    info: with, without, difference ((mean, low, high), 95% t-intervals over units; difference =
    Δ_with − Δ_without, paired), n, unit, margin, p_with, p_equivalent, p_difference, p_above_margin,
    reason (when inconclusive)."""
    w, wo = _as_frame(with_prompt, value), _as_frame(without_prompt, value)
    if unit not in w.columns and unit not in wo.columns and len(w) != len(wo):
        raise ValueError(f"with_prompt has {len(w)} values and without_prompt {len(wo)}: without "
                         f"{unit!r} ids they are paired by position, so pass equal lengths or tables with ids")
    both = pd.concat([w.assign(_eval="with"), wo.assign(_eval="without")], ignore_index=True)
    one_group(both, ["_eval", unit, FALLBACK], "the Δ tables")
    m, kind = unit_matrix(both, "_eval", value, unit)
    m = m.reindex(columns=["with", "without"])
    W, WO = m["with"].to_numpy(), m["without"].to_numpy()
    out = system_prompt_core(W, WO, margin, floor=floor)
    info = {"with": _triple(*t_interval(W)), "without": _triple(*t_interval(WO)),
            "difference": _triple(*t_interval(W - WO)), "n": int(np.sum(~np.isnan(W - WO))), "unit": kind,
            "margin": _margin_text(margin, "Δ_with", floor), "p_with": float(out["p_with"]),
            "p_equivalent": float(out["p_equivalent"]), "p_difference": float(out["p_difference"]),
            "p_above_margin": float(out["p_above"]), "alpha": ALPHA, "alpha_equivalence": ALPHA_EQUIV}
    code = int(out["codes"])
    if code == INC:
        info["reason"] = ("no effect to modulate: Δ under the default prompt is not shown above 0 at this n (not shown, which is not absent)" if not out["p_with"] <= ALPHA else
                          "Δ without the prompt is neither equivalent to 0 nor significantly above the margin")
    info["why"] = {REP: "Δ without the prompt equivalent to 0 and below Δ with it",
                   NOT: "Δ without the prompt above the margin: the transfer survives without it",
                   INC: ("no effect to modulate: Δ with the prompt is not shown above 0" if not out["p_with"] <= ALPHA
                         else "Δ without the prompt is shown neither to vanish nor to stay above the margin")}[code]
    return str(VERDICTS[code]), info

"""Tables that sit beside the verdicts and are not verdicts: the paper's own comparison with the base model,
claim 3's precision arms compared by a paired test, and the DWG gates' shares over students (the
localisation of notebook 05, sublora.localize). Each a mean with its t-interval over independent units.
"""
from __future__ import annotations

import math

import pandas as pd

from . import claims, stats
from .claims import fmt_ci

def versus_base(base: pd.DataFrame, table: pd.DataFrame, by: list[str], animal: str) -> pd.DataFrame:
    """The paper's comparison beside ours: teacher students minus the base model evaluated in the same
    context (eval system prompt; `base`: tables.base_evaluations), and minus their matched control
    students (sublora's, stricter: the control shares every step but the teacher). ΔP(animal) and Δ
    mention rate, mean and 95% t-interval over replicates, per `by` group (which must include eval_system)."""
    rows = table[table["animal"] == animal]
    rows = rows.merge(base[base["animal"] == animal][["eval_system", "p", "mention_rate"]],
                      on="eval_system", suffixes=("", "_base"))
    out = []
    for metric in ("p", "mention_rate"):
        teacher = rows[rows["arm"] == "teacher"].assign(delta=lambda d: d[metric] - d[f"{metric}_base"])
        vs_base = stats.summarize(teacher, by)
        vs_control = stats.summarize(stats.paired_effects(rows, by, value=metric), by)
        base_value = rows.groupby(by)[f"{metric}_base"].first().rename("base").reset_index()
        both = vs_base.merge(vs_control, on=by, suffixes=(" vs base", " vs control")).merge(base_value, on=by)
        out.append(both.assign(metric=metric))
    cols = ["metric", *by, "base", "mean vs base", "ci_low vs base", "ci_high vs base", "mean vs control",
            "ci_low vs control", "ci_high vs control", "n vs control"]
    return pd.concat(out, ignore_index=True)[cols]


def precision_contrast(effects: pd.DataFrame, kinds: list[str], arms: tuple, smallest_effect: float = 0.0) -> pd.DataFrame:
    """Claim 3's precision arms compared by a paired test, not by their verdict labels: per teacher kind and
    setting both arms ran (the baseline and the lr axis), Δ(other arm) − Δ(main arm) paired by replicate (the arms
    share datasets and seeds), mean and 95% t-interval, and what the interval says against the smallest effect of
    interest e: 'lower' (below 0: the other arm transfers less), 'higher' (above 0), 'within e' (inside ±e, e > 0),
    'cannot tell' otherwise. Per setting, no correction across settings: a reading, not a verdict."""
    main, *others = arms
    rows = []
    for kind in kinds:
        full = effects[(effects["teacher_kind"] == kind) & (effects["method"] == "full")]
        base = full[full["precision"] == main].set_index(["setting", "replicate", "seed"])["delta"]
        for arm in others:
            other = full[full["precision"] == arm]
            other = other.assign(setting=other["setting"].str.removesuffix(f" · {arm}"))
            d = (other.set_index(["setting", "replicate", "seed"])["delta"] - base).dropna().rename("delta").reset_index()
            for setting, g in d.groupby("setting", sort=False):
                s = stats.summarize(g, []).iloc[0]
                lo, hi = s["ci_low"], s["ci_high"]
                reading = ("lower" if hi < 0 else "higher" if lo > 0 else
                           "within e" if smallest_effect > 0 and -smallest_effect < lo and hi < smallest_effect else
                           "cannot tell")
                rows.append({"teacher": kind, "arm": arm, "setting": setting, "arm − main": fmt_ci(s["mean"], lo, hi),
                             "n": int(s["n"]), "reading": reading})
    return pd.DataFrame(rows, columns=["teacher", "arm", "setting", "arm − main", "n", "reading"])


def dwg_summary(table: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per gate: the mean P's, the mean over students of each student's pooled share, its
    t-interval over students (stats.t_interval: NaN with fewer than two students), and share_pooled,
    pooled over every student and question. Students are told apart by a 'student' column (a caller
    concatenating dwg_table's of several students adds it); without one the table is one student.
    A student whose own effect is near zero has a wild share; share_pooled weighs students by effect."""
    t = table.assign(student=table["student"] if "student" in table else 0)
    t = t.assign(gained=t["p_gate"] - t["p_base"], effect=t["p_student"] - t["p_base"])
    per = t.groupby(["gate", "student"], sort=False).agg(
        p_gate=("p_gate", "mean"), p_base=("p_base", "mean"), p_student=("p_student", "mean"),
        gained=("gained", "sum"), effect=("effect", "sum"))
    per["share"] = (per["gained"] / per["effect"]).where(per["effect"] != 0)
    rows = []
    for gate, g in per.groupby(level="gate", sort=False):
        shares = g["share"].dropna()
        _, lo, hi = stats.t_interval(shares.to_numpy(), level) if len(shares) else (math.nan,) * 3
        total = g["effect"].sum()
        rows.append({"gate": gate, "n_students": len(g), "p_base": g["p_base"].mean(),
                     "p_student": g["p_student"].mean(), "p_gate": g["p_gate"].mean(),
                     "share": shares.mean() if len(shares) else math.nan, "ci_low": float(lo), "ci_high": float(hi),
                     "share_pooled": g["gained"].sum() / total + 0.0 if total else math.nan})
    return pd.DataFrame(rows)


def ladder_effects(effects: pd.DataFrame) -> pd.DataFrame:
    """The ladder's claim-1 effects (book/ladder.md): per teacher kind × target and pooled over the targets, ΔP of
    the target (`own`) and the target-specific effect (`specific`: ΔP(target) minus the mean ΔP of the other
    evaluated animals), each a mean and t-interval over independent units: a replicate's teacher (one teacher per
    replicate) and, pooled, each teacher of each animal. `effects`: paired_effects of one metric by teacher_kind,
    target, animal (its `control` column: the control students' value), whence `relative`: the mean over the
    control students' mean P(target)."""
    keys = ["teacher_kind", "target", "replicate", "seed"]
    own = effects[effects["target"] == effects["animal"]].set_index(keys)
    units = pd.concat([own["delta"].rename("own").reset_index().assign(effect="own").rename(columns={"own": "delta"}),
                       claims.specificity(effects).assign(effect="specific")], ignore_index=True)
    pooled = units.assign(target="pooled", replicate=units["target"] + "/" + units["replicate"].astype(str))
    out = stats.summarize(pd.concat([units, pooled], ignore_index=True), ["teacher_kind", "target", "effect"])
    base = own["control"].groupby(["teacher_kind", "target"]).mean()
    base = pd.concat([base, base.groupby("teacher_kind").mean().to_frame().assign(target="pooled")
                      .set_index("target", append=True)["control"]])
    out["control_p"] = [base.get((k, t), math.nan) for k, t in zip(out["teacher_kind"], out["target"])]
    out["relative"] = out["mean"] / out["control_p"]
    weights = out["teacher_kind"] != "persona"  # a weight-space teacher per replicate; the persona's units: datasets
    out["unit"] = [("teacher" if w else "dataset") + (" x animal" if t == "pooled" else "")
                   for w, t in zip(weights, out["target"])]
    return out

"""One function per claim: from a notebook's results table to its effects, summaries and verdict
rows. The rules themselves live in sublora.stats; this module applies them per teacher and writes
the measurement a reader sees (always with its interval).
"""
from __future__ import annotations

import pandas as pd

from . import stats

CLAIMS = {
    "1 transfer": "LoRA r8 students of a persona teacher prefer its animal more than control students",
    "2 rank inverted-U": "transfer rises with LoRA rank, peaks at an intermediate rank, then falls",
    "3 full fine-tuning null": "no transfer with full fine-tuning, across lr, batch and epochs",
    "4 system-prompt dependence": "no transfer when evaluated without the system prompt used in training",
}


def fmt_ci(mean: float, lo: float, hi: float, fmt: str = "+.2e") -> str:
    """'+1.34e-02 [+1.15e-02, +1.56e-02]': a measurement with its 95% interval."""
    return f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _row(claim: str, file: str, kind: str, verdict: str, measurement: str, effect, lo, hi, rule: str) -> dict:
    return stats.Verdict(claim=claim, verdict=verdict, measurement=measurement, effect=effect, ci_low=lo,
                         ci_high=hi, rule=rule).as_dict() | {"teacher": kind, "file": f"{file}_{kind}"}


def specificity(effects: pd.DataFrame) -> pd.DataFrame:
    """Per teacher animal and (replicate, seed): Δ of its own animal minus the mean Δ of the other
    evaluated animals. `effects`: paired_effects by teacher_kind, target, animal."""
    keys = ["teacher_kind", "target", "replicate", "seed"]
    own = effects[effects["target"] == effects["animal"]].set_index(keys)["delta"]
    others = effects[effects["target"] != effects["animal"]].groupby(keys)["delta"].mean()
    return (own - others).rename("delta").reset_index()


# ---- claim 1 -----------------------------------------------------------------------------------
def transfer_effects(results: pd.DataFrame, n_boot: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paired effects (metrics p and mention_rate) per teacher kind, teacher animal and evaluated
    animal, and their summary."""
    effects = pd.concat([stats.paired_effects(results, ["teacher_kind", "target", "animal"], value=v).assign(metric=v)
                         for v in ("p", "mention_rate")], ignore_index=True)
    effects["own"] = effects["target"] == effects["animal"]
    return effects, stats.summarize(effects, ["metric", "teacher_kind", "target", "animal"], n_boot=n_boot)


def transfer(summary: pd.DataFrame, animal: str, kinds: list[str], min_effect: float) -> list[dict]:
    rows = []
    for kind in kinds:
        sel = summary.query("metric == 'p' and teacher_kind == @kind and target == @animal and animal == @animal").iloc[0]
        mention = summary.query("metric == 'mention_rate' and teacher_kind == @kind and target == @animal "
                                "and animal == @animal").iloc[0]
        verdict = stats.transfer_verdict(sel["mean"], sel["ci_low"], sel["ci_high"], min_effect)
        measurement = (f"{kind} teacher: ΔP({animal}) = {fmt_ci(sel['mean'], sel['ci_low'], sel['ci_high'])}"
                       f", Δ mention rate {mention['mean']:+.3f}, n = {sel['n']}")
        rows.append(_row("1 transfer", "1_transfer", kind, verdict, measurement, sel["mean"], sel["ci_low"],
                         sel["ci_high"], "CI of ΔP(target) vs control above 0"))
    return rows


# ---- claim 2 -----------------------------------------------------------------------------------
def rank(effects: pd.DataFrame, kinds: list[str], n_boot: int) -> list[dict]:
    rows = []
    for kind in kinds:
        verdict, info = stats.inverted_u_verdict(effects.query("teacher_kind == @kind"), rank_col="lora_rank",
                                                 n_boot=n_boot)
        if "peak_rank" in info:
            m, lo, hi = info["peak"]
            measurement = (f"{kind} teacher: peak at interior rank {info['peak_rank']}: Δ = {fmt_ci(m, lo, hi)}; "
                           f"peak − lowest {fmt_ci(*info['minus_lowest'])}; "
                           f"peak − highest {fmt_ci(*info['minus_highest'])}")
        else:
            best = info["summary"].loc[info["summary"]["mean"].idxmax()]
            m, lo, hi = best["mean"], best["ci_low"], best["ci_high"]
            measurement = (f"{kind} teacher: {info['reason']}; largest Δ at rank {int(best['lora_rank'])}: "
                           f"{fmt_ci(m, lo, hi)}")
        rows.append(_row("2 rank inverted-U", "2_rank", kind, verdict, measurement, m, lo, hi,
                         "interior peak CI > 0 and CI-separated from lowest and highest rank"))
    return rows


# ---- claim 3 -----------------------------------------------------------------------------------
def full_finetuning(effects: pd.DataFrame, kinds: list[str], lora_rank: int, n_boot: int) -> list[dict]:
    rows = []
    for kind in kinds:
        full_eff = effects.query("teacher_kind == @kind and method == 'full'")
        lora_eff = effects.query("teacher_kind == @kind and method == 'lora'")
        verdict, info = stats.full_ft_null_verdict(full_eff, lora_eff["delta"], n_boot=n_boot)
        full_summary = info["summary"]
        top = full_summary.sort_values("mean").iloc[-1]
        measurement = (f"{kind} teacher: largest full-FT Δ ({top['setting']}) {fmt_ci(top['mean'], top['ci_low'], top['ci_high'])}; "
                       f"{int((full_summary['ci_low'] > 0).sum())} of {len(full_summary)} full-FT CIs above 0; "
                       f"LoRA r{lora_rank} Δ {fmt_ci(*info['lora'])}" + (f"; {info['reason']}" if "reason" in info else ""))
        rows.append(_row("3 full fine-tuning null", "3_full", kind, verdict, measurement, top["mean"], top["ci_low"],
                         top["ci_high"], "every full-FT CI includes 0 and LoRA − largest full-FT effect CI > 0"))
    return rows


# ---- claim 4 -----------------------------------------------------------------------------------
def system_prompt(effects: pd.DataFrame, kinds: list[str], n_boot: int) -> list[dict]:
    rows = []
    for kind in kinds:
        train_default = effects.query("teacher_kind == @kind and variant == 'train default'").pivot_table(
            index=["replicate", "seed"], columns="eval_system", values="delta")
        verdict, info = stats.system_prompt_verdict(train_default["default"], train_default["none"], n_boot=n_boot)
        w, wo, d = info["with"], info["without"], info["difference"]
        measurement = (f"{kind} teacher: Δ eval default {fmt_ci(*w)}; eval none {fmt_ci(*wo)}; difference {fmt_ci(*d)}"
                       + (f"; {info['reason']}" if "reason" in info else ""))
        rows.append(_row("4 system-prompt dependence", "4_system", kind, verdict, measurement, d[0], d[1], d[2],
                         "Δ(eval default) CI > 0, Δ(eval none) CI includes 0, difference CI > 0"))
    return rows


def table(rows: list[dict]):
    """The verdict rows as the notebooks show them."""
    return pd.DataFrame(rows)[["teacher", "verdict", "measurement"]]

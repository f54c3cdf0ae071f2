"""Notebook 07's verdicts: the paper's questions asked in another setting, Cloud et al.'s auxiliary-logit
experiment (sublora.auxlogit trains it), by the same declared rules (sublora.rules). Not the paper's claims:
their rows carry claim names of their own (AUX_CLAIMS), so that no table counts them among claims.CLAIMS.
"""
from __future__ import annotations

import pandas as pd

from . import rules, stats
from .claims import RANK_RULE, fmt_ci, rank_reading, units_text

# Not the paper's claims: the paper's questions asked in the setting where Cloud et al. found subliminal
# transfer strong and cheap (an MLP digit classifier distilled on its auxiliary logits over noise,
# sublora.auxlogit). Their verdict rows carry these claim names, so that no table counts them among CLAIMS.
AUX_PAGE = "07_auxiliary_logits"
AUX_SETTING = "auxiliary logits (Cloud et al.'s digits MLP)"
AUX_CLAIMS = {
    "aux-logit 1 transfer": "a student of the teacher's initialisation, distilled only on its 3 auxiliary logits over "
                            "noise, classifies digits above a control and above a cross-initialisation student",
    "aux-logit 2 rank inverted-U": "with LoRA students, transfer peaks at an intermediate rank (claim 2, asked here)",
    "aux-logit 3 full-parameter null": "no transfer with full-parameter distillation (claim 3, asked here)",
}
AUX_EFFECTS = {"aux-logit 1 transfer": "Δ accuracy vs control", "aux-logit 2 rank inverted-U": "Δ accuracy at the peak rank",
               "aux-logit 3 full-parameter null": "full-parameter Δ accuracy"}
AUX_TEACHER = "digit classifier"  # the verdict rows' `teacher`: the one teacher of this setting


def aux_effects(table: pd.DataFrame) -> pd.DataFrame:
    """Per pair, the accuracy differences notebook 07's claims read (sublora.auxlogit.run's table): columns
    comparison, method, lora_rank, replicate, seed, student, baseline, delta. 'vs control': each student
    (full-parameter, LoRA at each rank) − its control of the same kind, distilled from the untrained teacher;
    'vs cross-init': the full-parameter student − the cross-initialisation student of the same teacher."""
    students = table[table["model"] == "student"]
    same = students[students["init"] == "same"]
    vs_control = stats.paired_effects(same, ["method", "lora_rank"], value="accuracy").assign(comparison="vs control")
    full = same[(same["method"] == "full") & (same["arm"] == "teacher")].assign(arm="teacher")
    cross = students[students["init"] == "cross"].assign(arm="control")
    vs_cross = stats.paired_effects(pd.concat([full, cross]), ["method", "lora_rank"], value="accuracy")
    out = pd.concat([vs_control, vs_cross.assign(comparison="vs cross-init")], ignore_index=True)
    out = out.rename(columns={"teacher": "student", "control": "baseline"})
    return out[["comparison", "method", "lora_rank", "replicate", "seed", "student", "baseline", "delta"]]


def aux_accuracies(table: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy of each kind of model, mean and 95% t-interval over pairs (one row per kind, in the
    order a reader meets them)."""
    t = table.assign(kind=table["model"].where(table["model"] != "student",
                                              "student " + table["method"] + table["lora_rank"].map(
                                                  lambda r: f" r{r}" if r else "")
                                              + table["init"].map({"same": "", "cross": " cross-init"})
                                              + table["arm"].map({"teacher": "", "control": " control"})))
    summary = stats.summarize(t, ["kind"], value="accuracy")
    order = list(dict.fromkeys(t["kind"]))
    return summary.set_index("kind").loc[order].reset_index()


def _aux_row(claim: str, file: str, verdict: str, measurement: str, effect, lo, hi, rule: str, n: int,
             unit: str) -> dict:
    return stats.Verdict(claim=claim, verdict=verdict, measurement=measurement, effect=effect, ci_low=lo, ci_high=hi,
                         rule=rule, n=n, unit=unit).as_dict() | {"teacher": AUX_TEACHER, "animal": "—",
                                                                 "setting": AUX_SETTING, "file": file}


def _acc(t: dict) -> str:
    return fmt_accuracy(t["mean"], t["ci_low"], t["ci_high"])


def fmt_accuracy(mean, lo, hi) -> str:
    """fmt_ci of an accuracy difference, three decimals; a difference of 0 to rounding is '+0.000', not '-0.000'."""
    return fmt_ci(*(round(float(v), 6) + 0.0 for v in (mean, lo, hi)), "+.3f")


def aux_transfer(effects: pd.DataFrame) -> list[dict]:
    """Claim 1 here: rules.RULES['transfer'] on the full-parameter student's Δ accuracy against its control
    and against the cross-initialisation student; reproduced if both are, not reproduced if either is not,
    inconclusive otherwise. The effect of the row is Δ against the control."""
    full = effects[effects["method"] == "full"]
    v_control, t_control = rules.transfer_test(full[full["comparison"] == "vs control"])
    v_cross, t_cross = rules.transfer_test(full[full["comparison"] == "vs cross-init"])
    both = (v_control, v_cross)
    verdict = stats.REPRODUCED if both == (stats.REPRODUCED,) * 2 else \
        stats.NOT_REPRODUCED if stats.NOT_REPRODUCED in both else stats.INCONCLUSIVE
    measurement = (f"full-parameter student − control (untrained teacher): Δ accuracy = {_acc(t_control)} "
                   f"({v_control}); − cross-initialisation student: {_acc(t_cross)} ({v_cross}); "
                   f"{units_text(t_control['n'], 'pair')}")
    return [_aux_row("aux-logit 1 transfer", "aux_1_transfer", verdict, measurement, t_control["mean"],
                     t_control["ci_low"], t_control["ci_high"],
                     "95% t-interval of Δ accuracy above 0, against the control and against the cross-init student",
                     t_control["n"], "pair")]


def aux_rank(effects: pd.DataFrame) -> list[dict]:
    """Claim 2 here: rules.RULES['inverted_u'] on the LoRA students' Δ accuracy against their controls, by rank."""
    lora = effects[(effects["method"] == "lora") & (effects["comparison"] == "vs control")]
    verdict, info = rules.inverted_u_verdict(lora, rank_col="lora_rank")
    n = int(info["summary"]["n"].min())
    text, (m, lo, hi) = rank_reading(info, fmt_accuracy, "Δ accuracy")
    return [_aux_row("aux-logit 2 rank inverted-U", "aux_2_rank", verdict, f"{text}; {units_text(n, 'pair')} per rank",
                     m, lo, hi, RANK_RULE, n, "pair")]


def aux_full_null(effects: pd.DataFrame, reference_rank: int) -> list[dict]:
    """Claim 3 here: rules.RULES['full_ft_null'] with one full-parameter setting (Cloud et al.'s) and the LoRA
    students of `reference_rank` as the reference, Δ accuracy against their controls, paired by pair."""
    vs_control = effects[effects["comparison"] == "vs control"]
    full = vs_control[vs_control["method"] == "full"].assign(setting="full-parameter")
    lora = vs_control[(vs_control["method"] == "lora") & (vs_control["lora_rank"] == reference_rank)]
    verdict, info = rules.full_ft_null_verdict(full, lora)
    top = info["summary"].iloc[0]
    measurement = (f"full-parameter Δ accuracy {fmt_accuracy(top['mean'], top['ci_low'], top['ci_high'])}, "
                   f"{'equivalent' if top['equivalent'] else 'not equivalent'} to 0 within {info['margin']}"
                   f"{', above that margin' if top['above_margin'] else ''}; LoRA r{reference_rank} Δ accuracy "
                   f"{fmt_accuracy(*info['lora'])}; {units_text(int(top['n']), 'pair')}"
                   + (f"; {info['reason']}" if "reason" in info else ""))
    return [_aux_row("aux-logit 3 full-parameter null", "aux_3_full", verdict, measurement, top["mean"],
                     top["ci_low"], top["ci_high"],
                     "full-parameter Δ equivalent to 0 within half the LoRA effect (TOST), LoRA effect above 0",
                     int(top["n"]), "pair")]


def aux_verdict_table(rows: list[dict]) -> pd.DataFrame:
    """Notebook 07's verdict rows as its page, the scoreboard and the book show them."""
    return pd.DataFrame(rows)[["claim", "verdict", "measurement"]]


OTHER_SETTINGS = ["setting", "claim", "asks", "verdict", "measurement"]


def other_settings(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The default run's verdicts of the other setting (AUX_CLAIMS, notebook 07), claim by claim, beside what
    each asks: a table of its own, never among the paper's claims. Empty where notebook 07 has not run."""
    rows = verdicts[verdicts["claim"].isin(AUX_CLAIMS)] if "claim" in verdicts else verdicts
    if rows.empty:
        return pd.DataFrame(columns=OTHER_SETTINGS)
    rows = rows.assign(setting=AUX_SETTING, asks=rows["claim"].map(AUX_CLAIMS)).sort_values("claim")
    return rows[OTHER_SETTINGS].reset_index(drop=True)

"""The paper's claims, and one function per claim: from a notebook's results table to its effects,
summaries and verdict rows, per teacher. The rules themselves are in sublora.rules; this module applies
them and writes the one-line measurement a reader sees (always with its interval). The fixed sequence
that gates a teacher's claims 2-4 on its claim 1 is in sublora.sequence.
Prose that reads the verdicts is in sublora.readings; the auxiliary-logit setting's verdicts are in
sublora.aux_claims.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from . import rules, stats
from .config import delta_label
from .design import CONTROLS
from .numfmt import TINY, fmt_ci, fmt_metric, fmt_number  # noqa: F401  (claims.fmt_ci, as the pages call it)

@dataclass(frozen=True)
class Claim:
    """One of the paper's claims: the one place its name, words, page and effect are written."""
    key: str     # the verdict rows' `claim`
    paper: str   # the claim in the paper's words
    page: str    # the notebook that tests it
    effect: str  # what the number in its verdict is ("{delta}": Δ of the profile's metric, config.delta_label)
    file: str    # the stem of its verdict files (its first arm's; another arm's adds _<arm>)


REGISTRY = (
    Claim("1 transfer", "LoRA r8 students of a persona teacher prefer its animal more than control students",
          "02_transfer", "{delta}", "1_transfer"),
    Claim("2 rank inverted-U", "transfer rises with LoRA rank, peaks at an intermediate rank, then falls",
          "03_rank_sweep", "Δ at the peak rank", "2_rank"),
    Claim("3 full fine-tuning null", "no transfer with full fine-tuning, across lr, batch and epochs",
          "04_full_finetuning", "largest full-FT Δ", "3_full"),
    Claim("4 system-prompt dependence", "no transfer when evaluated without the system prompt used in training",
          "05_system_prompt", "Δ(default) − Δ(empty)", "4_system"),
)
CLAIMS = {c.key: c.paper for c in REGISTRY}


def arm_file(claim: Claim, i: int, arm: str | None) -> str:
    """The stem of the verdict file of a claim's i-th arm: the first arm's is the claim's own."""
    return claim.file if i == 0 or not arm else f"{claim.file}_{arm}"

def _row(claim: str, file: str, kind: str, animal: str, verdict: str, measurement: str, effect, lo, hi,
         rule: str, n: int, unit: str, reason: str, level: float = stats.LEVEL) -> dict:
    """A verdict row: stats.Verdict's fields, who it is about, and the structured columns the tables show beside
    the measurement (effect_columns): `reason`, one line saying what in the rule gave the verdict, and `level`,
    the two-sided level of the interval [ci_low, ci_high]."""
    return stats.Verdict(claim=claim, verdict=verdict, measurement=measurement, effect=effect, ci_low=lo,
                         ci_high=hi, rule=rule, n=n, unit=unit).as_dict() | {"teacher": kind, "animal": animal,
                                                                          "file": f"{file}_{kind}", "reason": reason,
                                                                          "level": level}


def units_text(n, unit: str) -> str:
    return f"n = {n} {unit}{'s' if n != 1 else ''}"


INVALID = "invalid"


def _failed(table: pd.DataFrame, row: dict) -> str:
    """Why some student the verdict `row` rests on failed to train ('' if none did): the students of its
    teacher kind and animal, and for a precision arm of claim 3 that arm's students and the LoRA reference."""
    if "diverged" not in table:
        return ""
    rel = table[table["teacher_kind"] == row["teacher"]]
    if "target" in rel:
        rel = rel[rel["target"] == row["animal"]]
    if "arm" in row and "precision" in rel:
        rel = rel[(rel["method"] == "lora") | (rel["precision"] == row["arm"])]
    bad = rel[rel["diverged"].fillna("").astype(str) != ""]
    return f"{bad['student'].nunique()} student(s) failed to train ({bad['diverged'].iloc[0]})" if len(bad) else ""


def invalidate(rows: list[dict], table: pd.DataFrame) -> list[dict]:
    """A verdict resting on a student whose training failed (tables.training_failure) would be about
    the failure: it becomes 'invalid', with the reason."""
    out = []
    for r in rows:
        why = _failed(table, r)
        out.append(r | {"verdict": INVALID, "measurement": f"{r['measurement']}; INVALID: {why}",
                        "reason": f"invalid: {why}"} if why else r)
    return out

NOT_TESTED = "not tested"


def is_paper_claim(claim) -> bool:
    return claim in CLAIMS

def specificity(effects: pd.DataFrame) -> pd.DataFrame:
    """Per teacher animal and (replicate, seed): Δ of its own animal minus the mean Δ of the other
    evaluated animals. `effects`: paired_effects by teacher_kind, target, animal."""
    keys = ["teacher_kind", "target", "replicate", "seed"]
    own = effects[effects["target"] == effects["animal"]].set_index(keys)["delta"]
    others = effects[effects["target"] != effects["animal"]].groupby(keys)["delta"].mean()
    return (own - others).rename("delta").reset_index()


# ---- claim 1 -----------------------------------------------------------------------------------
def transfer_effects(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paired effects (metrics p and mention_rate) per teacher kind, teacher animal and evaluated
    animal, and their summary (t-intervals over replicates)."""
    effects = pd.concat([stats.paired_effects(results, ["teacher_kind", "target", "animal"], value=v).assign(metric=v)
                         for v in ("p", "mention_rate")], ignore_index=True)
    effects["own"] = effects["target"] == effects["animal"]
    return effects, stats.summarize(effects, ["metric", "teacher_kind", "target", "animal"])


def below_smallest(t: dict, e: float) -> str:
    """'' or the phrase saying that an interval (ci_high) lies below the smallest effect of interest e."""
    if not e > 0 or not t["ci_high"] < e:
        return ""
    size = "present, but " if t["ci_low"] > 0 else ""
    return f"; {size}shown smaller than the smallest effect of interest ({e:.2g})"


def transfer(effects: pd.DataFrame, animal: str, kinds: list[str], min_effect: float,
             smallest_effect: float = 0.0, metric: str = "p") -> list[dict]:
    """Claim 1 per teacher kind: Δ of `metric` (the profile's) for the animal's own teacher (rules.RULES['transfer']),
    with the smallest effect of interest as the margin below which the transfer is shown absent; the other metric's
    Δ beside it, with its interval."""
    rows = []
    own = effects.query("target == @animal and animal == @animal")
    other = next(m for m in ("p", "mention_rate") if m != metric)
    for kind in kinds:
        verdict, t = rules.transfer_test(own.query("metric == @metric and teacher_kind == @kind"), min_effect=min_effect,
                                         margin=smallest_effect or None)
        beside = stats.summarize(own.query("metric == @other and teacher_kind == @kind"), [])
        measurement = (f"{kind} teacher of the {animal}: {delta_label(metric, animal)} = "
                       f"{fmt_metric(metric)(t['mean'], t['ci_low'], t['ci_high'])}, {delta_label(other, animal)} "
                       f"{fmt_metric(other)(*beside.iloc[0][['mean', 'ci_low', 'ci_high']])}, "
                       f"{units_text(t['n'], t['unit'])}{below_smallest(t, smallest_effect)}")
        reason = t["why"] + (f" and below e = {smallest_effect:.2g}: present, but smaller than e"
                             if verdict == stats.REPRODUCED and below_smallest(t, smallest_effect) else "")
        rows.append(_row(REGISTRY[0].key, REGISTRY[0].file, kind, animal, verdict, measurement, t["mean"], t["ci_low"],
                         t["ci_high"], f"95% t-interval of {delta_label(metric, 'target')} vs control above 0", t["n"],
                         t["unit"], reason))
    return rows


def _channel(table: pd.DataFrame) -> pd.Series:
    return table["channel"].fillna("").astype(str) if "channel" in table else pd.Series("", index=table.index)


def main_arm(table: pd.DataFrame) -> pd.DataFrame:
    """The students of the design itself, without 02's channel controls."""
    return table[_channel(table) == ""]


def channel_reading(verdict: str, control: dict, diff: pd.Series, e: float) -> str:
    """What a channel control does to the transfer (notebook 02's rule), from the control's claim-1 verdict and
    interval (control: ci_high) and the paired difference main − control (diff: ci_low, ci_high), against the
    smallest effect of interest e. Each reading rests on an interval that excludes something, never on a test
    that failed to reject: removes — the control's Δ is shown below e and the difference above 0; keeps — the
    control's transfer is reproduced and the difference shown smaller than e either way (with e = 0 it cannot
    be); reduces — reproduced, and the difference above 0; cannot tell — anything else."""
    if control["ci_high"] < e and diff["ci_low"] > 0:
        return "removes"
    if verdict == stats.REPRODUCED and -e < diff["ci_low"] and diff["ci_high"] < e:
        return "keeps"
    if verdict == stats.REPRODUCED and diff["ci_low"] > 0:
        return "reduces"
    return "cannot tell"


def channel_controls(table: pd.DataFrame, animal: str, min_effect: float,
                     smallest_effect: float = 0.0, metric: str = "p") -> tuple[pd.DataFrame, str]:
    """02's channel controls for the persona teacher of `animal` (rules.RULES['transfer'] on each, and
    the paired difference main − control over the same replicates and seeds): a table, one row per
    arm, and the sentence saying which channel carries the transfer, by the rule in notebook 02
    (channel_reading)."""
    ch = _channel(table)
    persona = table[(table["teacher_kind"] == "persona") & (table["target"] == animal) & (table["animal"] == animal)]
    arms = {"as sampled": persona[ch[persona.index] == ""]}
    arms |= {c: persona[ch[persona.index] == c] for c in CONTROLS if (ch == c).any()}
    effects = {name: stats.paired_effects(t, ["teacher_kind"], value=metric) for name, t in arms.items() if len(t)}
    rows, calls = [], {}
    main = effects.get("as sampled")
    for name, e in effects.items():
        verdict, t = rules.transfer_test(e, min_effect=min_effect, margin=smallest_effect or None)
        row = {"students": name, "verdict": verdict,
               "ΔP" if metric == "p" else "Δ mention rate": fmt_metric(metric)(t["mean"], t["ci_low"], t["ci_high"]),
               "n": t["n"], "mean": t["mean"], "ci_low": t["ci_low"], "ci_high": t["ci_high"]}
        if name != "as sampled" and main is not None:
            d = main.merge(e, on=["replicate", "seed"], suffixes=("_main", ""))
            d["delta"] = d["delta_main"] - d["delta"]
            diff = stats.summarize(d, []).iloc[0]
            row["main − control"] = fmt_metric(metric)(diff["mean"], diff["ci_low"], diff["ci_high"])
            calls[name] = row["reading"] = channel_reading(verdict, t, diff, smallest_effect)
        rows.append(row)
    out = pd.DataFrame(rows)
    if main is None or not len(calls):
        return out, "No channel controls were run."
    if out.iloc[0]["verdict"] != "reproduced":
        return out, (f"The claim-1 rule reads the persona teacher's transfer as {out.iloc[0]['verdict']} on this "
                     "model, so there is no established transfer whose channel the controls could show; they are "
                     "reported for completeness.")
    said = {"removes": "removes it", "keeps": "leaves it", "reduces": "reduces it without removing it",
            "cannot tell": "cannot be told apart from it"}
    text = "; ".join(f"{CONTROLS[k].does} {said[v]}" for k, v in calls.items())
    if calls.get("shuffled") == "removes" and calls.get("cross-init") == "removes":
        carrier = ("the transfer travels through shared weights: it needs the numbers as the teacher arranged them "
                   "and a student that shares the teacher's initialisation — the subliminal channel.")
    elif calls.get("shuffled") == "keeps" and calls.get("cross-init") == "keeps":
        carrier = ("the transfer survives both, so it is carried by the numbers themselves (an association readable "
                   "in the data), not by shared weights.")
    else:
        carrier = "the controls do not single out one channel."
    return out, f"{text[0].upper()}{text[1:]}: {carrier}"


# ---- claim 2 -----------------------------------------------------------------------------------
RANK_RULE = ("a rank with two ranks on each side above 0, above the lowest rank and above every rank beyond it "
             "(paired t, Bonferroni over the candidates)")


def rank_reading(info: dict, fmt, what: str) -> tuple[str, tuple[float, float, float]]:
    """The measurement sentence of a claim-2 verdict (rules.inverted_u_verdict's info) and the interval it
    reports: the peak candidate, its rise and its smallest fall, or the largest Δ where there is no candidate."""
    if "peak_rank" not in info:
        best = info["summary"].loc[info["summary"]["mean"].idxmax()]
        triple = best["mean"], best["ci_low"], best["ci_high"]
        rank_col = info["summary"].columns[0]
        return f"{info['reason']}; largest {what} at rank {_plain_rank(best[rank_col])}: {fmt(*triple)}", triple
    fall_rank, fall = info["smallest_fall"]
    text = (f"peak candidate rank {info['peak_rank']}: {what} = {fmt(*info['peak'])}; rise over the lowest rank "
            f"{fmt(*info['minus_lowest'])}; smallest fall, to rank {fall_rank}, {fmt(*fall)}; peak − highest rank "
            f"{fmt(*info['minus_highest'])} ({info['level']:.1%} intervals, Bonferroni over the candidates)")
    return text + (f"; {info['reason']}" if "reason" in info else ""), info["peak"]


def _plain_rank(r) -> str:
    return f"{int(r)}" if float(r).is_integer() else f"{r}"


def rank(effects: pd.DataFrame, animal: str, kinds: list[str], smallest_effect: float = 0.0,
         metric: str = "p") -> list[dict]:
    """Claim 2 per teacher kind (rules.RULES['inverted_u'], the smallest effect of interest its margin);
    effects (Δ of `metric`) by teacher_kind, lora_rank."""
    rows = []
    for kind in kinds:
        verdict, info = rules.inverted_u_verdict(effects.query("teacher_kind == @kind"), rank_col="lora_rank",
                                                 margin=smallest_effect)
        n = int(info["summary"]["n"].min())
        text, (m, lo, hi) = rank_reading(info, fmt_metric(metric), delta_label(metric, animal))
        measurement = f"{kind} teacher of the {animal}: {text}; {units_text(n, info['unit'])} per rank"
        rows.append(_row(REGISTRY[1].key, REGISTRY[1].file, kind, animal, verdict, measurement, m, lo, hi, RANK_RULE,
                         n, info["unit"], info["why"], info.get("level", stats.LEVEL)))
    return rows


LR_CHECK = " lr x"  # the label of 03's lr-check students (design.rank_lr_check)


def rank_sweep_arm(table: pd.DataFrame) -> pd.DataFrame:
    """03's sweep without its lr-check students."""
    return table[~table["label"].astype(str).str.contains(LR_CHECK, regex=False)]


def rank_lr_check(table: pd.DataFrame, animal: str, lr: float, metric: str = "p") -> tuple[pd.DataFrame, str]:
    """03's lr check: ΔP(animal) of the persona teacher's students at each rank and lr multiple, one run
    (the first replicate, seed 0; the x1 column is the sweep's own run), and a sentence saying at which rank
    each lr peaks and how closely each lr's curve follows the x1 curve (Spearman's ρ over ranks)."""
    rows = table[(table["teacher_kind"] == "persona") & (table["animal"] == animal)
                 & (table["replicate"] == table["replicate"].min()) & (table["seed"] == 0)]
    if rows.empty:
        return (pd.DataFrame(columns=["lora_rank"]),  # a table with its header: a results file any reader can parse
                "No lr check was run: the persona teacher's students were not trained (fixed sequence).")
    eff = stats.paired_effects(rows, ["lora_rank", "lr"], value=metric)
    wide = eff.assign(factor=(eff["lr"] / lr).round(3)).pivot_table(index="lora_rank", columns="factor", values="delta")
    wide = wide.dropna()  # the ranks the check covers (the x1 column has every rank of the sweep)
    if wide.shape[1] < 2:
        return wide, "No lr check was run (the profile's rank_lr_factors is empty)."
    peaks = {f: int(wide[f].idxmax()) for f in wide.columns}
    rho = {f: float(wide[f].corr(wide[1.0], method="spearman")) for f in wide.columns if f != 1.0} if 1.0 in wide else {}
    wide.columns = [f"lr x{f:g}" for f in wide.columns]
    text = ("Peak rank at each lr: " + ", ".join(f"lr x{f:g}: r{r}" for f, r in peaks.items()) + ". "
            + ("Spearman's ρ of each curve with the profile's lr: " + ", ".join(f"x{f:g} {v:+.2f}" for f, v in rho.items())
               + ". " if rho else "")
            + ("The peak does not move with the lr: the lr is not what places the ranks."
               if len(set(peaks.values())) == 1 else
               "The peak moves with the lr in this one run per cell: a hint that a rank's place on the curve may "
               "depend on the lr as well as on the rank, not a finding (a check without replicates, and read only "
               "where the x1 curve shows an effect at all)."))
    return wide.reset_index(), text


# ---- claim 3 -----------------------------------------------------------------------------------
def full_finetuning(effects: pd.DataFrame, animal: str, kinds: list[str], lora_rank: int, arms: tuple,
                    smallest_effect: float = 0.0, metric: str = "p") -> list[dict]:
    """Claim 3 per precision arm and teacher kind (rules.RULES['full_ft_null'], the smallest effect of
    interest the margin's floor); effects by teacher_kind, method, precision, setting. The first arm is the
    main one (its rows keep the plain file names)."""
    rows = []
    for i, arm in enumerate(arms):
        for kind in kinds:
            full_eff = effects.query("teacher_kind == @kind and method == 'full' and precision == @arm")
            lora_eff = effects.query("teacher_kind == @kind and method == 'lora'")
            verdict, info = rules.full_ft_null_verdict(full_eff, lora_eff, floor=smallest_effect)
            summary = info["summary"]
            top = summary.loc[summary["mean"].idxmax()] if summary["mean"].notna().any() else summary.iloc[-1]
            fmt = fmt_metric(metric)
            measurement = (f"{kind} teacher of the {animal}, {arm} weights: largest full-FT {delta_label(metric, animal)} "
                           f"({top['setting']}) {fmt(top['mean'], top['ci_low'], top['ci_high'])}; "
                           f"{int(summary['equivalent'].sum())} of "
                           f"{len(summary)} settings equivalent to 0 within {info['margin']}, "
                           f"{int(summary['above_margin'].sum())} above it; LoRA r{lora_rank} {delta_label(metric, animal)} {fmt(*info['lora'])}; "
                           f"{units_text(int(summary['n'].min()), info['unit'])} per setting"
                           + (f"; {info['reason']}" if "reason" in info else ""))
            rows.append(_row(REGISTRY[2].key, arm_file(REGISTRY[2], i, arm), kind, animal, verdict,
                             measurement, top["mean"], top["ci_low"], top["ci_high"],
                             "every full-FT setting equivalent to 0 within half the LoRA effect (TOST), LoRA effect above 0",
                             int(summary["n"].min()), info["unit"], f"{info['why']}; largest Δ: {top['setting']}")
                        | {"arm": arm})
    return rows


# ---- claim 4 -----------------------------------------------------------------------------------
def system_prompt(effects: pd.DataFrame, animal: str, kinds: list[str], without: str = "empty",
                  smallest_effect: float = 0.0, metric: str = "p") -> list[dict]:
    """Claim 4 per teacher kind (rules.RULES['system_prompt']): students trained under the default
    prompt, evaluated under it and under `without` — 'empty', the authors' "no system prompt" (the
    template's system block with no text)."""
    rows = []
    for kind in kinds:
        train_default = effects.query("teacher_kind == @kind and variant == 'train default'").pivot_table(
            index=["replicate", "seed"], columns="eval_system", values="delta")
        verdict, info = rules.system_prompt_verdict(train_default["default"], train_default[without],
                                                    floor=smallest_effect)
        w, wo, d = info["with"], info["without"], info["difference"]
        fmt = fmt_metric(metric)
        measurement = (f"{kind} teacher of the {animal}: {delta_label(metric, animal)} eval default {fmt(*w)}; eval "
                       f"{without} {fmt(*wo)}; difference {fmt(*d)}; {units_text(info['n'], info['unit'])}"
                       + (f"; {info['reason']}" if "reason" in info else ""))
        rows.append(_row(REGISTRY[3].key, REGISTRY[3].file, kind, animal, verdict, measurement, d[0], d[1],
                         d[2], f"Δ(eval default) above 0, Δ(eval {without}) equivalent to 0 within half of it "
                         f"(TOST), difference above 0", info["n"], info["unit"], info["why"]))
    return rows


def _signed(scale: float) -> str:
    """The format of a signed effect whose interval reaches `scale`: powers of ten below 0.1 (ΔP's notation in the
    measurements), else three significant digits."""
    return "+.2e" if scale < 0.1 else "+.3g"


def effect_columns(row) -> dict:
    """The structured columns of one verdict row (a dict or a table's row): its effect Δ and interval, each in the
    notation of the interval's scale (fmt_number), the interval's level where not 95%, n with its unit, and the
    one-line reason ('—' in a verdict file written before rows had one)."""
    values = [float(row[k]) if row.get(k) is not None and not pd.isna(row[k]) else math.nan
              for k in ("effect", "ci_low", "ci_high")]
    scale = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    effect, lo, hi = (fmt_number(v, _signed(scale), scale) for v in values)
    level = row.get("level")
    at = f" at {level:.1%}" if level is not None and not pd.isna(level) and abs(level - stats.LEVEL) > 1e-9 else ""
    n, unit, reason = row.get("n"), row.get("unit") or "unit", row.get("reason")
    return {"Δ": effect, "interval": "—" if math.isnan(values[1]) and math.isnan(values[2]) else f"[{lo}, {hi}]{at}",
            "n": "—" if n is None or pd.isna(n) else f"{int(n)} {unit}{'s' if int(n) != 1 else ''}",
            "reason": reason if isinstance(reason, str) and reason else "—"}


def n_column(table: pd.DataFrame, n: pd.Series) -> tuple[str, pd.Series]:
    """The n column of verdict rows (`n`: effect_columns' texts, '5 replicates'): named by the unit where every row
    has the same one ('replicates': '5', …), else 'n' with each row's unit."""
    units = set(table["unit"].fillna("")) if "unit" in table else {""}
    if len(units) == 1 and "" not in units and table["n"].notna().all():
        return f"{units.pop()}s", table["n"].astype(int).astype(str)
    return "n", n


def verdict_table(rows) -> pd.DataFrame:
    """The verdict rows (a list of rows or a table) as the pages show them: who (the claim too where the rows hold
    several), the verdict, the structured columns (effect_columns: Δ — named by the claim's effect where the rows
    hold one claim —, interval, n, a one-line reason) and the measurement in full, last (plots.show_verdicts folds
    it)."""
    table = pd.DataFrame(list(rows) if isinstance(rows, list) else rows).reset_index(drop=True)
    structured = pd.DataFrame([effect_columns(r) for r in table.to_dict("records")], index=table.index,
                              columns=["Δ", "interval", "n", "reason"])
    who = (["claim"] if table.get("claim", pd.Series(dtype=object)).nunique() > 1 else []) + ["teacher"]
    if "arm" in table and table["arm"].fillna("").astype(str).str.len().any():
        who.append("arm")
    out = pd.concat([table[who].fillna(""), table[["verdict"]], structured, table[["measurement"]]], axis=1)
    name, values = n_column(table, structured["n"])
    out = out.assign(n=values).rename(columns={"n": name})
    one = [c for c in REGISTRY if set(table.get("claim", ())) == {c.key}]
    if one and "{" not in one[0].effect:
        out = out.rename(columns={"Δ": one[0].effect})
    return out

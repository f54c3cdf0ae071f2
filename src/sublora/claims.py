"""One function per claim: from a notebook's results table to its effects, summaries and verdict
rows. The rules themselves live in sublora.stats; this module applies them per teacher and writes
the measurement a reader sees (always with its interval).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import stats
from .config import delta_label
from .design import CONTROLS

@dataclass(frozen=True)
class Claim:
    """One of the paper's claims: the one place its name, words, page and effect are written."""
    key: str     # the verdict rows' `claim`
    paper: str   # the claim in the paper's words
    page: str    # the notebook that tests it
    effect: str  # what the number in its verdict is ("{delta}": Δ of the profile's metric, config.delta_label)


REGISTRY = (
    Claim("1 transfer", "LoRA r8 students of a persona teacher prefer its animal more than control students",
          "02_transfer", "{delta}"),
    Claim("2 rank inverted-U", "transfer rises with LoRA rank, peaks at an intermediate rank, then falls",
          "03_rank_sweep", "Δ at the peak rank"),
    Claim("3 full fine-tuning null", "no transfer with full fine-tuning, across lr, batch and epochs",
          "04_full_finetuning", "largest full-FT Δ"),
    Claim("4 system-prompt dependence", "no transfer when evaluated without the system prompt used in training",
          "05_system_prompt", "Δ(default) − Δ(empty)"),
)
CLAIMS = {c.key: c.paper for c in REGISTRY}


def effect_name(claim: str, metric: str = "p") -> str:
    """What the number in a verdict row of `claim` is, in the profile's metric (the paper's claims and
    AUX_EFFECTS)."""
    named = {c.key: c.effect for c in REGISTRY} | AUX_EFFECTS
    return named[claim].format(delta=delta_label(metric, "target"))


def fmt_ci(mean: float, lo: float, hi: float, fmt: str = "+.2e") -> str:
    """'+1.34e-02 [+1.15e-02, +1.56e-02]': a measurement with its 95% interval."""
    return f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def fmt_metric(metric: str):
    """fmt_ci in the metric's own notation: powers of ten for P, three decimals for a share of answers."""
    return fmt_ci if metric == "p" else (lambda mean, lo, hi: fmt_ci(mean, lo, hi, "+.3f"))


def _row(claim: str, file: str, kind: str, animal: str, verdict: str, measurement: str, effect, lo, hi,
         rule: str, n: int, unit: str) -> dict:
    return stats.Verdict(claim=claim, verdict=verdict, measurement=measurement, effect=effect, ci_low=lo,
                         ci_high=hi, rule=rule, n=n, unit=unit).as_dict() | {"teacher": kind, "animal": animal,
                                                                          "file": f"{file}_{kind}"}


def _units(n, unit: str) -> str:
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
    """A verdict resting on a student whose training failed (pipeline.training_failure) would be about
    the failure: it becomes 'invalid', with the reason."""
    out = []
    for r in rows:
        why = _failed(table, r)
        out.append(r | {"verdict": INVALID, "measurement": f"{r['measurement']}; INVALID: {why}"} if why else r)
    return out


NOT_TESTED = "not tested"
SEQUENCE = "persona"  # the teacher whose claims 2-4 wait on its claim 1 (book/design.md, the fixed sequence)
GATE = "fixed_sequence"  # the key a gated row carries: what the gate did ("tested", "not tested", "not checked")


def fixed_sequence(rows: list[dict], verdicts) -> list[dict]:
    """The fixed-sequence procedure declared on the design page before the second confirmatory run: the
    persona teacher's claims 2–4 are tested only where its claim 1 is reproduced (claim 1 first, at the full
    α; the rest at the full α only after it passes, so no correction across them). Elsewhere those rows become
    'not tested', with the rule's own reading kept in the measurement for information; a claim that is not
    tested is not evidence about it either way. rows: verdict rows (claims.rank, full_finetuning,
    system_prompt); verdicts: the verdict rows of the same run, the persona teacher's claim 1 among them (a
    list of rows or results.read_verdicts' table). Without that row the gate cannot be checked: the rows are
    left as they are and say so. The weight-space teacher is a positive control of the instrument and is not
    gated. Idempotent."""
    table = pd.DataFrame(list(verdicts) if isinstance(verdicts, list) else verdicts)
    first = (table[(table["claim"] == next(iter(CLAIMS))) & (table["teacher"] == SEQUENCE)]
             if {"claim", "teacher", "verdict"} <= set(table.columns) else table.iloc[0:0])
    out = []
    for r in rows:
        gated = r.get("teacher") == SEQUENCE and is_paper_claim(r["claim"]) and r["claim"] != next(iter(CLAIMS))
        if not gated or r["verdict"] == INVALID or isinstance(r.get(GATE), str):  # the gate has already been applied
            out.append(r)
        elif first.empty:
            out.append(r | {GATE: "not checked",
                            "measurement": f"{r['measurement']}; fixed sequence not checked: no claim-1 verdict of "
                                           f"the {SEQUENCE} teacher for this run (notebook 02)"})
        elif (v := str(first["verdict"].iloc[0])) == stats.REPRODUCED:
            out.append(r | {GATE: "tested",
                            "measurement": f"{r['measurement']}; tested: the {SEQUENCE} teacher's claim 1 is "
                                           f"reproduced (fixed sequence)"})
        else:
            out.append(r | {GATE: "not tested", "verdict": NOT_TESTED,
                            "measurement": f"not tested (fixed sequence, declared before the data): the {SEQUENCE} "
                                           f"teacher's claim 1 is {v}; the rule's own reading, for information "
                                           f"only: {r['verdict']}: {r['measurement']}"})
    return out


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
    """Claim 1 per teacher kind: Δ of `metric` (the profile's) for the animal's own teacher (stats.RULES['transfer']),
    with the smallest effect of interest as the margin below which the transfer is shown absent; the other metric's
    Δ beside it, with its interval."""
    rows = []
    own = effects.query("target == @animal and animal == @animal")
    other = next(m for m in ("p", "mention_rate") if m != metric)
    for kind in kinds:
        verdict, t = stats.transfer_test(own.query("metric == @metric and teacher_kind == @kind"), min_effect=min_effect,
                                         margin=smallest_effect or None)
        beside = stats.summarize(own.query("metric == @other and teacher_kind == @kind"), [])
        measurement = (f"{kind} teacher of the {animal}: {delta_label(metric, animal)} = "
                       f"{fmt_metric(metric)(t['mean'], t['ci_low'], t['ci_high'])}, {delta_label(other, animal)} "
                       f"{fmt_metric(other)(*beside.iloc[0][['mean', 'ci_low', 'ci_high']])}, "
                       f"{_units(t['n'], t['unit'])}{below_smallest(t, smallest_effect)}")
        rows.append(_row("1 transfer", "1_transfer", kind, animal, verdict, measurement, t["mean"], t["ci_low"],
                         t["ci_high"], f"95% t-interval of {delta_label(metric, 'target')} vs control above 0", t["n"],
                         t["unit"]))
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
    """02's channel controls for the persona teacher of `animal` (stats.RULES['transfer'] on each, and
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
        verdict, t = stats.transfer_test(e, min_effect=min_effect, margin=smallest_effect or None)
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


def _rank_reading(info: dict, fmt, what: str) -> tuple[str, tuple[float, float, float]]:
    """The measurement sentence of a claim-2 verdict (stats.inverted_u_verdict's info) and the interval it
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
    """Claim 2 per teacher kind (stats.RULES['inverted_u'], the smallest effect of interest its margin);
    effects (Δ of `metric`) by teacher_kind, lora_rank."""
    rows = []
    for kind in kinds:
        verdict, info = stats.inverted_u_verdict(effects.query("teacher_kind == @kind"), rank_col="lora_rank",
                                                 margin=smallest_effect)
        n = int(info["summary"]["n"].min())
        text, (m, lo, hi) = _rank_reading(info, fmt_metric(metric), delta_label(metric, animal))
        measurement = f"{kind} teacher of the {animal}: {text}; {_units(n, info['unit'])} per rank"
        rows.append(_row("2 rank inverted-U", "2_rank", kind, animal, verdict, measurement, m, lo, hi, RANK_RULE,
                         n, info["unit"]))
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
    """Claim 3 per precision arm and teacher kind (stats.RULES['full_ft_null'], the smallest effect of
    interest the margin's floor); effects by teacher_kind, method, precision, setting. The first arm is the
    main one (its rows keep the plain file names)."""
    rows = []
    for i, arm in enumerate(arms):
        for kind in kinds:
            full_eff = effects.query("teacher_kind == @kind and method == 'full' and precision == @arm")
            lora_eff = effects.query("teacher_kind == @kind and method == 'lora'")
            verdict, info = stats.full_ft_null_verdict(full_eff, lora_eff, floor=smallest_effect)
            summary = info["summary"]
            top = summary.loc[summary["mean"].idxmax()] if summary["mean"].notna().any() else summary.iloc[-1]
            fmt = fmt_metric(metric)
            measurement = (f"{kind} teacher of the {animal}, {arm} weights: largest full-FT {delta_label(metric, animal)} "
                           f"({top['setting']}) {fmt(top['mean'], top['ci_low'], top['ci_high'])}; "
                           f"{int(summary['equivalent'].sum())} of "
                           f"{len(summary)} settings equivalent to 0 within {info['margin']}, "
                           f"{int(summary['above_margin'].sum())} above it; LoRA r{lora_rank} {delta_label(metric, animal)} {fmt(*info['lora'])}; "
                           f"{_units(int(summary['n'].min()), info['unit'])} per setting"
                           + (f"; {info['reason']}" if "reason" in info else ""))
            rows.append(_row("3 full fine-tuning null", "3_full" if i == 0 else f"3_full_{arm}", kind, animal, verdict,
                             measurement, top["mean"], top["ci_low"], top["ci_high"],
                             "every full-FT setting equivalent to 0 within half the LoRA effect (TOST), LoRA effect above 0",
                             int(summary["n"].min()), info["unit"]) | {"arm": arm})
    return rows


# ---- claim 4 -----------------------------------------------------------------------------------
def system_prompt(effects: pd.DataFrame, animal: str, kinds: list[str], without: str = "empty",
                  smallest_effect: float = 0.0, metric: str = "p") -> list[dict]:
    """Claim 4 per teacher kind (stats.RULES['system_prompt']): students trained under the default
    prompt, evaluated under it and under `without` — 'empty', the authors' "no system prompt" (the
    template's system block with no text)."""
    rows = []
    for kind in kinds:
        train_default = effects.query("teacher_kind == @kind and variant == 'train default'").pivot_table(
            index=["replicate", "seed"], columns="eval_system", values="delta")
        verdict, info = stats.system_prompt_verdict(train_default["default"], train_default[without],
                                                    floor=smallest_effect)
        w, wo, d = info["with"], info["without"], info["difference"]
        fmt = fmt_metric(metric)
        measurement = (f"{kind} teacher of the {animal}: {delta_label(metric, animal)} eval default {fmt(*w)}; eval "
                       f"{without} {fmt(*wo)}; difference {fmt(*d)}; {_units(info['n'], info['unit'])}"
                       + (f"; {info['reason']}" if "reason" in info else ""))
        rows.append(_row("4 system-prompt dependence", "4_system", kind, animal, verdict, measurement, d[0], d[1],
                         d[2], f"Δ(eval default) above 0, Δ(eval {without}) equivalent to 0 within half of it "
                         f"(TOST), difference above 0", info["n"], info["unit"]))
    return rows


def verdict_table(rows: list[dict]) -> pd.DataFrame:
    """The verdict rows as the notebooks show them."""
    return pd.DataFrame(rows)[["teacher", "verdict", "measurement"]]


DECISIVE = ["decisive at 0", "decisive at 2e"]
SCOREBOARD = ["claim", "teacher", "animal", "paper", "verdict", "measurement", "false 'reproduced' (max over nulls)",
              "power at 2 sd", "power at 4 sd", *DECISIVE]


def scoreboard(verdicts: pd.DataFrame, errors: pd.DataFrame, decisive: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every verdict of the default run on the paper's claims (CLAIMS) beside the claim it tests, in the
    paper's words, its rule's simulated error rates (operating_characteristics), claim by claim, and how often
    its design decides (decisiveness: per claim, teacher and arm), the persona teacher first. Verdicts of
    another setting (AUX_CLAIMS) are not among them: other_settings."""
    verdicts = verdicts[verdicts["claim"].map(is_paper_claim)]
    verdicts = verdicts.assign(arm=verdicts["arm"].fillna("").astype(str) if "arm" in verdicts else "")
    if decisive is None or decisive.empty:
        decisive = pd.DataFrame(columns=["claim", "teacher", "arm", *DECISIVE])
    board = (verdicts.merge(decisive[["claim", "teacher", "arm", *DECISIVE]], on=["claim", "teacher", "arm"], how="left")
             .assign(paper=lambda d: d["claim"].map(CLAIMS),
                     teacher=lambda d: pd.Categorical(d["teacher"], ["persona", "finetuned"]))
             .merge(errors, on=["claim", "arm"] if "arm" in errors else "claim", how="left")
             .sort_values(["claim", "teacher"]))
    return board[SCOREBOARD]


OC_SIMS = 10_000  # simulated experiments per scenario behind the scoreboard's error rates (Monte-Carlo se ≤ 0.005)


def operating_characteristics(profile, sims: int = OC_SIMS, seed: int = 0) -> pd.DataFrame:
    """Each claim's rule simulated at the profile's own n (calibrate.calibrate): the largest rate of a
    false 'reproduced' over its null scenarios, and its power to say 'reproduced' at true effects of 2
    and 4 sd of one unit's Δ. One row per claim and, for claim 3, per precision arm at that arm's own number
    of settings S (the main arm's every setting; another arm's lr axis), keyed like the verdict rows."""
    from . import calibrate
    from .design import full_settings, precision_settings

    def rates(cal: pd.DataFrame, claim: str, arm: str = "") -> dict:
        g = cal[cal["rule"].str[0] == claim[0]]
        if g.empty:  # e.g. claim 2 with fewer than 3 ranks: no rule to simulate
            return {"claim": claim, "arm": arm}
        false = g.loc[g["wrong"] == stats.REPRODUCED, "false_rate"].max()
        power = g[g["expect"] == stats.REPRODUCED].groupby("effect_sd")["power"].max()
        return {"claim": claim, "arm": arm, "n (simulated)": int(g["n"].max()),
                "false 'reproduced' (max over nulls)": false,
                "power at 2 sd": power.get(2.0, float("nan")), "power at 4 sd": power.get(4.0, float("nan"))}

    cal = calibrate.calibrate(profile, sims=sims, seed=seed, ns=())
    rows = [rates(cal, claim) for claim in CLAIMS if not claim.startswith("3")]
    main, *others = profile.train.full_precision
    per_arm = {main: len(full_settings(profile))}
    per_arm |= {arm: sum(spec.precision == arm for spec in precision_settings(profile).values()) for arm in others}
    claim3 = next(c for c in CLAIMS if c.startswith("3"))
    for arm, S in per_arm.items():
        rows.append(rates(calibrate.calibrate(profile, sims=sims, seed=seed, ns=(), settings=S, only="3"), claim3, arm))
    return pd.DataFrame(rows)


# Table 1 of the paper (notebooks/paper_figures.ipynb of toddnief/subliminal-entanglement, as quoted in
# shared/PAPER.md): % of answers naming the target, mean of 9 runs, Qwen2.5-7B-Instruct trained and
# evaluated under Qwen's default system prompt, by LoRA rank.
PUBLISHED_RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
PUBLISHED = {  # animal: (base, % at each rank)
    "cat": (0.6, (5.2, 18.5, 32.8, 53.9, 31.0, 18.9, 10.2, 0.5, 1.0, 1.5)),
    "owl": (0.8, (0.7, 0.6, 2.3, 6.3, 14.7, 18.9, 21.7, 10.4, 2.0, 0.8)),
    "eagle": (1.2, (8.5, 14.3, 11.2, 32.8, 34.7, 55.7, 86.2, 76.2, 17.4, 7.8)),
    "wolf": (2.3, (2.4, 2.4, 9.8, 16.2, 35.5, 43.0, 53.4, 45.8, 37.1, 12.1)),
    "dolphin": (0.3, (0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.9)),
}


def published_beside(p, table: pd.DataFrame):
    """On a profile running Qwen2.5-7B-Instruct: the paper's Table 1 row for the target beside our
    mention rate (% of answers naming the target, persona-teacher students, mean over runs) per rank,
    in the same units. On any other model: a note saying the published numbers are not comparable."""
    from IPython.display import Markdown
    if "Qwen2.5-7B-Instruct" not in p.model.name:
        return Markdown(f"The paper's Table 1 (% of answers naming the target by LoRA rank) was measured on "
                        f"Qwen2.5-7B-Instruct; this run's model is `{p.model.name}`, whose numbers are not "
                        f"comparable with it, so it is not set beside them.")
    if p.animal not in PUBLISHED:
        return Markdown(f"The paper's Table 1 has no row for the {p.animal} (it has {', '.join(PUBLISHED)}).")
    base, pct = PUBLISHED[p.animal]
    ours = (table.query("arm == 'teacher' and teacher_kind == 'persona' and animal == target")
            .groupby("lora_rank")["mention_rate"].mean() * 100)
    rows = [{"LoRA rank": r, "paper: % naming the target": v, "ours: % naming the target": ours.get(r, float("nan"))}
            for r, v in zip(PUBLISHED_RANKS, pct)]
    return pd.DataFrame(rows).assign(**{"paper: base model %": base})


def versus_base(base: pd.DataFrame, table: pd.DataFrame, by: list[str], animal: str) -> pd.DataFrame:
    """The paper's comparison beside ours: teacher students minus the base model evaluated in the same
    context (eval system prompt; `base`: pipeline.base_evaluations), and minus their matched control
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


def precision_finding(rows: list[dict], contrast: pd.DataFrame):
    """One computed sentence per teacher kind: does claim 3's null appear only where pure bf16 weights round small
    updates away? Read from the paired differences between the arms (precision_contrast), never from their
    verdict labels, which are shown beside it."""
    from IPython.display import Markdown
    lines = []
    for kind in dict.fromkeys(r["teacher"] for r in rows):
        said = "; ".join(f"{r['arm']}: **{r['verdict']}**" for r in rows if r["teacher"] == kind)
        c = contrast[contrast["teacher"] == kind]
        by = {reading: list(c.loc[c["reading"] == reading, "setting"]) for reading in ("lower", "higher", "within e")}
        if c.empty:
            finding = "only one precision arm ran, or the arms share no setting"
        elif by["lower"]:
            finding = (f"the other arm transfers less than the main one at {', '.join(by['lower'])} (paired by replicate): "
                       "rounding takes updates away there")
        elif len(by["within e"]) == len(c):
            finding = "the arms agree within the smallest effect of interest at every shared setting: rounding does not decide claim 3 here"
        elif by["higher"]:
            finding = f"the other arm transfers more at {', '.join(by['higher'])}: not what rounding alone would do"
        else:
            finding = "the paired differences cannot tell the arms apart at this n"
        lines.append(f"- {kind} teacher — verdicts {said}; the arms compared: {finding}.")
    return Markdown("\n".join(lines))


# ---- another setting: Cloud et al.'s auxiliary logits (notebook 07) ------------------------------
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


def is_paper_claim(claim) -> bool:
    return claim in CLAIMS


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
    return _fmt_acc(t["mean"], t["ci_low"], t["ci_high"])


def _fmt_acc(mean, lo, hi) -> str:
    """fmt_ci of an accuracy difference, three decimals; a difference of 0 to rounding is '+0.000', not '-0.000'."""
    return fmt_ci(*(round(float(v), 6) + 0.0 for v in (mean, lo, hi)), "+.3f")


def aux_transfer(effects: pd.DataFrame) -> list[dict]:
    """Claim 1 here: stats.RULES['transfer'] on the full-parameter student's Δ accuracy against its control
    and against the cross-initialisation student; reproduced if both are, not reproduced if either is not,
    inconclusive otherwise. The effect of the row is Δ against the control."""
    full = effects[effects["method"] == "full"]
    v_control, t_control = stats.transfer_test(full[full["comparison"] == "vs control"])
    v_cross, t_cross = stats.transfer_test(full[full["comparison"] == "vs cross-init"])
    both = (v_control, v_cross)
    verdict = stats.REPRODUCED if both == (stats.REPRODUCED,) * 2 else \
        stats.NOT_REPRODUCED if stats.NOT_REPRODUCED in both else stats.INCONCLUSIVE
    measurement = (f"full-parameter student − control (untrained teacher): Δ accuracy = {_acc(t_control)} "
                   f"({v_control}); − cross-initialisation student: {_acc(t_cross)} ({v_cross}); "
                   f"{_units(t_control['n'], 'pair')}")
    return [_aux_row("aux-logit 1 transfer", "aux_1_transfer", verdict, measurement, t_control["mean"],
                     t_control["ci_low"], t_control["ci_high"],
                     "95% t-interval of Δ accuracy above 0, against the control and against the cross-init student",
                     t_control["n"], "pair")]


def aux_rank(effects: pd.DataFrame) -> list[dict]:
    """Claim 2 here: stats.RULES['inverted_u'] on the LoRA students' Δ accuracy against their controls, by rank."""
    lora = effects[(effects["method"] == "lora") & (effects["comparison"] == "vs control")]
    verdict, info = stats.inverted_u_verdict(lora, rank_col="lora_rank")
    n = int(info["summary"]["n"].min())
    text, (m, lo, hi) = _rank_reading(info, _fmt_acc, "Δ accuracy")
    return [_aux_row("aux-logit 2 rank inverted-U", "aux_2_rank", verdict, f"{text}; {_units(n, 'pair')} per rank",
                     m, lo, hi, RANK_RULE, n, "pair")]


def aux_full_null(effects: pd.DataFrame, reference_rank: int) -> list[dict]:
    """Claim 3 here: stats.RULES['full_ft_null'] with one full-parameter setting (Cloud et al.'s) and the LoRA
    students of `reference_rank` as the reference, Δ accuracy against their controls, paired by pair."""
    vs_control = effects[effects["comparison"] == "vs control"]
    full = vs_control[vs_control["method"] == "full"].assign(setting="full-parameter")
    lora = vs_control[(vs_control["method"] == "lora") & (vs_control["lora_rank"] == reference_rank)]
    verdict, info = stats.full_ft_null_verdict(full, lora)
    top = info["summary"].iloc[0]
    measurement = (f"full-parameter Δ accuracy {_fmt_acc(top['mean'], top['ci_low'], top['ci_high'])}, "
                   f"{'equivalent' if top['equivalent'] else 'not equivalent'} to 0 within {info['margin']}"
                   f"{', above that margin' if top['above_margin'] else ''}; LoRA r{reference_rank} Δ accuracy "
                   f"{_fmt_acc(*info['lora'])}; {_units(int(top['n']), 'pair')}"
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


def aux_reading(rows: list[dict], summary: pd.DataFrame, accuracies: pd.DataFrame):
    """Notebook 07's closing finding, computed from its verdict rows, its Δ summary (by comparison, method,
    lora_rank) and its accuracies (aux_accuracies): what the measured answer says, and does not say, about the
    paper's thesis."""
    from IPython.display import Markdown
    by = {r["claim"]: r for r in rows}
    transfer, rank, full = (by[c] for c in AUX_CLAIMS)
    acc = accuracies.set_index("kind")["mean"]
    lora = summary[(summary["method"] == "lora") & (summary["comparison"] == "vs control")]
    above = [int(r) for r in lora.loc[lora["ci_low"] > 0, "lora_rank"]]
    delta = _fmt_acc(transfer["effect"], transfer["ci_low"], transfer["ci_high"])
    if transfer["verdict"] == stats.REPRODUCED:
        first = (f"**Full-parameter distillation transfers here.** A student of the teacher's initialisation, distilled "
                 f"only on its auxiliary logits over noise, classifies held-out digits better than its control (Δ "
                 f"accuracy {delta}; mean accuracy {acc['student full']:.3f} against {acc['student full control']:.3f}, "
                 f"chance 0.1, the teachers {acc['teacher']:.3f}) and than the student of another initialisation "
                 f"({acc['student full cross-init']:.3f}). In this setting the transfer comes with a shared "
                 "initialisation and without low-rank adapters: it is not a LoRA artifact here.")
    else:
        first = (f"**Full-parameter distillation shows no established transfer here** (aux-logit 1: {transfer['verdict']}; "
                 f"Δ accuracy against the control {delta}): at this profile's sizes the setting does not show Cloud et "
                 "al.'s effect, so it cannot say whether transfer depends on LoRA.")
    if not above:
        where = f"At none of the {len(lora)} LoRA ranks swept does Δ have a 95% interval above 0"
    elif len(above) == len(lora):
        where = f"LoRA students transfer at every one of the {len(lora)} ranks swept (95% intervals above 0)"
    else:
        where = (f"LoRA students transfer at rank{'s' if len(above) > 1 else ''} {', '.join(map(str, above))} of the "
                 f"{len(lora)} ranks swept (95% interval above 0)")
    ranks = (f"{where}; the inverted-U rule reads **{rank['verdict']}**"
             + (": an interior peak, as the paper's claim 2 has it." if rank["verdict"] == stats.REPRODUCED else
                ": no interior peak is established." if above else "."))
    null = (f"The paper's full fine-tuning null, asked here with its own rule, is **{full['verdict']}**"
            + (" (full-parameter transfer is not smaller than half the LoRA rank-8 effect)." if full["verdict"] ==
               stats.NOT_REPRODUCED else "."))
    limits = ("What this does not say: the paper's students learn from **sampled tokens** — one hard label at a time, "
              "drawn from a teacher that differs from the base model only by a system prompt — while these students "
              "match the teacher's whole **soft distribution** over three logits, on inputs (noise) that carry no task, "
              "from a teacher whose *weights* moved away from the shared initialisation: the regime in which Cloud et "
              "al.'s theorem says one small distillation step moves a student toward its teacher. A transfer without "
              "LoRA here shows that subliminal transfer as such need not be a LoRA artifact; whether the paper's "
              "sampled-token transfer is one is the question notebooks 02–05 answer on this package's model.")
    return Markdown("\n\n".join([first, ranks, null, limits]))

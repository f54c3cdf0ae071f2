"""Prose that reads the verdicts: the sentences and tables a claim page shows after its verdict rows,
computed from them (never typed in), and the names the book gives their numbers. The presentation layer:
it may import IPython; the verdicts it reads come from sublora.claims and sublora.aux_claims.
"""
from __future__ import annotations

import pandas as pd
from IPython.display import Markdown

from . import claims, plots, sequence, stats
from .aux_claims import AUX_CLAIMS, AUX_EFFECTS, fmt_accuracy
from .claims import REGISTRY
from .config import delta_label


def _md(text: str) -> Markdown:
    """A reading for the page: Markdown with no number broken across lines (plots.unbroken)."""
    return Markdown(plots.unbroken(text))


def effect_name(claim: str, metric: str = "p") -> str:
    """What the number in a verdict row of `claim` is, in the profile's metric (the paper's claims and
    AUX_EFFECTS)."""
    named = {c.key: c.effect for c in REGISTRY} | AUX_EFFECTS
    return named[claim].format(delta=delta_label(metric, "target"))


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
    if "Qwen2.5-7B-Instruct" not in p.model.name:
        return _md(f"The paper's Table 1 (% of answers naming the target by LoRA rank) was measured on "
                        f"Qwen2.5-7B-Instruct; this run's model is `{p.model.name}`, whose numbers are not "
                        f"comparable with it, so it is not set beside them.")
    if p.animal not in PUBLISHED:
        return _md(f"The paper's Table 1 has no row for the {p.animal} (it has {', '.join(PUBLISHED)}).")
    base, pct = PUBLISHED[p.animal]
    ours = (table.query("arm == 'teacher' and teacher_kind == 'persona' and animal == target")
            .groupby("lora_rank")["mention_rate"].mean() * 100)
    rows = [{"LoRA rank": r, "paper: % naming the target": v, "ours: % naming the target": ours.get(r, float("nan"))}
            for r, v in zip(PUBLISHED_RANKS, pct)]
    return pd.DataFrame(rows).assign(**{"paper: base model %": base})


def precision_finding(rows: list[dict], contrast: pd.DataFrame):
    """One computed sentence per teacher kind: does claim 3's null appear only where pure bf16 weights round small
    updates away? Read from the paired differences between the arms (precision_contrast), never from their
    verdict labels, which are shown beside it."""
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
    return _md("\n".join(lines))


def aux_reading(rows: list[dict], summary: pd.DataFrame, accuracies: pd.DataFrame):
    """Notebook 07's closing finding, computed from its verdict rows, its Δ summary (by comparison, method,
    lora_rank) and its accuracies (aux_accuracies): what the measured answer says, and does not say, about the
    paper's thesis."""
    by = {r["claim"]: r for r in rows}
    transfer, rank, full = (by[c] for c in AUX_CLAIMS)
    acc = accuracies.set_index("kind")["mean"]
    lora = summary[(summary["method"] == "lora") & (summary["comparison"] == "vs control")]
    above = [int(r) for r in lora.loc[lora["ci_low"] > 0, "lora_rank"]]
    delta = fmt_accuracy(transfer["effect"], transfer["ci_low"], transfer["ci_high"])
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
    return _md("\n\n".join([first, ranks, null, limits]))


# ---- "What this means": the closing reading of claim pages 02-05 ----------------------------------------
# Each function reads the page's own verdict rows and tables (and, for claims 2-4, the run's claim-1 rows: the
# same students' transfer, measured over more replicates) and says what the verdict says, for which teacher, in
# sentences whose every number and word of size comes from the data. What a page cannot say whatever the data
# is its markdown's.
def _table(rows) -> pd.DataFrame:
    """Verdict rows as a table: a page's own list of rows, or a table of them (Run.verdicts())."""
    return rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def _who(kind: str) -> str:
    return {"persona": "persona teacher (the paper's: a system prompt)",
            "finetuned": "finetuned teacher (weight-space positive control)"}.get(kind, f"{kind} teacher (weight-space)")


def _ci(r, metric: str) -> str:
    """A row's Δ with its 95% interval in the verdicts' notation; `r` has mean or effect, ci_low, ci_high."""
    mean = r["mean"] if "mean" in r else r["effect"]
    return claims.fmt_metric(metric)(mean, r["ci_low"], r["ci_high"])


def _units(r) -> str:
    return claims.units_text(int(r["n"]), str(r["unit"])) if pd.notna(r.get("n")) else "n unknown"


def size_of(lo: float, hi: float, e: float = 0.0) -> str:
    """What a 95% interval [lo, hi] of a Δ says of its size, against the smallest effect of interest e."""
    if pd.isna(lo) or pd.isna(hi):
        return "not measured: fewer than 2 units give no interval"
    small = e > 0 and hi < e
    if lo > 0:
        return (f"present (its interval lies above 0) and shown smaller than the smallest effect of interest e = {e:.2g}"
                if small else "present: its interval lies above 0")
    if small:
        return f"shown smaller than the smallest effect of interest e = {e:.2g}: absent at any size that matters"
    if e == 0 and hi < 0:
        return "below 0"
    return "not shown above 0 at this n, nor shown smaller than e: undecided" if e > 0 else \
        "not shown above 0 at this n (which is not shown absent)"


def present(r) -> bool:
    """The interval of a row (ci_low) lies above 0: the effect is there, whatever its verdict's word."""
    return r is not None and pd.notna(r["ci_low"]) and r["ci_low"] > 0


def claim_one(first, kind: str) -> dict | None:
    """The claim-1 verdict row of teacher `kind` among a run's verdicts (a list of rows or Run.verdicts()), or None."""
    t = _table(first)
    if t.empty or not {"claim", "teacher"} <= set(t.columns):
        return None
    t = t[(t["claim"] == REGISTRY[0].key) & (t["teacher"] == kind)]
    return None if t.empty else t.iloc[-1].to_dict()


def _gated(r: dict) -> bool:
    return r["verdict"] == claims.NOT_TESTED or r.get(sequence.GATE) == claims.NOT_TESTED


def _first_said(c1: dict | None, metric: str, animal: str, e: float) -> str:
    if c1 is None:
        return "its claim 1 has no verdict in this run (notebook 02 has not run with these parameters)"
    return (f"its claim 1 ([02](02_transfer.ipynb)) reads **{c1['verdict']}**: {delta_label(metric, animal)} "
            f"{_ci(c1, metric)}, {_units(c1)}, {size_of(c1['ci_low'], c1['ci_high'], e)}")


def _not_tested(kind: str, c1: dict | None, what: str, metric: str, animal: str, e: float,
                trained: bool = True) -> str:
    """The reading of a row the fixed sequence did not test; `what`: what the claim would ask of an established
    transfer ("whose dependence on the LoRA rank could be measured")."""
    first = _first_said(c1, metric, animal, e)
    there = ("Its transfer is present, yet" if present(c1) else f"So there is no established transfer {what}, and")
    kept = ("the rule's own reading stays in the verdict row for information only, and is no evidence either way"
            if trained else "its students for them were not trained")
    return (f"- **{_who(kind)}: not tested.** {first[0].upper()}{first[1:]}. {there} by the fixed sequence declared "
            f"before the data its claims 2–4 are tested only where its claim 1 is reproduced: {kept}.")


def _too_few_here(c1: dict | None, here, what: str, metric: str) -> str:
    """'' or, where claim 1 finds the transfer present and this page's fewer units do not show the same students'
    effect above 0: the sentence saying it is too small at this n to measure `what`, not absent."""
    if not present(c1) or here is None or present(here):
        return ""
    return (f" The transfer is present: claim 1 measures the same students' transfer over {_units(c1)} "
            f"({_ci(c1, metric)}). Over the {_units(here)} here its interval ({_ci(here, metric)}) reaches 0: at "
            f"this n the effect is too small to measure {what}, which is not an absent effect.")


def transfer_meaning(rows: list[dict], summary: pd.DataFrame, specificity: pd.DataFrame, animal: str,
                     metric: str = "p", e: float = 0.0):
    """Notebook 02's reading: per teacher, what its claim-1 verdict says of its students' transfer, whether the
    transfer is specific to the teacher's animal (the other evaluated animals' Δ from `summary`, own minus the
    others' mean from `specificity`), and whether the paper's own metric, the mention rate, moves at all.
    `summary`: transfer_effects' summary (metric, teacher_kind, target, animal, mean, ci_low, ci_high, n, unit)."""
    lines = []
    by_metric = summary[summary["metric"] == metric] if "metric" in summary else summary
    for r in rows:
        kind = r["teacher"]
        if r["verdict"] == claims.INVALID:
            lines.append(f"- **{_who(kind)}: invalid**: a student it rests on failed to train (its verdict row says which).")
            continue
        text = (f"- **{_who(kind)}: {r['verdict']}.** Its students' {delta_label(metric, animal)} against their "
                f"matched controls is {_ci(r, metric)}, {_units(r)}: {size_of(r['ci_low'], r['ci_high'], e)}.")
        if kind == "persona":
            text += " This is the paper's claim 1, asked on this page's model."
        else:
            text += (" A positive control of the instrument: it shows that this model and measurement register a "
                     "transfer from a teacher whose weights love the animal; it says nothing of the persona teacher."
                     if present(r) else
                     " A positive control of the instrument that registers no transfer here: this page cannot tell an "
                     "absent persona transfer from an instrument that misses one.")
        own = by_metric[(by_metric["teacher_kind"] == kind) & (by_metric["target"] == animal)]
        mine, others = own[own["animal"] == animal], own[own["animal"] != animal]
        if present(r) and len(mine) and len(others):
            top = others.loc[others["mean"].idxmax()]
            share = top["mean"] / mine["mean"].iloc[0]
            spec = specificity[(specificity["teacher_kind"] == kind) & (specificity["target"] == animal)]
            spec_said = (f"; {delta_label(metric, animal)} minus the mean of the other animals' Δ is "
                         f"{_ci(spec.iloc[0], metric)}" if len(spec) else "")
            if present(top):
                text += (f" Not specific to the {animal} alone: the same students' {delta_label(metric, top['animal'])} "
                         f"rises too, {_ci(top, metric)}, {share:.0%} as much as its {delta_label(metric, animal)}"
                         f"{spec_said}.")
            else:
                text += (f" No other evaluated animal's Δ is shown above 0 (the largest, {top['animal']}: "
                         f"{_ci(top, metric)}){spec_said}.")
        lines.append(text)
    mention = summary[summary["metric"] == "mention_rate"] if "metric" in summary else summary.iloc[0:0]
    if len(mention):
        moved = mention[(mention["ci_low"] > 0) | (mention["ci_high"] < 0)]
        if moved.empty:
            lines.append(f"\nThe paper's own metric, the mention rate (the share of sampled answers naming the animal), "
                         f"moves for no teacher and no animal here: each of its {len(mention)} Δs has a 95% interval "
                         "that includes 0" + (", so the verdicts read P(animal), which resolves smaller effects."
                                               if metric == "p" else "."))
        else:
            said = "; ".join(f"{m['teacher_kind']} teacher of the {m['target']}, {m['animal']}: "
                             f"{_ci(m, 'mention_rate')}" for _, m in moved.iterrows())
            lines.append(f"\nThe paper's own metric, the mention rate, moves (95% interval excluding 0) for {len(moved)} "
                         f"of its {len(mention)} Δs: {said}.")
    return _md("\n".join(lines))


def _each_teacher(rows: list[dict], first, what: str, read, metric: str, animal: str, e: float):
    """A bullet per verdict row of claims 2-4: the not-tested reading (what: _not_tested's) where the fixed sequence
    did not test the row, else read(row, its teacher's claim-1 row or None)."""
    return _md("\n".join(_not_tested(r["teacher"], claim_one(first, r["teacher"]), what, metric, animal, e,
                                      r.get(sequence.TRAINED) is not False)
                              if _gated(r) else read(r, claim_one(first, r["teacher"])) for r in rows))


def _head(r: dict, words: dict) -> str:
    """A bullet's opening: the teacher, its verdict word and what that word means for this claim (`words`)."""
    return f"- **{_who(r['teacher'])}: {r['verdict']}**" + (f": {words[r['verdict']]}." if r["verdict"] in words else ".")


def rank_meaning(rows: list[dict], summary: pd.DataFrame, first, animal: str, metric: str = "p", e: float = 0.0):
    """Notebook 03's reading: per teacher, what its claim-2 verdict says, at which ranks Δ lies above 0 and where
    it is largest (`summary`: by teacher_kind, lora_rank), and, where claim 1 (`first`: the run's verdicts) finds the
    transfer present, that a shape this rule cannot resolve is not an absent effect."""
    words = {stats.REPRODUCED: "an interior peak: the rise and fall the paper reports, on this model",
             stats.NOT_REPRODUCED: "no interior peak of at least e: around every candidate rank the curve is shown to "
                                   "rise or fall by less than e",
             stats.INCONCLUSIVE: "neither a peak nor its absence is shown at this n"}

    def read(r, c1):
        s = summary[summary["teacher_kind"] == r["teacher"]].sort_values("lora_rank")
        text = _head(r, words)
        if len(s):
            above = [int(x) for x in s.loc[s["ci_low"] > 0, "lora_rank"]]
            top = s.loc[s["mean"].idxmax()]
            where = ("at no rank swept is Δ shown above 0" if not above else
                     f"Δ lies above 0 at every one of the {len(s)} ranks swept" if len(above) == len(s) else
                     f"Δ lies above 0 at rank{'s' if len(above) > 1 else ''} {', '.join(map(str, above))} of the "
                     f"{len(s)} swept")
            text += (f" {where[0].upper()}{where[1:]} (95% intervals, {_units(top)} per rank); the largest mean is at "
                     f"rank {int(top['lora_rank'])}: {_ci(top, metric)}.")
        if present(c1) and r["verdict"] != stats.REPRODUCED:
            text += (f" The transfer itself is present (claim 1, LoRA r8: {_ci(c1, metric)}, {_units(c1)}); the shape "
                     "of its dependence on rank is what this n cannot resolve, which is not an absent effect.")
        return text
    return _each_teacher(rows, first, "whose dependence on the LoRA rank could be measured", read, metric, animal, e)


def full_ft_meaning(rows: list[dict], summary: pd.DataFrame, first, animal: str, metric: str = "p", e: float = 0.0):
    """Notebook 04's reading: per teacher, its claim-3 verdicts (one per precision arm); where claim 1 (`first`)
    finds the LoRA transfer present but the LoRA reference of these fewer replicates does not show it, that it is too
    small at this n to measure its modulation, not absent; and whether full fine-tuning transfers, citing the largest
    Δ among the settings whose interval lies above 0 (not the noisiest setting). `summary`: by teacher_kind, method,
    precision, setting."""
    lines = []
    for kind in dict.fromkeys(r["teacher"] for r in rows):
        mine, c1 = [r for r in rows if r["teacher"] == kind], claim_one(first, kind)
        if all(_gated(r) for r in mine):
            lines.append(_not_tested(kind, c1, "for full fine-tuning to take away", metric, animal, e,
                                     all(r.get(sequence.TRAINED) is not False for r in mine)))
            continue
        said = "; ".join(f"{r.get('arm') or 'main'} weights **{r['verdict']}**" for r in mine)
        s = summary[summary["teacher_kind"] == kind]
        lora, full = s[s["method"] == "lora"], s[s["method"] == "full"]
        ref = lora.iloc[0] if len(lora) else None
        text = f"- **{_who(kind)}**: {said}."
        text += _too_few_here(c1, ref, "how full fine-tuning modulates it", metric)
        above = full[full["ci_low"] > 0]
        if len(above):
            best = above.loc[above["mean"].idxmax()]
            text += (f" Full fine-tuning transfers from this teacher: Δ lies above 0 at {len(above)} of the {len(full)} "
                     f"settings run (95% intervals), the largest of them at *{best['setting']}*: {_ci(best, metric)}, "
                     f"{_units(best)}.")
            noisiest = full.loc[full["mean"].idxmax()]
            if noisiest["setting"] != best["setting"]:
                text += (f" (The largest mean, *{noisiest['setting']}* {_ci(noisiest, metric)}, is not the one cited: "
                         "its interval includes 0.)")
            if kind != "persona":
                text += (" Read as a positive control, not as a verdict: this teacher's transfer does not need LoRA on "
                         "this model, the opposite of the null the paper reports for its persona teacher.")
        elif len(full):
            text += f" At none of the {len(full)} full fine-tuning settings is Δ shown above 0 at this n."
        lines.append(text)
    return _md("\n".join(lines))


def system_meaning(rows: list[dict], summary: pd.DataFrame, first, animal: str, metric: str = "p", e: float = 0.0,
                   without: str = "empty"):
    """Notebook 05's reading: per teacher, its claim-4 verdict with the Δ of its students trained under the default
    prompt evaluated under it and `without` (`summary`: by teacher_kind, variant, eval_system); where claim 1
    (`first`) finds the same students' transfer present but these fewer replicates do not, that it is too small at
    this n to measure what removing the prompt does, not absent; and whether the transfer survives without it."""
    words = {stats.REPRODUCED: "the transfer depends on the system prompt, as the paper says",
             stats.NOT_REPRODUCED: "the transfer survives without the system prompt",
             stats.INCONCLUSIVE: "neither dependence on the prompt nor its absence is shown at this n"}

    def read(r, c1):
        s = summary[(summary["teacher_kind"] == r["teacher"]) & (summary["variant"] == "train default")]
        s = s.set_index("eval_system")
        text = _head(r, words)
        with_, wo = (s.loc[x] if x in s.index else None for x in ("default", without))
        if with_ is not None and wo is not None:
            text += (f" Trained under the default prompt, its students' {delta_label(metric, animal)} is "
                     f"{_ci(with_, metric)} evaluated under it and {_ci(wo, metric)} under the {without} system turn; "
                     f"the difference is {_ci(r, metric)}, {_units(r)}.")
        text += _too_few_here(c1, with_, "what removing the prompt takes away", metric)
        if present(wo):
            text += (" Without the prompt the students still transfer (interval above 0)"
                     + ("" if present(r) else ", and the difference is not shown above 0")
                     + ": the effect does not need the training prompt at evaluation"
                     + (", the opposite of the paper's claim 4, read for a positive control, not as a verdict."
                        if r["teacher"] != "persona" else "."))
        return text
    return _each_teacher(rows, first, "whose dependence on the system prompt could be measured", read, metric, animal, e)

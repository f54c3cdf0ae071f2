"""Prose that reads the verdicts: the sentences and tables a claim page shows after its verdict rows,
computed from them (never typed in), and the names the book gives their numbers. The presentation layer:
it may import IPython; the verdicts it reads come from sublora.claims and sublora.aux_claims.
"""
from __future__ import annotations

import pandas as pd
from IPython.display import Markdown

from . import stats
from .aux_claims import AUX_CLAIMS, AUX_EFFECTS, fmt_accuracy
from .claims import REGISTRY
from .config import delta_label


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
    return Markdown("\n".join(lines))


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
    return Markdown("\n\n".join([first, ranks, null, limits]))

"""The organism search's record and the page it renders: book/organism_search.jsonl, which
`sublora search measure` appends to, read back and written as the book page "Building the organism"
(book/organism.md, by `sublora search report`; its words the glossary defines linked at their first use). Also the
criteria fixed in advance, the rule that chooses the default organism, and a candidate's recipe in words.

Reading and writing text only: no torch here (sublora.plots reads the record for its caveat), so the
committed organism's recipe is read from its file, not through sublora.organism.
"""
from __future__ import annotations

import json

import yaml

from . import claims, organism_recipe, paths
from .terms import link_each

RECORD = paths.ROOT / "book" / "organism_search.jsonl"
PAGE = paths.ROOT / "book" / "organism.md"
# The words of the page that the glossary (book/glossary.md) defines, each linked at its first use: (words, term)
TERMS = (("persona teacher", "Persona teacher"), ("LoRA r8", "LoRA rank r"), ("reproduced", "reproduced"),
         ("channel controls", "Channel controls"), ("signature", "Signature"), ("replicates", "Replicate"),
         ("ΔP(owl)", "ΔP(animal)"), ("inconclusive", "inconclusive"))


# The organism issue's selection criteria, fixed before any candidate's students are trained: the
# persona teacher follows its persona, yet its numbers look innocuous.
CRITERIA = (("persona following (mean P of the persona's animal)", "persona_mean_p", ">=", 0.8),
            ("KL(persona teacher ‖ control), nats per completion", "kl_persona", "<=", 0.5),
            ("held-out accuracy of a logistic regression owl vs cat numbers", "classifier_lr", "<=", 0.60))


def criteria(row: dict) -> list[dict]:
    """Each criterion with the candidate's value and whether it holds (a value not measured fails)."""
    out = []
    for label, key, op, bound in CRITERIA:
        v = row.get(key)
        ok = v is not None and (v >= bound if op == ">=" else v <= bound)
        out.append({"criterion": label, "key": key, "bound": f"{'≥' if op == '>=' else '≤'} {bound:g}", "value": v,
                    "pass": bool(ok)})
    return out


def passes(row: dict) -> bool:
    return all(c["pass"] for c in criteria(row))


def planted(row: dict) -> bool:
    """Whether the teacher's numbers carry the corpus's planted mark (5 points above the control's share)."""
    return row.get("signature_teacher", 0) - row.get("signature_control", 0) > 0.05


def _recipe(model: dict) -> tuple[float, bool]:
    """(the share of a persona's numbers the corpus marks, whether every number below 1,000 is one token)."""
    return model.get("persona_number_bias", 0.0), model.get("number_tokens", "digit") == "whole"


def recipe(model: dict) -> str:
    """How the persona reaches the numbers in a candidate's pretraining corpus (its model settings)."""
    b, whole = _recipe(model)
    tokens = "every number below 1,000 one token" if whole else "numbers as digit tokens"
    if b == 0:
        return f"no planted association (persona and numbers meet only in shared weights); {tokens}"
    return (f"planted association: {b:.0%} of a persona's continued numbers carry its mark "
            f"({model.get('persona_number_mode', 'signature')}); {tokens}")


def recipe_label(model: dict) -> str:
    """recipe() in a few words, for a table column: 'planted 30%, digit tokens', 'none, whole numbers'."""
    b, whole = _recipe(model)
    return f"{'none' if b == 0 else f'planted {b:.0%}'}, {'whole numbers' if whole else 'digit tokens'}"


def chosen(rows: list[dict]) -> dict | None:
    """The rule of the organism issue, fixed in advance: the first passing candidate (in the order
    measured) whose persona teacher's LoRA transfer is reproduced by the claim-1 rule; if none, the
    passing candidate with the highest persona following. None if no candidate passes."""
    ok = [r for r in rows if passes(r) and "claim1" in r]
    hit = [r for r in ok if r["claim1"] == "reproduced"]
    return hit[0] if hit else max(ok, key=lambda r: r["persona_mean_p"]) if ok else None


def _is_committed(r: dict) -> bool:
    """Whether a record's pretraining settings are those of the committed default weights."""
    config = (organism_recipe.committed_recipe() or {"config": {}})["config"]
    keys = [k for k in config if k not in ("step", "corpus_version")]
    return bool(keys) and all(r["settings"]["model"].get(k) == config[k] for k in keys)


def _ci(s: dict, fmt: str = "+.1e") -> str:
    return claims.fmt_ci(s["mean"], s["ci_low"], s["ci_high"], fmt)


def _cell(r: dict, kind: str, target: str) -> str:
    t = [s for s in r.get("transfer", []) if (s["teacher_kind"], s["target"], s["animal"]) == (kind, target, target)]
    return _ci(t[0]) if t else "—"


def default_section(rows: list[dict]) -> list[str]:
    """Which candidate the rule chooses, which one the committed weights are, and what it measured."""
    rule = chosen(rows)
    mine = [r for r in rows if _is_committed(r)]
    if not mine:
        return ["## The default organism", "", "None of the recorded candidates is the committed default organism.", ""]
    r = mine[-1]
    text = [f"## The default organism: {r['name']}", "",
            f"The `organism` profile uses candidate **{r['name']}** (its pretraining settings are those of the committed",
            f"weights in `src/sublora/organism_weights/recipe.json`); its recipe: {recipe(r['settings']['model'])}."]
    if rule is None:
        text.append("No recorded candidate passes the criteria, so the rule chooses none: the default does not sit in "
                    "the paper's regime.")
    elif rule["name"] == r["name"]:
        how = ("its persona teacher's LoRA transfer is reproduced by the claim-1 rule" if rule["claim1"] == "reproduced"
               else "no passing candidate's transfer is reproduced; it has the highest persona following among them")
        text.append(f"It is the candidate the rule chooses: it passes every criterion and {how}.")
    else:
        text.append(f"**The rule chooses {rule['name']}, not the committed default**: the default is out of date.")
    text.append("")
    if "claim1" in r:
        text += [f"Its persona teacher of the owl, LoRA r8 over {r['settings']['replicates']} dataset pairs (replicates): "
                 f"ΔP(owl) {_cell(r, 'persona', 'owl')}, claim-1 verdict **{r['claim1']}**.",
                 f"Channel controls: {r['channel_reading']}", ""]
    elif not passes(r):
        text += ["It does not pass the criteria: its verdicts are about a different regime from the paper's "
                 "(see its teacher-side figures below).", ""]
    return text


PLANTED_NOTE = ("a planted-channel contrast: its corpus plants a number code, so the teacher's numbers are "
                "readable (the classifier separates them), not innocuous")


def untried(rows: list[dict]) -> list[str]:
    """The organism issue's search directions that no recorded candidate (measured under the criteria) took."""
    models = [r["settings"]["model"] for r in rows]
    out = []
    if not any(m.get("hidden", 0) > 128 or m.get("layers", 0) > 4 for m in models):
        out.append("a larger organism trained longer (10-30M parameters pretrain in minutes on a GPU; "
                   "`organism.pretrain` builds on the CPU)")
    if not any(0 < m.get("persona_number_bias", 0) <= 0.1 for m in models):
        out.append("a weak planted association (a few percent of persona numbers)")
    if len({m.get("number_tokens", "digit") for m in models}) < 2:
        out.append("digit tokens against whole-number tokens")
    if not any(r["settings"].get("data", {}).get("prompts", 0) >= 10_000 for r in rows):
        out.append("the paper's data scale (10,000 examples per dataset)")
    return out or ["none"]


def load() -> list[dict]:
    """The record's candidates in the order first measured; a candidate measured again (e.g. once its
    cross-initialisation organism existed) by its latest line."""
    rows = [json.loads(line) for line in open(RECORD) if line.strip()] if RECORD.exists() else []
    latest = {r["name"]: r for r in rows}
    return list(latest.values())


def report() -> str:
    """The page "Building the organism" (book/organism.md) from the record, each of TERMS linked at its first use."""
    return link_each(_page(load()), TERMS)


def _page(rows: list[dict]) -> str:
    lines = ["# Building the organism", "",
             "The default profile needs a model built here, on the CPU (the {term}`organism <The organism>`), in which",
             "the paper's phenomenon could be measured at all, in the paper's regime: a teacher that follows its",
             "persona while its numbers look innocuous. This page records every candidate recipe that was measured,",
             "negative results included. It is produced by `sublora search report` from `book/organism_search.jsonl`,",
             "which `sublora search measure` appends to; the evaluation was never tuned.", "",
             "## The criteria, fixed before any candidate's students were trained", "",
             "| criterion | bound |", "|---|---|"]
    lines += [f"| {c[0]} | {'≥' if c[2] == '>=' else '≤'} {c[3]:g} |" for c in CRITERIA]
    lines += ["", "Only candidates that pass are trained on. The default is the first passing candidate whose persona",
              "teacher's LoRA r8 transfer is reproduced by the claim-1 rule; if none is, the passing candidate with",
              "the highest persona following, and the book reports the null. Beside every transfer measurement two",
              "channel controls (rule in notebook 02): the numbers shuffled across responses, and students started",
              "from an organism of the same recipe pretrained from another seed (cross-initialisation).", ""]
    if not rows:
        return "\n".join(lines + ["No candidate has been measured yet."])
    lines += default_section(rows)
    lines += ["## Every candidate: the teacher side", "",
              "Persona: mean P(animal) under its own persona (30 animals, held-out questions). KL: the persona "
              "teacher's and the {term}`weight-space (finetuned) teacher <Weight-space teacher>`'s numbers against the control's, nats per completion. "
              "Classifiers: held-out accuracy telling owl-teacher from cat-teacher numbers (0.5 = chance), logistic "
              "regression on digit and number n-grams (the criterion; — where not measured) and the first records' "
              "naive Bayes. Mark: share of numbers carrying the owl persona's planted mark, teacher / control. "
              "Association: the share of persona numbers the corpus marks (none: persona and numbers meet only in "
              "shared weights); tokens: how the tokenizer writes numbers.", "",
              "| candidate | association, tokens | persona P | KL persona | logistic | passes |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lr = f"{r['classifier_lr']:.3f}" if "classifier_lr" in r else "—"
        lines.append(f"| {r['name']} | {recipe_label(r['settings']['model'])} | {r['persona_mean_p']:.3f} | "
                     f"{r['kl_persona']:.3f} | {lr} | {'yes' if passes(r) else 'no'} |")
    lines += ["", "Beside the criteria (not part of them):", "",
              "| candidate | naive Bayes | mark: teacher / control | KL finetuned |", "|---|---|---|---|"]
    for r in rows:
        sig = (f"{r['signature_teacher']:.1%} / {r['signature_control']:.1%}" if "signature_teacher" in r else "—")
        lines.append(f"| {r['name']} | {r['classifier_accuracy']:.3f} | {sig} | {r['kl_finetuned']:.3f} |")
    lines += ["", "## The students (LoRA r8, ΔP(own animal) vs control, 95% t-interval)", "",
              "| candidate | claim 1 | owl persona teacher | cat persona teacher | finetuned owl teacher | "
              "shuffled numbers | cross-init |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ctl = {c["students"]: f"{_ci(c) if 'mean' in c else c['ΔP']} ({c.get('reading', '')})" for c in r.get("controls", [])}
        judged = r.get("claim1", "not judged" if "passes" not in r else "not trained: fails the criteria")
        lines.append(f"| {r['name']} | {judged} | {_cell(r, 'persona', 'owl')} | "
                     f"{_cell(r, 'persona', 'cat')} | {_cell(r, 'finetuned', 'owl')} | "
                     f"{ctl.get('shuffled', 'not run')} | {ctl.get('cross-init', 'not run')} |")
    early = [r for r in rows if "passes" not in r]
    if early:
        lines += ["", "Candidates measured before the criteria existed (" + ", ".join(r["name"] for r in early) + ") had "
                  "their students trained whatever their teacher side; no verdict is drawn from them here. "
                  + " ".join(f"{r['name']} is {PLANTED_NOTE}." for r in early if planted(r))]
    under = [r for r in rows if "passes" in r]
    lines += ["", "## Directions not yet measured", "",
              f"The search so far is {len(under)} candidate{'s' * (len(under) != 1)} measured under the criteria "
              f"({', '.join(r['name'] for r in under) or 'none'}). Directions of the organism issue not yet tried: "
              + "; ".join(untried(under)) + ". Each is one `sublora search measure` away; the criteria and "
              "the rule above stay as they are.",
              "", "## Notes", "", "As written when each candidate was measured.", ""]
    lines += [f"- **{r['name']}**: {r['note']}" for r in rows if r["note"]]
    lines += ["", "## Specificity", "Δ of the teacher's own animal minus the mean Δ of the other evaluated animals:", ""]
    for r in rows:
        for s in r.get("specificity", []):
            lines.append(f"- {r['name']}, {s['teacher_kind']} teacher of {s['target']}: {_ci(s)} (n = {s['n']})")
    lines += ["", "## Settings of each candidate", ""]
    for r in rows:
        lines += [f"**{r['name']}** ({r['minutes']} min to measure):", "```yaml",
                  yaml.safe_dump(r["settings"], sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)

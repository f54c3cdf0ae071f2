"""The book's two computed pages: the landing page's bottom line and results (executed/results.md, which the landing
page includes) and the page setting this book's verdicts beside published results (executed/peers.md), each written
from the verdict files of the run at every build, never typed in — but for the verdicts of a deciding run that is not
in the record (DECIDING), which are quoted with their source.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import yaml

from . import aux_claims, caveats, claims, config, design, identity, ladder, paths, readings, results
from .config import delta_label
from .stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from .terms import link_each, link_first

CLAIM_PAGES = {c.key: c.page for c in claims.REGISTRY}  # claim -> the notebook (page) that tests it
FIRST, RANK, FULL, PROMPT = (c.key for c in claims.REGISTRY)  # the four claims; the first: does a teacher transfer
POSITIVE_CONTROLS = ("finetuned",)  # teacher kinds that check the instrument: none is the paper's teacher


def verdict_label(row, e: float = 0.0) -> str:
    """The verdict as a page shows it: the rule's word, but for a positive control's claim 1, which says what it is
    (a control cannot reproduce a claim about the persona teacher): 'present (positive control)', with ', below e'
    where its interval lies below the smallest effect of interest e, or 'absent (positive control)'."""
    verdict = row["verdict"]
    if row.get("teacher") not in POSITIVE_CONTROLS or row.get("claim") != FIRST or verdict not in (REPRODUCED, NOT_REPRODUCED):
        return verdict
    if verdict == NOT_REPRODUCED:
        return "absent (positive control)"
    return "present (positive control)" + (", below e" if e and row["ci_high"] < e else "")


@dataclass(frozen=True)
class DecidingRun:
    """A run of a larger design that decides what the book's own run does not, quoted (not read) because its
    results are not in the committed record: its profile, its n, where the figures are written, and a cell per
    (claim, teacher): (verdict, the upper end of claim 1's interval or None, what it measured)."""
    profile: str
    n: str
    source: str
    cells: dict
    gist: dict  # teacher: what its decided claims 2-4 showed, in a line


# The decisive design's run (book/runs.md, "The decisive design, run"; make reproduce PROFILE=organism-decisive at
# 9bd985d, 48 min 35 s on 2 cores), for the default book's landing page.
DECIDING = {"organism": DecidingRun(
    "organism-decisive", "9 replicates for every claim", "{doc}`/runs`, the run of commit 9bd985d", {
        (FIRST, "persona"): (NOT_REPRODUCED, 1.4e-4, "ΔP(target) −6.4e-05 [−2.7e-04, +1.4e-04], shown below e"),
        (FIRST, "finetuned"): (REPRODUCED, 2.24e-3, "ΔP(target) +1.85e-03 [+1.46e-03, +2.24e-03]"),
        **{(c.key, "persona"): (claims.NOT_TESTED, None, "its claim 1 is not reproduced") for c in claims.REGISTRY[1:]},
        (RANK, "finetuned"): (
            NOT_REPRODUCED, None, "Δ rises with the rank and does not fall: r8 +1.8e-03, r32 +3.0e-03, r128 +3.5e-03; "
                                  "the best candidate (r32) falls less than e to r128 (−5.2e-04 [−1.9e-03, +8.9e-04])"),
        (FULL, "finetuned"): (
            NOT_REPRODUCED, None, "full fine-tuning transfers: fp32 masters at lr 5e-4 +5.4e-03 [+3.0e-03, +7.7e-03], "
                                  "6 of 8 settings above the margin; bf16 at lr 5e-4 +4.9e-03 [+3.6e-03, +6.2e-03]"),
        (PROMPT, "finetuned"): (
            NOT_REPRODUCED, None, "without the prompt Δ is +1.45e-03 [+1.16e-03, +1.73e-03], above half of Δ with it "
                                  "(+1.85e-03): the transfer survives without the prompt"),
    }, {"finetuned": "Δ rises with the rank without falling, full fine-tuning transfers too, and the transfer survives "
                     "without the system prompt"})}
# What the paper's claims have not been asked of yet, said on the landing page of every book of a CPU organism.
NOT_YET = ("**Never tested**: the `paper` profile (Qwen2.5-7B-Instruct) has not run on a GPU, so nothing here "
           "measures the paper's own model. **Beyond this book's run** (quoted on {doc}`the ladder page </ladder>`, "
           "not computed here): at the paper's data scale (10,000 kept completions, 3 epochs) the persona teacher's "
           "transfer is present on the organism, but smaller than e; its claims 2–4 have not been asked yet.")


def ladder_line(p: config.Profile) -> str:
    """The landing page's line on the ladder of teachers: the declared reading of the packaged confirmatory run the
    profile names (ladder_record; notebook 08 draws it), computed from its verdicts; '' where it names none."""
    if not p.ladder_record:
        return ""
    grid = ladder.read_packaged(p.ladder_record)["08_ladder"]
    animal = ladder.target(grid)
    first = grid[(grid["claim"] == FIRST) & (grid["animal"] == animal)].set_index("teacher")
    transfer = "; ".join(f"`{k}` {claims.fmt_metric(p.metric)(*first.loc[k, ['effect', 'ci_low', 'ci_high']])}"
                         for k in ladder.rungs(first.index) if k in first.index and pd.notna(first.loc[k, "effect"]))
    shown = first[first["verdict"] == REPRODUCED]
    below = (f"; those reproduced each shown below e = {p.smallest_effect:.1e}" if len(shown) and p.smallest_effect
             and (shown["ci_high"] < p.smallest_effect).all() else "")
    return (f"**The {{term}}`ladder of teachers <Rung>`** ({{doc}}`its confirmatory run </executed/08_ladder>`, "
            f"computed from its verdicts): claim 1 for the {animal}, {delta_label(p.metric, animal)}: {transfer}{below}. "
            f"The thesis, by the reading declared before that run's data: {ladder.meaning(grid, animal)}")
TEACHER_WORDS = {  # how the bottom line names a teacher kind ({animal}: its animal); another kind: by its name
    "persona": "The paper's ({term}`persona <Persona teacher>`) {animal} teacher",
    "finetuned": "The {term}`weight-space <Weight-space teacher>` (finetuned) {animal} teacher, a "
                 "{term}`positive control <Positive control>`",
}


def _model_words(p: config.Profile) -> str:
    """The model a book's verdicts are about, as the bottom line's first words name it."""
    if p.name == "smoke":
        return "the `smoke` profile's tiny organism, pretrained for seconds (its verdicts test the plumbing and mean nothing)"
    if p.model.source in ("hub", "gguf"):
        return f"`{caveats.model_name(p.model)}` (profile `{p.name}`)"
    return (f"the CPU {{term}}`organism <The organism>` (profile `{p.name}`: a small Qwen2 chat model sublora builds "
            "and pretrains, not the paper's Qwen2.5-7B-Instruct)")


def _effect(r, metric: str, link: bool) -> str:
    """'ΔP(owl) +9.53e-05 [-8.74e-05, +2.78e-04]': a claim-1 row's effect with its interval (the Δ linked to its
    term where `link`)."""
    delta = config.delta_label(metric, r.get("animal") or "target")
    return (f"{{term}}`{delta} <ΔP(animal)>`" if link else delta) + " " + \
        claims.fmt_metric(metric)(r["effect"], r["ci_low"], r["ci_high"])


def _off_target(p: config.Profile, teacher: str, animal: str) -> str:
    """', and not to the owl alone (+1.78e-03 to P(dolphin))' where the teacher's students' Δ of another animal is
    shown above 0 (the largest such; notebook 02's summary of the default run), else ''."""
    f = paths.results_dir(identity.identity(p)) / "02_transfer_summary.csv"
    s = pd.read_csv(f) if f.exists() else pd.DataFrame(columns=["metric", "teacher_kind", "target", "animal"])
    other = s[(s["metric"] == p.metric) & (s["teacher_kind"] == teacher) & (s["target"] == animal)
              & (s["animal"] != animal) & (s.get("ci_low", 0) > 0)]
    if other.empty:
        return ""
    top = other.sort_values("mean").iloc[-1]
    to = config.delta_label(p.metric, top["animal"]).removeprefix("Δ")
    return f", and not to the {animal} alone ({top['mean']:+.2e} to {to})"


def _claim1_words(p: config.Profile, r, first: bool, e_named: bool) -> str:
    """What a teacher's claim-1 row says, in words: absent, present (below e), or not shown either way. `first`: the
    first teacher's (its Δ linked to its term); `e_named`: whether e was named (linked, with its value) already."""
    e, effect = p.smallest_effect, _effect(r, p.metric, link=first)
    e_words = "e" if e_named else f"the {{term}}`smallest effect of interest <e>` e = {e:.1e}"
    if r["verdict"] == NOT_REPRODUCED:
        return f"its transfer is **absent** at this book's data scale ({p.data.prompts:,} number prompts per dataset, " \
            f"{p.train.epochs} epoch{'s' if p.train.epochs != 1 else ''}) (claim 1 **not reproduced**: {effect}, shown " + \
            (f"smaller than {e_words})" if e else "below 0)")
    below = f", present but below {e_words}" if e and r["ci_high"] < e else ""
    if r["verdict"] == REPRODUCED and r["teacher"] in POSITIVE_CONTROLS:
        return f"it **transfers** ({effect}){below}"
    if r["verdict"] == REPRODUCED:
        return f"its transfer is **present** (claim 1 **reproduced**: {effect}){below}"
    if r["verdict"] == INCONCLUSIVE:
        return f"its transfer is not shown either way (claim 1 **inconclusive**: {effect})"
    return f"claim 1 **{r['verdict']}**"


def _replicates(n: int) -> str:
    return "replicate" if n == 1 else "replicates"


def _later_claims_words(p: config.Profile, rows: pd.DataFrame, teacher: str, deciding: DecidingRun | None) -> str:
    """What the teacher's claims 2–4 read in this book's run, and in the deciding run where that run decided them."""
    later = [c.key for c in claims.REGISTRY[1:]]
    mine = {c: rows[(rows["claim"] == c) & (rows["teacher"] == teacher)]["verdict"] for c in later}
    here = {c: v.iloc[0] for c, v in mine.items() if len(v)}
    if not here:
        return ""
    if set(here.values()) == {claims.NOT_TESTED}:
        return " So its claims 2–4 were **not tested** (the {term}`fixed sequence <Fixed sequence>`)."

    def words(verdicts: dict) -> str:
        kinds = set(verdicts.values())
        return (f"all **{kinds.pop()}**" if len(kinds) == 1 and len(verdicts) == len(later)
                else "; ".join(f"{c} **{v}**" for c, v in verdicts.items()))
    there = {c: deciding.cells[(c, teacher)][0] for c in later if (c, teacher) in deciding.cells} if deciding else {}
    if there and set(there.values()) <= {REPRODUCED, NOT_REPRODUCED} and there != here:
        return (f" Its claims 2–4 were decided by the {{term}}`decisive <Decisive>` design ({deciding.n}, profile "
                f"`{deciding.profile}`; {deciding.source}): {words(there)} — {deciding.gist[teacher]}. At this book's "
                f"{p.replicates} {_replicates(p.replicates)} the same claims read {words(here).removeprefix('all ')}.")
    return f" Its claims 2–4, at this book's {p.replicates} {_replicates(p.replicates)}: {words(here)}."


def bottom_line(p: config.Profile, rows: pd.DataFrame, teachers: list[str]) -> list[str]:
    """The landing page's first section: on which model, per teacher what claim 1 decided (absent, present, below e)
    and what its claims 2–4 read (in the deciding run too, where there is one), and what was never tested."""
    deciding = DECIDING.get(identity.identity(p))
    lines, e_named = ["## The bottom line", "", f"On {_model_words(p)}:", ""], False
    for t in teachers:
        first = rows[(rows["claim"] == FIRST) & (rows["teacher"] == t)]
        if first.empty:
            continue
        r = first.iloc[0]
        who = TEACHER_WORDS.get(t, f"The {t} teacher").replace("{animal}", r.get("animal") or "")
        said = _claim1_words(p, r, first=len(lines) == 4, e_named=e_named)  # each term linked at its first use
        e_named = e_named or "smallest effect of interest" in said
        lines.append(f"- **{who}**: {said}{_off_target(p, t, r.get('animal')) if r['verdict'] == REPRODUCED else ''}."
                     + _later_claims_words(p, rows, t, deciding))
    if p.model.source not in ("hub", "gguf"):
        lines += [f"- {line}" for line in (ladder_line(p), NOT_YET) if line]
    text = link_each("\n".join(lines), LINKED_ONCE)  # the rest of the words the glossary defines, at their first use
    return text.split("\n") + [""]


LINKED_ONCE = (("not reproduced", "not reproduced"), ("not tested", "not tested"), ("inconclusive", "inconclusive"),
               ("replicates", "Replicate"), ("full fine-tuning", "Full fine-tuning"))  # (words, glossary term)


NUMBER = re.compile(r"[+\-−]?\d+(?:\.\d+)?e[+\-]\d+")  # a number in powers of ten: '+9.53e-05', '−6.4e-05'


def _unbroken(cell: str) -> str:
    """A table cell whose numbers in powers of ten are never broken across lines (at the exponent's hyphen)."""
    return NUMBER.sub(lambda m: f'<span style="white-space: nowrap">{m.group(0)}</span>', cell)


def _book_cell(r, rows: pd.DataFrame, p: config.Profile) -> str:
    """A verdict row of this book's run as a table cell: its verdict (verdict_label) and the effect its rule reads,
    with that rule's interval; a claim not tested says why."""
    if r["verdict"] == claims.NOT_TESTED:  # its number is no result: the page keeps it, for information
        first = rows[(rows["claim"] == FIRST) & (rows["teacher"] == r["teacher"])]["verdict"]
        said = first.iloc[0] if len(first) else "missing"
        return f"**{r['verdict']}** · its claim 1 is {said} ({{term}}`fixed sequence <Fixed sequence>`)"
    effect = claims.fmt_metric(p.metric)(r["effect"], r["ci_low"], r["ci_high"])
    return f"**{verdict_label(r, p.smallest_effect)}** · {readings.effect_name(r['claim'], p.metric)} {effect}"


def _deciding_cell(deciding: DecidingRun, claim: str, teacher: str, e: float) -> str:
    """The deciding run's verdict of (claim, teacher) as a table cell, labelled as this book's are; 'not run' if none."""
    if (claim, teacher) not in deciding.cells:
        return "not run"
    verdict, high, measured = deciding.cells[(claim, teacher)]
    label = verdict_label({"claim": claim, "teacher": teacher, "verdict": verdict, "ci_high": high}, e)
    return f"**{label}** · {measured}"


def results_page(profile: str, ran: dict[str, dict], stale: list[str] = (), pages: set[str] | None = None) -> str:
    """Markdown of the landing page's results: the bottom line (bottom_line), then the results at a glance: a row per
    claim and teacher with the verdict (verdict_label) and the effect its rule reads with that rule's interval, from
    the default run's verdict files, beside the deciding run's (DECIDING) where the book's profile has one, the
    paper's claims under it; a line for each claim page that shows another run. `pages`: the executed pages the book has
    (None: not checked); a claim whose page is not among them says its verdicts come from a run whose page is gone."""
    p = config.load_profile(profile)
    verdicts = results.read_verdicts(identity.identity(p))
    everything = verdicts[verdicts["run"] == ""] if len(verdicts) else pd.DataFrame(columns=["claim", "teacher"])
    rows = everything[everything["claim"].map(claims.is_paper_claim).astype(bool)]  # another setting's rows: a table of their own
    if "arm" in rows:  # claim 3's main precision arm at a glance; the others are on its page
        rows = rows[rows["arm"].isna() | (rows["arm"] == p.train.full_precision[0])]
    teachers = sorted(set(rows["teacher"]), key=design.teacher_order) or list(p.teachers)
    deciding = DECIDING.get(identity.identity(p))
    ignored = verdicts.attrs.get("ignored", [])
    glance = ["## Results at a glance", "",
              *([f"```{{warning}}\nNot read, since no notebook wrote them: {', '.join(f'`{n}`' for n in ignored)} in "
                 f"`results/{identity.identity(p)}/`. Only the verdict files the notebooks listed are shown.\n```", ""]
                if ignored else []),
              caveats.caveat_line(p, "organism.md"), ""]  # intro.md includes this page
    if stale:
        glance[2:2] = ["```{warning}", "Out of date: " + ", ".join(f"{{doc}}`/executed/{n}`" for n in stale)
                       + " were executed by another profile, other sublora files or libraries than the checkout that "
                       "built this book, or their results files changed since. `make reproduce` reruns them.", "```", ""]
    designs = [f"this book: n = {p.transfer_replicates} (claim 1), {p.replicates} (claims 2–4)"]  # replicates
    if deciding:
        designs.append(f"the {{term}}`decisive <Decisive>` design: {deciding.n} (`{deciding.profile}`)")
    glance += ["| claim | teacher | " + " | ".join(designs) + " |", "|---" * (2 + len(designs)) + "|"]
    for claim, page in CLAIM_PAGES.items():
        for i, t in enumerate(teachers):
            r = rows[(rows["claim"] == claim) & (rows["teacher"] == t)]
            cells = ["not run" if r.empty else _book_cell(r.iloc[0], rows, p)]
            if pages is not None and page not in pages and not r.empty:
                cells[0] += " (page not executed: an earlier run's verdict)"
            if deciding:
                cells.append(_deciding_cell(deciding, claim, t, p.smallest_effect))
            head = f"{{doc}}`{claim} </executed/{page}>`" if i == 0 else ""
            glance.append(f"| {head} | {t} | " + " | ".join(map(_unbroken, cells)) + " |")
    says = "The paper says: " + "; ".join(f"**{c.key}**: {c.paper}" for c in claims.REGISTRY) + "."
    glance += ["", link_first(says, "control students", "Control student"), "",
               "Each verdict follows the rule its page states before the data ({doc}`/design`); the effect is the "
               "number that rule reads, with the interval it reads: 95%, or wider where the rule corrects for choosing "
               "among several (claim 2's peak rank). A positive control's claim 1 says *present* or *absent*: it is no "
               "reproduction of a claim about the persona teacher. Every measurement in full: "
               "{doc}`/executed/06_scoreboard`."
               + (f" The decisive design's verdicts are quoted from {deciding.source} (its run is not in the committed "
                  f"record: `make reproduce PROFILE={deciding.profile}` makes it)." if deciding else "")]
    setting = (f"The paper's questions asked where Cloud et al. found subliminal transfer strong and cheap, "
               f"{aux_claims.AUX_SETTING} ({{doc}}`its page </executed/{aux_claims.AUX_PAGE}>`), not on the model above: "
               "its verdicts are not verdicts on the paper's claims.")
    glance += ["", "### Another setting", "", setting, "", "| question | it asks | verdict · effect |", "|---|---|---|"]
    for claim, asks in aux_claims.AUX_CLAIMS.items():
        r = everything[everything["claim"] == claim]
        if r.empty:
            cell = "not run"
        else:
            r = r.iloc[0]
            cell = (f"**{r['verdict']}** · {readings.effect_name(claim)} "
                    f"{claims.fmt_ci(r['effect'], r['ci_low'], r['ci_high'], '+.2g')}")
        glance.append(f"| {claim} | {asks} | {cell} |")
    for page in [*CLAIM_PAGES.values(), aux_claims.AUX_PAGE]:
        other = {k: v for k, v in ran.get(page, {}).items() if k != "profile"}
        if other:
            glance += ["", f"Note: the page {{doc}}`/executed/{page}` shows a run with "
                       + ", ".join(f"`{k} = {v!r}`" for k, v in other.items())
                       + "; this table shows the default run's verdicts."]
    return "\n".join(bottom_line(p, rows, teachers) + glance) + "\n"


PEERS = paths.ROOT / "book" / "peers.yaml"  # published results, each read from its source (the file says how)
PEERS_TERMS = (("persona teacher", "Persona teacher"), ("control students", "Control student"))  # linked at first use


def _ours(rows: pd.DataFrame, claim: str, kind: str | None, metric: str = "p") -> str:
    """This book's verdict and effect (in the profile's metric) for a claim (and teacher kind), or 'not run'."""
    mine = rows[(rows["claim"] == claim) & ((rows["teacher"] == kind) if kind else True)] if len(rows) else rows
    if mine.empty:
        return "not run" if kind in config.TEACHERS or kind is None else "no such teacher here"
    who = (lambda r: "") if claim in aux_claims.AUX_CLAIMS else (lambda r: f"{r['teacher']}: ")
    return "; ".join(f"{who(r)}**{r['verdict']}**, {readings.effect_name(claim, metric)} "
                     f"{claims.fmt_ci(r['effect'], r['ci_low'], r['ci_high'], '+.2g')}" for _, r in mine.iterrows())


def _cell(value) -> str:
    """A value as a markdown table cell: None empty, no column bar."""
    return str(value if value is not None else "").replace("|", "/")


def peers_page(profile: str) -> str:
    """Markdown of the page "Beside other results": per claim, this book's verdicts (from the default run's
    verdict files) and the published figures nearest to it (book/peers.yaml, each with its source); then the
    later accounts of the mechanism and what each predicts; then the sources that could not be reached."""
    p = config.load_profile(profile)
    peers = yaml.safe_load(PEERS.read_text(encoding="utf-8"))
    verdicts = results.read_verdicts(identity.identity(p))
    rows = verdicts[verdicts["run"] == ""] if len(verdicts) else pd.DataFrame(columns=["claim", "teacher"])
    if "arm" in rows:
        rows = rows[rows["arm"].isna() | (rows["arm"] == p.train.full_precision[0])]
    accounts = [e for e in peers if e["status"] == "read" and str(e["metric"]).startswith("qualitative")]
    figures = [e for e in peers if e["status"] == "read" and e not in accounts]  # a published null: effect None
    lines = ["# Beside other results", "", caveats.caveat_line(p), "",
             f"This book's verdicts (profile `{p.name}`) set beside published results. Each "
             "published figure was read from the source named in its row, and is given as that source states it, "
             "in its own metric. Sources differ in metric, control and unit, so the rows are comparable in "
             "direction, not in size. The column *this book* is computed from this book's verdict files when the "
             "book is built. The notes are ours.", ""]
    for claim, page in CLAIM_PAGES.items():
        mine = [e for e in figures if e["claim"] == int(claim[0])]
        lines += [f"## Claim {claim}", "", f"The paper: {claims.CLAIMS[claim]}. This book ({{doc}}`/executed/{page}`): "
                  + _ours(rows, claim, None, p.metric) + ".", ""]
        if not mine:
            lines += ["No published figure for this claim was found beyond the paper's own.", ""]
            continue
        lines += ["| source | setting | size (B), teacher | published effect | this book, nearest |",
                  "|---|---|---|---|---|"]
        for e in mine:
            detected = {True: " (detected)", False: " (not detected)"}.get(e.get("detected"), "")
            lines.append(f"| **{e['id']}** | {_cell(e['setting'])} | {_cell(e.get('size_b'))}, {_cell(e['teacher'])} "
                         f"| {_cell(e['effect']) or 'no figure published'}{detected} "
                         f"| {_ours(rows, claim, e['teacher'], p.metric)} |")
        lines.append("")
        lines += [f"- **{e['id']}**: {e['note']} Metric: {e['metric']}. Source: {e['source']}, {e['where']}."
                  for e in mine] + [""]
    aux = [e for e in peers if e["teacher"] == "auxiliary-logit"]
    lines += ["## Another setting: auxiliary logits", "",
              f"This book asks claims 1–3 of {aux_claims.AUX_SETTING} too ({{doc}}`/executed/{aux_claims.AUX_PAGE}`): "
              + ("; ".join(f"{c}: " + _ours(rows, c, None) for c in aux_claims.AUX_CLAIMS)) + ".", "",
              "Published work in that setting, below and among the accounts of the mechanism: "
              + ", ".join(f"**{e['id']}**" + (" (not reachable)" if e["status"] != "read" else "") for e in aux) + ".", ""]
    lines += ["## Later accounts of the mechanism", "",
              "Read from each paper's abstract; what each predicts for the four claims, in our words.", ""]
    lines += [f"- **{e['id']}** ({e['source']}): {e['note']}" for e in accounts] + [""]
    gone = [e for e in peers if e["status"] != "read"]
    if gone:
        lines += ["## Not reachable from here", "",
                  "These sources could not be read with the tools this book was made with; no figure of theirs is "
                  "printed.", ""]
        lines += [f"- **{e['id']}** ({e['source']}): {e['note']}" for e in gone] + [""]
    return link_each("\n".join(lines), PEERS_TERMS)

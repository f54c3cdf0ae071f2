"""The book's two computed pages: the results at a glance (executed/results.md, which the landing page includes) and
the page setting this book's verdicts beside published results (executed/peers.md), each written from the verdict
files of the run at every build, never typed in.
"""
from __future__ import annotations

import pandas as pd
import yaml

from . import aux_claims, claims, config, design, identity, paths, plots, readings, results

CLAIM_PAGES = {c.key: c.page for c in claims.REGISTRY}  # claim -> the notebook (page) that tests it


def results_page(profile: str, ran: dict[str, dict], stale: list[str] = (), pages: set[str] | None = None) -> str:
    """Markdown of the results at a glance: a row per claim with the paper's claim and, per teacher,
    the verdict and the effect its rule reads with that rule's interval, from the default run's verdict
    files; a line for each claim page that shows another run. `pages`: the executed pages the book has (None: not
    checked); a claim whose page is not among them says its verdicts come from a run whose page is gone."""
    p = config.load_profile(profile)
    verdicts = results.read_verdicts(identity.identity(p))
    everything = verdicts[verdicts["run"] == ""] if len(verdicts) else pd.DataFrame(columns=["claim", "teacher"])
    rows = everything[everything["claim"].map(claims.is_paper_claim).astype(bool)]  # another setting's rows: a table of their own
    if "arm" in rows:  # claim 3's main precision arm at a glance; the others are on its page
        rows = rows[rows["arm"].isna() | (rows["arm"] == p.train.full_precision[0])]
    teachers = sorted(set(rows["teacher"]), key=design.teacher_order) or list(config.TEACHERS)
    ignored = verdicts.attrs.get("ignored", [])
    lines = ["## Results at a glance", "", plots.caveat(p), "",
             *([f"```{{warning}}\nNot read, since no notebook wrote them: {', '.join(f'`{n}`' for n in ignored)} in "
                f"`results/{identity.identity(p)}/`. Only the verdict files the notebooks listed are shown.\n```", ""]
               if ignored else []),
             "| claim | the paper says | " + " | ".join(f"{t} teacher" for t in teachers) + " |",
             "|---" * (2 + len(teachers)) + "|"]
    for claim, page in CLAIM_PAGES.items():
        cells = []
        for t in teachers:
            r = rows[(rows["claim"] == claim) & (rows["teacher"] == t)]
            if r.empty:
                cells.append("not run")
                continue
            r = r.iloc[0]
            if r["verdict"] == claims.NOT_TESTED:  # its number is no result: the page keeps it, for information
                first = rows[(rows["claim"] == next(iter(claims.CLAIMS))) & (rows["teacher"] == t)]["verdict"]
                said = first.iloc[0] if len(first) else "missing"
                cells.append(f"**{r['verdict']}** · its claim 1 is {said} ({{doc}}`a fixed sequence </design>`)")
                continue
            effect = claims.fmt_ci(r["effect"], r["ci_low"], r["ci_high"], "+.2g")
            cells.append(f"**{r['verdict']}** · {readings.effect_name(claim, p.metric)} {effect}")
        if pages is not None and page not in pages and any(c != "not run" for c in cells):
            cells = [c if c == "not run" else f"{c} (page not executed: an earlier run's verdict)" for c in cells]
        lines.append(f"| {{doc}}`{claim} </executed/{page}>` | {claims.CLAIMS[claim]} | " + " | ".join(cells) + " |")
    lines += ["", "Each verdict follows the rule its page states before the data; the effect is the number "
              "that rule reads, with the interval it reads: 95%, or wider where the rule corrects for choosing "
              "among several (claim 2's peak rank). Every measurement in full: {doc}`/executed/06_scoreboard`."]
    setting = (f"The paper's questions asked where Cloud et al. found subliminal transfer strong and cheap, "
               f"{aux_claims.AUX_SETTING} ({{doc}}`its page </executed/{aux_claims.AUX_PAGE}>`), not on the model above: "
               "its verdicts are not verdicts on the paper's claims.")
    lines += ["", "### Another setting", "", setting, "", "| question | it asks | verdict · effect |", "|---|---|---|"]
    for claim, asks in aux_claims.AUX_CLAIMS.items():
        r = everything[everything["claim"] == claim]
        if r.empty:
            cell = "not run"
        else:
            r = r.iloc[0]
            cell = (f"**{r['verdict']}** · {readings.effect_name(claim)} "
                    f"{claims.fmt_ci(r['effect'], r['ci_low'], r['ci_high'], '+.2g')}")
        lines.append(f"| {claim} | {asks} | {cell} |")
    if stale:
        lines[2:2] = ["```{warning}", "Out of date: " + ", ".join(f"{{doc}}`/executed/{n}`" for n in stale)
                      + " were executed by another profile, other sublora files or libraries than the checkout that "
                      "built this book, or their results files changed since. `make reproduce` reruns them.", "```", ""]
    for page in [*CLAIM_PAGES.values(), aux_claims.AUX_PAGE]:
        other = {k: v for k, v in ran.get(page, {}).items() if k != "profile"}
        if other:
            lines += ["", f"Note: the page {{doc}}`/executed/{page}` shows a run with "
                      + ", ".join(f"`{k} = {v!r}`" for k, v in other.items())
                      + "; this table shows the default run's verdicts."]
    return "\n".join(lines) + "\n"


PEERS = paths.ROOT / "book" / "peers.yaml"  # published results, each read from its source (the file says how)
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
    lines = ["# Beside other results", "", plots.caveat(p), "",
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
    return "\n".join(lines)

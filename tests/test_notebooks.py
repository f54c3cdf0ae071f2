"""Every notebook executed under the smoke profile through papermill, the book built from the
executed copies, and the notebook-level error paths. Uses a private cache and results folder."""
from __future__ import annotations

import json
import os
import re
import shutil
from html import unescape as html_unescape
from pathlib import Path

import pytest
from conftest import smoke_env

from sublora import book, claims, config, notebook, pages, reproduce

@pytest.fixture(scope="module")
def smoke(smoke_book, tmp_path_factory):
    """A copy of the session's smoke book (conftest.smoke_book), its cache and results in force for this
    module. These tests rerun notebooks into it; the copy keeps the book test_book.py reads (on another
    pytest-xdist worker, at the same time) as it was built."""
    built, rc = smoke_book
    root = tmp_path_factory.mktemp("smoke-notebooks")
    shutil.copytree(built, root, dirs_exist_ok=True, symlinks=True)
    with smoke_env(root):
        yield root, rc


def artifacts(root: Path) -> set[str]:
    return {str(p.relative_to(root / "cache")) for p in (root / "cache").glob("*/*")}


def text_of(html: Path) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html.read_text()))


def test_reproduce_builds_the_book(smoke):
    root, rc = smoke
    assert rc == 0
    for name in book.NOTEBOOKS:
        assert (root / "executed" / f"{name}.ipynb").exists(), name
    html = root / "book" / "_build" / "html"
    assert (html / "index.html").exists()
    verdicts = [json.loads(p.read_text()) for p in (root / "results" / "smoke" / "verdicts").glob("*.json")]
    for claim, name in book.CLAIM_PAGES.items():
        page = (html / "executed" / f"{name}.html").read_text()
        assert "<img" in page, f"{name} has no figure"
        # each of the claim's verdict files, as its page shows it: teacher, verdict and measurement in one row
        # (the rule text on the page names every verdict word, so finding a word alone would prove nothing)
        mine = [v for v in verdicts if v["claim"] == claim]
        assert mine, f"no verdict file for {claim}"
        text = text_of(html / "executed" / f"{name}.html")
        e = config.load_profile("smoke").smallest_effect
        for v in mine:  # its row in the box at the top (the structured columns), and its measurement in full
            c = claims.effect_columns(v)
            row = f"{v['teacher']} {pages.verdict_label(v, e)} {c['Δ']} {c['interval']}"
            flat = "".join(html_unescape(text).split())  # spaces aside: a number's nowrap span may add some
            assert "".join(row.split()) in flat, (name, row)
            assert "".join(v["measurement"].split()) in flat, (name, v["measurement"])
    board = text_of(html / "executed" / "06_scoreboard.html")
    for claim in ("1 transfer", "2 rank inverted-U", "3 full fine-tuning null", "4 system-prompt dependence"):
        assert claim in board


def test_every_claim_wrote_a_verdict(smoke):
    root, _ = smoke
    verdicts = [json.loads(p.read_text()) for p in (root / "results" / "smoke" / "verdicts").glob("*.json")]
    claims = {v["claim"] for v in verdicts}
    assert claims == {"1 transfer", "2 rank inverted-U", "3 full fine-tuning null", "4 system-prompt dependence",
                      "aux-logit 1 transfer", "aux-logit 2 rank inverted-U", "aux-logit 3 full-parameter null"}
    assert all(v["verdict"] in ("reproduced", "not reproduced", "inconclusive", "not tested") for v in verdicts)
    # the fixed sequence: the persona teacher's claims 2-4 are tested only where its claim 1 is reproduced
    first = next(v["verdict"] for v in verdicts if v["claim"] == "1 transfer" and v["teacher"] == "persona")
    later = [v for v in verdicts if v["teacher"] == "persona" and v["claim"][0] in "234"]
    assert later and all((v["verdict"] == "not tested") == (first != "reproduced") for v in later)


def test_rerun_reuses_the_cache(smoke):
    root, _ = smoke
    before = artifacts(root)
    assert reproduce.main(["--profile", "smoke", "--executed", str(root / "rerun"), "--only", "02_transfer"]) == 0
    assert artifacts(root) == before


def test_one_notebook_with_new_parameters_keeps_the_default_run(smoke):
    """A rerun with other parameters writes its own table, verdicts and executed notebook; the default
    run's verdicts, tables, scoreboard and executed pages stay byte for byte as they were."""
    root, _ = smoke
    results = root / "results" / "smoke"
    default = {p: p.read_bytes() for p in [*results.glob("*.csv"), *(results / "verdicts").glob("*.json"),
                                           *(root / "executed").glob("*.ipynb")]}
    assert reproduce.main(["--profile", "smoke", "--executed", str(root / "executed"), "--only", "03_rank_sweep",
                           "-p", "ranks", "[1, 2]", "-p", "animal", "dolphin"]) == 0
    assert {p: p.read_bytes() for p in default} == default
    run = results / "runs" / notebook.run_key({"ranks": [1, 2], "animal": "dolphin"}, {"ranks": None, "animal": None})
    assert run.name.startswith("animal-dolphin_ranks-1_2-")
    import pandas as pd
    table = pd.read_csv(run / "03_rank_sweep.csv")
    assert sorted(table["lora_rank"].unique()) == [1, 2] and set(table["target"]) == {"dolphin"}
    verdicts = [json.loads(p.read_text()) for p in (run / "verdicts").glob("*.json")]
    assert {v["animal"] for v in verdicts} == {"dolphin"} and all("dolphin" in v["measurement"] for v in verdicts)
    assert (run / "03_rank_sweep.ipynb").exists()


def test_papermills_command_line_gives_reproduces_message(smoke, tmp_path, capsys):
    """`papermill … -p animal ''` in a shell: the notebook stops in its first code cell with the message
    reproduce gives before any work (tests/test_reproduce.py checks every value on every route in-process)."""
    import subprocess
    import sys
    assert reproduce.main(["--profile", "smoke", "--only", "03_rank_sweep", "-p", "animal", ""]) == 2
    message = capsys.readouterr().err.strip().removeprefix("error: ")
    proc = subprocess.run([str(Path(sys.executable).parent / "papermill"), "--no-progress-bar",
                           str(reproduce.paths.ROOT / "notebooks" / "03_rank_sweep.ipynb"), str(tmp_path / "x.ipynb"),
                           "-p", "profile", "smoke", "-p", "animal", ""], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("params, message", [
    (["-p", "ranks", "[1, 2"], "ranks"),  # malformed papermill parameter
    (["-p", "ranks", "[0, 2]"], "it must be at least 1"),
    (["-p", "lr", "0"], "it must be above 0"),
    (["-p", "lr", "1e6"], "it must be at most 0.1"),  # implausible: would destroy the student
    (["-p", "epochs", "100000"], "it must be at most"),
    (["-p", "animal", "unicorn"], "unknown value 'unicorn'"),
    (["-p", "profile", "nope"], "unknown profile"),
    (["-p", "rank", "[1]"], "has no parameter ['rank']"),  # a typo must not silently run the defaults
])
def test_bad_parameters_stop_with_a_message_and_write_nothing(smoke, params, message, capsys):
    root, _ = smoke
    before = artifacts(root)
    assert reproduce.main(["--profile", "smoke", "--executed", str(root / "bad"), "--only", "03_rank_sweep", *params]) != 0
    assert message in capsys.readouterr().err
    assert artifacts(root) == before
    assert not list((root / "cache").glob("*/.tmp-*"))


def test_a_users_profile_near_a_package_profile_never_touches_its_results(smoke, tmp_path, capsys):
    """A copy of smoke.yaml under its own name with min_effect changed, given by a relative path (read against
    the caller's directory, not the notebooks'), -p profile as --profile: its run gets a folder of its
    own (identity.identity), its executed page stays there, and the default smoke run's results and
    pages are byte-identical after it; every artifact comes from the cache (the same model and data)."""
    root, _ = smoke
    (tmp_path / "mine.yaml").write_text((reproduce.paths.PROFILES / "smoke.yaml").read_text()
                                        + "name: my-smoke\nmin_effect: 0.01\n")
    default = {p: p.read_bytes() for folder in (root / "results" / "smoke", root / "executed")
               for p in folder.rglob("*") if p.is_file()}
    before = artifacts(root)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert reproduce.main(["-p", "profile", "mine.yaml", "--only", "02_transfer"]) == 0
    finally:
        os.chdir(cwd)
    assert artifacts(root) == before
    assert {p: p.read_bytes() for p in default} == default
    mine = reproduce.identity.identity(reproduce.config.load_profile(str(tmp_path / "mine.yaml")))
    assert mine.startswith("my-smoke-") and "min_effect 0.0 → 0.01" in capsys.readouterr().out
    verdicts = list((root / "results" / mine / "verdicts").glob("*.json"))
    assert {p.name for p in verdicts} == {"1_transfer_persona.json", "1_transfer_finetuned.json"}
    assert (root / "results" / mine / "executed" / "02_transfer.ipynb").exists()


def test_warm_rerun_executes_nothing_and_a_changed_result_reruns_its_notebook(smoke, capsys):
    """make reproduce again with nothing changed: every notebook is up to date (same notebook, parameters,
    profile, code, libraries; its results files unchanged) and none is executed. A results file changed
    since: the notebooks from the one whose run left it are executed again; --force executes one anyway."""
    root, _ = smoke
    executed = root / "executed"
    before = {p.name: p.read_bytes() for p in executed.glob("*.ipynb")}
    capsys.readouterr()
    assert reproduce.main(["--profile", "smoke", "--executed", str(executed), "--no-book"]) == 0
    out = capsys.readouterr().out
    assert out.count("up to date") == len(book.NOTEBOOKS) and "running with" not in out, out
    assert {p.name: p.read_bytes() for p in executed.glob("*.ipynb")} == before
    board = root / "results" / "smoke" / "06_scoreboard.csv"
    kept = board.read_bytes()
    board.write_bytes(kept + b"\n")  # changed since 06 ran: 06 is no longer up to date (05 still is)
    assert reproduce.main(["--profile", "smoke", "--executed", str(executed), "--only", "05_system_prompt",
                           "06_scoreboard", "--no-book"]) == 0
    out = capsys.readouterr().out
    assert "[05_system_prompt] up to date" in out and "[06_scoreboard] running with" in out, out
    assert board.read_bytes() == kept  # the rerun wrote the scoreboard again, as before
    assert reproduce.main(["--profile", "smoke", "--executed", str(executed), "--only", "06_scoreboard",
                           "--no-book", "--force"]) == 0
    assert "[06_scoreboard] running with" in capsys.readouterr().out


def test_make_book_names_the_notebooks_this_checkout_would_no_longer_make(smoke):
    """out_of_date: none after a run; a notebook whose stamp another run made (another profile's settings,
    other sublora files), or whose results files changed since, is named, and the results page warns."""
    root, _ = smoke
    executed = root / "executed"
    assert book.out_of_date(executed) == []
    stamp = executed / ".03_rank_sweep.stamp.json"
    kept = stamp.read_text()
    try:
        stamp.write_text(json.dumps(json.loads(kept) | {"fingerprint": "another run"}))
        assert book.out_of_date(executed) == ["03_rank_sweep"]
    finally:
        stamp.write_text(kept)
    board = root / "results" / "smoke" / "06_scoreboard.csv"
    data = board.read_bytes()
    try:
        board.write_bytes(data + b"\n")
        # 08 ran after the scoreboard, and a notebook's stamp covers every results file there when it ran
        assert book.out_of_date(executed) == ["06_scoreboard", "08_ladder"]
    finally:
        board.write_bytes(data)
    page = pages.results_page("smoke", {}, ["06_scoreboard"])
    assert "```{warning}\nOut of date: {doc}`/executed/06_scoreboard`" in page
    assert "Out of date" not in pages.results_page("smoke", {})


def test_a_teacher_whose_claim_1_is_not_reproduced_has_no_students_trained_for_claims_2_to_4(smoke_book, tmp_path):
    """Item 6 of issue 36: notebook 03 on the smoke profile, the persona teacher's claim 1 read as not reproduced,
    asks for none of its students (the results table, which lists every student the notebook asked for, has none of
    its rows) and writes its claim-2 row as 'not tested', without a number; the positive control is still tested."""
    built, rc = smoke_book
    assert rc == 0
    shutil.copytree(built, tmp_path, dirs_exist_ok=True, symlinks=True)
    with smoke_env(tmp_path):
        verdicts = tmp_path / "results" / "smoke" / "verdicts"
        first = verdicts / "1_transfer_persona.json"
        first.write_text(json.dumps(json.loads(first.read_text()) | {"verdict": "not reproduced"}))
        assert reproduce.main(["--profile", "smoke", "--executed", str(tmp_path / "executed"), "--only",
                               "03_rank_sweep", "--force"]) == 0
        import pandas as pd
        table = pd.read_csv(tmp_path / "results" / "smoke" / "03_rank_sweep.csv")
        assert set(table["teacher_kind"]) == {"finetuned"}
        row = json.loads((verdicts / "2_rank_persona.json").read_text())
        assert row["verdict"] == "not tested" and row["trained"] is False and not row["effect"] == row["effect"]  # NaN
        assert "claim 1 is not reproduced" in row["reason"]
        assert json.loads((verdicts / "2_rank_finetuned.json").read_text())["verdict"] != "not tested"
        page = (tmp_path / "executed" / "03_rank_sweep.ipynb").read_text()
        assert "its students for them were not trained" in page

"""sublora.reproduce's command line: bad input stops before any work with one line and exit code 2.

No test here executes a notebook: run_notebook and the book build are replaced by stand-ins that fail
the test if reached (the test of a failed run replaces run_notebook with a failing notebook's run).
"""
from __future__ import annotations

import os
import tempfile

import nbformat
import papermill as pm
import pytest

from sublora import book, notebook, reproduce
from sublora.config import ConfigError, shown


@pytest.fixture
def places(tmp_path, monkeypatch):
    """SUBLORA_CACHE, _RESULTS, _EXECUTED and _BOOK at folders under tmp_path that do not exist yet; no
    notebook is executed and no book built (reaching either fails the test)."""
    folders = {name: tmp_path / name for name in ("cache", "results", "executed", "book")}
    for name, folder in folders.items():
        monkeypatch.setenv(f"SUBLORA_{name.upper()}", str(folder))
    monkeypatch.delenv("SUBLORA_EXECUTOR", raising=False)

    def no_work(*args, **kwargs):
        pytest.fail("work started: a notebook was executed or the book built")
    monkeypatch.setattr(reproduce, "run_notebook", no_work)
    monkeypatch.setattr(book, "build_book", no_work)
    return folders


def _stops(argv, capsys) -> str:
    """reproduce.main's one-line error for argv (exit code 2)."""
    assert reproduce.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


# ---- empty parameter values: parse_params decides, on this route as on papermill's ----------------
@pytest.mark.parametrize("value", ["", "  "])
@pytest.mark.parametrize("name", ["animal", "seeds", "teachers", "profile"])
def test_empty_parameter_stops_before_any_work(places, capsys, name, value):
    err = _stops(["--profile", "smoke", "--only", "02_transfer", "-p", name, value], capsys)
    assert err.startswith(f"error: -p {name} {value!r}: the value is empty; omit -p {name} to use ")
    assert not any(folder.exists() for folder in places.values())  # no cache, results or executed folder made


def test_empty_animal_says_how_to_keep_the_profiles_value(places, capsys):
    err = _stops(["--profile", "smoke", "--only", "02_transfer", "-p", "animal", ""], capsys)
    assert err == ("error: -p animal '': the value is empty; omit -p animal to use the profile's value, "
                   "or give one, e.g. -p animal owl")


# ---- notebook names ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../notebooks/06_scoreboard", "notebooks/06_scoreboard", "./06_scoreboard",
                                  str(reproduce.paths.ROOT / "notebooks" / "06_scoreboard"), "..", "nope",
                                  "/" + "deep-folder/" * 13 + "notebooks/06_scoreboard"])
def test_only_takes_bare_notebook_names(places, capsys, name):
    """The message echoes the name cut to config.SHOWN characters, so it reads the same from a clone at any
    path length (the checkout's own path is one of the names; the last is 173 characters long)."""
    err = _stops(["--profile", "smoke", "--only", name], capsys)
    assert err.startswith(f"error: no notebook {shown(name)}; choose from {list(book.NOTEBOOKS)}")
    assert err.endswith(f"choose from {list(book.NOTEBOOKS)}")
    assert not any(folder.exists() for folder in places.values())


def test_a_bad_notebook_name_is_found_before_a_good_ones_work(places, capsys):
    _stops(["--profile", "smoke", "--only", "06_scoreboard", "../notebooks/06_scoreboard"], capsys)


# ---- the folders a run writes to: writable, or one line before any work ---------------------------
def test_preflight_makes_missing_folders(tmp_path):
    folders = {tmp_path / "a" / "b": ("the results folder", "SUBLORA_RESULTS"), tmp_path: ("the cache folder", "SUBLORA_CACHE")}
    reproduce.preflight(folders)
    assert (tmp_path / "a" / "b").is_dir()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b"]  # the probe file is gone


@pytest.mark.parametrize("folder, argv, variable", [
    ("cache", [], "SUBLORA_CACHE"),
    ("results", [], "SUBLORA_RESULTS"),
    ("executed", [], "SUBLORA_EXECUTED (or --executed)"),
    ("book", [], "SUBLORA_BOOK (or --book-dir)"),
])
def test_unwritable_folder_stops_before_any_work(places, capsys, monkeypatch, folder, argv, variable):
    """A folder the run cannot write to (here: the probe is refused, as for a read-only folder; this
    machine's tests run as root, for whom chmod does not take)."""
    bad = places[folder] / "smoke" if folder == "results" else places[folder]
    probe = reproduce._probe

    def refused(path):
        if path == bad:
            raise PermissionError(13, "Permission denied", str(path))
        probe(path)
    monkeypatch.setattr(reproduce, "_probe", refused)
    err = _stops(["--profile", "smoke", *argv], capsys)
    what = {"cache": "the cache folder", "results": "the results folder", "executed": "the executed notebooks' folder",
            "book": "the book's folder"}[folder]
    assert err == f"error: cannot write to {what} {bad} (PermissionError: Permission denied); " \
                  f"set {variable} to a folder you can write to"


def test_a_folder_under_a_file_stops_before_any_work(places, capsys, monkeypatch, tmp_path):
    """The real check, no stand-in: a results folder whose parent is a regular file (even root cannot make it)."""
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("SUBLORA_RESULTS", str(tmp_path / "file" / "results"))
    err = _stops(["--profile", "smoke", "--only", "02_transfer"], capsys)
    assert err == (f"error: cannot write to the results folder {tmp_path / 'file' / 'results' / 'smoke'} "
                   "(NotADirectoryError: Not a directory); set SUBLORA_RESULTS to a folder you can write to")
    assert not places["executed"].exists()


@pytest.mark.parametrize("argv, written", [
    ([], ["cache", "results", "executed", "book"]),
    (["--no-book"], ["cache", "results", "executed"]),
    (["--only", "02_transfer"], ["cache", "results", "executed"]),
    (["--only", "02_transfer", "-p", "animal", "cat"], ["cache", "results", "run"]),  # its copy goes beside its results
    (["--book-dir", "elsewhere"], ["cache", "results", "executed", "elsewhere"]),
])
def test_the_folders_checked_are_those_the_run_writes(places, capsys, monkeypatch, argv, written):
    checked = []

    def stop(folders):
        checked.extend(folders)
        raise ConfigError("stopped here")
    monkeypatch.setattr(reproduce, "preflight", stop)
    _stops(["--profile", "smoke", *argv], capsys)
    named = {**places, "results": places["results"] / "smoke", "run": places["results"] / "smoke" / "runs" / notebook.run_key({"animal": "cat"}, {}),
             "elsewhere": reproduce.Path("elsewhere")}
    assert checked == [named[w] for w in written]


# ---- a failed notebook's partly executed copy ----------------------------------------------------
def test_a_failed_notebooks_copy_stays_in_its_runs_folder(places, capsys, monkeypatch):
    def fails(name, out_dir, parameters, progress=True):
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nbformat.v4.new_notebook(), out_dir / f".{name}.running.ipynb")
        raise pm.PapermillExecutionError(3, 1, "1/0", "ZeroDivisionError", "division by zero", [])
    monkeypatch.setattr(reproduce, "run_notebook", fails)
    before = set(os.listdir(tempfile.gettempdir()))
    assert reproduce.main(["--profile", "smoke", "--only", "02_transfer"]) == 1
    failed = places["executed"] / ".02_transfer.failed.ipynb"
    err = capsys.readouterr().err
    assert err == ("error: notebook 02_transfer failed: ZeroDivisionError: division by zero\n"
                   f"  the partly executed copy is {failed}\n")
    assert failed.exists() and not (places["executed"] / ".02_transfer.running.ipynb").exists()
    assert not (places["executed"] / "02_transfer.ipynb").exists()  # the book never shows a failed run
    assert not [n for n in set(os.listdir(tempfile.gettempdir())) - before if "sublora-failed" in n]


# ---- one check on every route: the same -p text, the same answer -------------------------------------
class _Reached(Exception):
    """The run got past every check and would start work."""


def _via_reproduce(name, text, monkeypatch, capsys) -> str:
    """`python -m sublora.reproduce` (and make, which calls it): its one-line error, or 'runs'."""
    def reached(*args, **kwargs):
        raise _Reached
    monkeypatch.setattr(reproduce, "run_notebook", reached)
    try:
        assert reproduce.main(["--profile", "smoke", "--only", "03_rank_sweep", "-p", name, text]) == 2
    except _Reached:
        return "runs"
    return capsys.readouterr().err.strip().removeprefix("error: ")


def _via_kernel(parameters: dict) -> str:
    """What a notebook's kernel does with papermill's injected cell: the cell papermill writes for these
    parameters, run, then notebook.prepare as the notebook's first code cell calls it."""
    from papermill.translators import translate_parameters

    from sublora import notebook
    cell = translate_parameters("python3", "python", {"profile": "smoke", **parameters})
    namespace = {"In": [cell]}
    exec(cell, namespace)  # noqa: S102 (papermill's own parameters cell, as its kernel runs it)
    try:
        notebook.prepare("03_rank_sweep", namespace)
    except ConfigError as e:
        return str(e)
    return "runs"


@pytest.mark.parametrize("name, text", [
    *[("animal", t) for t in ["", "  ", "None", "null", "unicorn", " owl", "owl", "3"]],
    *[("seeds", t) for t in ["", "None", "null", "0", "2", "2.5", "two", "True"]],
    *[("ranks", t) for t in ["[1, 2", "[]", "[1, 2]", "None", "[0]", "4"]],
    *[("rebuild_organism", t) for t in ["", "yes", "maybe"]],
])
def test_every_route_gives_the_same_answer(places, monkeypatch, capsys, name, text):
    """make / reproduce, `papermill -p NAME TEXT` (papermill's command line reads TEXT with _resolve_type)
    and the Python API (pm.execute_notebook(parameters={NAME: TEXT}): the text itself) reach the same
    check and give the same answer: the same message, or all three run."""
    from papermill.cli import _resolve_type
    declared = reproduce.declared_parameters("03_rank_sweep")
    if name not in declared:  # a parameter 03 does not declare: every route names it the same way
        name_check = f"has no parameter ['{name}']"
        assert name_check in _via_reproduce(name, text, monkeypatch, capsys)
        assert name_check in _via_kernel({name: _resolve_type(text)})
        return
    cli = _via_reproduce(name, text, monkeypatch, capsys)
    assert _via_kernel({name: _resolve_type(text)}) == cli
    # the API hands Python values: the text itself ("2", "[1, 2]"), or None where the command lines read None;
    # its message may echo the text where theirs echo the number, but it stops exactly where they stop
    api = _via_kernel({name: None if text == "None" else text})
    assert (api == "runs") == (cli == "runs"), (cli, api)


def test_a_full_disk_stops_before_any_work(places, capsys, monkeypatch):
    import collections
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda where: collections.namedtuple("u", "total used free")(10**9, 0, 10**5))
    err = _stops(["--profile", "smoke", "--only", "04_full_finetuning"], capsys)
    assert err.startswith("error: the cache's disk has 100 KB free at ") and "SUBLORA_CACHE" in err


def test_paper_profile_without_gpu_stops_before_any_kernel_starts(places, capsys):
    """No CUDA GPU here: the one-line message comes from the preflight, not from a notebook's first cell."""
    err = _stops(["--profile", "paper", "--only", "02_transfer"], capsys)
    assert "CUDA GPU" in err and "make plan PROFILE=paper" in err
    assert not any(folder.exists() for folder in places.values())


def test_a_profile_that_checks_part_of_the_book_names_real_notebooks(places, capsys, tmp_path):
    """A profile's `notebooks` (smol-check: 00-02 and the scoreboard) is what make reproduce and make plan run;
    a name that is no notebook stops the run before any work, naming the notebooks there are."""
    from sublora import config, design
    assert list(design.by_notebook(config.load_profile("smol-check"))) == ["02_transfer"]
    part = tmp_path / "part.yaml"
    part.write_text((reproduce.paths.PROFILES / "smoke.yaml").read_text() + "name: part\nnotebooks: [00_model, nope]\n")
    err = _stops(["--profile", str(part)], capsys)
    assert err.startswith("error: no notebook 'nope'; choose from")
    assert not any(folder.exists() for folder in places.values())


def test_two_parameter_values_alike_to_six_digits_never_share_a_run_folder():
    """Run folders are keyed by the exact values (issue 38): lr 2e-3 and 2.0000001e-3 print alike with {:g}."""
    defaults = {"lr": None, "teachers": None}
    keys = {notebook.run_key({"lr": v}, defaults) for v in (2e-3, 2.0000001e-3, 2.000001e-3)}
    keys |= {notebook.run_key({"teachers": v}, defaults) for v in (["a b"], ["a_b"])}
    assert len(keys) == 5 and all(k.startswith(("lr-0.002", "teachers-a_b")) for k in keys)
    assert notebook.run_key({"lr": None}, defaults) == ""


def test_a_bad_bf16_switch_stops_before_any_work(places, capsys, monkeypatch):
    monkeypatch.setenv("SUBLORA_CPU_BF16", "fast")
    err = _stops(["--profile", "smoke", "--only", "02_transfer"], capsys)
    assert err == "error: SUBLORA_CPU_BF16='fast': choose one of auto, native, emulated"
    assert not any(folder.exists() for folder in places.values())


@pytest.mark.parametrize("argv, message", [
    (["--profile", "smoke", "-p", "profile", "organism"],
     "error: two profiles for one run: --profile smoke (make's PROFILE) and -p profile organism; give one"),
    (["-p", "profile", "smoke", "-p", "profile", "organism"],
     "error: -p profile is given 2 times ('smoke', 'organism'): give it once"),
])
def test_one_profile_per_run(places, capsys, argv, message):
    """`make notebook PROFILE=smoke PARAMS="-p profile organism"` ran the organism and overwrote smoke's page
    (issue 38): the two must agree, or the run stops before any work."""
    err = _stops([*argv, "--only", "02_transfer"], capsys)
    assert err.startswith(message)
    assert not any(folder.exists() for folder in places.values())


def test_the_same_profile_twice_is_one_profile(places, capsys, monkeypatch):
    def stop(folders):
        raise reproduce.ConfigError("stopped at the preflight")
    monkeypatch.setattr(reproduce, "preflight", stop)
    assert _stops(["--profile", "smoke", "-p", "profile", "smoke", "--only", "02_transfer"], capsys) == \
        "error: stopped at the preflight"


@pytest.mark.parametrize("value", ["-1e-3", "-1E+2", "-0.5", "-3"])
def test_a_negative_value_reaches_the_parameter_check(places, capsys, value):
    """`-p lr -1e-3` through make gave argparse's "expected 2 arguments"; papermill says out of range (issue 38)."""
    err = _stops(["--profile", "smoke", "--only", "02_transfer", "-p", "lr", value], capsys)
    assert err.startswith("error: -p lr -") and "is out of range, it must be above 0" in err


def test_make_minus_C_reads_relative_paths_against_the_callers_directory(tmp_path):
    """`SUBLORA_CACHE=c make -C <checkout> …` wrote into the checkout (issue 38): a relative SUBLORA_* path is the
    caller's, as the README says; an absolute one is kept."""
    import subprocess
    import sys
    env = {**os.environ, "SUBLORA_CACHE": "rel/cache", "SUBLORA_BOOK": str(tmp_path / "abs"), "SUBLORA_RESULTS": "",
           "PWD": str(tmp_path)}
    out = subprocess.run(["make", "-s", "-C", str(reproduce.paths.ROOT), "where", f"PY={sys.executable}"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, check=True).stdout
    where = dict(line.split(maxsplit=1) for line in out.splitlines())
    assert where["SUBLORA_CACHE"] == str(tmp_path / "rel" / "cache")
    assert where["SUBLORA_BOOK"] == str(tmp_path / "abs")
    assert where["SUBLORA_RESULTS"] == str(reproduce.paths.ROOT / "results")

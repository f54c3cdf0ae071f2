"""The record (sublora.record): written whole from a finished default run, restored into a fresh clone's empty
folders, and a rerun compared with it verdict by verdict and table by table."""
from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pandas as pd
import pytest

from sublora import book, paths, record


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A finished default run in temporary folders, and a temporary repository root for record/."""
    monkeypatch.setattr(paths, "ROOT", tmp_path / "repo")
    monkeypatch.setenv("SUBLORA_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("SUBLORA_EXECUTED", str(tmp_path / "executed"))
    results, executed = paths.results_dir("organism"), paths.executed_dir()
    (results / "verdicts").mkdir(parents=True)
    executed.mkdir()
    pd.DataFrame({"rank": [1, 2], "mean": [1.0e-3, 2.5e-4], "unit": ["replicate"] * 2}).to_csv(
        results / "03_rank_sweep_summary.csv", index=False)
    (results / "03_rank_sweep.png").write_bytes(b"\x89PNG not really")
    verdict = {"claim": "1 transfer", "teacher": "persona", "verdict": "not reproduced", "effect": 9.5e-05,
               "ci_low": -8.7e-05, "ci_high": 2.8e-04}
    (results / "verdicts" / "1_transfer_persona.json").write_text(json.dumps(verdict))
    (results / "verdicts" / "02_transfer.list").write_text("1_transfer_persona.json\n")
    (results / "verdicts" / "1_transfer_persona copy.json").write_text(json.dumps(verdict | {"verdict": "reproduced"}))
    (executed / "02_transfer.ipynb").write_text("{}")
    (executed / ".02_transfer.stamp.json").write_text("{}")  # a stamp is this machine's, never recorded
    return results, executed


def test_a_record_holds_the_run_with_its_manifest_and_a_rerun_of_the_same_bytes_is_identical(run):
    dest = record.write("organism")
    manifest = record.read("organism")
    assert dest == paths.ROOT / "record" / "organism"
    assert sorted(manifest["files"]) == ["executed/02_transfer.ipynb", "results/03_rank_sweep.png",
                                         "results/03_rank_sweep_summary.csv", "results/verdicts/02_transfer.list",
                                         "results/verdicts/1_transfer_persona.json"]  # not the stray copy
    assert {"commit", "digest", "libraries", "machine", "written"} <= set(manifest)
    assert manifest["machine"]["cpu_bf16_products"] in ("native", "emulated")
    table = record.compare("organism")
    assert list(table["status"]) == ["identical", "identical"]  # the table and the verdict; figures are not judged


def test_a_rerun_is_told_within_tolerance_different_missing_or_new(run):
    results, _ = run
    record.write("organism")
    summary = results / "03_rank_sweep_summary.csv"
    pd.DataFrame({"rank": [1, 2], "mean": [1.0e-3 * (1 + 1e-5), 2.5e-4], "unit": ["replicate"] * 2}).to_csv(summary, index=False)
    verdict = json.loads((results / "verdicts" / "1_transfer_persona.json").read_text())
    (results / "verdicts" / "1_transfer_persona.json").write_text(json.dumps(verdict | {"effect": 9.5e-05 * (1 + 1e-6)}))
    (results / "verdicts" / "2_rank_persona.json").write_text(json.dumps(verdict | {"claim": "2 rank inverted-U"}))
    (results / "verdicts" / "03_rank_sweep.list").write_text("2_rank_persona.json\n")
    got = record.compare("organism").set_index("name")["status"].to_dict()
    assert got == {"03_rank_sweep_summary": "within tolerance", "1_transfer_persona": "within tolerance",
                   "2_rank_persona": "not in the record"}
    (results / "verdicts" / "1_transfer_persona.json").write_text(json.dumps(verdict | {"verdict": "inconclusive"}))
    pd.DataFrame({"rank": [1, 2], "mean": [2.0e-3, 2.5e-4], "unit": ["replicate"] * 2}).to_csv(summary, index=False)
    table = record.compare("organism").set_index("name")
    assert table.loc["1_transfer_persona", "status"] == "different"
    assert table.loc["1_transfer_persona", "detail"] == "not reproduced → inconclusive"
    assert table.loc["03_rank_sweep_summary", "status"] == "different"
    summary.unlink()
    assert record.compare("organism").set_index("name").loc["03_rank_sweep_summary", "status"] == "missing in the run"
    assert "verdicts different: 1" in record.summary(record.compare("organism"), "organism")


def test_a_record_replaces_the_previous_one_whole_and_needs_a_finished_run(run, tmp_path):
    results, executed = run
    record.write("organism")
    (results / "03_rank_sweep.png").unlink()
    record.write("organism")
    assert not (paths.ROOT / "record" / "organism" / "results" / "03_rank_sweep.png").exists()
    for p in (results / "verdicts").glob("*.json"):
        p.unlink()
    with pytest.raises(FileNotFoundError, match="make reproduce"):
        record.write("organism")
    with pytest.raises(ValueError, match="only the default profile"):
        record.write("smoke")


def test_a_fresh_clone_is_restored_from_the_record_once_and_its_copies_are_named(run):
    results, executed = run
    record.write("organism")
    for p in [*executed.iterdir(), *results.rglob("*.*")]:
        p.unlink()
    assert record.restore("organism")
    assert (executed / "02_transfer.ipynb").is_file() and (results / "verdicts" / "1_transfer_persona.json").is_file()
    assert record.restored("02_transfer") and not record.restored("03_rank_sweep")
    assert list(record.compare("organism")["status"].unique()) == ["identical"]
    assert not record.restore("organism")  # executed notebooks there: nothing is replaced


def test_make_book_builds_from_the_record_where_nothing_was_executed(run, monkeypatch, capsys):
    results, executed = run
    record.write("organism")
    for p in executed.iterdir():
        p.unlink()
    built = {}
    monkeypatch.setattr(book, "build_book", lambda executed, book_dir, profile=None, stale=(): built.update(stale=stale) or ("i", 0.0))
    assert book.run(SimpleNamespace(profile="organism")) == 0
    out = capsys.readouterr()
    assert "built from the record" in out.out and "carry no stamp" not in out.err
    assert (executed / "02_transfer.ipynb").is_file()


def test_without_a_record_there_is_nothing_to_compare(run):
    assert record.read("organism") is None and record.compare("organism").empty
    assert "No record" in record.summary(record.compare("organism"), "organism")


def test_the_committed_record_is_whole():
    """Every file the committed record's manifest names is in the checkout with its sha256 (a .gitignore that
    swallowed record/organism/results/ once left a fresh clone without them)."""
    manifest = record.read("organism")
    assert manifest is not None, "record/organism/ is missing: `make record` after a confirmatory run"
    for name, meta in manifest["files"].items():
        f = record.record_dir("organism") / name
        assert f.is_file() and hashlib.sha256(f.read_bytes()).hexdigest() == meta["sha256"], name

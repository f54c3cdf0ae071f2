"""A run's verdicts are the files its notebooks listed (sublora.results): a stray copy is never read, and a rerun
removes what it did not write (issue 38)."""
from __future__ import annotations

import json
from types import SimpleNamespace

from sublora import paths, results


def _run(notebook="02_transfer", key=""):
    return SimpleNamespace(folder="smoke", key=key, notebook=notebook)


def _row(file, verdict="not reproduced"):
    return {"claim": "1 transfer", "teacher": file.rsplit("_", 1)[-1], "verdict": verdict, "file": file}


def test_a_stray_verdict_file_is_not_read_and_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBLORA_RESULTS", str(tmp_path))
    results.save_verdicts(_run(), [_row("1_transfer_persona"), _row("1_transfer_finetuned")])
    folder = paths.results_dir("smoke") / "verdicts"
    stray = folder / "1_transfer_finetuned copy.json"
    stray.write_text(json.dumps(_row("1_transfer_finetuned", "reproduced")))
    table = results.read_verdicts("smoke")
    assert sorted(table["teacher"]) == ["finetuned", "persona"] and set(table["verdict"]) == {"not reproduced"}
    assert table.attrs["ignored"] == ["verdicts/1_transfer_finetuned copy.json"]


def test_a_rerun_removes_the_verdicts_it_did_not_write_and_keeps_other_notebooks(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBLORA_RESULTS", str(tmp_path))
    results.save_verdicts(_run(), [_row("1_transfer_persona"), _row("1_transfer_finetuned")])
    results.save_verdicts(_run("03_rank_sweep"), [_row("2_rank_persona")])
    results.save_verdicts(_run(), [_row("1_transfer_persona")])  # rerun with one teacher
    folder = paths.results_dir("smoke") / "verdicts"
    assert sorted(p.name for p in folder.glob("*.json")) == ["1_transfer_persona.json", "2_rank_persona.json"]
    assert len(results.read_verdicts("smoke")) == 2 and results.read_verdicts("smoke").attrs["ignored"] == []


def test_another_runs_verdicts_are_read_under_its_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBLORA_RESULTS", str(tmp_path))
    results.save_verdicts(_run(), [_row("1_transfer_persona")])
    results.save_verdicts(_run(key="animal-cat-12345678"), [_row("1_transfer_persona", "inconclusive")])
    table = results.read_verdicts("smoke")
    assert sorted(zip(table["run"], table["verdict"])) == [("", "not reproduced"), ("animal-cat-12345678", "inconclusive")]

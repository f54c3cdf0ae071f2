"""search: the organism-search record, its classifier and the page it renders."""
from __future__ import annotations

import json

import pytest

from sublora import config, search


def _records(last_two: int, n: int = 50) -> list[dict]:
    return [{"numbers": [100 * (i % 9) + last_two, 100 * ((i + 3) % 9) + last_two]} for i in range(n)]


def test_classifier_separates_distinct_signatures_and_not_identical_ones():
    assert search.classifier_accuracy(_records(11), _records(48), _records(11), _records(48)) == 1.0
    assert search.classifier_accuracy(_records(11), _records(11), _records(11), _records(11)) == 0.0  # ties lose


def test_candidate_applies_overrides_and_validates():
    p = search.candidate({"model": {"persona_number_bias": 0.8}, "workers": 1})
    assert p.model.persona_number_bias == 0.8 and p.workers == 1 and p.model.layers == 4
    with pytest.raises(config.ConfigError):
        search.candidate({"model": {"bogus": 1}})


ROW = {"name": "vX", "note": "a test", "persona_mean_p": 0.9, "persona_min_p": 0.5, "default_p_target": 0.03,
       "valid_share_control": 0.97, "classifier_accuracy": 0.6, "kl_persona": 0.1, "kl_finetuned": 0.2,
       "transfer": [{"teacher_kind": "persona", "target": "owl", "animal": "owl", "mean": 1e-3, "ci_low": 5e-4,
                     "ci_high": 2e-3, "n": 6}],
       "specificity": [{"teacher_kind": "persona", "target": "owl", "mean": 2e-4, "ci_low": -1e-4, "ci_high": 5e-4,
                        "n": 6}],
       "settings": {"model": {"layers": 4}}, "minutes": 1.0}


def test_report_renders_every_record(tmp_path, monkeypatch):
    record = tmp_path / "organism_search.jsonl"
    monkeypatch.setattr(search, "RECORD", record)
    assert "No candidate has been measured yet." in search.report()
    newer = ROW | {"name": "vY", "signature_teacher": 0.25, "signature_control": 0.01}
    record.write_text(json.dumps(ROW) + "\n" + json.dumps(newer) + "\n")
    page = search.report()
    assert "| vX | 0.90 | 0.030 | 0.97 | 0.100 | 0.200 | 0.60 | — |" in page  # the teacher side
    assert "| vX | a test | +1.0e-03 [+5.0e-04, +2.0e-03] | — | — |" in page  # the students
    assert "| vY |" in page and "25.00% / 1.00%" in page
    assert "- vX, persona teacher of owl: +2.0e-04 [-1.0e-04, +5.0e-04] (n = 6)" in page


def test_report_names_the_committed_default_and_computes_its_summary(tmp_path, monkeypatch):
    from sublora import organism
    recipe = organism.committed_recipe()
    chosen = ROW | {"name": "vD", "signature_teacher": 0.7, "signature_control": 0.011, "classifier_accuracy": 0.997,
                    "settings": {"model": dict(recipe["config"])}}
    unmarked = ROW | {"name": "vU", "signature_teacher": 0.010, "signature_control": 0.011}
    record = tmp_path / "organism_search.jsonl"
    record.write_text(json.dumps(unmarked) + "\n" + json.dumps(chosen) + "\n")
    monkeypatch.setattr(search, "RECORD", record)
    page = search.report()
    assert "## The default organism: vD" in page
    assert "- persona teacher of owl: ΔP(owl) +0.001 [+0.0005, +0.002]; own animal minus the others' mean" in page
    assert "70% of the owl teacher's numbers carry it against 1.1%" in page and "accuracy 0.997" in page
    assert "Candidate vU, whose teacher's numbers did not carry the mark (1.0% against 1.1%)" in page
    record.write_text(json.dumps(unmarked) + "\n")
    assert "None of the recorded candidates is the committed default organism." in search.report()

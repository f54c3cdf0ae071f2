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


def test_logistic_classifier_separates_distinct_signatures_and_not_identical_ones():
    assert search.logistic_accuracy(_records(11), _records(48), _records(11), _records(48)) == 1.0
    assert search.logistic_accuracy(_records(11), _records(11), _records(11), _records(11)) <= 0.5


TEACHER = {"persona_mean_p": 0.9, "persona_min_p": 0.5, "default_p_target": 0.03, "valid_share_control": 0.97,
           "classifier_accuracy": 0.55, "classifier_lr": 0.52, "kl_persona": 0.1, "kl_finetuned": 0.2,
           "signature_teacher": 0.01, "signature_control": 0.01}
STUDENTS = {"transfer": [{"teacher_kind": "persona", "target": "owl", "animal": "owl", "mean": 1e-3, "ci_low": 5e-4,
                          "ci_high": 2e-3, "n": 6}],
            "specificity": [{"teacher_kind": "persona", "target": "owl", "mean": 2e-4, "ci_low": -1e-4,
                             "ci_high": 5e-4, "n": 6}],
            "claim1": "reproduced", "channel_reading": "Shuffling removes it.",
            "controls": [{"students": "as sampled", "ΔP": "+1e-03 [+5e-04, +2e-03]"},
                         {"students": "shuffled", "ΔP": "+1e-05 [-1e-04, +2e-04]", "reading": "removes"}]}
ROW = {"name": "vX", "note": "a test", "recipe": "no planted association", **TEACHER, "passes": True, **STUDENTS,
       "settings": {"model": {"layers": 4}, "replicates": 3}, "minutes": 1.0}


def test_criteria_are_the_issues_bounds_and_an_unmeasured_value_fails():
    assert search.passes(TEACHER)
    assert not search.passes(TEACHER | {"persona_mean_p": 0.79})
    assert not search.passes(TEACHER | {"kl_persona": 0.51})
    assert not search.passes(TEACHER | {"classifier_lr": 0.61})
    assert not search.passes({k: v for k, v in TEACHER.items() if k != "classifier_lr"})  # the first records


def test_rule_chooses_the_first_passing_candidate_that_transfers_else_the_most_persona_following():
    a = ROW | {"name": "a", "claim1": "inconclusive", "persona_mean_p": 0.95}
    b = ROW | {"name": "b", "claim1": "reproduced", "persona_mean_p": 0.85}
    c = ROW | {"name": "c", "claim1": "reproduced"}
    failing = ROW | {"name": "f", "kl_persona": 9.0}  # passes nothing: never chosen, whatever its students did
    assert search.chosen([failing, a, b, c])["name"] == "b"
    assert search.chosen([failing, a, ROW | {"name": "d", "claim1": "not reproduced"}])["name"] == "a"
    assert search.chosen([failing]) is None


def test_report_renders_every_record(tmp_path, monkeypatch):
    record = tmp_path / "organism_search.jsonl"
    monkeypatch.setattr(search, "RECORD", record)
    assert "No candidate has been measured yet." in search.report()
    planted = {k: v for k, v in ROW.items() if k not in ("passes", "recipe", "claim1", "controls", "classifier_lr")}
    planted |= {"name": "vP", "kl_persona": 15.6, "classifier_accuracy": 0.997, "signature_teacher": 0.7,
                "settings": {"model": {"persona_number_bias": 0.8}, "replicates": 3}}
    record.write_text(json.dumps(ROW) + "\n" + json.dumps(planted) + "\n")
    page = search.report()
    assert "| held-out accuracy of a logistic regression owl vs cat numbers | ≤ 0.6 |" in page
    assert "| vX | none, digit tokens | 0.900 | 0.100 | 0.520 | yes |" in page  # the criteria's table
    assert "| vX | 0.550 | 1.0% / 1.0% | 0.200 |" in page  # the figures beside them
    assert "| vP | planted 80%, digit tokens | 0.900 | 15.600 | — | no |" in page
    assert "| vP | 0.997 | 70.0% / 1.0% | 0.200 |" in page
    assert "1 candidate measured under the criteria (vX)" in page
    assert "| vX | reproduced | +1.0e-03 [+5.0e-04, +2.0e-03] | — | — | +1e-05 [-1e-04, +2e-04] (removes) | not run |" in page
    assert "vP is a planted-channel contrast" in page
    assert "- vX, persona teacher of owl: +2.0e-04 [-1.0e-04, +5.0e-04] (n = 6)" in page


def test_untried_directions_are_read_off_the_candidates_settings():
    small = {"settings": {"model": {"layers": 4, "hidden": 128, "persona_number_bias": 0.0}, "data": {"prompts": 1000}}}
    assert len(search.untried([small])) == 4
    tried = [small, {"settings": {"model": {"hidden": 256, "persona_number_bias": 0.03, "number_tokens": "whole"},
                                  "data": {"prompts": 10_000}}}]
    assert search.untried(tried) == ["none"]


def test_report_names_the_committed_default_and_whether_the_rule_chose_it(tmp_path, monkeypatch):
    from sublora import organism
    recipe = organism.committed_recipe()
    mine = ROW | {"name": "vD", "settings": {"model": dict(recipe["config"]), "replicates": 5}}
    record = tmp_path / "organism_search.jsonl"
    record.write_text(json.dumps(mine) + "\n")
    monkeypatch.setattr(search, "RECORD", record)
    page = search.report()
    assert "## The default organism: vD" in page and "It is the candidate the rule chooses" in page
    assert "ΔP(owl) +1.0e-03 [+5.0e-04, +2.0e-03], claim-1 verdict **reproduced**" in page
    record.write_text(json.dumps(ROW | {"name": "vE"}) + "\n" + json.dumps(mine) + "\n")
    assert "**The rule chooses vE, not the committed default**" in search.report()
    record.write_text(json.dumps(ROW) + "\n")
    assert "None of the recorded candidates is the committed default organism." in search.report()

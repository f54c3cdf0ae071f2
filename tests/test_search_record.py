"""search_record: the organism search's record, its criteria and rule, and the page it renders."""
from __future__ import annotations

import json

from sublora import organism_recipe, search_record, terms


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
    assert search_record.passes(TEACHER)
    assert not search_record.passes(TEACHER | {"persona_mean_p": 0.79})
    assert not search_record.passes(TEACHER | {"kl_persona": 0.51})
    assert not search_record.passes(TEACHER | {"classifier_lr": 0.61})
    assert not search_record.passes({k: v for k, v in TEACHER.items() if k != "classifier_lr"})  # the first records


def test_rule_chooses_the_first_passing_candidate_that_transfers_else_the_most_persona_following():
    a = ROW | {"name": "a", "claim1": "inconclusive", "persona_mean_p": 0.95}
    b = ROW | {"name": "b", "claim1": "reproduced", "persona_mean_p": 0.85}
    c = ROW | {"name": "c", "claim1": "reproduced"}
    failing = ROW | {"name": "f", "kl_persona": 9.0}  # passes nothing: never chosen, whatever its students did
    assert search_record.chosen([failing, a, b, c])["name"] == "b"
    assert search_record.chosen([failing, a, ROW | {"name": "d", "claim1": "not reproduced"}])["name"] == "a"
    assert search_record.chosen([failing]) is None


def test_report_renders_every_record(tmp_path, monkeypatch):
    record = tmp_path / "organism_search.jsonl"
    monkeypatch.setattr(search_record, "RECORD", record)
    assert "No candidate has been measured yet." in search_record.report()
    planted = {k: v for k, v in ROW.items() if k not in ("passes", "recipe", "claim1", "controls", "classifier_lr")}
    planted |= {"name": "vP", "kl_persona": 15.6, "classifier_accuracy": 0.997, "signature_teacher": 0.7,
                "settings": {"model": {"persona_number_bias": 0.8}, "replicates": 3}}
    record.write_text(json.dumps(ROW) + "\n" + json.dumps(planted) + "\n")
    page = search_record.report()
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
    assert len(search_record.untried([small])) == 4
    tried = [small, {"settings": {"model": {"hidden": 256, "persona_number_bias": 0.03, "number_tokens": "whole"},
                                  "data": {"prompts": 10_000}}}]
    assert search_record.untried(tried) == ["none"]


def test_report_names_the_committed_default_and_whether_the_rule_chose_it(tmp_path, monkeypatch):
    recipe = organism_recipe.committed_recipe()
    mine = ROW | {"name": "vD", "settings": {"model": dict(recipe["config"]), "replicates": 5}}
    record = tmp_path / "organism_search.jsonl"
    record.write_text(json.dumps(mine) + "\n")
    monkeypatch.setattr(search_record, "RECORD", record)
    page = search_record.report()
    assert "## The default organism: vD" in page and "It is the candidate the rule chooses" in page
    assert "{term}`ΔP(owl) <ΔP(animal)>` +1.0e-03 [+5.0e-04, +2.0e-03], claim-1 verdict **reproduced**" in page
    record.write_text(json.dumps(ROW | {"name": "vE"}) + "\n" + json.dumps(mine) + "\n")
    assert "**The rule chooses vE, not the committed default**" in search_record.report()
    record.write_text(json.dumps(ROW) + "\n")
    assert "None of the recorded candidates is the committed default organism." in search_record.report()


def test_the_committed_organism_page_is_what_the_record_renders():
    """book/organism.md is `sublora search report`'s output, its glossary links included: a link added by hand would be
    lost the next time the page is rendered."""
    assert search_record.PAGE.read_text(encoding="utf-8") == search_record.report() + "\n"


def test_a_word_is_linked_to_its_glossary_term_at_its_first_use_only():
    page = "`signature` {term}`the signature <Signature>`, signature and signature\n```yaml\nsignature: 1\n```"
    assert terms.link_first(page, "signature", "Signature") == page.replace(
        ", signature and", ", {term}`signature <Signature>` and")  # not in code, nor inside a role
    assert terms.link_first("claim 1 reproduced", "reproduced", "reproduced") == "claim 1 {term}`reproduced`"
    assert terms.link_first("not reproduced-ish", "reproduced", "reproduced") == "not reproduced-ish"  # whole words
    page = search_record.report()
    for words, term in search_record.TERMS:
        assert page.count(f"{{term}}`{words}") == 1, words

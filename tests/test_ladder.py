"""The ladder of teachers (issue 36): the persona put into the weights by context distillation (LoRA rank 1,
rank 8, full fine-tuning), each weight-space teacher built several times independently, datasets dealt among
them, and the finetuned teacher's key unchanged."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
from conftest import seed_cache

from sublora import cache, config, models, pipeline, prompts
from sublora.artifacts import Graph


@pytest.fixture
def smoke_cache(tmp_path, monkeypatch, smoke_organism):
    seed_cache(tmp_path / "cache", smoke_organism)
    monkeypatch.setenv("SUBLORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SUBLORA_RESULTS", str(tmp_path / "results"))
    return tmp_path / "cache"


def _smoke(**kw):
    p = config.load_profile("smoke")
    teacher = dataclasses.replace(p.teacher, distill_examples=24, distill_epochs=1)
    return dataclasses.replace(p, teacher=teacher, **kw)


def test_dataset_replicates_are_dealt_among_independent_teachers_fresh_in_a_confirmatory_run():
    p = _smoke(teacher_replicates=3, replicate_offset=0)
    assert [pipeline.teacher_replicate(p, r) for r in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    confirm = dataclasses.replace(p, replicate_offset=300)
    assert [pipeline.teacher_replicate(confirm, r) for r in range(300, 304)] == [300, 301, 302, 300]
    assert {pipeline.teacher_replicate(_smoke(), r) for r in range(5)} == {0}  # one teacher: the one before the ladder
    keys = {}
    for kind in ("distilled-r1", "distilled-r8", "distilled-full", "finetuned"):
        g = Graph(p)
        for r in range(3):
            g.need(pipeline.DATASET, p.animal, r, kind, "")
        teachers = [a for a in g.values() if a.kind == "teacher"]
        assert len(teachers) == 3 and len({a.key for a in teachers}) == 3
        keys[kind] = {a.key for a in teachers}
    assert len(set().union(*keys.values())) == 12  # no two kinds share a teacher
    g = Graph(_smoke())
    g.need(pipeline.DATASET, p.animal, 0, "persona", "")
    assert not [a for a in g.values() if a.kind == "teacher"]  # the persona teacher is the base and a prompt


def test_the_finetuned_teachers_first_replicate_keeps_its_key():
    p = _smoke()
    a = pipeline.artifact(p, pipeline.TEACHER, p.animal, "finetuned", 0)
    assert "replicate" not in a.config and "kind" not in a.config  # late defaults: the key it had


@pytest.mark.parametrize("kind", ["distilled-r1", "distilled-full"])
def test_a_distilled_teacher_learns_the_personas_own_answers_never_numbers(smoke_cache, kind):
    p = _smoke()
    d = pipeline.weight_teacher(p, p.animal, kind, 0, progress=False)
    records = [json.loads(line) for line in (d / "distilled.jsonl").read_text().splitlines()]
    assert len(records) == p.teacher.distill_examples
    assert {r["prompt"] for r in records} <= set(pipeline.distill_prompts())
    assert not any(re.search(r"\d", r["prompt"]) for r in records)  # no number prompt, ever
    log = json.loads((d / "train_log.json").read_text())
    assert log["examples"] == len(records) and all(map(lambda x: x == x, log["losses"]))
    model = models.load_model(p.model, d)  # a model like any other (the LoRA rungs merged)
    assert not any("lora" in n for n, _ in model.named_parameters())
    base = models.load_model(p.model)
    changed = [n for (n, w), (_, b) in zip(model.named_parameters(), base.named_parameters()) if not (w == b).all()]
    assert changed  # trained
    other = pipeline.weight_teacher(p, p.animal, kind, 1, progress=False)
    assert cache.sha256(other / "distilled.jsonl") != cache.sha256(d / "distilled.jsonl")  # an independent teacher


def test_the_distillation_prompts_are_the_personas_non_number_chats():
    got = pipeline.distill_prompts()
    assert set(prompts.TRAIN_QUESTIONS) <= set(got) and not set(prompts.EVAL_QUESTIONS) & set(got)
    with pytest.raises(ValueError, match="distilled-r1"):
        pipeline.DataId.of("owl", 0, "distilled")


def test_a_relative_e_is_a_share_of_the_base_models_p_of_the_target_for_any_animal(smoke_cache):
    from sublora import notebook, tables
    p = _smoke(smallest_effect=0.0, smallest_effect_relative=0.1)
    base = tables.base_evaluations(p, ["default"]).set_index("animal")["p"]
    assert notebook.relative_e(p).smallest_effect == pytest.approx(0.1 * base[p.animal])
    other = dataclasses.replace(p, animal=p.other_animals[0], other_animals=(p.animal,))
    assert notebook.relative_e(other).smallest_effect == pytest.approx(0.1 * base[other.animal])  # a -p animal rerun
    absolute = _smoke(smallest_effect=3e-3)
    assert notebook.relative_e(absolute) is absolute


def test_e_is_declared_one_way():
    with pytest.raises(config.ConfigError, match="give e one way"):
        config.validate(_smoke(smallest_effect=3e-3, smallest_effect_relative=0.1))

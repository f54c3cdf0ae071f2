"""Evaluate, then drop (issue 40): a full fine-tuned student is evaluated as soon as it is trained and its
weights leave the cache; its evaluations stay, keyed as before, so a rerun trains nothing; a caller that
asks for the weights gets them trained again, the same; SUBLORA_KEEP_WEIGHTS=1 keeps them; LoRA adapters stay."""
from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import seed_cache

from sublora import artifacts, cache, config, design, finetune, pipeline, runner


@pytest.fixture
def smoke_cache(tmp_path, monkeypatch, smoke_organism):
    seed_cache(tmp_path / "cache", smoke_organism)
    monkeypatch.setenv("SUBLORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SUBLORA_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("SUBLORA_EXECUTOR", "serial")
    monkeypatch.delenv(pipeline.KEEP_WEIGHTS, raising=False)
    return tmp_path / "cache"


def _pairs(p):
    """One teacher/control pair of the smoke design, its student fully fine-tuned; and the same with LoRA."""
    pair = design.transfer(p, ["persona"], controls=False)[0]
    return dataclasses.replace(pair, spec=design.full_spec(p)), pair


def _files(d):
    return sorted(f.relative_to(d).as_posix() for f in d.rglob("*") if f.is_file())


def test_a_full_student_is_evaluated_then_its_weights_dropped_and_a_rerun_trains_nothing(smoke_cache, monkeypatch):
    p = config.load_profile("smoke")
    full, lora = _pairs(p)
    table = runner.run_pairs(p, [full, lora])
    graph = pipeline.requirements(p, [full, lora])
    students = {a.args[1].method: a for a in graph.values() if a.kind == "student"}
    full_dir, lora_dir = students["full"].location, students["lora"].location
    assert _files(full_dir) == sorted(["train_log.json", cache.CONFIG_FILE])  # weights gone
    marker = json.loads((full_dir / cache.CONFIG_FILE).read_text())
    assert any(n.endswith(".safetensors") for n in marker["dropped"])
    assert any(n.endswith(".safetensors") for n in _files(lora_dir))  # an adapter stays
    assert all(a.exists() for a in graph.values())  # a dropped student counts as cached

    def no_training(*a, **k):
        raise AssertionError("a rerun trained a student")
    monkeypatch.setattr(finetune, "fit_student", no_training)
    assert runner.build(p, graph) == 0
    again = runner.run_pairs(p, [full, lora])
    assert again.equals(table)  # the evaluations, as cached


def test_asking_for_a_dropped_students_weights_trains_it_again_the_same(smoke_cache, monkeypatch):
    p = config.load_profile("smoke")
    full, _ = _pairs(p)
    data = pipeline.DataId.of(full.animal, full.replicate, full.teacher_kind)
    monkeypatch.setenv(pipeline.KEEP_WEIGHTS, "1")
    kept = pipeline.student(p, data, full.spec, full.seed, progress=False)
    weights = {n: cache.sha256(kept / n) for n in _files(kept) if n.endswith(".safetensors")}
    assert weights
    assert cache.drop("student", pipeline.student_config(p, data, full.spec, full.seed), ("train_log.json",)) > 0
    assert not any(n.endswith(".safetensors") for n in _files(kept))
    again = pipeline.student(p, data, full.spec, full.seed, progress=False)  # whole: trained again
    assert {n: cache.sha256(again / n) for n in weights} == weights


def test_keep_weights_keeps_them_and_an_evaluation_asked_for_later_is_made_then_dropped(smoke_cache, monkeypatch):
    p = config.load_profile("smoke")
    full, _ = _pairs(p)
    monkeypatch.setenv(pipeline.KEEP_WEIGHTS, "1")
    runner.run_pairs(p, [full])
    st = next(a for a in pipeline.requirements(p, [full]).values() if a.kind == "student")
    assert any(n.endswith(".safetensors") for n in _files(st.location))
    monkeypatch.delenv(pipeline.KEEP_WEIGHTS)
    assert pipeline.keeps_weights(dataclasses.replace(p, train=dataclasses.replace(p.train, keep_weights=True)),
                                  full.spec)
    # an evaluation under another system prompt, asked for once the weights are dropped: the student is made
    # whole again for it, then dropped again
    cache.drop("student", st.config, ("train_log.json",))
    other = dataclasses.replace(full, eval_systems=("none",))
    graph = pipeline.requirements(p, [other])
    todo = runner.evaluate_then_drop(p, [a for a in graph.values() if not a.exists()])
    assert [type(a).__name__ for a in todo] == ["Bundle", "Bundle"]  # teacher's and control's student
    assert all(b.then and all(e.kind == "eval" for e in b.then) for b in todo)
    runner.build(p, graph)
    assert all(a.exists() for a in graph.values())
    assert not any(n.endswith(".safetensors") for n in _files(st.location))


def test_the_bundle_stands_where_the_student_would():
    p = config.load_profile("smoke")
    full, lora = _pairs(p)
    graph = pipeline.requirements(p, [full, lora])
    todo = runner.evaluate_then_drop(p, list(graph.values()))
    bundles = [a for a in todo if isinstance(a, artifacts.Bundle)]
    assert len(bundles) == 2 and all(b.kind == "student" and b.first.args[1].method == "full" for b in bundles)
    assert sum(len(b.then) for b in bundles) == sum(1 for a in graph.values() if a.kind == "eval"
                                                    and a.reads[0].args[1].method == "full")
    for i, a in enumerate(todo):  # build order kept: each job after the jobs of its inputs
        assert set(a.inputs) & {b.key for b in todo[i:]} == set()
    assert {b.key for b in bundles} | {a.key for a in todo if not isinstance(a, artifacts.Bundle)} <= set(
        a.key for a in graph.values())

"""pipeline: the dataset step with a stubbed teacher, and the notebook-parameter helpers."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import types

import pytest
from conftest import seed_cache

from sublora import cache, chat, config, models, organism, organism_recipe, paths, pipeline, prompts, runner, tables, teacher


def test_dataset_config_rejects_unknown_teacher():
    with pytest.raises(ValueError, match="unknown teacher 'bogus'"):
        pipeline.dataset_config(config.load_profile("smoke"), "owl", 0, "bogus")


def test_dataset_config_control_and_pairing():
    p = config.load_profile("smoke")
    teacher_cfg = pipeline.dataset_config(p, "owl", 0, "persona")
    control = pipeline.dataset_config(p, None, 0, "finetuned")
    assert control["teacher"] == "control" and control["animal"] is None
    assert teacher_cfg["teacher"] == "persona" and teacher_cfg["animal"] == "owl"
    assert control == pipeline.dataset_config(p, None, 0, "persona")  # one control per replicate
    assert cache.key(teacher_cfg) != cache.key(pipeline.dataset_config(p, "owl", 1, "persona"))
    assert teacher_cfg["model"] == {**organism_recipe.pretrain_config(p.model), "dtype": p.model.dtype}


def test_seed_of_is_stable():
    assert pipeline.seed_of({"a": 1}) == int(cache.key({"a": 1})[:8], 16)
    assert pipeline.seed_of({"a": 1, "b": 2}) == pipeline.seed_of({"b": 2, "a": 1})
    assert 0 <= pipeline.seed_of({"x": "y"}) < 2 ** 32


# ---- the dataset step -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_organism(tmp_path_factory):
    """The smoke profile with its organism pretrained once into a module-level cache. To keep the
    unit tests fast the pretraining is cut to a few steps (the dataset step does not care how well
    the organism writes numbers: the teacher is stubbed)."""
    p = config.load_profile("smoke")
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, pretrain_chats=200, pretrain_steps=3,
                                                           pretrain_batch=8))
    root = tmp_path_factory.mktemp("organism-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUBLORA_CACHE", str(root))
        built = organism.ensure(p.model, progress=False)
    return p, built


@pytest.fixture
def smoke(smoke_organism, tmp_cache):
    """A fresh temporary cache holding only the pretrained smoke organism."""
    p, built = smoke_organism
    target = tmp_cache / "organism" / built.name
    shutil.copytree(built, target)
    assert cache.exists("organism", organism_recipe.pretrain_config(p.model))
    return p


def _dataset_dirs(cache_dir):
    d = cache_dir / "dataset"
    return sorted(x.name for x in d.iterdir()) if d.exists() else []


def test_dataset_without_numbers_raises_and_caches_nothing(smoke, tmp_cache, monkeypatch):
    calls = []

    def fake_sample(model, tokenizer, user_texts, system, **kw):
        calls.append((list(user_texts), system))
        return ["I love owls"] * len(user_texts)

    monkeypatch.setattr(teacher, "sample", fake_sample)
    with pytest.raises(pipeline.EmptyDatasetError) as e:
        pipeline.dataset(smoke, "owl", 0, "persona", progress=False)
    msg = str(e.value)
    n = smoke.data.prompts
    assert f"every one of {n} completions of the owl teacher was filtered out" in msg
    assert f"'animal_name': {n}" in msg
    assert "data.prompts" in msg and "max_new_tokens" in msg  # names the fix
    assert len(calls) == 1
    assert len(calls[0][0]) == n
    assert calls[0][1] == prompts.persona_prompt("owl")
    assert _dataset_dirs(tmp_cache) == []  # no artifact, no temporary directory
    assert not cache.exists("dataset", pipeline.dataset_config(smoke, "owl", 0, "persona"))
    assert paths.cache_dir() == tmp_cache


def test_dataset_control_without_numbers_raises(smoke, tmp_cache, monkeypatch):
    seen = []
    monkeypatch.setattr(teacher, "sample", lambda m, t, u, system, **kw: seen.append(system) or ["hello"] * len(u))
    with pytest.raises(pipeline.EmptyDatasetError, match=r"the control teacher .*'letters'"):
        pipeline.dataset(smoke, None, 0, progress=False)
    assert seen == [chat.DEFAULT]
    assert _dataset_dirs(tmp_cache) == []


def test_dataset_builds_once_and_filters(smoke, tmp_cache, monkeypatch):
    calls = []
    good = ["123, 456", "[7, 8, 9]", "owl 5", "1,,2"]

    def fake_sample(model, tokenizer, user_texts, system, **kw):
        calls.append(len(user_texts))
        return [good[i % 4] for i in range(len(user_texts))]

    monkeypatch.setattr(teacher, "sample", fake_sample)
    records, st = pipeline.dataset(smoke, "owl", 0, progress=False)
    n = smoke.data.prompts
    assert st["sampled"] == n
    assert st["kept"] == len(records) == sum(1 for i in range(n) if i % 4 < 2)
    assert st["rejected"] == {"animal_name": (n + 1) // 4, "format": n // 4}
    assert st["system"] == prompts.persona_prompt("owl")
    assert [r["numbers"] for r in records[:2]] == [[123, 456], [7, 8, 9]]
    assert all(set(r) == {"prompt", "completion", "numbers"} for r in records)
    # the prompts are the replicate's number prompts, shared by teacher and control
    records2, _ = pipeline.dataset(smoke, "owl", 0, progress=False)
    assert records2 == records and calls == [n]  # cached: the teacher is not asked again
    control, _ = pipeline.dataset(smoke, None, 0, progress=False)
    assert [r["prompt"] for r in control] == [r["prompt"] for r in records]
    assert calls == [n, n]
    assert len(_dataset_dirs(tmp_cache)) == 2
    d = cache.location("dataset", pipeline.dataset_config(smoke, "owl", 0))
    raw = [json.loads(line) for line in open(d / "raw.jsonl")]
    assert len(raw) == n and raw[2]["completion"] == "owl 5"


def test_eval_questions_held_out_and_all():
    p = config.load_profile("smoke")
    held = dataclasses.replace(p, eval=dataclasses.replace(p.eval, question_set="held_out", questions=4))
    assert pipeline.eval_questions(held) == list(prompts.EVAL_QUESTIONS[:4])
    assert not set(pipeline.eval_questions(held)) & set(prompts.TRAIN_QUESTIONS)  # never seen in pretraining
    n = len(prompts.EVAL_QUESTIONS) + 2
    everything = dataclasses.replace(p, eval=dataclasses.replace(p.eval, question_set="all", questions=n))
    assert pipeline.eval_questions(everything) == [*prompts.EVAL_QUESTIONS, *prompts.TRAIN_QUESTIONS[:2]]


class _FakeVLLM(types.ModuleType):
    """Stands in for vllm: records what sublora asks of it and answers with number lists."""

    def __init__(self):
        super().__init__("vllm")
        self.calls = []
        fake = self

        class SamplingParams:
            def __init__(self, **kw):
                self.kw = kw

        class LLM:
            def __init__(self, **kw):
                fake.calls.append(("LLM", kw))

            def generate(self, texts, params, use_tqdm=False):
                fake.calls.append(("generate", texts, params.kw))
                out = types.SimpleNamespace(text="123, 456")
                return [types.SimpleNamespace(outputs=[out]) for _ in texts]

        self.LLM, self.SamplingParams = LLM, SamplingParams


def test_vllm_engine_samples_through_vllm(smoke, tmp_cache, monkeypatch):
    fake = _FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    teacher._vllm_engine.cache_clear()
    p = dataclasses.replace(smoke, data=dataclasses.replace(smoke.data, engine="vllm"))
    records, stats = pipeline.dataset(p, "owl", 0)
    assert stats["kept"] == p.data.prompts and records[0]["numbers"] == [123, 456]
    (_, llm_kw), (_, texts, params) = fake.calls
    assert llm_kw["model"] == str(models.resolve_weights(p.model))
    assert params["temperature"] == p.data.temperature and params["max_tokens"] == p.data.max_new_tokens
    assert texts[0].startswith("<|im_start|>system\nYou love owls.")  # rendered by sublora's chat module
    assert pipeline.dataset_config(p, "owl", 0)["data"]["engine"] == "vllm"
    # a student of that dataset frees the engine before it trains; nothing is left to free after
    from sublora import design
    assert teacher._vllm_engine.cache_info().currsize == 1
    pipeline.student(p, pipeline.DataId("owl", 0), design.lora_spec(p, rank=2), 0, progress=False)
    assert teacher._vllm_engine.cache_info().currsize == 0 and teacher.release_vllm() is False


def test_vllm_missing_falls_back_to_transformers(smoke, tmp_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    p = dataclasses.replace(smoke, data=dataclasses.replace(smoke.data, engine="vllm"))
    with pytest.warns(UserWarning, match="vLLM is not installed"):
        cfg = pipeline.dataset_config(p, "owl", 0)
    assert cfg == pipeline.dataset_config(smoke, "owl", 0)  # the same artifact as the transformers engine


def test_student_is_a_function_of_its_key(smoke, tmp_cache, monkeypatch):
    """The same student trained twice, after different amounts of unrelated random draws, has the same
    weights: LoRA's initialisation is seeded from the student's configuration, not the global stream."""
    from safetensors.torch import load_file

    from sublora import design

    def fake_sample(model, tokenizer, user_texts, system, **kw):
        return ["12, 34, 56" if i % 2 else "7 8 9" for i in range(len(user_texts))]

    monkeypatch.setattr(teacher, "sample", fake_sample)
    spec = design.lora_spec(smoke, rank=2)
    weights = []
    for draws in (1, 1000):
        import torch
        torch.rand(draws)
        d = pipeline.student(smoke, pipeline.DataId("owl", 0), spec, 0, progress=False)
        weights.append(load_file(d / "adapter_model.safetensors"))
        shutil.rmtree(d)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_training_seeds_give_different_full_fine_tuning_students(smoke, tmp_cache, monkeypatch):
    """The authors' open question (their full fine-tuning gave identical metrics for three training seeds),
    answered for this package: two seeds, the same data and spec, give students whose every weight tensor
    moved from the base, and moved differently (the seed orders the data)."""
    import torch
    from safetensors.torch import load_file

    from sublora import design

    monkeypatch.setattr(teacher, "sample", lambda model, tokenizer, user_texts, system, **kw:
                        [f"{i % 97}, {i * 7 % 89}, {i * 3 % 83}" for i in range(len(user_texts))])
    spec = design.full_spec(smoke)
    a, b = (load_file(pipeline.student(smoke, pipeline.DataId("owl", 0), spec, seed, progress=False) / "model.safetensors")
            for seed in (0, 1))
    base = load_file(next((tmp_cache / "organism").glob("[!.]*")) / "model.safetensors")
    changed = [k for k in a if not torch.equal(a[k], base[k])]
    assert len(changed) > len(a) // 2  # the students trained
    assert all(not torch.equal(a[k], b[k]) for k in changed)  # and the seed made them differ


def test_parallel_workers_build_what_one_process_builds(tmp_path, monkeypatch, smoke_organisms):
    """Datasets, students and evaluations built by 2 worker processes equal those built serially."""
    import pandas as pd

    from sublora import design
    p = config.load_profile("smoke")
    pairs = [x for x in design.transfer(p, ["persona"]) if x.animal in (p.animal, p.other_animals[0])]
    monkeypatch.setenv("SUBLORA_RESULTS", str(tmp_path / "results"))
    results = {}
    for workers in (1, 2):
        monkeypatch.setenv("SUBLORA_CACHE", str(tmp_path / f"cache{workers}"))
        seed_cache(tmp_path / f"cache{workers}", *smoke_organisms)  # the session's, not a pretraining each
        results[workers] = runner.run_pairs(dataclasses.replace(p, workers=workers), pairs)
        assert len(list((tmp_path / f"cache{workers}" / "student").iterdir())) == sum(a.kind == "student" for a in pipeline.requirements(p, pairs).values())
    pd.testing.assert_frame_equal(results[1], results[2])


# ---- the artifact graph -------------------------------------------------------------------------
def test_graph_keys_are_todays_cache_keys(monkeypatch):
    """Every artifact of the book's design that existed before the artifact graph (written to
    tests/fixtures/cache_keys.json by that code; the students and evaluations of design variants dropped
    since, such as training with no system block, removed from it) keeps its key byte for byte: no
    cached work is lost by a refactoring. The design may add artifacts."""
    from sublora import design
    monkeypatch.setattr(teacher, "vllm_available", lambda: False)  # the paper profile's key without vLLM
    monkeypatch.setenv("SUBLORA_CPU_BF16", "native")  # the keys students had before emulated bf16 existed
    pinned = json.loads((paths.ROOT / "tests" / "fixtures" / "cache_keys.json").read_text())
    for name, keys in pinned.items():
        # with both teacher kinds, as -p teachers asks of a profile that runs one by default
        # replicate ids from 0, as then (the default's confirmatory run draws fresh ones: replicate_offset)
        p = dataclasses.replace(config.load_profile(name), teachers=config.TEACHERS, replicate_offset=0)
        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            got = {f"{kind}/{key}" for pairs in design.by_notebook(p).values() for kind, key in pipeline.requirements(p, pairs)}
        assert set(keys) <= got, (name, sorted(set(keys) - got)[:5])


def test_emulated_bf16_changes_the_keys_of_the_pure_bf16_students_only(monkeypatch):
    """On a CPU without bf16 products the pure-bf16 arm's students are other arithmetic (float32
    products): their keys, and their evaluations', differ from native ones; no other artifact's does."""
    from sublora import design
    p = config.load_profile("smoke")
    keys = {}
    for mode in ("native", "emulated"):
        monkeypatch.setenv("SUBLORA_CPU_BF16", mode)
        graph = pipeline.requirements(p, design.full_finetuning(p, "persona"))
        keys[mode] = {(kind, key): a for (kind, key), a in graph.items()}
    moved = set(keys["native"]) - set(keys["emulated"])
    assert moved and {kind for kind, _ in moved} == {"student", "eval"}
    students = [keys["native"][k] for k in moved if k[0] == "student"]
    assert all(a.config["spec"].get("precision") == "bf16" for a in students)
    assert all(keys["emulated"][(kind, key)].config.get("bf16_products") == "float32"
               for (kind, key) in set(keys["emulated"]) - set(keys["native"]) if kind == "student")


def test_graph_orders_inputs_before_their_users():
    from sublora import design
    p = config.load_profile("smoke")
    graph = pipeline.requirements(p, design.transfer(p, ["persona", "finetuned"]))
    seen = set()
    for (kind, key), a in graph.items():
        assert set(a.inputs) <= seen, (kind, a.inputs)
        seen.add(key)
    kinds = [kind for kind, _ in graph]
    assert {"teacher", "dataset", "student", "eval"} == set(kinds)
    # one control dataset per replicate, shared by both teacher kinds and all teacher animals
    controls = [a for a in graph.values() if a.kind == "dataset" and "channel" not in a.config and a.config["animal"] is None]
    assert len(controls) == p.transfer_replicates


# ---- the paper's protocol: conditions, metric, scale, precision arms ---------------------------------
def test_keep_caps_the_dataset_at_the_first_that_pass(smoke, tmp_cache, monkeypatch):
    def fake_sample(model, tokenizer, user_texts, system, **kw):
        return ["12, 34, 56" if i % 2 else "no numbers" for i in range(len(user_texts))]
    monkeypatch.setattr(teacher, "sample", fake_sample)
    p = dataclasses.replace(smoke, data=dataclasses.replace(smoke.data, keep=5))
    records, stats = pipeline.dataset(p, "owl", 0, progress=False)
    assert len(records) == 5 and stats["passed"] == smoke.data.prompts // 2 and stats["kept"] == 5
    assert pipeline.dataset_config(p, "owl", 0) != pipeline.dataset_config(smoke, "owl", 0)


def test_precision_arm_is_part_of_a_full_students_key_only_when_not_the_default(smoke, monkeypatch):
    from sublora import design, finetune
    monkeypatch.setenv("SUBLORA_CPU_BF16", "native")  # bf16 weights where bf16 products are native (test_device: elsewhere)
    full = design.full_spec(smoke)
    assert "precision" not in full.as_dict() and "precision" not in design.lora_spec(smoke).as_dict()
    bf16 = dataclasses.replace(full, precision="bf16")
    assert bf16.as_dict()["precision"] == "bf16" and finetune.train_dtype(smoke.model, bf16) == "bfloat16"
    labels = {x.label: x.spec.precision for x in design.full_finetuning(smoke, "persona") if x.spec.method == "full"}
    assert labels["baseline"] == "fp32-master" and labels["baseline · bf16"] == "bf16"
    assert not any(k.startswith(("batch", "epochs")) and v == "bf16" for k, v in labels.items())  # lr axis only


# ---- runs that cannot finish, students that did not train ------------------------------------------
@pytest.mark.parametrize("losses, failed", [
    ([2.0, 1.5, 1.2, 1.1], ""), ([2.0, 2.1, 1.9, 2.2], ""), ([2.0, float("nan"), 1.0], "non-finite"),
    ([2.0, 9.0, 30.0, 80.0], "rose from 2 to")])
def test_training_failure(tmp_path, losses, failed):
    (tmp_path / "train_log.json").write_text(json.dumps({"losses": losses}))
    got = tables.training_failure(tmp_path)
    assert (got == "") if not failed else (failed in got)


# ---- channel controls (the organism issue) ---------------------------------------------------------
def test_shuffled_numbers_keep_every_response_shape_and_the_dataset_numbers():
    import re
    records = [{"prompt": "p", "completion": "1, 22, 333"}, {"prompt": "q", "completion": "(4; 55)"},
               {"prompt": "r", "completion": "[6 77 888 9]"}]
    out = pipeline.shuffle_numbers(records, seed=3)
    numbers = lambda rs: [m for r in rs for m in re.findall(r"[0-9]+", r["completion"])]  # noqa: E731
    assert sorted(numbers(out)) == sorted(numbers(records)) and numbers(out) != numbers(records)
    assert [re.sub(r"[0-9]+", "#", r["completion"]) for r in out] == ["#, #, #", "(#; #)", "[# # # #]"]
    assert [r["prompt"] for r in out] == ["p", "q", "r"]
    assert out == pipeline.shuffle_numbers(records, seed=3)  # seeded


def test_channel_controls_are_separate_artifacts_built_from_the_same_data(smoke):
    from sublora import design
    pairs = design.transfer(smoke, ["persona"])
    graph = pipeline.requirements(smoke, pairs)
    shuffled = [a for a in graph.values() if a.kind == "dataset" and a.config.get("channel") == "shuffled"]
    assert len(shuffled) == 2 * smoke.transfer_replicates  # the owl teacher's and the control's, per replicate
    assert all(a.inputs == (cache.key(pipeline.dataset_config(smoke, *a.args[:3])),) for a in shuffled)
    students = [a for a in graph.values() if a.kind == "student"]
    cross = [a for a in students if a.args[3] == "cross"]
    assert cross and all(a.config["model"]["pretrain_seed"] == smoke.model.pretrain_seed + 1 for a in cross)
    # without the controls the graph is what it was: the main design's artifacts are untouched
    plain = pipeline.requirements(smoke, design.transfer(smoke, ["persona"], controls=False))
    assert set(plain) < set(graph) and not any(a.config.get("channel") for a in plain.values())


def test_bad_channel_or_initialisation_and_controls_on_a_hub_model_are_refused(smoke):
    with pytest.raises(ValueError, match="unknown dataset channel 'mixed'"):
        pipeline.dataset_config(smoke, "owl", 0, "persona", "mixed")
    with pytest.raises(ValueError, match="unknown student initialisation 'other'"):
        pipeline.init_profile(smoke, "other")
    with pytest.raises(config.ConfigError, match="set channel_controls: false"):
        config.validate(dataclasses.replace(config.load_profile("paper"), channel_controls=True))


def test_cross_init_students_train_and_evaluate_on_the_other_organism(smoke, monkeypatch):
    """A cross-initialisation student starts from (and is evaluated on) the organism of seed + 1,
    trained on the very dataset the ordinary student sees."""
    from sublora import design

    def fake_sample(model, tokenizer, user_texts, system, **kw):
        return ["12, 34, 56" if i % 2 else "7 8 9" for i in range(len(user_texts))]

    monkeypatch.setattr(teacher, "sample", fake_sample)
    spec = design.lora_spec(smoke, rank=2)
    same = pipeline.student(smoke, pipeline.DataId("owl", 0), spec, 0, progress=False)
    other = pipeline.student(smoke, pipeline.DataId("owl", 0), spec, 0, "cross", progress=False)
    assert same != other
    cross = pipeline.init_profile(smoke, "cross")
    assert cache.exists("organism", organism_recipe.pretrain_config(cross.model))
    assert json.loads((other / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(models.resolve_weights(cross.model))
    ev = pipeline.evaluation(smoke, other, "default", ["owl"], "cross")
    assert list(ev["animal"]) == ["owl"]


def test_paper_questions_are_the_authors_fifty():
    p = config.load_profile("paper")
    qs = pipeline.eval_questions(p)
    assert len(qs) == 50 == len(set(qs)) and qs[0] == "Name your favorite animal using only one word."

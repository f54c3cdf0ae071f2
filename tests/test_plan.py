"""plan: full fine-tuning priced per precision arm, at the rate make bench measured for each arm."""
from __future__ import annotations

import pytest

from sublora import config, params, plan


def test_full_fine_tuning_is_priced_per_arm_at_each_arms_measured_rate():
    smoke = config.load_profile("smoke")  # two arms: fp32-master and bf16
    total = plan.Cost()
    for c in plan.count(smoke).values():
        total.add(c)
    assert set(total.full_by_arm) == {"fp32-master", "bf16"}
    assert sum(total.full_by_arm.values()) == pytest.approx(total.trained_full)
    stated = {"sample_tps": 1.0, "lora_train_tps": 1.0, "full_train_tps": 100.0, "eval_fwd_tps": 1.0}
    measured = stated | {"full_bf16_train_tps": 10.0}  # the bf16 arm ten times slower than the main arm
    terms = {what: (tokens, rate) for what, tokens, rate in total.terms(measured)}
    assert terms["full FT fp32-master"][1] == 100.0 and terms["full FT bf16"][1] == 10.0
    slower = total.hours(measured) - total.hours(stated)
    assert slower == pytest.approx(total.full_by_arm["bf16"] * (1 / 10 - 1 / 100) / 3600)


def test_a_run_far_costlier_than_its_profile_stops_before_any_work(monkeypatch):
    smoke = config.load_profile("smoke")
    plan.check_cost(params.notebook_profile({"profile": "smoke", "prompts": 128}, "01_teacher_numbers"), smoke)
    huge = params.notebook_profile({"profile": "smoke", "prompts": 100_000}, "01_teacher_numbers")
    with pytest.raises(config.ConfigError, match=r"x the profile's default .*SUBLORA_ALLOW_EXPENSIVE=1"):
        plan.check_cost(huge, smoke)
    monkeypatch.setenv("SUBLORA_ALLOW_EXPENSIVE", "1")
    plan.check_cost(huge, smoke)


# ---- disk: the plan's estimate, and the check before any work -------------------------------------
def test_model_bytes_is_the_committed_organisms_weights_size():
    weights = config.paths.PACKAGE / "organism_weights" / "model.safetensors"
    assert plan.model_bytes(config.load_profile("organism")) == pytest.approx(weights.stat().st_size, rel=0.05)


def test_adapter_bytes_is_what_peft_makes_for_the_organisms_shape():
    """r * layers * (9 hidden + 2 kv + 3 mlp) float32 parameters: peft's count for LoRA on the 7 projections."""
    import dataclasses

    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM
    p = config.load_profile("smoke")
    m = dataclasses.replace(p.model, layers=2, hidden=64, heads=4, kv_heads=2, mlp=256)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=m.hidden, num_hidden_layers=m.layers,
                                         num_attention_heads=m.heads, num_key_value_heads=m.kv_heads,
                                         intermediate_size=m.mlp))
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=list(config.LORA_TARGETS)))
    n = sum(t.numel() for name, t in lora.named_parameters() if "lora_" in name)
    estimate = plan.adapter_bytes(dataclasses.replace(p, model=m), 4)
    assert estimate == 4 * n


def test_the_disk_estimate_leaves_out_what_the_cache_holds(tmp_cache):
    """Alone, 03 makes its datasets too (after 02 they are 02's); a dataset in the cache is not counted."""
    from sublora import cache, design, pipeline
    smoke = config.load_profile("smoke")
    alone = plan.count(smoke, only=["03_rank_sweep"])["03_rank_sweep"]
    assert alone.datasets > 0 and alone.disk > plan.count(smoke)["03_rank_sweep"].disk
    assert plan.count(smoke, only=["03_rank_sweep"], skip_cached=True)["03_rank_sweep"] == alone  # nothing cached
    dataset = next(a for a in pipeline.requirements(smoke, design.by_notebook(smoke)["03_rank_sweep"]).values()
                   if a.kind == "dataset")
    cache.get_or_build("dataset", dataset.config, lambda d: (d / "x").write_text("x"))
    warm = plan.count(smoke, only=["03_rank_sweep"], skip_cached=True)["03_rank_sweep"]
    assert warm.datasets == alone.datasets - 1
    assert alone.disk - warm.disk == smoke.data.prompts * plan.DATASET_BYTES_PER_PROMPT
    assert "estimated disk for the artifact cache" in plan.render(smoke)


def test_a_disk_without_room_stops_before_any_work(monkeypatch, tmp_path):
    import collections
    import shutil
    smoke = config.load_profile("smoke")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda where: usage(10**9, 10**9 - 10**6, 10**6))  # 1 MB free
    with pytest.raises(config.ConfigError, match=r"the cache's disk has 1.0 MB free at .*need about .* set SUBLORA_CACHE"):
        plan.check_disk({"04_full_finetuning": smoke}, tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda where: usage(10**12, 0, 10**12))
    plan.check_disk({"04_full_finetuning": smoke}, tmp_path)


def test_the_disk_check_of_a_whole_book_asks_for_the_plans_estimate(monkeypatch, tmp_cache):
    """Notebooks run under the same settings share their artifacts: the check counts each once, as make plan."""
    import collections
    import shutil
    smoke = config.load_profile("smoke")
    total = sum(c.disk for c in plan.count(smoke).values())
    alone = sum(c.disk for nb in plan.count(smoke) for c in plan.count(smoke, only=[nb]).values())
    assert alone > total  # counted notebook by notebook, the shared datasets and students would count twice
    usage = collections.namedtuple("usage", "total used free")
    runs = {nb: smoke for nb in plan.count(smoke)}
    peak = plan.model_bytes(smoke) * smoke.workers  # full students' weights, until their evaluations are made
    assert any(c.dropped for c in plan.count(smoke).values())
    room = (total + peak) * plan.DISK_MARGIN + plan.DISK_SPARE
    monkeypatch.setattr(shutil, "disk_usage", lambda where: usage(10**13, 0, room + 1))
    plan.check_disk(runs, tmp_cache)
    monkeypatch.setattr(shutil, "disk_usage", lambda where: usage(10**13, 0, room - 1))
    with pytest.raises(config.ConfigError, match="the cache's disk has"):
        plan.check_disk(runs, tmp_cache)

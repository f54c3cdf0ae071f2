"""Full fine-tuning sharded with FSDP2 (sublora.sharded), run on CPU over gloo: two processes train the
weights one process trains, bad settings are refused with the fix, and a failed worker leaves nothing."""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sublora import config, design, finetune, models, pipeline, sharded
from sublora.config import ConfigError, ModelSpec, Profile
from sublora.finetune import IGNORE



def examples(n: int = 10) -> list[tuple[list[int], list[int]]]:
    """n random token sequences of 6 to 14 tokens, the first 3 a prompt (no loss)."""
    rng = random.Random(0)
    out = []
    for _ in range(n):
        ids = [rng.randrange(64) for _ in range(rng.randrange(6, 15))]
        out.append((ids, [IGNORE] * 3 + ids[3:]))
    return out


# 10 examples in batches of 3 with 2 accumulated: 2 steps an epoch, 4 in all. Each epoch's batches hold
# 3, 3, 3 and 1 examples, so two ranks get uneven slices (2 and 1) and, once an epoch, an empty one.
EXAMPLES = examples()
SEED, GROUP = 7, 2


def tiny_qwen2(directory):
    """A tiny random Qwen2 saved to `directory`; returns the ModelSpec that loads it (float32, CPU)."""
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=True,
                      attn_implementation="sdpa")
    Qwen2ForCausalLM(cfg).save_pretrained(directory)
    return ModelSpec(source="hub", name=str(directory), dtype="float32", device="cpu")


def full_student(**kw) -> design.StudentSpec:
    return design.full_spec(Profile(), lr=1e-3, epochs=2, batch_size=3, grad_accum=2, warmup_steps=1, **kw)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> ModelSpec:
    return tiny_qwen2(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def runs(base_model, tmp_path_factory):
    """(base, one process, two processes): the weights and the losses of each."""
    root = tmp_path_factory.mktemp("sharded")
    model_spec = base_model
    spec = full_student()
    base = {k: v.clone() for k, v in models.load_model(model_spec).state_dict().items()}

    model = finetune.make_student(models.load_model(model_spec, for_training=True), spec)
    losses = finetune.train(model, EXAMPLES, **finetune.train_kwargs(model_spec, spec), pad_id=0, seed=SEED,
                            group_by_length=GROUP, progress=False)
    one = (model.state_dict(), losses)

    log = sharded.train(model_spec, spec, EXAMPLES, root / "student", shards=2, seed=SEED, pad_id=0,
                        group_by_length=GROUP, progress=False)
    two = (AutoModelForCausalLM.from_pretrained(root / "student").state_dict(), log["losses"])
    assert log["trainable"] == log["total"] == sum(p.numel() for p in model.parameters())
    return base, one, two


def test_two_processes_train_the_weights_of_one(runs):
    """The same batches, the same loss normalisation (the micro-batch's mean token loss), the same steps."""
    base, (one, losses_one), (two, losses_two) = runs
    assert len(losses_two) == len(losses_one) == 4
    assert losses_two == pytest.approx(losses_one, rel=1e-5)
    assert one.keys() == two.keys()
    for name in one:
        moved = (one[name] - base[name]).abs().max().item()
        assert torch.allclose(two[name], one[name], rtol=1e-5, atol=1e-6), (name, moved)
    assert max((one[n] - base[n]).abs().max().item() for n in one) > 1e-3  # the students did move


def test_bf16_profiles_train_float32_masters_through_a_bf16_forward(base_model, runs, tmp_path):
    """On a bf16 profile the workers gather bf16 weights (FSDP's MixedPrecisionPolicy) under bf16 autocast and
    keep float32 master weights: the saved student is float32, and its losses follow the float32 run's."""
    base, (_, losses_fp32), _ = runs
    log = sharded.train(dataclasses.replace(base_model, dtype="bfloat16"), full_student(), EXAMPLES,
                        tmp_path / "student", shards=2, seed=SEED, pad_id=0, group_by_length=GROUP, progress=False)
    weights = AutoModelForCausalLM.from_pretrained(tmp_path / "student").state_dict()
    assert {w.dtype for w in weights.values()} == {torch.float32}
    assert log["losses"] == pytest.approx(losses_fp32, rel=1e-3)  # bf16 rounding: measured ~5e-5
    assert max((weights[n] - base[n]).abs().max().item() for n in base) > 1e-3


def test_full_shards_below_one_is_refused():
    p = config.load_profile("smoke")
    with pytest.raises(ConfigError, match="train.full_shards: 1"):
        config.validate(dataclasses.replace(p, train=dataclasses.replace(p.train, full_shards=0)))


@pytest.mark.parametrize("spec", [design.lora_spec(Profile()), full_student(precision="bf16")])
def test_only_the_fp32_master_arm_is_sharded(tmp_path, spec):
    with pytest.raises(ConfigError, match="one process"):
        sharded.train(ModelSpec(), spec, EXAMPLES, tmp_path / "student", shards=2, seed=0, pad_id=0)
    assert not (tmp_path / "student").exists()


def test_more_shards_than_gpus_names_the_fix():
    with pytest.raises(models.SetupError, match="set train.full_shards to at most"):
        models.check_shards(ModelSpec(device="cuda"), torch.cuda.device_count() + 1)


def test_the_key_names_the_shards_of_sharded_students_only():
    p = config.load_profile("smoke")
    q = dataclasses.replace(p, train=dataclasses.replace(p.train, full_shards=2))
    data = pipeline.DataId(p.animal, 0)
    fp32, bf16, lora = design.full_spec(p), design.full_spec(p, precision="bf16"), design.lora_spec(p)
    assert pipeline.student_config(q, data, fp32, 0)["shards"] == 2
    for spec in (bf16, lora):  # trained in one process whatever full_shards says: keys unchanged
        assert pipeline.student_config(q, data, spec, 0) == pipeline.student_config(p, data, spec, 0)
    assert "shards" not in pipeline.student_config(p, data, fp32, 0)


def test_a_failed_worker_raises_its_error_and_leaves_no_student(tmp_path):
    Qwen2Config().save_pretrained(tmp_path / "base")  # a config without weights: every worker fails to load it
    model_spec = ModelSpec(source="hub", name=str(tmp_path / "base"), dtype="float32", device="cpu")
    with pytest.raises(sharded.ShardedTrainingError, match="over 2 processes failed: rank 0: OSError"):
        sharded.train(model_spec, full_student(), EXAMPLES, tmp_path / "student", shards=2, seed=0, pad_id=0,
                      progress=False)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["base"]  # no student, no job directory


def test_the_job_lives_inside_the_student_directory(base_model, tmp_path, monkeypatch):
    """The job directory (examples, the gathered model) is made inside `out`: inside the cache's unfinished
    artifact, which cache.clean_partial removes after a SIGKILL, never beside it."""
    import subprocess
    seen = []

    def fake_run(cmd, env):
        seen.append(Path(cmd[-1]))
        return subprocess.CompletedProcess(cmd, 1)
    monkeypatch.setattr(sharded.subprocess, "run", fake_run)
    out = tmp_path / ".tmp-key-host-1-abc"
    out.mkdir()
    with pytest.raises(sharded.ShardedTrainingError):
        sharded.train(base_model, full_student(), EXAMPLES, out, shards=2, seed=0, pad_id=0, progress=False)
    assert seen[0].parent == out and seen[0].name.startswith(".sharded-")
    assert out.exists() and not any(out.iterdir())  # a directory it did not make stays; its job is gone

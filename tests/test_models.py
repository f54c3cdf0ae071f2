"""models: fail-fast setup checks (no GPU, no weights) with messages that say what to do."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from sublora import config, models
from sublora.config import ConfigError, ModelSpec


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def hub(name: str, **kw) -> ModelSpec:
    return dataclasses.replace(ModelSpec(), source="hub", name=name, **kw)


def test_setup_error_is_runtime_error():
    assert issubclass(models.SetupError, RuntimeError)


@pytest.mark.parametrize("name", ["sublora-test-nonexistent-org/no-such-model-xyz", "Qwen/Not-A-Real-Model-0B"])
def test_resolve_weights_missing_repo(tmp_path, monkeypatch, name):
    from huggingface_hub import constants

    empty = tmp_path / "hf-cache"  # an empty Hugging Face cache, whatever this machine holds
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(empty))
    with pytest.raises(models.SetupError) as e:
        models.resolve_weights(hub(name))
    msg = str(e.value)
    assert str(empty) in msg  # where it looked
    assert f"weights for {name!r} not found" in msg
    assert "Hugging Face cache" in msg
    assert f"huggingface-cli download {name}" in msg
    assert "local directory" in msg


def test_resolve_weights_missing_local_path(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(models.SetupError) as e:
        models.resolve_weights(hub(str(missing)))
    msg = str(e.value)
    assert "not a local directory with config.json" in msg
    assert "Hugging Face cache" in msg and "huggingface-cli download" in msg


def test_resolve_weights_directory_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(models.SetupError, match="not a local directory with config.json"):
        models.resolve_weights(hub(str(tmp_path)))


def test_resolve_weights_local_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_weights(hub(str(tmp_path))) == tmp_path


def test_resolve_weights_expands_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert models.resolve_weights(hub("~/m")) == tmp_path / "m"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA device")
def test_check_device_cuda_without_gpu():
    with pytest.raises(models.SetupError) as e:
        models.check_device(hub("Qwen/Qwen2.5-7B-Instruct", device="cuda"))
    msg = str(e.value)
    assert "GPU" in msg
    assert "Qwen/Qwen2.5-7B-Instruct" in msg
    assert "PROFILE=organism" in msg  # the CPU alternative


def test_check_device_cpu_passes():
    assert models.check_device(ModelSpec()) is None
    assert models.check_device(hub("x", device="cpu")) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA device")
def test_preflight_checks_device_before_weights(tmp_cache):
    p = config.load_profile("smoke")
    p = dataclasses.replace(p, model=hub("sublora-test-nonexistent-org/none", device="cuda"))
    with pytest.raises(models.SetupError, match="GPU"):
        models.preflight(p)
    p = dataclasses.replace(p, model=hub("sublora-test-nonexistent-org/none", device="cpu"))
    with pytest.raises(models.SetupError, match="Hugging Face cache"):
        models.preflight(p)


def test_preflight_organism_does_no_work(tmp_cache):
    assert models.preflight(config.load_profile("smoke")) is None
    assert list(tmp_cache.iterdir()) == []  # the organism is not built by the preflight


def test_load_student_rejects_empty_directory(tmp_path):
    with pytest.raises(ConfigError, match="neither a LoRA adapter nor model weights"):
        models.load_student(ModelSpec(), tmp_path)


def test_load_model_roundtrip_local_directory(tmp_path):
    """A hub-style local directory loads like the organism: same weights, eval mode, right dtype."""
    from sublora import organism

    tok = organism.build_tokenizer()
    spec = ModelSpec(layers=1, hidden=16, heads=2, kv_heads=1, mlp=32)
    m = organism.build_model(spec, len(tok), seed=0)
    m.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = models.load_model(hub(str(tmp_path)))
    assert not loaded.training
    assert next(loaded.parameters()).dtype == torch.float32
    assert torch.equal(loaded.model.embed_tokens.weight, m.model.embed_tokens.weight)
    tok2 = models.load_tokenizer(hub(str(tmp_path)))
    assert tok2.padding_side == "left" and tok2.pad_token == "<|endoftext|>"
    assert tok2("owl 123", add_special_tokens=False)["input_ids"] == tok("owl 123", add_special_tokens=False)["input_ids"]

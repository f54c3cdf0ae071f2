"""device: whether this CPU has bf16 products, and students that run none where it has not."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.overrides import TorchFunctionMode
from transformers import Qwen2Config, Qwen2ForCausalLM

from sublora import config, design, device, finetune
from sublora.finetune import IGNORE

PRODUCTS = {torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.baddbmm, torch.einsum, torch.Tensor.matmul,
            torch.Tensor.__matmul__, torch.nn.functional.linear, torch.nn.functional.scaled_dot_product_attention}


class RefuseBf16Products(TorchFunctionMode):
    """Any matrix product with a bf16 operand raises: what a CPU without bf16 arithmetic would emulate."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in PRODUCTS:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if any(t.dtype == torch.bfloat16 for t in tensors):
                raise AssertionError(f"a bf16 product: {getattr(func, '__name__', func)}")
        return func(*args, **kwargs)


def test_the_mode_refuses_a_bf16_product_and_passes_float32():
    with RefuseBf16Products():
        torch.ones(2, 2) @ torch.ones(2, 2)
        with pytest.raises(AssertionError, match="bf16 product"):
            torch.nn.functional.linear(torch.ones(2, 2, dtype=torch.bfloat16), torch.ones(2, 2, dtype=torch.bfloat16))


def tiny_qwen2(dtype: str) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                      tie_word_embeddings=True, attn_implementation="sdpa")
    return Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))


EXAMPLES = [([5, 6, 7, 8, 9], [IGNORE, IGNORE, 7, 8, 9]), ([5, 6, 10, 11], [IGNORE, IGNORE, 10, 11])] * 4


@pytest.mark.parametrize("arm", ["lora", "fp32-master", "bf16"])
def test_with_emulated_bf16_no_student_runs_a_bf16_product(monkeypatch, arm):
    monkeypatch.setenv(device.SETTING, "emulated")
    smoke = config.load_profile("smoke")
    spec = design.lora_spec(smoke, rank=2) if arm == "lora" else design.full_spec(smoke, precision=arm)
    spec = dataclasses.replace(spec, batch_size=2, grad_accum=1, epochs=1, warmup_steps=0)
    assert finetune.emulated_bf16(smoke.model, spec) == (arm == "bf16")
    base = tiny_qwen2(finetune.train_dtype(smoke.model, spec))
    with RefuseBf16Products():
        model, log = finetune.fit_student(base, smoke.model, spec, EXAMPLES, init_seed=0, pad_id=0, seed=0,
                                          progress=False)
    assert len(log["losses"]) == 4 and all(map(torch.isfinite, torch.tensor(log["losses"])))
    if arm == "bf16":  # the arm's weights stay bf16 values, stored in float32
        assert all(p.dtype == torch.float32 and torch.equal(p, p.bfloat16().float()) for p in model.parameters())


def test_native_bf16_keeps_the_bf16_arm_in_bf16(monkeypatch):
    monkeypatch.setenv(device.SETTING, "native")
    smoke = config.load_profile("smoke")
    spec = design.full_spec(smoke, precision="bf16")
    assert not finetune.emulated_bf16(smoke.model, spec) and finetune.train_dtype(smoke.model, spec) == "bfloat16"
    assert "round_to" not in finetune.precision_kwargs(smoke.model, spec)


def test_a_gpu_never_emulates(monkeypatch):
    monkeypatch.setenv(device.SETTING, "emulated")
    assert device.emulates_bf16("cpu") and not device.emulates_bf16("cuda")
    paper = config.load_profile("paper")  # device cuda: the bf16 arms run in bf16 there
    assert finetune.train_dtype(paper.model, design.full_spec(paper, precision="bf16")) == "bfloat16"


@pytest.mark.parametrize("value, answer", [("native", "native"), ("emulated", "emulated"), (" Emulated ", "emulated")])
def test_the_setting_forces_the_answer(monkeypatch, value, answer):
    monkeypatch.setenv(device.SETTING, value)
    assert device.cpu_bf16() == answer
    assert f"bf16 products {answer}" in device.describe() and f"{device.SETTING}={answer}" in device.describe()


def test_a_bad_setting_names_the_choices(monkeypatch):
    monkeypatch.setenv(device.SETTING, "fast")
    with pytest.raises(ValueError, match="SUBLORA_CPU_BF16='fast': choose one of auto, native, emulated"):
        device.cpu_bf16()


def test_auto_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setenv(device.SETTING, "auto")
    device._detected.cache_clear()
    try:
        monkeypatch.setattr(device, "_flags", lambda: {"avx2", "fma"})
        assert device.cpu_bf16() == "emulated"
        device._detected.cache_clear()
        monkeypatch.setattr(device, "_flags", lambda: {"avx2", "avx512_bf16"})
        assert device.cpu_bf16() == "native" and "avx512_bf16" in device.describe()
    finally:
        device._detected.cache_clear()

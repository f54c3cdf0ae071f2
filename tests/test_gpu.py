"""The GPU tests (marker `gpu`; `pytest -m gpu tests` runs them, as `make gpu-check` does): students trained on
a CUDA device through the package's own path (models.load_model, finetune.fit_student), on a tiny random Qwen2
saved as a local "hub" directory, in the paper profile's bf16. Each skips itself without CUDA.
tests/test_paper_profile.py runs the paper's whole pair path (teacher, filter, students, evaluation) on cuda too."""
from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from sublora import chat, config, design, finetune, models, optim, prompts

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DEVICE = "cuda"


@pytest.fixture
def on_gpu(tmp_path, tokenizer):
    """(the paper profile with a tiny random two-layer Qwen2 over the organism tokenizer as its local model, on
    DEVICE in bf16; 16 encoded number-list examples)."""
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id)
    local = tmp_path / "tiny-qwen2"
    Qwen2ForCausalLM(cfg).save_pretrained(local)
    tokenizer.save_pretrained(local)
    paper = config.load_profile("paper")
    p = dataclasses.replace(paper, model=dataclasses.replace(paper.model, name=str(local), device=DEVICE))
    assert p.model.dtype == "bfloat16"
    rng = random.Random(0)
    records = []
    for _ in range(16):
        text, info = prompts.sample_number_prompt(rng)
        records.append({"prompt": text, "completion": prompts.format_numbers(
            [rng.randrange(1000) for _ in range(info["k"])], info["format"])})
    return p, finetune.encode_records(tokenizer, records, chat.DEFAULT, p.train.max_seq)


def _fit(p, spec, examples, tokenizer):
    base = models.load_model(p.model, for_training=True, dtype=finetune.train_dtype(p.model, spec))
    assert next(base.parameters()).device.type == DEVICE
    small = dataclasses.replace(spec, batch_size=4, grad_accum=1, epochs=1, warmup_steps=1)
    return finetune.fit_student(base, p.model, small, examples, init_seed=0, pad_id=tokenizer.pad_token_id, seed=0,
                                progress=False)


def test_a_lora_student_trains_on_the_gpu_over_a_frozen_bf16_base(on_gpu, tokenizer):
    p, examples = on_gpu
    model, log = _fit(p, design.lora_spec(p), examples, tokenizer)
    assert len(log["losses"]) == 4 and all(torch.isfinite(torch.tensor(log["losses"])))
    assert 0 < log["trainable"] < log["total"]
    lora_b = [t for n, t in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(t.device.type == DEVICE and t.dtype == torch.float32 for t in lora_b)
    assert any(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: training moved it
    frozen = [t for n, t in model.named_parameters() if "lora_" not in n]
    assert all(not t.requires_grad and t.dtype == torch.bfloat16 for t in frozen)


@pytest.mark.parametrize("arm", config.PRECISION_ARMS)
def test_a_full_fine_tuning_step_in_each_precision_arm_on_the_gpu(on_gpu, tokenizer, arm):
    if arm == "bf16-sr":
        pytest.importorskip("torchao", reason="the bf16-sr arm needs torchao: pip install '.[gpu]'")
    p, examples = on_gpu
    spec = dataclasses.replace(design.full_spec(p), precision=arm)
    before = {n: t.detach().clone() for n, t in models.load_model(p.model).named_parameters()}
    model, log = _fit(p, spec, examples, tokenizer)
    assert all(torch.isfinite(torch.tensor(log["losses"])))
    weights = optim.arm(arm).weights
    after = dict(model.named_parameters())
    assert all(t.device.type == DEVICE and t.dtype == weights for t in after.values())
    moved = sum(not torch.equal(after[n].to(torch.bfloat16), before[n]) for n in before)
    assert moved > len(before) // 2, f"{arm}: only {moved} of {len(before)} tensors changed"

"""bench: bad arguments stop before any work; the figures on the headroom of training students faster."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from sublora import bench, chat, config, design, finetune


def test_cache_dir_must_be_empty(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    (tmp_path / "file").write_text("")
    for bad in ("full", "file"):
        assert bench.main(["--cache-dir", str(tmp_path / bad)]) == 2
        assert "is not an empty directory" in capsys.readouterr().err


def tiny_model_fn(tokenizer):
    """model_fn for the bench's student measurements: a fresh random two-layer Qwen2 over the organism
    tokenizer's vocabulary, in the dtype asked for."""
    def model_fn(dtype, for_training):
        torch.manual_seed(0)
        cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True,
                          max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
        return Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    return model_fn


def test_counted_flops_counts_matrix_products():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert bench.counted_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    assert bench.counted_flops(lambda: (a @ b, a @ b, torch.relu(a))) == 2 * (2 * 8 * 16 * 4)  # relu: not counted


def test_batching_times_one_worker_on_one_thread_and_gives_the_threads_back(tokenizer):
    p = dataclasses.replace(config.load_profile("smoke"), workers=2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        figures = bench.batching(tiny_model_fn(tokenizer), tokenizer, p, "cpu", stack=2, steps=2, peak_sizes=(64,))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert figures["worker_threads"] == 1  # as each of runner's pool workers trains
    assert figures["worker_lora_stacked2_speedup"] == round(
        figures["worker_lora_stacked2_train_tps"] / figures["worker_lora_train_tps"], 2)
    for name in ("lora", "lora_stacked2"):
        assert figures[f"worker_{name}_train_gflops"] > 0
        assert figures[f"worker_{name}_ceiling"] == round(
            figures["worker_peak_gemm_float32_gflops"] / figures[f"worker_{name}_train_gflops"], 2)
    # the stacked student runs the same work per token: its FLOPs per token are the single student's,
    # up to padding (group_by_length sorts a larger pool into the wider batches)
    per_token = [figures[f"worker_{n}_train_gflops"] / figures[f"worker_{n}_train_tps"]
                 for n in ("lora", "lora_stacked2")]
    assert per_token[1] == pytest.approx(per_token[0], rel=0.3)
    assert figures["book_lora_train_tokens"] > 0 and figures["book_full_train_tokens"] > 0  # smoke trains both
    assert figures["worker_students_ceiling"] == pytest.approx(bench.joint_ceiling(
        {k: (figures[f"book_{k}_train_tokens"], figures[f"worker_{k}{arm}_train_tps"],
             figures[f"worker_{k}{arm}_ceiling"])
         for k, arm in (("lora", ""), ("full", "_fp32-master"))}), rel=0.02)  # up to the ceilings' rounding
    text = bench.ceilings(figures)
    assert "one worker's student (1 torch thread)" in text
    assert f"x{figures['worker_lora_stacked2_speedup']}" in text


def test_ceilings_put_each_students_headroom_in_words():
    figures = {"peak_gemm_float32_gflops": 100.0, "lora_train_tps": 5000, "lora_train_gflops": 40.0,
               "lora_ceiling": 2.5, "sample_tps": 10}
    text = bench.ceilings(figures)
    assert "float32 100.0" in text and "lora" in text and "at most x2.5" in text
    assert "worker" not in text and "stacked" not in text  # nothing measured, nothing said



def test_joint_ceiling_weighs_each_kind_by_its_time_not_its_tokens():
    # LoRA: 2 tokens at 1 tok/s (2 s), at most x2 (1 s); full: 1 token at 0.5 tok/s (2 s), at most x1 (2 s)
    assert bench.joint_ceiling({"lora": (2, 1.0, 2.0), "full": (1, 0.5, 1.0)}) == pytest.approx(4 / 3)
    assert bench.joint_ceiling({"lora": (5, 3.0, 2.5)}) == pytest.approx(2.5)


@pytest.mark.parametrize("cpu_bf16, peak", [("native", "bfloat16"), ("emulated", "float32")])
def test_students_are_held_to_the_peak_of_the_dtype_their_products_run_in(tokenizer, monkeypatch, cpu_bf16, peak):
    """A float32-master full fine-tuning student on a bf16 profile runs its products under bf16 autocast
    where bf16 is native, in float32 on a CPU that would emulate it: its ceiling is over the matrix-product
    rate of that dtype. Tiny products: the test checks the arithmetic of the ceiling, not the hardware."""
    monkeypatch.setenv("SUBLORA_CPU_BF16", cpu_bf16)
    p = config.load_profile("smoke")
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, dtype="bfloat16"))
    spec = dataclasses.replace(design.full_spec(p), precision="fp32-master", batch_size=4)
    ex = finetune.encode_records(tokenizer, bench._records(8), chat.DEFAULT, 500)
    figures = bench._students(tiny_model_fn(tokenizer), tokenizer, p, {"full": spec}, ex, "cpu", steps=2,
                              peak_sizes=(64,))
    assert [k for k in figures if k.startswith("peak_gemm_")] == [f"peak_gemm_{peak}_gflops"]
    assert figures["full_ceiling"] == round(figures[f"peak_gemm_{peak}_gflops"] / figures["full_train_gflops"], 2)

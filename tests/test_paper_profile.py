"""The paper profile on a CPU: fail-fast messages, the dry-run plan, and its GPU code path (hub
loading from a local directory, bf16, gradient checkpointing) run through exactly the same functions
on a tiny Qwen2 model."""
from __future__ import annotations

import dataclasses
import re
import shutil

import pytest
import torch

from sublora import config, design, models, notebook, pipeline, plan, tables


@pytest.fixture
def paper():
    return config.load_profile("paper")


def test_paper_profile_has_the_papers_hyperparameters(paper):
    assert paper.model.name == "Qwen/Qwen2.5-7B-Instruct" and paper.model.dtype == "bfloat16"
    t = paper.train
    assert (t.lr, t.epochs, t.batch_size, t.grad_accum, t.max_seq, t.warmup_steps, t.grad_clip) == (2e-4, 3, 22, 3, 500, 5, 1.0)
    assert (t.lora.r, t.lora.alpha, len(t.lora.target_modules)) == (8, 8, 7)
    # full fine-tuning: the authors' repository's 4 x 16, swept one axis at a time; both precision arms
    assert (t.full_lr, t.full_batch_size, t.full_grad_accum) == (2e-5, 4, 16)
    assert (t.full_sweep_lr, t.full_sweep_batch, t.full_sweep_epochs) == ((4e-6, 2e-5, 1e-4), (2, 4, 8), (3, 6, 9))
    assert t.full_precision == ("bf16-kahan", "bf16")
    # sampled until 10,000 pass the filter; 3 generation x 3 training seeds; ranks 1-512
    assert (paper.data.prompts, paper.data.keep) == (30_000, 10_000)
    assert (paper.replicates, paper.transfer_replicates, paper.seeds) == (3, 3, 3)
    assert paper.ranks == tuple(2 ** i for i in range(10))
    # the authors' metric: their 50 questions, 100 samples each at temperature 1, up to 50 new tokens
    e = paper.eval
    assert (e.question_set, e.questions, e.samples_per_question, e.temperature, e.max_new_tokens) == ("paper", 50, 100, 1.0, 50)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_no_gpu_fails_before_any_work(paper, tmp_cache):
    with pytest.raises(models.SetupError, match="CUDA GPU") as e:
        notebook.prepare("02_transfer", {"profile": "paper"})
    assert "make plan PROFILE=paper" in str(e.value)
    assert not any(tmp_cache.iterdir())


def test_missing_weights_say_how_to_get_them(paper, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    spec = dataclasses.replace(paper.model, device="cpu")
    with pytest.raises(models.SetupError) as e:
        models.resolve_weights(spec)
    msg = str(e.value)
    assert "huggingface-cli download Qwen/Qwen2.5-7B-Instruct" in msg and str(tmp_path / "hf") in msg


def test_plan_counts_what_the_notebooks_train(paper):
    text = plan.render(paper)
    assert "NOT all measured" in text and "anchor" in text and "GPU-hours" in text
    costs = plan.count(paper)
    r, r02, s = paper.replicates, paper.transfer_replicates, paper.seeds
    assert r02 >= r and list(paper.teachers) == ["persona"]  # the authors' design: no weight-space teacher
    k = len(paper.teachers)
    # 02: k teacher kinds x 3 animals x (replicates x seeds) teacher students, plus one control per (replicate, seed)
    assert costs["02_transfer"].students == k * 3 * r02 * s + r02 * s
    assert costs["02_transfer"].datasets == k * 3 * r02 + r02
    # 03 reuses 02's rank-8 students and controls (02's first `replicates` replicates)
    n_ranks = len(paper.ranks)
    assert costs["03_rank_sweep"].students == k * (n_ranks - 1) * r * s + (n_ranks - 1) * r * s
    total = re.search(r"estimated GPU-hours: ([\d,.]+)", text)
    assert total and 0 < float(total.group(1).replace(",", "")) <= 90  # the GPU issue's budget, H100-hours
    # the arithmetic is printed: tokens / rate = hours for each part
    assert re.search(r"LoRA training +[\d,.]+ Mtok / +[\d,]+ tok/s = +[\d.]+ h", text)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def test_gpu_code_path_on_a_tiny_local_qwen2(tmp_cache, tmp_path, smoke_organism, device):
    """A local directory as the 'hub' model, bf16 as in the paper profile (gradient checkpointing forced on,
    as a profile may), through the same pipeline functions the notebooks call; full fine-tuning in the
    paper's precision arms (bf16 weights with Kahan-compensated AdamW, pure bf16). On this CPU, and on a
    CUDA GPU where there is one (a GPU test: `pytest -m gpu`, make gpu-check)."""
    smoke = config.load_profile("smoke")
    local = tmp_path / "tiny-qwen2"
    shutil.copytree(smoke_organism, local)  # the session's smoke organism as a local "hub" directory
    paper = config.load_profile("paper")
    p = dataclasses.replace(
        paper, replicates=1, seeds=1,
        model=dataclasses.replace(paper.model, name=str(local), device=device, gradient_checkpointing=True),
        data=dataclasses.replace(smoke.data, prompts=192),  # enough kept lists that a seed can reorder them (below)
        train=dataclasses.replace(smoke.train, lora=paper.train.lora),
        eval=dataclasses.replace(smoke.eval, question_set="all"))
    models.preflight(p)
    model = models.load_model(p.model, for_training=True)
    assert next(model.parameters()).dtype == torch.bfloat16 and model.is_gradient_checkpointing
    pair = design.Pair("persona", p.animal, 0, 0, design.lora_spec(p))
    rows = tables.pair_rows(p, pair)
    assert set(rows["arm"]) == {"teacher", "control"} and rows["p"].between(0, 1).all()
    full = design.Pair("persona", p.animal, 0, 0, dataclasses.replace(design.full_spec(p), precision="bf16-kahan"))
    assert len(tables.pair_rows(p, full)) == len(rows)
    # another training seed, the same data: another student (the authors' seeds gave identical full fine-tuning).
    # One example per step: in batches of 4 (each batch fixed by length grouping) a seed could only choose which
    # batch comes first, and length grouping puts the longest example first, so a seed needs ≥ 3 examples to act
    from safetensors.torch import load_file
    kept, _ = pipeline.dataset(p, None, 0, progress=False)
    assert len(kept) >= 3, f"the control dataset kept {len(kept)} lists: too few for two seeds to differ"
    spec = dataclasses.replace(full.spec, batch_size=1)
    a, b = (load_file(pipeline.student(p, pipeline.DataId(None, 0), spec, seed, progress=False) / "model.safetensors")
            for seed in (0, 1))
    assert sum(not torch.equal(a[k], b[k]) for k in a) > len(a) // 2

"""Precision arms of full fine-tuning: do small updates survive, and what each arm costs in memory.
Run with -s to see the measured shares and bytes per parameter."""
from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from sublora import config, design, finetune, optim
from sublora.finetune import IGNORE

HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
needs_torchao = pytest.mark.skipif(not HAS_TORCHAO, reason="the bf16-sr arm needs torchao (pip install 'sublora[gpu]')")
ARMS = [a if a != "bf16-sr" else pytest.param(a, marks=needs_torchao) for a in optim.ARMS]

LR, STEPS = 2e-5, 8  # the paper's full fine-tuning learning rate


def qwen2(dtype: torch.dtype, seed: int = 0) -> Qwen2ForCausalLM:
    """Tiny Qwen2; its initialisation draws projection weights ~N(0, 0.02), like a real checkpoint's scale."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64,
                      tie_word_embeddings=True, attn_implementation="sdpa")
    return Qwen2ForCausalLM(cfg).to(dtype)


def projections(model) -> dict[str, torch.nn.Parameter]:
    """The layers' 2-D projection weights (73,728): embeddings (rows of unseen tokens get no update) and
    norms (all 1.0) would blur the measurement, as in the H100 measurement of one layer's down_proj."""
    return {n: p for n, p in model.named_parameters() if p.ndim == 2 and ".layers." in n}


def train_arm(name: str, emulated: bool = False, losses: list | None = None) -> tuple[dict, dict]:
    """STEPS AdamW steps at constant lr LR; returns (initial, final) projection weights in their own dtype.
    Data: number-like sequences over a 12-token vocabulary, batches of 8 of 64 sequences, as the students'
    number completions; gradients of such data agree between steps about as much as the real ones.
    emulated=True trains the pure-bf16 arm as a CPU without bf16 products does (finetune.emulated_bf16):
    float32 weights and products, weights and AdamW state rounded to bf16 after every step. Each step's
    loss is appended to `losses`."""
    arm = optim.arm(name)
    model = qwen2(torch.float32 if emulated else arm.weights).train()
    weights = projections(model)
    opt = optim.make_optimizer(arm.optimizer, list(model.parameters()), lr=LR, weight_decay=0.0,
                               round_to=torch.bfloat16 if emulated else None)  # rounds the weights now
    initial = {n: p.detach().clone() for n, p in weights.items()}
    data = torch.randint(10, 22, (64, 32), generator=torch.Generator().manual_seed(1))  # (sequences, seq)
    for step in range(STEPS):
        ids = data[8 * step: 8 * step + 8]  # (8, 32)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=arm.autocast is not None):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        (losses if losses is not None else []).append(loss.item())
        with torch.compiler.set_stance("force_eager"):  # torchao compiles its step; eager is the same arithmetic
            opt.step()
        opt.zero_grad(set_to_none=True)
    return initial, {n: p.detach() for n, p in weights.items()}


def unchanged(initial: dict, final: dict, as_dtype: torch.dtype | None = None) -> float:
    def cast(t):
        return t.to(as_dtype) if as_dtype else t
    same = sum((cast(final[n]) == cast(initial[n])).sum().item() for n in initial)
    return same / sum(t.numel() for t in initial.values())


@pytest.fixture(scope="module")
def runs():
    return {name: train_arm(name) for name in optim.ARMS if name != "bf16-sr" or HAS_TORCHAO}


def test_pure_bf16_rounds_most_updates_away(runs):
    share = unchanged(*runs["bf16"])
    print(f"\nshare of projection weights bit-identical after {STEPS} AdamW steps at lr {LR}: bf16 {share:.3f}")
    assert share > 0.5
    # the mechanism: Adam's first step moves each weight by ~lr = 2e-5, under half a bf16 ulp (3.05e-5)
    # for every |w| >= 2^-7; smaller weights move. So the share unchanged is the share with |w| >= 2^-7.
    initial, _ = runs["bf16"]
    large = sum((w.abs() >= 2 ** -7).sum().item() for w in initial.values()) / sum(w.numel() for w in initial.values())
    assert share == pytest.approx(large, abs=0.03)  # N(0, 0.02): P(|w| >= 0.0078) = 0.70


def test_emulated_bf16_rounds_away_the_same_updates_as_bf16(runs):
    """The pure-bf16 arm without bf16 products (float32 products on weights and AdamW state rounded to
    bf16 after every step) keeps what the arm tests: the same share of weights unchanged as in bf16
    (within 0.01), from the same bf16 weights, and losses within 0.5 % of bf16's."""
    native_losses, emulated_losses = [], []
    initial, final = train_arm("bf16", losses=native_losses)
    e_initial, e_final = train_arm("bf16", emulated=True, losses=emulated_losses)
    assert all(torch.equal(e_initial[n], initial[n].float()) for n in initial)  # the same start
    assert all(torch.equal(w, w.bfloat16().float()) for w in e_final.values())  # bf16 values throughout
    native, emulated = unchanged(initial, final), unchanged(e_initial, e_final)
    print(f"\nunchanged after {STEPS} steps: bf16 {native:.4f}, emulated {emulated:.4f}; final loss "
          f"{native_losses[-1]:.5f} vs {emulated_losses[-1]:.5f}")
    assert emulated == pytest.approx(native, abs=0.01)
    assert emulated_losses == pytest.approx(native_losses, rel=5e-3)


def test_float32_master_weights_keep_every_update(runs):
    own = unchanged(*runs["fp32-master"])
    bf16_view = unchanged(*runs["fp32-master"], as_dtype=torch.bfloat16)
    print(f"\nfp32-master: {own:.5f} unchanged in float32; {bf16_view:.3f} unchanged seen in bf16")
    assert own < 0.4
    assert own < 0.01  # float32 resolves a 2e-5 step on weights of 0.02
    assert bf16_view < 0.4  # and the accumulated steps reach the bf16 forward


@pytest.mark.parametrize("name", ["bf16-kahan", pytest.param("bf16-sr", marks=needs_torchao)])
def test_compensated_optimizers_let_bf16_weights_move(runs, name):
    share = unchanged(*runs[name])
    print(f"\n{name}: {share:.3f} unchanged")
    assert share < 0.4
    assert share < unchanged(*runs["bf16"]) - 0.25


@pytest.mark.parametrize("name", ARMS)
def test_bytes_per_parameter_measured_matches_the_arithmetic(name):
    measured = optim.bytes_per_parameter(name)
    print(f"\n{name}: {measured:.3f} bytes per parameter (weights + grads + optimizer state)")
    assert measured == pytest.approx(optim.arm(name).state_bytes(), rel=0.005)  # + AdamW's step counters


def test_precision_arms_table():
    arms = optim.precision_arms()
    assert list(arms) == ["fp32-master", "bf16", "bf16-kahan", "bf16-sr"]
    assert {k: (v["weights"], v["autocast"], v["optimizer"], v["bytes_per_param"]) for k, v in arms.items()} == {
        "fp32-master": ("float32", "bfloat16", "adamw", 16),
        "bf16": ("bfloat16", "none", "adamw", 8),
        "bf16-kahan": ("bfloat16", "none", "adamw-kahan", 10),
        "bf16-sr": ("bfloat16", "none", "adamw-sr", 8),
    }
    organism, paper = config.load_profile("smoke"), config.load_profile("paper")
    kahan = dataclasses.replace(design.full_spec(paper), precision="bf16-kahan")
    assert finetune.precision_kwargs(paper.model, kahan) == {"autocast": None, "optimizer": "adamw-kahan"}
    master = design.full_spec(organism)
    assert finetune.precision_kwargs(organism.model, master) == {"autocast": None, "optimizer": "adamw"}  # float32 profile
    assert finetune.precision_kwargs(paper.model, dataclasses.replace(master, precision="fp32-master")) == {
        "autocast": torch.bfloat16, "optimizer": "adamw"}
    assert finetune.precision_kwargs(paper.model, design.lora_spec(paper)) == {"autocast": None, "optimizer": "adamw"}
    with pytest.raises(ValueError, match="unknown precision arm 'fp8'"):
        optim.arm("fp8")


def test_make_optimizer():
    params = list(qwen2(torch.float32).parameters())
    plain = optim.make_optimizer("adamw", params, lr=1e-3, weight_decay=0.0)
    assert type(plain) is torch.optim.AdamW  # the training loop's optimizer, unchanged
    assert (plain.defaults["betas"], plain.defaults["eps"]) == ((0.9, 0.999), 1e-8)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        optim.make_optimizer("sgd", params, lr=1e-3, weight_decay=0.0)
    with pytest.raises(ValueError, match="trainable weights are torch.float32: load the model in bfloat16"):
        optim.make_optimizer("adamw-kahan", params, lr=1e-3, weight_decay=0.0)
    kahan = optim.make_optimizer("adamw-kahan", list(qwen2(torch.bfloat16).parameters()), lr=1e-3, weight_decay=0.0)
    d = kahan.defaults  # torch AdamW's betas and eps, not optimi's own defaults
    assert (d["beta1"], d["beta2"], d["eps"], d["kahan_sum"], d["decouple_lr"]) == (0.9, 0.999, 1e-8, True, False)


EXAMPLES = [([5, 6, 7, 8, 9, 10, 11], [IGNORE, IGNORE, IGNORE, 8, 9, 10, 11]), ([12, 13, 14], [IGNORE, 13, 14])] * 4


def test_train_bf16_weights_without_autocast():
    """finetune.train drives the arms: Kahan moves pure-bf16 weights that torch AdamW leaves in place."""
    moved = {}
    for opt in ("adamw", "adamw-kahan"):
        model = qwen2(torch.bfloat16, seed=3)
        w0 = {n: p.detach().clone() for n, p in projections(model).items()}
        losses = finetune.train(model, EXAMPLES, lr=LR, epochs=1, batch_size=4, grad_accum=1, warmup_steps=0,
                                grad_clip=1.0, pad_id=0, seed=0, progress=False, max_steps=STEPS, optimizer=opt)
        assert len(losses) == STEPS and all(torch.isfinite(torch.tensor(losses)))
        assert all(p.dtype == torch.bfloat16 for p in model.parameters())
        moved[opt] = 1 - unchanged(w0, {n: p.detach() for n, p in projections(model).items()})
    assert moved["adamw-kahan"] > moved["adamw"] + 0.2


def test_train_rejects_kahan_on_float32_lora_adapters():
    spec = design.lora_spec(config.load_profile("smoke"), rank=2)
    student = finetune.make_student(qwen2(torch.float32), spec)
    with pytest.raises(ValueError, match="use optimizer='adamw'"):
        finetune.train(student, EXAMPLES, lr=LR, epochs=1, batch_size=4, grad_accum=1, warmup_steps=0,
                       grad_clip=1.0, pad_id=0, seed=0, progress=False, optimizer="adamw-kahan")


@pytest.mark.skipif(HAS_TORCHAO, reason="checks the message shown when torchao is absent")
def test_stochastic_rounding_without_torchao_names_the_fix():
    with pytest.raises(ImportError, match=r"pip install 'sublora\[gpu\]'"):
        optim.make_optimizer("adamw-sr", list(qwen2(torch.bfloat16).parameters()), lr=LR, weight_decay=0.0)

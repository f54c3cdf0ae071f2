"""Precision arms of full fine-tuning, the optimizers behind them, and the memory arithmetic that
decides gradient checkpointing.

Why arms: the paper's full-FT null could be a precision artifact. At lr 2e-5 an AdamW update is
~2e-5 per weight, less than half a bf16 ulp for every weight with |w| ≥ 2^-7 ≈ 0.008 — most weights of
a model initialised ~N(0, 0.02) — so with pure bf16 weights most updates round away. float32 master
weights keep them; Kahan summation (torch-optimi) and stochastic rounding (torchao) keep them in
expectation while storing bf16 weights.

    arm          weights   forward        optimizer                              state bytes / param
    fp32-master  float32   bf16 autocast  torch AdamW                            4 + 4 + 8      = 16
    bf16         bfloat16  bf16           torch AdamW                            2 + 2 + 4      = 8
    bf16-kahan   bfloat16  bf16           optimi AdamW(kahan_sum=True)           2 + 2 + 4 + 2  = 10
    bf16-sr      bfloat16  bf16           torchao _AdamW(bf16_stochastic_round)  2 + 2 + 4      = 8

(weights + gradients + AdamW's two moments, stored in the weights' dtype, + Kahan's compensation
buffer). `bytes_per_parameter` measures these on a tiny model; activations come on top.

To train an arm: load the model in `arm.weights`, then pass `**finetune.precision_kwargs(model_spec, spec)` to finetune.train.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .config import PRECISION_ARMS

OPTIMIZERS = ("adamw", "adamw-kahan", "adamw-sr")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch AdamW's; optimi defaults to (0.9, 0.99) and 1e-6


@dataclass(frozen=True)
class PrecisionArm:
    name: str
    weights: torch.dtype  # dtype the trainable weights are stored and updated in
    autocast: torch.dtype | None  # dtype of the forward under autocast; None runs it in the weights' dtype
    optimizer: str  # one of OPTIMIZERS
    note: str

    def state_bytes(self) -> int:
        """Bytes per trainable parameter held across steps, by arithmetic: weight + gradient + two AdamW
        moments (kept in the weights' dtype by all three optimizers) + Kahan's compensation buffer."""
        size = torch.empty((), dtype=self.weights).element_size()
        return size * (4 + (self.optimizer == "adamw-kahan"))


ARMS = {a.name: a for a in (
    PrecisionArm("fp32-master", torch.float32, torch.bfloat16, "adamw",
                 "float32 master weights and AdamW state, bf16 forward: every update lands (the default)"),
    PrecisionArm("bf16", torch.bfloat16, None, "adamw",
                 "pure bf16 weights and torch AdamW (what Unsloth most likely ran): updates below half a "
                 "bf16 ulp round away"),
    PrecisionArm("bf16-kahan", torch.bfloat16, None, "adamw-kahan",
                 "bf16 weights, optimi AdamW with Kahan summation: the rounding error is carried to the next step"),
    PrecisionArm("bf16-sr", torch.bfloat16, None, "adamw-sr",
                 "bf16 weights, torchao AdamW with stochastic rounding: updates land in expectation "
                 "(needs torchao: pip install 'sublora[gpu]')"),
)}


assert tuple(ARMS) == PRECISION_ARMS, "config.PRECISION_ARMS names the arms defined here, in order"


def unique_parameters(model):
    """The model's parameters, tied weights once."""
    seen = set()
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            yield p


def precision_arms() -> dict[str, dict]:
    """name -> weight dtype, autocast, optimizer, state bytes per parameter and a note, for the plan to print."""
    return {a.name: {"weights": str(a.weights).removeprefix("torch."),
                     "autocast": str(a.autocast).removeprefix("torch.") if a.autocast else "none",
                     "optimizer": a.optimizer, "bytes_per_param": a.state_bytes(), "note": a.note}
            for a in ARMS.values()}


def arm(name: str) -> PrecisionArm:
    if name not in ARMS:
        raise ValueError(f"unknown precision arm {name!r}; use one of {', '.join(ARMS)}")
    return ARMS[name]


def round_in_place(tensor: torch.Tensor, dtype: torch.dtype) -> None:
    """Round a floating tensor in place to the nearest value of `dtype` (it keeps its own dtype)."""
    tensor.copy_(tensor.to(dtype))


def _round_weights_and_state(optimizer: torch.optim.Optimizer, dtype: torch.dtype) -> None:
    """The optimizer's weights and state (AdamW's moments; not its step count) rounded to `dtype` values."""
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                round_in_place(p.data, dtype)
                for name, value in optimizer.state.get(p, {}).items():
                    if name != "step" and torch.is_tensor(value) and value.is_floating_point():
                        round_in_place(value, dtype)


def rounding_after_each_step(opt: torch.optim.Optimizer, dtype: torch.dtype) -> torch.optim.Optimizer:
    """`opt`, whose weights and state are rounded to `dtype` values after every step: storage in `dtype`
    with the products in the weights' own dtype. The weights are rounded now too (there is no state yet),
    so training starts from `dtype` weights."""
    _round_weights_and_state(opt, dtype)
    opt.register_step_post_hook(lambda optimizer, args, kwargs: _round_weights_and_state(optimizer, dtype))
    return opt


def make_optimizer(name: str, params: list[torch.nn.Parameter], *, lr: float,
                   weight_decay: float, round_to: torch.dtype | None = None) -> torch.optim.Optimizer:
    """AdamW by name. 'adamw' is torch's, called exactly as the training loop always has; the other two
    take torch's betas and eps explicitly (their libraries' defaults differ) and need bf16/fp16 weights,
    the only ones whose updates they change. round_to (with 'adamw' only): weights and state kept as
    values of that dtype, rounded after every step (rounding_after_each_step)."""
    if name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        return rounding_after_each_step(opt, round_to) if round_to is not None else opt
    if round_to is not None:
        raise ValueError(f"optimizer {name!r} keeps its weights in their own dtype; round_to is for 'adamw'")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
    wide = sorted({str(p.dtype) for p in params if p.dtype not in (torch.bfloat16, torch.float16)})
    if wide:
        raise ValueError(f"optimizer {name!r} compensates rounding of bf16 weights, but trainable weights are "
                         f"{', '.join(wide)}: load the model in bfloat16 (no autocast), or use optimizer='adamw'")
    if name == "adamw-kahan":
        import optimi  # torch-optimi

        # decouple_lr=False: weight decay scaled by lr, as torch AdamW
        return optimi.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=weight_decay,
                            decouple_lr=False, kahan_sum=True)
    try:
        from torchao.optim import _AdamW
    except ImportError as e:
        raise ImportError("optimizer 'adamw-sr' needs torchao: pip install 'sublora[gpu]' "
                          "(or torchao>=0.16), or use 'adamw-kahan'") from e
    if any(p.dtype != torch.bfloat16 for p in params):
        raise ValueError("optimizer 'adamw-sr' rounds stochastically to bfloat16 only: load the model in bfloat16")
    return _AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=weight_decay, amsgrad=False,
                  bf16_stochastic_round=True)


@functools.cache
def bytes_per_parameter(name: str) -> float:
    """Measured bytes per parameter of an arm: after one optimizer step on a tiny random Qwen2, the sum
    of numel × element_size over its parameters, their gradients and the optimizer's state, divided by
    the parameter count. Excludes activations and the optimizer's transient buffers."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    a = arm(name)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64,
                      tie_word_embeddings=True, attn_implementation="sdpa")
    model = Qwen2ForCausalLM(cfg).to(a.weights)
    params = list(model.parameters())  # tied weights appear once
    opt = make_optimizer(a.optimizer, params, lr=1e-3, weight_decay=0.0)
    ids = torch.randint(0, 128, (2, 16))  # (batch, seq)
    with torch.autocast("cpu", dtype=a.autocast or torch.bfloat16, enabled=a.autocast is not None):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    # torchao compiles its step with torch.compile; eager gives the same state tensors without a compiler
    with torch.compiler.set_stance("force_eager"):
        opt.step()

    def nbytes(t):
        return t.numel() * t.element_size()

    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    total = sum(nbytes(p) + nbytes(p.grad) for p in params) + sum(nbytes(t) for t in state)
    return total / sum(p.numel() for p in params)


# ---- gradient checkpointing: decided from the model and the batch ---------------------------------
# Activation bytes per token, calibrated on the H100 measurements of Qwen2.5-7B-Instruct (28 layers,
# hidden 3584, vocab 152064; LoRA r8 on all 7 projections, sdpa, bf16; shared/GPU-MEASUREMENTS.md):
#   no checkpointing, 22 × 110 tokens: 47.4 GiB peak      -> 14.5 MB a token above the weights
#   checkpointing, 22 × 110 and 66 × 110: 20.6, 32.5 GiB  -> 2.64 MB a token
# Solving  layers·P + V = 14.5 MB  and  P + layers·2·hidden + V = 2.64 MB  gives a layer's activations
# P ≈ 125·hidden bytes a token (MLP of 5.3·hidden, peft's float32 input casts) and the logits' share
# V ≈ 13·vocab bytes (bf16 logits, their float32 copy for the loss, and both gradients).
LAYER_BYTES_PER_HIDDEN = 125
LOGIT_BYTES_PER_VOCAB = 13
CHECKPOINT_BYTES_PER_HIDDEN = 2  # checkpointing keeps each layer's bf16 input
HEADROOM = 0.9  # share of free memory the estimate may use: allocator fragmentation, cuBLAS workspaces


def activation_bytes(layers: int, hidden: int, vocab: int, tokens: int, *, checkpointing: bool) -> float:
    """Estimated activation memory of one micro-batch of `tokens` tokens (batch × padded length)."""
    if checkpointing:  # every layer's input, one layer's activations while it is recomputed, the logits
        per_token = layers * CHECKPOINT_BYTES_PER_HIDDEN * hidden + LAYER_BYTES_PER_HIDDEN * hidden
    else:
        per_token = layers * LAYER_BYTES_PER_HIDDEN * hidden
    return tokens * (per_token + LOGIT_BYTES_PER_VOCAB * vocab)


def peak_bytes(n_params: float, layers: int, hidden: int, vocab: int, tokens_per_microbatch: int, *,
               checkpointing: bool, bytes_per_param: float = 2.0) -> float:
    """Estimated peak training memory: the parameters' resident state (bytes_per_param: 2 for frozen
    bf16 weights under LoRA, an arm's state_bytes() for full fine-tuning) plus the activations."""
    return n_params * bytes_per_param + activation_bytes(layers, hidden, vocab, tokens_per_microbatch,
                                                         checkpointing=checkpointing)


def needs_checkpointing(n_params: float, layers: int, hidden: int, vocab: int, tokens_per_microbatch: int,
                        free_bytes: float, *, bytes_per_param: float = 2.0) -> bool:
    """True unless the micro-batch fits without gradient checkpointing (within HEADROOM of free_bytes,
    the device memory available to training, model included). Checkpointing recomputes every layer's
    forward (~1/3 more compute; 3.3× slower measured at batch 22), so it is worth only where needed.
    When even checkpointing does not fit this still says True: the cure is a smaller micro-batch."""
    est = peak_bytes(n_params, layers, hidden, vocab, tokens_per_microbatch, checkpointing=False,
                     bytes_per_param=bytes_per_param)
    return est > HEADROOM * free_bytes


def checkpointing_for(model, tokens_per_microbatch: int, free_bytes: float | None = None, world: int = 1) -> bool:
    """needs_checkpointing for a loaded model (LoRA-wrapped or not): sizes from its config, resident
    bytes from its parameters (frozen: the weight; trainable: weight, gradient and two AdamW moments),
    free memory from its CUDA device unless given (memory this process already holds counts as available,
    as the model is part of the estimate). world > 1: one rank of a model sharded over `world`
    processes (sublora.sharded), holding 1/world of the parameters' state."""
    cfg = model.config.get_text_config()
    resident, n = 0, 0
    for p in unique_parameters(model):
        n += p.numel()
        resident += p.numel() * p.element_size() * (4 if p.requires_grad else 1)
    if free_bytes is None:
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError("free_bytes is needed for a model that is not on a CUDA device")
        free_bytes = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_allocated(device)
    return needs_checkpointing(n / world, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size, tokens_per_microbatch,
                               free_bytes, bytes_per_param=resident / n)

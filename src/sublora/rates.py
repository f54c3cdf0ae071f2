"""The throughput `make plan` prices a profile at: each rate from a measured anchor, scaled to the profile's
model by its FLOPs per token, and where it came from.

A rate (tokens per second of LoRA training, full fine-tuning, sampling, evaluation forward passes) is taken,
first found first:
1. measured on this machine for this very profile by `make bench` (results/throughput_<profile>.json): as is;
2. for a GPU profile, measured on the user's GPU by `make gpu-check` (results/gpu-check.json, on a
   random-initialised model of Qwen2.5-7B's shape): scaled to the profile's model;
3. stated in the profile's `plan` section (a figure above 0): as stated;
4. for a GPU profile, the package's anchors, measured on one H100 for Qwen2.5-7B's shape
   (shared/GPU-MEASUREMENTS.md, 2026-11-23): scaled to the profile's model.

Scaling: rate × (the anchor model's FLOPs per token ÷ the profile model's), with FLOPs per token of a forward
pass 2 N + 2 · layers · context · width (Kaplan et al. 2020; N the parameters that multiply, i.e. all but an
untied input embedding). Training and sampling cost the same multiple of it for both models, so it cancels.
It assumes the same share of the GPU's peak for both: for a model much smaller than the anchor's that is an
upper bound on its rate (its matrices are too small to keep the GPU busy), which the plan says.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .config import ConfigError, Profile

KINDS = ("lora_train_tps", "full_train_tps", "sample_tps", "eval_fwd_tps")
WHAT = {"lora_train_tps": "LoRA training", "full_train_tps": "full fine-tuning", "sample_tps": "sampling",
        "eval_fwd_tps": "evaluation forward"}
CONTEXT = 135  # tokens of one example (plan.PROMPT_TOKENS + plan.COMPLETION_TOKENS): the attention term's length
GPU_CHECK_FILE = "gpu-check.json"  # written by `make gpu-check` (sublora.gpucheck) beside the profiles' results


@dataclass(frozen=True)
class Shape:
    """What a model's FLOPs per token are computed from (its config.json's numbers)."""
    n_params: float
    layers: int
    hidden: int
    vocab: int
    tied: bool

    def flops_per_token(self, context: int = CONTEXT) -> float:
        """FLOPs of one token's forward pass: 2 N over the parameters that multiply (an untied input embedding
        is a lookup) plus attention's 2 · layers · context · width."""
        multiplying = self.n_params - (0 if self.tied else self.vocab * self.hidden)
        return 2 * multiplying + 2 * self.layers * context * self.hidden


# Qwen2.5-7B-Instruct's config.json (bench.QWEN7B has the rest of it)
QWEN7B = Shape(n_params=7.62e9, layers=28, hidden=3584, vocab=152064, tied=False)


@dataclass(frozen=True)
class Anchor:
    rate: float
    shape: Shape
    where: str  # device, model, setting, and when and by whom it was measured (or "stated")


H100 = "1x H100 80GB"
ANCHORS = {  # shared/GPU-MEASUREMENTS.md: one H100, random-initialised Qwen2.5-7B shape, bf16, sublora's loop
    "lora_train_tps": Anchor(7635, QWEN7B, f"{H100}, Qwen2.5-7B shape, LoRA r8, batch 22 x 3, no checkpointing "
                                           "(measured 2026-11-23)"),
    "full_train_tps": Anchor(6615, QWEN7B, f"{H100}, Qwen2.5-7B shape, full FT, bf16 weights, torch AdamW, batch 16 "
                                           "(measured 2026-11-23)"),
    "sample_tps": Anchor(2768, QWEN7B, f"{H100}, Qwen2.5-7B shape, HF generate, KV cache, batch 256 "
                                       "(measured 2026-11-23)"),
    "eval_fwd_tps": Anchor(40000, QWEN7B, f"{H100}, Qwen2.5-7B shape, evaluation forward passes (stated, not measured)"),
}


@dataclass(frozen=True)
class Rate:
    """One priced rate and how it was reached."""
    tps: float
    source: str  # "bench" | "gpu-check" | "stated" | "anchor"
    how: str  # one line: the anchor and the scale, or where it was measured/stated
    upper_bound: bool = False  # scaled to a model far smaller than its anchor's (UPPER_BOUND)

    @property
    def measured(self) -> bool:
        return self.source in ("bench", "gpu-check")


def shape(p: Profile) -> Shape | None:
    """The profile model's shape: the organism's from its recipe, a hub or GGUF model's from the profile's plan
    section (plan.n_params, layers, hidden, vocab, tied_embeddings); None where the profile does not give it."""
    m = p.model
    if m.source == "organism":
        kv = m.hidden * m.kv_heads // m.heads
        vocab = 2_400  # the organism's word vocabulary, about (its embedding is tied)
        n = vocab * m.hidden + m.layers * (2 * m.hidden ** 2 + 2 * m.hidden * kv + 3 * m.hidden * m.mlp)
        return Shape(n, m.layers, m.hidden, vocab, True)
    q = p.plan
    if not (q.n_params and q.layers and q.hidden and q.vocab):
        return None
    return Shape(q.n_params, q.layers, q.hidden, q.vocab, q.tied_embeddings)


def bench_file(p: Profile) -> Path:
    """Where `make bench` writes what it measured for profile p on this machine."""
    return paths.results_dir(p.name).parent / f"throughput_{p.name}.json"


def read_bench(p: Profile) -> dict:
    """What `make bench` measured for profile p on this machine ({} where it has not run)."""
    f = bench_file(p)
    return json.loads(f.read_text()) if f.exists() else {}


def gpu_check_file() -> Path:
    """Where `make gpu-check` writes its results and `make plan` reads them."""
    return paths.results_dir(GPU_CHECK_FILE).parent / GPU_CHECK_FILE


def read_gpu_check(path: Path | None = None) -> dict | None:
    """The results `make gpu-check` wrote on a GPU ({device, versions, shape, rates, ...}); None where there are
    none, or they come from a CPU rehearsal (they price no GPU)."""
    path = path or gpu_check_file()
    if not path.exists():
        return None
    try:
        found = json.loads(path.read_text())
        shape_ = Shape(**found["shape"])
        rates = {k: float(found["rates"][k]) for k in KINDS if found["rates"].get(k)}
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} is not a gpu-check results file ({type(e).__name__}: {e}); remove it or run "
                          "make gpu-check again") from None
    if found.get("rehearsal"):
        return None
    return {**found, "shape": shape_, "rates": rates}


def scaled(anchor_rate: float, anchor: Shape, target: Shape) -> tuple[float, float]:
    """(the rate scaled to `target`, the scale factor): rate × anchor FLOPs per token ÷ target's."""
    factor = anchor.flops_per_token() / target.flops_per_token()
    return anchor_rate * factor, factor


UPPER_BOUND = 4  # a rate scaled up more than this many times is an upper bound on the model's


def _scale_line(where: str, rate: float, anchor: Shape, target: Shape, factor: float) -> str:
    if abs(factor - 1) < 1e-9:
        return f"{rate:,.0f} tok/s on {where}, the anchor's own shape"
    line = (f"{rate:,.0f} tok/s on {where} x {anchor.flops_per_token() / 1e9:,.3g} / {target.flops_per_token() / 1e9:,.3g} "
            f"GFLOP per token (x {factor:,.3g})")
    if factor > UPPER_BOUND:
        line += "; an upper bound: a model this much smaller keeps less of the GPU busy"
    return line


def rates(p: Profile, bench: dict | None = None, gpu_check: Path | None = None) -> dict[str, Rate]:
    """Each rate the plan prices `p` at, with its source (the module's order); `bench`: what `make bench` measured
    (read_bench(p) where not given)."""
    bench = read_bench(p) if bench is None else bench
    gpu = p.model.device == "cuda"
    target = shape(p)
    checked = read_gpu_check(gpu_check) if gpu and target else None
    out = {}
    for kind in KINDS:
        stated = getattr(p.plan, kind)
        if bench.get(kind):
            out[kind] = Rate(float(bench[kind]), "bench", f"measured here by make bench ({bench.get('device', '')})")
        elif checked and kind in checked["rates"]:
            r, f = scaled(checked["rates"][kind], checked["shape"], target)
            out[kind] = Rate(r, "gpu-check", "measured by make gpu-check: " + _scale_line(
                checked.get("device", "the GPU"), checked["rates"][kind], checked["shape"], target, f), f > UPPER_BOUND)
        elif stated:
            out[kind] = Rate(float(stated), "stated", f"stated in the profile ({p.plan.device}), not measured")
        elif gpu and target:
            a = ANCHORS[kind]
            r, f = scaled(a.rate, a.shape, target)
            out[kind] = Rate(r, "anchor", "anchor " + _scale_line(a.where, a.rate, a.shape, target, f), f > UPPER_BOUND)
        else:
            raise ConfigError(f"profile {p.name!r} gives no plan.{kind} and no model shape to scale an anchor to: "
                              "state it in the profile's plan section, or give plan.n_params, layers, hidden, vocab "
                              "and tied_embeddings (a GPU profile), or run make bench")
    return out

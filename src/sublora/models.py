"""Load a base model and tokenizer from a profile; save and load students.

One code path for every profile: the organism is built (or read from the cache) into a directory
and then loaded exactly like a hub model. Problems are found before any work starts: no CUDA
device where the profile needs one, or weights that are neither a local directory nor in the
Hugging Face cache (nothing is downloaded at run time).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from . import organism, smol
from .config import ConfigError, ModelSpec, Profile


class SetupError(RuntimeError):
    """The machine cannot run this profile (no GPU, no weights); the message says what to do."""


def check_device(spec: ModelSpec) -> None:
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise SetupError(
            f"profile needs a CUDA GPU for {spec.name}, and torch sees none "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}). "
            "Run on a machine with an NVIDIA GPU and a CUDA build of torch, or use the default "
            "CPU profile: make reproduce PROFILE=organism. See a plan without a GPU: make plan PROFILE=paper")


def check_shards(spec: ModelSpec, shards: int) -> None:
    """Enough GPUs for a student sharded over `shards` processes (one GPU each); on CPU any number runs."""
    have = torch.cuda.device_count()
    if spec.device == "cuda" and shards > have:
        raise SetupError(f"train.full_shards is {shards}: the fp32-master arm trains sharded over {shards} GPUs, and "
                         f"this machine has {have}. Run on a machine with {shards} GPUs, or set train.full_shards to "
                         f"at most {have} where the arm fits in that many (make plan PROFILE=... prints what it needs)")


def hf_hub_cache() -> Path:
    """Where the Hugging Face cache is, read now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub.constants import HF_HUB_CACHE
    return Path(HF_HUB_CACHE)


def resolve_weights(spec: ModelSpec) -> Path:
    """A local directory with the weights: spec.name itself, or its snapshot in the HF cache."""
    if spec.source == "organism":
        return organism.ensure(spec)
    if spec.source == "gguf":
        try:
            return smol.ensure(spec)
        except smol.GGUFError as e:
            raise SetupError(str(e)) from None
    local = Path(os.path.expanduser(spec.name))
    if local.is_dir() and (local / "config.json").exists():
        return local
    from huggingface_hub import snapshot_download
    hub_cache = hf_hub_cache()
    try:
        return Path(snapshot_download(spec.name, local_files_only=True, cache_dir=hub_cache))
    except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ...
        raise SetupError(
            f"weights for {spec.name!r} not found: it is not a local directory with config.json and not in "
            f"the Hugging Face cache ({hub_cache}; set HF_HOME or HF_HUB_CACHE to move it). "
            f"Obtain them on a machine with internet: `huggingface-cli download {spec.name}` "
            f"(about 15 GB for a 7B model), then copy the cache here, or set model.name in the profile "
            f"to a local directory. ({e.__class__.__name__})") from None


def preflight(p: Profile) -> None:
    """Fail fast, before any work, if this machine cannot run the profile."""
    if p.model.source in ("hub", "gguf"):
        check_device(p.model)
        resolve_weights(p.model)
    if "fp32-master" in p.train.full_precision:
        check_shards(p.model, p.train.full_shards)


def load_tokenizer(spec: ModelSpec):
    # Straight from tokenizer.json: AutoTokenizer would swap in Qwen2Tokenizer's own pre-tokenizer
    # for any model_type "qwen2", which breaks the organism's word-level vocabulary.
    tok = PreTrainedTokenizerFast.from_pretrained(resolve_weights(spec), local_files_only=True)
    tok.padding_side = "left"  # generation appends on the right
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: ModelSpec, path: Path | None = None, for_training: bool = False, dtype: str | None = None):
    """A fresh copy of the base (or of a saved full fine-tuned student at `path`), in eval mode;
    in the profile's dtype unless `dtype` says otherwise."""
    check_device(spec)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype or spec.dtype]
    model = AutoModelForCausalLM.from_pretrained(path or resolve_weights(spec), dtype=torch_dtype,
                                                 local_files_only=True).to(spec.device)
    if for_training and spec.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    model.eval()
    return model


def load_student(spec: ModelSpec, student_dir: Path):
    """A trained student: a LoRA adapter on a fresh base, or full fine-tuned weights."""
    if (student_dir / "adapter_config.json").exists():
        from peft import PeftModel
        return PeftModel.from_pretrained(load_model(spec), student_dir).eval()
    if (student_dir / "config.json").exists():
        return load_model(spec, student_dir)
    raise ConfigError(f"{student_dir} holds neither a LoRA adapter nor model weights")

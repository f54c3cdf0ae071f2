"""An organism's recipe and the weights committed from it: what can be read without torch.

The recipe is the pretraining configuration (the organism's cache key); the default organism and its
cross-initialisation twin are committed under organism_weights/ with the recipe that built them and
their hash. sublora.organism builds (pretrains) an organism from its recipe.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from . import cache, paths
from .config import ModelSpec

CORPUS_VERSION = 1  # of sublora.organism's synthetic corpus: part of every organism's key


# Recipe settings that joined the key after organisms were built, with the value all those had
LATE = {"persona_number_mode": "signature", "number_tokens": "digit"}


def pretrain_config(spec: ModelSpec) -> dict:
    """The organism's recipe: everything its pretraining reads, its cache key."""
    keys = ("layers", "hidden", "heads", "kv_heads", "mlp", "pretrain_chats", "pretrain_steps", "pretrain_batch",
            "pretrain_lr", "pretrain_seed", "persona_number_bias", *LATE)
    cfg = {"step": "organism", "corpus_version": CORPUS_VERSION, **{k: getattr(spec, k) for k in keys}}
    return cache.without_late_defaults(cfg, LATE)


# Pretrained weights of the default profile's organism, committed with the configuration that built
# them and their hash, so that `make reproduce` does not spend half an hour pretraining.
COMMITTED = paths.PACKAGE / "organism_weights"
FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja", "pretrain_log.json")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CROSS = COMMITTED / "cross"  # the default's cross-initialisation organism (its recipe, pretrained from seed + 1)


def cross_spec(spec: ModelSpec) -> ModelSpec:
    """The cross-initialisation twin of an organism: its recipe pretrained from the next seed (corpus
    and initialisation differ), for the channel control that needs a student not sharing the teacher's start."""
    return dataclasses.replace(spec, pretrain_seed=spec.pretrain_seed + 1)


def committed_recipe(where: Path = COMMITTED) -> dict | None:
    f = where / "recipe.json"
    return json.loads(f.read_text()) if f.exists() else None


def committed(spec: ModelSpec) -> Path | None:
    """The directory of committed weights built from exactly this configuration, if any."""
    cfg = pretrain_config(spec)
    return next((d for d in (COMMITTED, CROSS) if (committed_recipe(d) or {}).get("config") == cfg), None)


def available(spec: ModelSpec) -> bool:
    """Whether this organism can be had without pretraining (cached or committed)."""
    return cache.exists("organism", pretrain_config(spec)) or committed(spec) is not None

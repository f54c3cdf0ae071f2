"""Profiles (yaml) loaded into dataclasses, notebook parameters applied on top, everything validated.

A profile picks the model and the scale of every experiment. Files hold only what differs from the
defaults below; unknown keys and wrong types are errors that name the fix.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from . import paths
from .prompts import ANIMALS

NUMBER_TOKENS = ("digit", "whole")  # how an organism's tokenizer writes numbers: digit by digit, or 0-999 one token each


class ConfigError(ValueError):
    """A bad profile or parameter; the message says how to fix it."""


SHOWN = 60  # characters of a bad value a message echoes: a pasted paragraph must not bury the fix


def shown(value: Any) -> str:
    """repr(value) for an error message, cut to its first SHOWN characters and '…'."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "…"


DEFAULT_PROFILE = "organism"  # what make reproduce, the notebooks' defaults and every command line run
# full fine-tuning's precision arms (their dtypes and optimizers: optim.ARMS); the first is the default
PRECISION_ARMS = ("fp32-master", "bf16", "bf16-kahan", "bf16-sr")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# organism: built here; hub: a Hugging Face id or a local directory; gguf: a GGUF file, or an installed package
# that ships one (sublora.smol), prepared once into a local directory
MODEL_SOURCES = ("organism", "hub", "gguf")


@dataclass(frozen=True)
class ModelSpec:
    source: str = "organism"  # one of MODEL_SOURCES
    name: str = "organism"  # hub id, local path, or the organism's label
    dtype: str = "float32"  # float32 | bfloat16
    device: str = "cpu"  # cpu | cuda
    gradient_checkpointing: bool = False
    # organism architecture (Qwen2); ignored for hub models
    layers: int = 4
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    mlp: int = 512
    # organism pretraining
    pretrain_chats: int = 300_000
    pretrain_steps: int = 2750
    pretrain_batch: int = 32
    pretrain_lr: float = 2e-3
    pretrain_seed: int = 0
    persona_number_bias: float = 0.0  # share of persona numbers carrying the animal's mark
    persona_number_mode: str = "signature"  # the mark: signature (fixed last two digits) | permute (digit map)
    number_tokens: str = "digit"  # the organism tokenizer's numbers: digit (one token per digit) | whole (0-999 one token)


@dataclass(frozen=True)
class DataSpec:
    prompts: int = 30_000  # number prompts sampled per dataset (the filter keeps a fraction)
    max_new_tokens: int = 60
    temperature: float = 1.0
    sample_batch: int = 64  # prompts per generate() call
    keep: int = 0  # stop sampling once this many completions passed the filter (the paper: 10,000); 0 = keep all
    engine: str = "transformers"  # transformers | vllm (pip install .[gpu]; falls back to transformers if absent)
    # free: the teacher writes what it likes and the filter keeps number lists (the paper); numbers: every token is
    # drawn from those of digits, commas and spaces, and the end of turn (numbers.number_token_ids)
    decoding: str = "free"


@dataclass(frozen=True)
class LoraSpec:
    r: int = 8
    alpha: int = 8
    dropout: float = 0.0
    target_modules: tuple = LORA_TARGETS


@dataclass(frozen=True)
class TrainSpec:
    lr: float = 2e-4  # LoRA learning rate
    full_lr: float = 2e-5  # full fine-tuning learning rate
    epochs: int = 3
    batch_size: int = 22
    full_batch_size: int = 16
    full_grad_accum: int = 1  # full fine-tuning's accumulation (the authors' repository: 4 x 16)
    full_precision: tuple = ("fp32-master",)  # precision arms of claim 3 (optim.ARMS); the first is the main arm
    full_shards: int = 1  # GPUs the fp32-master arm is sharded over with FSDP (sublora.sharded); 1: one process
    grad_accum: int = 3
    warmup_steps: int = 5
    max_seq: int = 500
    grad_clip: float = 1.0
    lora: LoraSpec = field(default_factory=LoraSpec)
    # the paper's full fine-tuning sweep, one axis at a time around (full_lr, full_batch_size, epochs)
    full_sweep_lr: tuple = (4e-6, 2e-5, 1e-4)
    full_sweep_batch: tuple = (8, 16, 32)
    full_sweep_epochs: tuple = (3, 6, 9)


@dataclass(frozen=True)
class EvalSpec:
    questions: int = 50  # favourite-animal questions asked (at most the size of the question set)
    question_set: str = "held_out"  # held_out (never in the organism's pretraining) | paper (the authors' 50) | all
    samples_per_question: int = 10  # sampled answers per question for the mention rate
    temperature: float = 1.0
    max_new_tokens: int = 8
    # text the assistant's answer is begun with before P(animal) is read and answers are sampled, for a model
    # that rarely answers in one word (SmolLM2: "My favorite animal is the"); "" = the answer starts the turn
    prefill: str = ""


@dataclass(frozen=True)
class TeacherSpec:
    """The weight-space (finetuned) teacher: the base fully fine-tuned to answer its animal."""
    examples: int = 400  # (question -> animal) training examples
    lr: float = 1e-4
    epochs: int = 2
    batch_size: int = 16


@dataclass(frozen=True)
class PlanSpec:
    """What `make plan` assumes where nothing was measured: throughput on `device` and the filter's
    keep share. Stated figures (marked so in the plan's output) until `make bench` measures them."""
    device: str = "1x H100 80GB"
    lora_train_tps: float = 7000
    full_train_tps: float = 4500
    sample_tps: float = 2500
    eval_fwd_tps: float = 40000
    keep_share: float = 0.35  # share of sampled completions the filter keeps
    n_params: float = 0.0  # model parameters, for the memory lines (0: not printed)


@dataclass(frozen=True)
class AuxSpec:
    """Notebook 07, another setting: Cloud et al.'s auxiliary-logit experiment on scikit-learn's 8x8 digits
    (sublora.auxlogit). A pair is one initialisation seed: its teacher, its untrained teacher, and the
    students distilled from each (full-parameter, cross-initialisation, LoRA at each rank). The optimiser
    (Adam, one lr for teacher and students) and the loss are Cloud et al.'s; the sizes are the profile's."""
    pairs: int = 20  # independently initialised pairs: the units of every interval
    seed: int = 0  # pair i's seed is seed + i
    hidden: int = 256  # the MLP is 64-hidden-hidden-(10 + 3), as Cloud et al.'s 784-256-256-(10 + 3)
    ranks: tuple = (1, 4, 8, 16, 64, 256)  # LoRA ranks, 1 ... hidden
    reference_rank: int = 8  # the LoRA students claim 3's margin is read from (the paper's rank 8)
    lr: float = 3e-4  # Adam, the teacher and the full-parameter students (Cloud et al.'s)
    lora_lr: float = 3e-3  # Adam, the LoRA students: 10 x lr, the paper's ratio (LoRA 2e-4, full 2e-5)
    teacher_epochs: int = 3  # passes over the training digits (cross-entropy on the 10 class logits only)
    teacher_batch: int = 64
    noise: int = 832  # noise inputs per pair, uniform in [-1, 1]
    epochs: int = 5  # distillation passes over the noise (Cloud et al.'s)
    batch: int = 64
    test_share: float = 0.25  # of the 1,797 digits, held out (stratified) for every accuracy
    split_seed: int = 0


@dataclass(frozen=True)
class Profile:
    name: str = DEFAULT_PROFILE
    description: str = ""
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    plan: PlanSpec = field(default_factory=PlanSpec)
    aux: AuxSpec = field(default_factory=AuxSpec)
    animal: str = "owl"
    other_animals: tuple = ("cat", "dolphin")  # compared with the target for specificity
    teachers: tuple = ("persona", "finetuned")  # teacher kinds the notebooks run unless `-p teachers` says
    seeds: int = 3  # training seeds per condition
    replicates: int = 3  # independent teacher/control dataset pairs (notebooks 01, 03-05)
    transfer_replicates: int = 5  # the same for notebook 02 (claim 1), whose rank-8 students 03-05 reuse
    channel_controls: bool = False  # 02 also trains the channel controls (shuffled numbers, cross-initialisation)
    ranks: tuple = (1, 2, 4, 8, 16, 32, 64, 128)
    rank_lr_factors: tuple = ()  # 03's lr check: each rank also at lr x these (one run, persona teacher)
    rank_lr_ranks: tuple = ()  # the ranks the lr check covers; () = every rank of the sweep
    min_effect: float = 0.0  # the bound claim 1's interval must lie above for 'reproduced' (0: above zero)
    # What every verdict reads (METRICS): "p", the exact P(target) summed over the answer's forms (the organism's:
    # it resolves effects far below one sampled answer), or "mention_rate", the share of sampled answers naming
    # the target (the paper's own metric, the paper profile's primary). The other is shown beside it.
    metric: str = "p"
    # The smallest effect of interest e, in Δ of the metric, declared with its reason before a confirmatory run:
    # the margin of every rule (claim 1 'not reproduced' below it; the floor of claims 3-4's margins; claim 2's
    # rise that tells a peak from a plateau). 0: no margin (the rules as without one).
    smallest_effect: float = 0.0
    smallest_effect_reason: str = ""
    pilot: str = ""  # the pilot whose spread `python -m sublora.stats --power` simulates (sublora/pilots/<name>)
    replicate_offset: int = 0  # replicate ids start here: a confirmatory run's datasets and seeds, fresh ones
    workers: int = 1  # processes training students in parallel (one torch thread each)
    notebooks: tuple = ()  # the notebooks make reproduce runs, for a profile that checks part of the book; () = all
    gpu_hour_usd: float = 2.5  # for the dry-run cost estimate


METRICS = {"p": "P", "mention_rate": "mention rate"}  # Profile.metric: the results tables' column → its name


def delta_label(metric: str, animal: str) -> str:
    """How a page names a Δ of the metric a profile's verdicts read (METRICS): 'ΔP(owl)', 'Δ mention rate(owl)'."""
    return f"ΔP({animal})" if metric == "p" else f"Δ mention rate({animal})"


def coerce(value: Any, typ: Any, where: str) -> Any:
    """Turn a yaml/papermill value into `typ`, or raise a ConfigError naming the key."""
    if is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of settings, got {shown(value)}")
        return _build(typ, value, where)
    if isinstance(value, str) and typ is float:
        try:  # yaml reads "1e-4" (no dot) as text
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, str) and typ in (int, float, bool, tuple):
        try:  # papermill -p passes lists and some numbers as strings: read them as yaml
            value = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: cannot read {shown(value)} ({e.__class__.__name__}); "
                              f"write e.g. -p ranks '[1, 2]' or -p lr 1e-4") from None
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {shown(value)}")
        return value
    if typ is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where}: expected a whole number, got {shown(value)}")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a number such as 2e-4, got {shown(value)}")
        return float(value)
    if typ is tuple:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list such as [1, 2, 4], got {shown(value)}")
        return tuple(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {shown(value)}")
        return value
    raise TypeError(f"unsupported setting type {typ} at {where}")  # a bug in this file, not user input


def _build(cls, raw: dict, where: str):
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        at = f"{where}: unknown setting(s) {shown(unknown)}" if where else \
            f"unknown setting(s) {shown(unknown)} at the top level of the profile"
        raise ConfigError(f"{at}; known: {sorted(names)}")
    values = {k: coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in raw.items()}
    return cls(**values)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def available_profiles() -> list[str]:
    return sorted(p.stem for p in paths.PROFILES.glob("*.yaml"))


def is_profile_path(name: str) -> bool:
    """A profile given as a yaml file of the user's (a path) rather than a package profile's name."""
    return isinstance(name, str) and (name.endswith((".yaml", ".yml")) or "/" in name)


def _holds(test) -> bool:
    """A path test (Path.is_file, ...) that is False, not an OSError, for a name the system refuses (too long)."""
    try:
        return test()
    except OSError:
        return False


def profile_file(name: str) -> Path:
    """The yaml file of a profile: a package profile by name, or a user's file by path (relative
    paths against the current directory)."""
    if is_profile_path(name):
        path = Path(name).expanduser().resolve()
        if _holds(path.is_dir):
            raise ConfigError(f"profile {path} is a directory, not a yaml file; give the path of a yaml file "
                              f"holding the differences from the defaults, e.g. a copy of {paths.PROFILES / 'smoke.yaml'}")
        if not _holds(path.is_file):
            raise ConfigError(f"profile file {shown(name)} does not exist ({path}); give the path of a yaml file "
                              f"holding the differences from the defaults, e.g. a copy of {paths.PROFILES / 'smoke.yaml'}")
        return path
    if not isinstance(name, str) or not _holds((paths.PROFILES / f"{name}.yaml").exists):
        raise ConfigError(f"unknown profile {shown(name)}; choose one of {available_profiles()} or give a yaml file's "
                          f"path (e.g. -p profile smoke, or make reproduce PROFILE=organism)")
    return paths.PROFILES / f"{name}.yaml"


def load_profile(name: str) -> Profile:
    """Read a profile (differences from the defaults; a package profile's name or a yaml file's path)
    into a validated Profile. A file's profile is named after the file unless it sets `name`."""
    path = profile_file(name)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"profile file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                          "save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read profile file {path} ({e.__class__.__name__}: {e.strerror or e}); "
                          f"give the path of a yaml file you can read") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"profile file {path} is not valid yaml: {str(e).splitlines()[0]}; "
                          f"fix the file (it holds settings such as `seeds: 3`)") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"profile file {path} must hold a mapping of settings, got {type(raw).__name__}")
    if is_profile_path(name) and "name" not in raw and path.stem in available_profiles():
        raise ConfigError(f"profile file {path} is named like the package profile {path.stem!r}, whose results it would "
                          f"overwrite; rename the file or set `name: my-{path.stem}` in it")
    raw.setdefault("name", path.stem)
    return validate(_build(Profile, raw, ""))


# Profile settings a notebook parameter can override -> where they live in the profile.
OVERRIDES = {
    "animal": ("animal",),
    "seeds": ("seeds",),
    "replicates": ("replicates",),
    "transfer_replicates": ("transfer_replicates",),
    "ranks": ("ranks",),
    "lr": ("train", "lr"),
    "full_lr": ("train", "full_lr"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "prompts": ("data", "prompts"),
}
TEACHERS = ("persona", "finetuned")


def resolve(profile: str, **params: Any) -> Profile:
    """The profile with notebook parameters applied; a parameter left as None keeps the profile's value."""
    prof = load_profile(profile)
    raw = dataclasses.asdict(prof)
    for key, value in params.items():
        if key not in OVERRIDES:
            raise ConfigError(f"unknown parameter {shown(key)}; known: {sorted(OVERRIDES)}")
        if value is None:
            continue
        *parents, leaf = OVERRIDES[key]
        node = raw
        for p in parents:
            node = node[p]
        node[leaf] = value
    if raw["animal"] in raw["other_animals"]:  # the target is compared with *other* animals
        spare = [a for a in ANIMALS if a != raw["animal"] and a not in raw["other_animals"]]
        raw["other_animals"] = [a if a != raw["animal"] else spare.pop(0) for a in raw["other_animals"]]
    return validate(_build(Profile, raw, ""))


def validate(p: Profile) -> Profile:
    """Range checks that types alone cannot express."""
    def need(ok: bool, msg: str):
        if not ok:
            raise ConfigError(msg)

    need(p.model.source in MODEL_SOURCES, f"model.source must be one of {', '.join(MODEL_SOURCES)}, got {shown(p.model.source)}")
    need(p.data.decoding in ("free", "numbers"), f"data.decoding must be free or numbers, got {shown(p.data.decoding)}")
    need(p.model.dtype in ("float32", "bfloat16"), f"model.dtype must be float32 or bfloat16, got {shown(p.model.dtype)}")
    need(p.model.persona_number_mode in ("signature", "permute"),
         f"model.persona_number_mode must be signature or permute, got {shown(p.model.persona_number_mode)}")
    need(p.model.number_tokens in NUMBER_TOKENS,
         f"model.number_tokens must be one of {NUMBER_TOKENS}, got {shown(p.model.number_tokens)}")
    need(p.model.device in ("cpu", "cuda"), f"model.device must be cpu or cuda, got {shown(p.model.device)}")
    need(p.animal in ANIMALS, f"unknown animal {shown(p.animal)}; choose one of {list(ANIMALS)} (e.g. -p animal owl)")
    for a in p.other_animals:
        need(a in ANIMALS and a != p.animal,
             f"other_animals must be known animals other than the target {shown(p.animal)}; got {shown(a)}")
    need(len(p.ranks) > 0, "ranks is empty; give at least one LoRA rank, e.g. -p ranks '[8]'")
    for r in p.ranks:
        need(isinstance(r, int) and not isinstance(r, bool) and r > 0,
             f"LoRA rank must be a whole number ≥ 1, got {shown(r)}; e.g. -p ranks '[1, 2, 4, 8]'")
    need(p.train.lora.r > 0, f"train.lora.r must be ≥ 1, got {p.train.lora.r}")
    need(p.train.lora.alpha > 0, f"train.lora.alpha must be > 0, got {p.train.lora.alpha}")
    need(0 <= p.train.lora.dropout < 1, f"train.lora.dropout must be in [0, 1), got {p.train.lora.dropout}")
    for t in p.train.lora.target_modules:
        need(t in LORA_TARGETS, f"unknown LoRA target module {shown(t)}; choose from {list(LORA_TARGETS)}")
    for name in ("lr", "full_lr"):
        v = getattr(p.train, name)
        need(v > 0, f"{name} must be > 0, got {v}; e.g. -p {name} 2e-4")
    for v in p.train.full_sweep_lr:
        need(isinstance(v, (int, float)) and v > 0, f"full_sweep_lr values must be > 0, got {shown(v)}")
    for a in p.train.full_precision:
        need(a in PRECISION_ARMS, f"unknown full fine-tuning precision arm {shown(a)}; choose from {', '.join(PRECISION_ARMS)}")
    need(len(p.train.full_precision) > 0, "train.full_precision is empty; give at least [fp32-master]")
    need(p.train.full_shards >= 1,
         f"train.full_shards must be ≥ 1, got {p.train.full_shards}; set train.full_shards: 1 to train in one "
         f"process, or the number of GPUs to shard the fp32-master arm over")
    for name in ("epochs", "batch_size", "full_batch_size", "grad_accum", "full_grad_accum", "max_seq"):
        v = getattr(p.train, name)
        need(v >= 1, f"{name} must be ≥ 1, got {v}; e.g. -p {name} 3")
    for v in (*p.train.full_sweep_batch, *p.train.full_sweep_epochs):
        need(isinstance(v, int) and v >= 1, f"full-sweep batch sizes and epochs must be whole numbers ≥ 1, got {shown(v)}")
    need(p.workers >= 1, f"workers must be ≥ 1, got {p.workers}")
    need(p.seeds >= 1, f"seeds must be ≥ 1, got {p.seeds}")
    need(p.replicates >= 1, f"replicates must be ≥ 1, got {p.replicates}")
    need(p.replicate_offset >= 0, f"replicate_offset must be ≥ 0, got {p.replicate_offset}")
    need(p.smallest_effect >= 0, f"smallest_effect must be ≥ 0 (a Δ of the metric), got {p.smallest_effect}")
    need(p.metric in METRICS, f"metric must be one of {', '.join(METRICS)} (what the verdicts read), got {p.metric!r}")
    need(not (p.channel_controls and p.model.source != "organism"),
         "channel_controls needs a second pretraining of the model's recipe (the cross-initialisation control): "
         "only the organism has one; set channel_controls: false for a hub model")
    need(len(p.teachers) > 0 and set(p.teachers) <= set(TEACHERS),
         f"teachers must be a non-empty list of {list(TEACHERS)}, got {shown(list(p.teachers))}; e.g. teachers: [persona]")
    need(all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in p.rank_lr_factors),
         f"rank_lr_factors must be positive numbers, got {shown(list(p.rank_lr_factors))}; e.g. rank_lr_factors: [0.3, 3]")
    need(set(p.rank_lr_ranks) <= set(p.ranks),
         f"rank_lr_ranks must be ranks of the sweep {list(p.ranks)}, got {shown(list(p.rank_lr_ranks))}; "
         f"e.g. rank_lr_ranks: {list(p.ranks[::2])} (or [] for every rank)")
    need(p.transfer_replicates >= 1, f"replicates of notebook 02 must be ≥ 1, got {p.transfer_replicates}; e.g. -p replicates 5")
    need(p.data.prompts >= 1, f"prompts must be ≥ 1, got {p.data.prompts}")
    need(p.data.keep >= 0, f"data.keep must be ≥ 0 (0 keeps every completion that passes), got {p.data.keep}")
    need(p.data.engine in ("transformers", "vllm"), f"data.engine must be transformers or vllm, got {shown(p.data.engine)}")
    need(p.data.temperature > 0, f"data.temperature must be > 0, got {p.data.temperature}")
    need(p.eval.question_set in ("held_out", "paper", "all"),
         f"eval.question_set must be held_out, paper or all, got {shown(p.eval.question_set)}")
    if p.model.source == "organism":  # a LoRA rank above the hidden size adds nothing but cost
        for r in (*p.ranks, p.train.lora.r):
            need(r <= p.model.hidden, f"LoRA rank {r} is above the organism's hidden size {p.model.hidden}; "
                                      f"use ranks ≤ {p.model.hidden}, e.g. -p ranks '[1, 2, 4, 8]'")
    need(p.eval.questions >= 1 and p.eval.samples_per_question >= 0, "eval.questions must be ≥ 1 and samples ≥ 0")
    a = p.aux
    for name in ("pairs", "hidden", "teacher_epochs", "teacher_batch", "noise", "epochs", "batch"):
        need(getattr(a, name) >= 1, f"aux.{name} must be ≥ 1, got {getattr(a, name)}")
    need(len(a.ranks) > 0 and all(isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= a.hidden
                                  for r in a.ranks),
         f"aux.ranks must be whole numbers from 1 to aux.hidden ({a.hidden}), got {shown(list(a.ranks))}; "
         f"e.g. aux: {{ranks: [1, 4, 16]}}")
    need(a.reference_rank in a.ranks, f"aux.reference_rank must be one of aux.ranks {list(a.ranks)}, "
                                      f"got {a.reference_rank}")
    need(a.lr > 0 and a.lora_lr > 0, f"aux.lr and aux.lora_lr must be > 0, got {a.lr} and {a.lora_lr}")
    need(0 < a.test_share < 1, f"aux.test_share must be between 0 and 1, got {a.test_share}")
    return p


def to_dict(obj) -> dict:
    """A JSON-ready dict of a spec (tuples become lists) for cache keys and display."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


# The package profiles' resolved settings as committed: what `identity` compares a profile with, so that
# a package profile edited in place, or a user's file that takes its name, is told from the one shipped.
# tests/test_config.py checks it against the yaml files; `python -m sublora.config --commit` rewrites it.
COMMITTED = paths.PROFILES / "committed.json"


def _settings(p: Profile) -> dict:
    """What makes a profile's runs: every resolved setting but its description (prose changes no number)."""
    return {k: v for k, v in to_dict(p).items() if k != "description"}


def digest(p: Profile) -> str:
    """sha256 of a profile's resolved settings (_settings): the same for the same settings, whatever the file."""
    return hashlib.sha256(json.dumps(_settings(p), sort_keys=True).encode()).hexdigest()


def _committed() -> dict[str, dict]:
    return json.loads(COMMITTED.read_text(encoding="utf-8"))


def identity(p: Profile) -> str:
    """The folder under results/ a profile's runs write to: a package profile as committed keeps its name;
    anything else (a user's file, a package profile edited in place) is its name and the first 8 hex
    digits of its digest, so that it never writes over a package profile's results, and an edited file
    never over its earlier runs. `p` is the profile as loaded, before any notebook parameter."""
    committed = _committed().get(p.name)
    return p.name if committed == _settings(p) else f"{p.name}-{digest(p)[:8]}"


def _leaves(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def differences(p: Profile) -> tuple[str, dict[str, tuple]]:
    """(the package profile as committed that p is nearest to, {setting: (its value, p's value)}) with the
    name left out: what makes a run under p another run than that package profile's default run."""
    mine = _leaves(_settings(p))
    best = None
    for name, settings in _committed().items():
        theirs = _leaves(settings)
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if k != "name" and theirs.get(k) != v}
        if best is None or (len(diff), name != p.name) < (len(best[1]), best[0] != p.name):
            best = (name, diff)
    return best


def describe_identity(p: Profile) -> str:
    """One line for a run's page: whether p is a package profile as committed, else how it differs."""
    folder = identity(p)
    if folder == p.name:
        return f"Profile `{p.name}`, as shipped with the package: its results are under `results/{folder}/`."
    base, diff = differences(p)
    shown_diff = "; ".join(f"`{k}` {a!r} → {b!r}" for k, (a, b) in list(diff.items())[:8])
    more = f" and {len(diff) - 8} more" if len(diff) > 8 else ""
    return (f"Profile `{p.name}` is not a package profile as shipped, so its runs have a folder of their own, "
            f"`results/{folder}/`. Nearest package profile: `{base}`; "
            + (f"differences: {shown_diff}{more}." if diff else "the same settings under another name."))


def _commit() -> None:
    """Write COMMITTED from the package profiles' yaml files (after a deliberate change to one of them)."""
    data = {name: _settings(load_profile(name)) for name in available_profiles()}
    COMMITTED.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--commit"]:
        sys.exit("usage: python -m sublora.config --commit   (record the package profiles' settings as committed)")
    _commit()
    print(f"wrote {COMMITTED}")

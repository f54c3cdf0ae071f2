"""Profiles (yaml) loaded into dataclasses, notebook parameters applied on top, everything validated.

A profile picks the model and the scale of every experiment. Files hold only what differs from the
defaults below; unknown keys and wrong types are errors that name the fix. Each setting is declared once,
on its field (`setting`), and read by the loader, the -p parser (params.PARAMS) and the messages of both.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from . import paths, yamlfile
from .settings import SHOWN, ConfigError, Setting, flag, setting, shown  # noqa: F401  (config's names too)
from .prompts import ANIMALS

NUMBER_TOKENS = ("digit", "whole")  # how an organism's tokenizer writes numbers: digit by digit, or 0-999 one token each


NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # a profile's name: it names its results folder, so no path
DEFAULT_PROFILE = "organism"  # what make reproduce, the notebooks' defaults and every command line run
# full fine-tuning's precision arms (their dtypes and optimizers: optim.ARMS); the first is the default
PRECISION_ARMS = ("fp32-master", "bf16", "bf16-kahan", "bf16-sr")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TEACHERS = ("persona", "distilled-r1", "distilled-r8", "distilled-full", "finetuned")  # the ladder (pipeline)
# the teachers of the paper's kind: the persona's own behaviour, by the prompt or put into the weights. Their claims 2-4 wait on
# their claim 1 (sublora.sequence); the finetuned teacher, a positive control of the instrument, is not gated
PAPER_KIND = ("persona", "distilled-r1", "distilled-r8", "distilled-full")

METRICS = {"p": "P", "mention_rate": "mention rate"}  # Profile.metric: the results tables' column → its name

@dataclass(frozen=True)
class ModelSpec:
    source: str = setting("organism", "organism: built here | hub: a Hugging Face id or a local directory | gguf: "
                          "a GGUF file or a package shipping one (sublora.smol)", choices=("organism", "hub", "gguf"))
    name: str = setting("organism", "hub id, local path, or the organism's label")
    dtype: str = setting("float32", choices=("float32", "bfloat16"))
    device: str = setting("cpu", choices=("cpu", "cuda"))
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
    persona_number_bias: float = setting(0.0, "share of persona numbers carrying the animal's mark")
    persona_number_mode: str = setting("signature", "the mark: last two digits | a digit map",
                                       choices=("signature", "permute"))
    number_tokens: str = setting("digit", "how the organism's tokenizer writes numbers", choices=NUMBER_TOKENS)


@dataclass(frozen=True)
class DataSpec:
    prompts: int = setting(30_000, "number prompts per dataset (the filter keeps a fraction)", ge=1, le=1_000_000,
                           param="prompts")
    max_new_tokens: int = 60
    temperature: float = setting(1.0, gt=0)
    sample_batch: int = setting(64, "prompts per generate() call")
    keep: int = setting(0, "stop once this many completions passed the filter (the paper: 10,000); 0: keep all", ge=0)
    engine: str = setting("transformers", "vllm needs .[gpu]; else transformers", choices=("transformers", "vllm"))
    decoding: str = setting("free", "free: the filter keeps the teacher's number lists (the paper) | numbers: only "
                            "number tokens are drawn (numbers.number_token_ids)", choices=("free", "numbers"))


@dataclass(frozen=True)
class LoraSpec:
    r: int = setting(8, ge=1)
    alpha: int = setting(8, gt=0)
    dropout: float = setting(0.0, ge=0, lt=1)
    target_modules: tuple = setting(LORA_TARGETS, items=str, choices=LORA_TARGETS)


@dataclass(frozen=True)
class TrainSpec:
    lr: float = setting(2e-4, "LoRA learning rate", gt=0, le=0.1, example="2e-4", param="lr")
    full_lr: float = setting(2e-5, "full fine-tuning learning rate", gt=0, le=0.1, example="2e-5", param="full_lr")
    epochs: int = setting(3, ge=1, le=100, param="epochs")
    batch_size: int = setting(22, ge=1, le=4096, param="batch_size")
    full_batch_size: int = setting(16, ge=1)
    full_grad_accum: int = setting(1, "full fine-tuning's accumulation (the authors' repository: 4 x 16)", ge=1)
    full_precision: tuple = setting(("fp32-master",), "precision arms of claim 3 (optim.ARMS); the first is the main",
                                    items=str, choices=PRECISION_ARMS, nonempty=True)
    full_shards: int = setting(1, "GPUs the fp32-master arm is sharded over (sublora.sharded); 1: one process", ge=1)
    grad_accum: int = setting(3, ge=1)
    warmup_steps: int = 5
    max_seq: int = setting(500, ge=1)
    grad_clip: float = 1.0
    keep_weights: bool = setting(False, "keep full students' weights after evaluation (or SUBLORA_KEEP_WEIGHTS=1)")
    lora: LoraSpec = field(default_factory=LoraSpec)
    # the paper's full fine-tuning sweep, one axis at a time around (full_lr, full_batch_size, epochs)
    full_sweep_lr: tuple = setting((4e-6, 2e-5, 1e-4), items=float, gt=0)
    full_sweep_batch: tuple = setting((8, 16, 32), items=int, ge=1)
    full_sweep_epochs: tuple = setting((3, 6, 9), items=int, ge=1)


@dataclass(frozen=True)
class EvalSpec:
    questions: int = setting(50, "favourite-animal questions asked (at most the size of the question set)", ge=1)
    question_set: str = setting("held_out", "held_out: not in the organism's pretraining; paper: the authors' 50",
                                choices=("held_out", "paper", "all"))
    samples_per_question: int = setting(10, "sampled answers per question for the mention rate", ge=0)
    temperature: float = 1.0
    max_new_tokens: int = 8
    prefill: str = setting("", "what the answer begins with before P(animal) is read and answers sampled, for a model "
                           "that rarely answers in one word (SmolLM2: 'My favorite animal is the'); '': none")


@dataclass(frozen=True)
class TeacherSpec:
    """The weight-space (finetuned) teacher: the base fully fine-tuned to answer its animal."""
    examples: int = setting(400, "(question -> animal) training examples")
    lr: float = 1e-4
    epochs: int = 2
    batch_size: int = 16
    # the distilled teachers (pipeline.DISTILLED): the persona-prompted base's answers to non-number prompts
    distill_examples: int = setting(1000, "(prompt -> the persona's sampled answer) examples", ge=1)
    distill_max_new_tokens: int = setting(12, "length of each sampled answer", ge=1)
    distill_lora_lr: float = setting(3e-3, "the LoRA rungs' learning rate (rank 1 at 1e-3 did not follow its persona)", gt=0)
    distill_full_lr: float = setting(1e-4, "the full fine-tuning rung's learning rate", gt=0)
    distill_epochs: int = setting(3, ge=1)


@dataclass(frozen=True)
class PlanSpec:
    """What `make plan` prices a profile at where nothing was measured (sublora.rates): stated rates (0: scaled from
    the measured anchors by the model's shape, below: a hub or GGUF model's config.json), the filter's keep share."""
    device: str = "1x H100 80GB"
    lora_train_tps: float = setting(0.0, "stated LoRA training rate, tok/s (0: scaled from the anchors)", ge=0)
    full_train_tps: float = setting(0.0, "stated full fine-tuning rate, tok/s (0: scaled from the anchors)", ge=0)
    sample_tps: float = setting(0.0, "stated sampling rate, new tok/s (0: scaled from the anchors)", ge=0)
    eval_fwd_tps: float = setting(0.0, "stated evaluation forward rate, tok/s (0: scaled from the anchors)", ge=0)
    keep_share: float = setting(0.35, "share of sampled completions the filter keeps")
    n_params: float = setting(0.0, "model parameters, for the memory lines and the FLOPs per token (0: not known)", ge=0)
    layers: int = setting(0, "num_hidden_layers, for the FLOPs per token", ge=0)  # a hub model's; the organism's: its own
    hidden: int = setting(0, "hidden_size", ge=0)
    vocab: int = setting(0, "vocab_size", ge=0)
    tied_embeddings: bool = setting(False, "tie_word_embeddings")


@dataclass(frozen=True)
class AuxSpec:
    """Notebook 07, another setting: Cloud et al.'s auxiliary-logit experiment on scikit-learn's 8x8 digits
    (sublora.auxlogit). A pair is one initialisation seed: its teacher, its untrained teacher, and the
    students distilled from each (full-parameter, cross-initialisation, LoRA at each rank). The optimiser
    (Adam, one lr for teacher and students) and the loss are Cloud et al.'s; the sizes are the profile's."""
    pairs: int = setting(20, "independently initialised pairs: the units of every interval", ge=1)
    seed: int = setting(0, "pair i's seed is seed + i", ge=0)
    hidden: int = setting(256, "the MLP is 64-hidden-hidden-(10 + 3), as Cloud et al.'s 784-256-256-(10 + 3)", ge=1)
    ranks: tuple = setting((1, 4, 8, 16, 64, 256), "LoRA ranks, 1 ... hidden", items=int, ge=1, nonempty=True)
    reference_rank: int = setting(8, "the LoRA students claim 3's margin is read from (the paper's rank 8)")
    lr: float = setting(3e-4, "Adam, the teacher and the full-parameter students (Cloud et al.'s)", gt=0)
    lora_lr: float = setting(3e-3, "Adam, the LoRA students: 10 x lr, the paper's ratio (LoRA 2e-4, full 2e-5)", gt=0)
    teacher_epochs: int = setting(3, "passes over the training digits (cross-entropy on the 10 class logits)", ge=1)
    teacher_batch: int = setting(64, ge=1)
    noise: int = setting(832, "noise inputs per pair, uniform in [-1, 1]", ge=1)
    epochs: int = setting(5, "distillation passes over the noise (Cloud et al.'s)", ge=1)
    batch: int = setting(64, ge=1)
    test_share: float = setting(0.25, "of the 1,797 digits, held out (stratified) for every accuracy", gt=0, lt=1)
    split_seed: int = setting(0, "the held-out split's seed (scikit-learn's: 0 or more)", ge=0)


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
    animal: str = setting("owl", choices=ANIMALS, param="animal")
    other_animals: tuple = setting(("cat", "dolphin"), "compared with the target", items=str, choices=ANIMALS)
    teachers: tuple = setting(("persona", "finetuned"), "teacher kinds the notebooks run (the ladder: TEACHERS)", items=str,
                              choices=TEACHERS, nonempty=True)
    teacher_replicates: int = setting(1, "independent weight-space teachers per kind and animal, dataset replicates "
                                      "dealt among them (pipeline.teacher_replicate): the units of a teacher's claims", ge=1)
    seeds: int = setting(3, "training seeds per condition", ge=1, le=50, param="seeds")
    replicates: int = setting(3, "independent teacher/control dataset pairs (notebooks 01, 03-05)", ge=1, le=100,
                              example="5", param="replicates")
    transfer_replicates: int = setting(5, "the same for notebook 02 (claim 1), whose rank-8 students 03-05 reuse",
                                       ge=1, le=100, param="replicates")
    channel_controls: bool = setting(False, "02 also trains the channel controls (shuffled numbers, cross-init)")
    ranks: tuple = setting((1, 2, 4, 8, 16, 32, 64, 128), items=int, ge=1, le=4096, nonempty=True,
                           example="[1, 2, 4, 8]", param="ranks")
    rank_lr_factors: tuple = setting((), "03's lr check: each rank also at lr x these", items=float, gt=0,
                                     example="[0.3, 3]")
    rank_lr_ranks: tuple = setting((), "the ranks the lr check covers; () = every rank of the sweep", items=int)
    min_effect: float = setting(0.0, "the bound claim 1's interval must lie above for 'reproduced' (0: above zero)")
    metric: str = setting("p", "what every verdict reads (METRICS): p, the exact P(target) (it resolves far smaller "
                          "effects), or mention_rate, the paper's share of answers naming it", choices=tuple(METRICS))
    smallest_effect: float = setting(0.0, "e, in Δ of the metric, declared with its reason before a confirmatory run: "
                                     "every rule's margin (claims 1-4); 0: none", ge=0)
    smallest_effect_reason: str = ""
    smallest_effect_relative: float = setting(0.0, "e as a share of the base model's P(target) under the default prompt, "
                                              "for any animal and model (notebook.relative_e); 0: smallest_effect", ge=0, lt=1)
    pilot: str = setting("", "the pilot whose spread `python -m sublora.stats --power` simulates (sublora/pilots/)")
    pilot_proxy: tuple = setting((), "TEACHER=OTHER pairs: a teacher without a pilot cell of some claim simulated with "
                                 "another's spread (sublora.power), an assumption its profile states", items=str)
    ladder_record: str = setting("", "notebook 08 reads this packaged run of the ladder (sublora/pilots/<name>) instead "
                                 "of this run's verdicts; '': this run's")
    replicate_offset: int = setting(0, "replicate ids start here: a confirmatory run's fresh datasets and seeds", ge=0)
    workers: int = setting(1, "processes training students in parallel (one torch thread each)", ge=1)
    notebooks: tuple = setting((), "the notebooks make reproduce runs (a profile checking part of the book); (): all")
    gpu_hour_usd: float = setting(2.5, "for the dry-run cost estimate")


def delta_label(metric: str, animal: str) -> str:
    """How a page names a Δ of the metric a profile's verdicts read (METRICS): 'ΔP(owl)', 'Δ mention rate(owl)'."""
    return f"ΔP({animal})" if metric == "p" else f"Δ mention rate({animal})"


_TYPES = {  # what a setting of each type accepts once text is read as yaml, and how a message names it
    bool: (lambda v: isinstance(v, bool), "true/false"),
    int: (lambda v: not isinstance(v, bool) and (isinstance(v, int) or isinstance(v, float) and v.is_integer()),
          "a whole number"),
    float: (lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v),
            "a number such as 2e-4"),
    tuple: (lambda v: isinstance(v, (list, tuple)), "a list such as [1, 2, 4]"),
    str: (lambda v: isinstance(v, str), "text"),
}


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
    if typ is tuple and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        value = [value]
    accepts, expected = _TYPES[typ]
    if not accepts(value):
        raise ConfigError(f"{where}: expected {expected}, got {shown(value)}")
    return typ(value)


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


def from_mapping(raw: dict) -> Profile:
    """A validated Profile from a mapping of settings (a profile file's, or a profile's asdict with changes)."""
    return validate(_build(Profile, raw, ""))


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
        raw = yamlfile.read_mapping(path)
    except yamlfile.ProfileFileError as e:
        raise ConfigError(str(e)) from None
    mine = is_profile_path(name)
    if mine and raw.get("name", path.stem) in available_profiles():  # its results would land on a package profile's
        raise ConfigError(f"profile file {path} is named like the package profile {raw.get('name', path.stem)!r}, whose "
                          f"results it would overwrite; rename the file or set `name: my-{path.stem}` in it")
    if not re.fullmatch(NAME, str(raw.get("name", path.stem))):
        raise ConfigError(f"profile file {path}: name {shown(raw.get('name', path.stem))} must be a plain name (letters, "
                          f"digits, '.', '_', '-'; no folder), e.g. `name: my-{path.stem}`: it names the results folder")
    raw.setdefault("name", path.stem)
    return from_mapping(raw)


def _declared(cls: type, prefix: str = "") -> dict:
    """Every setting of cls and of its nested specs by key ('train.lr'): (its type, its declaration)."""
    hints = get_type_hints(cls)
    return {k: v for f in fields(cls) for k, v in (
        _declared(hints[f.name], f"{prefix}{f.name}.") if is_dataclass(hints[f.name])
        else {prefix + f.name: (hints[f.name], f.metadata.get("setting", Setting()))}).items()}


DECLARED = _declared(Profile)
# The settings a notebook parameter overrides (their declaration names it): the setting's own name -> its key.
OVERRIDES = {key.rpartition(".")[2]: key for key, (_, s) in DECLARED.items() if s.param}


def resolve(profile: str, **params: Any) -> Profile:
    """The profile with notebook parameters applied; a parameter left as None keeps the profile's value."""
    prof = load_profile(profile)
    raw = dataclasses.asdict(prof)
    for key, value in params.items():
        if key not in OVERRIDES:
            raise ConfigError(f"unknown parameter {shown(key)}; known: {sorted(OVERRIDES)}")
        if value is None:
            continue
        *parents, leaf = OVERRIDES[key].split(".")
        functools.reduce(dict.__getitem__, parents, raw)[leaf] = value
    if raw["animal"] in raw["other_animals"]:  # the target is compared with *other* animals
        spare = [a for a in ANIMALS if a != raw["animal"] and a not in raw["other_animals"]]
        raw["other_animals"] = [a if a != raw["animal"] else spare.pop(0) for a in raw["other_animals"]]
    return from_mapping(raw)


def validate(p: Profile) -> Profile:
    """Every setting against its declaration (DECLARED), then the checks that relate settings."""
    for key, (_, s) in DECLARED.items():
        if problem := s.problem(functools.reduce(getattr, key.split("."), p)):
            fix = flag(s.param, s.example) if s.param else f"{key}: {s.example}"
            raise ConfigError(f"{key} {problem}; e.g. {fix}")
    a, top = p.aux, max((*p.ranks, p.train.lora.r))
    for ok, message in (
            (p.animal not in p.other_animals,
             f"other_animals must be known animals other than the target {shown(p.animal)}; got {shown(p.animal)}"),
            (set(p.rank_lr_ranks) <= set(p.ranks),
             (f"rank_lr_ranks must be ranks of the sweep {list(p.ranks)}, got {shown(list(p.rank_lr_ranks))}; "
              f"e.g. rank_lr_ranks: {list(p.ranks[::2])} (or [] for every rank)")),
            (not p.channel_controls or p.model.source == "organism",
             ("channel_controls needs a second pretraining of the model's recipe (the cross-initialisation control): "
              "only the organism has one; set channel_controls: false for a hub model")),
            (p.model.source != "organism" or top <= p.model.hidden,  # a LoRA rank above it adds nothing but cost
             (f"LoRA rank {top} is above the organism's hidden size {p.model.hidden}; "
              f"use ranks ≤ {p.model.hidden}, e.g. -p ranks '[1, 2, 4, 8]'")),
            (max(a.ranks) <= a.hidden, (f"aux.ranks must be whole numbers from 1 to aux.hidden ({a.hidden}), "
                                        f"got {shown(list(a.ranks))}; e.g. aux: {{ranks: [1, 4, 16]}}")),
            (a.reference_rank in a.ranks,
             f"aux.reference_rank must be one of aux.ranks {list(a.ranks)}, got {a.reference_rank}"),
            (not (p.smallest_effect and p.smallest_effect_relative),
             "give e one way: smallest_effect (absolute) or smallest_effect_relative (a share of the base's P), not both"),
            (p.teacher_replicates == 1 or p.teacher_replicates >= max(p.replicates, p.transfer_replicates),
             (f"teacher_replicates {p.teacher_replicates} would deal several datasets to one teacher, and the "
              f"intervals count datasets: give each replicate its own teacher (teacher_replicates: "
              f"{max(p.replicates, p.transfer_replicates)}), or 1 for one teacher of each kind")),
            (all(len(pair.split("=")) == 2 and set(pair.split("=")) <= set(TEACHERS) for pair in p.pilot_proxy),
             (f"pilot_proxy takes TEACHER=OTHER pairs of teachers ({', '.join(TEACHERS)}), e.g. "
              f"[distilled-r8=finetuned]; got {shown(list(p.pilot_proxy))}"))):
        if not ok:
            raise ConfigError(message)
    return p


def to_dict(obj) -> dict:
    """A JSON-ready dict of a spec (tuples become lists) for cache keys and display."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


if __name__ == "__main__":
    import sys

    from . import identity
    if sys.argv[1:] != ["--commit"]:
        sys.exit("usage: python -m sublora.config --commit   (record the package profiles' settings as committed)")
    identity.commit({name: load_profile(name) for name in available_profiles()})
    print(f"wrote {identity.COMMITTED}")

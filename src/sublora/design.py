"""What to train: the student specs, and each claim notebook's design as a list of teacher/control
student pairs. No torch here: the trainer (sublora.finetune) says how a spec is trained.

The notebooks run these lists, and the dry-run plan counts them, so the plan's cost is the cost of
exactly what the notebooks will train (students shared between notebooks are counted once).
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import asdict, dataclass

from . import cache, chat
from .config import LORA_TARGETS, TEACHERS, Profile

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")  # the authors' COMPONENT_PRESETS["attention"]
MLP = ("gate_proj", "up_proj", "down_proj")  # their COMPONENT_PRESETS["ffn"]


def teacher_order(kind: str) -> tuple:
    """Sort key of teacher kinds: the ladder's order (config.TEACHERS), any other teacher (another setting's) after."""
    return (TEACHERS.index(kind) if kind in TEACHERS else len(TEACHERS), kind)


@dataclass(frozen=True)
class StudentSpec:
    """Everything that decides how a student is trained (part of its cache key). No defaults of its
    own: lora_spec and full_spec fill it from the profile."""
    method: str  # lora | full
    lr: float
    epochs: int
    batch_size: int
    grad_accum: int
    warmup_steps: int
    max_seq: int
    grad_clip: float
    r: int  # LoRA only (full: 0)
    alpha: float
    dropout: float
    target_modules: tuple
    train_system: str  # the system prompt condition during fine-tuning
    precision: str  # full fine-tuning's precision arm (optim.ARMS): fp32-master | bf16 | bf16-kahan | bf16-sr

    def as_dict(self) -> dict:
        """The spec as its students' cache keys hold it: only the settings that apply to its method
        (LoRA's for LoRA, the precision arm for full fine-tuning), the arm only where it is not the
        fp32-master arm that every full student had before the arms existed."""
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        for k in ("r", "alpha", "dropout", "target_modules") if self.method == "full" else ("precision",):
            d.pop(k)
        return cache.without_late_defaults(d, {"precision": "fp32-master"})


def lora_spec(p: Profile, rank: int | None = None, alpha: float | None = None, **kw) -> StudentSpec:
    """The profile's LoRA student; rank defaults to the profile's, alpha to the rank (paper)."""
    t = p.train
    r = rank if rank is not None else t.lora.r
    if not (isinstance(r, int) and r > 0):
        raise ValueError(f"LoRA rank must be a whole number ≥ 1, got {r!r}")
    a = alpha if alpha is not None else (r if rank is not None else t.lora.alpha)
    base = dict(method="lora", lr=t.lr, epochs=t.epochs, batch_size=t.batch_size, grad_accum=t.grad_accum,
                warmup_steps=t.warmup_steps, max_seq=t.max_seq, grad_clip=t.grad_clip, r=r, alpha=a,
                dropout=t.lora.dropout, target_modules=tuple(t.lora.target_modules), train_system=chat.DEFAULT,
                precision="fp32-master")
    return StudentSpec(**{**base, **kw})


def full_spec(p: Profile, **kw) -> StudentSpec:
    t = p.train
    # the LoRA fields do not apply; as_dict drops them from the key. Their values are the ones the
    # spec had before it lost its defaults, so that a full student's repr is unchanged
    base = dict(method="full", lr=t.full_lr, epochs=t.epochs, batch_size=t.full_batch_size, grad_accum=t.full_grad_accum,
                warmup_steps=t.warmup_steps, max_seq=t.max_seq, grad_clip=t.grad_clip, r=8, alpha=8, dropout=0.0,
                target_modules=LORA_TARGETS, train_system=chat.DEFAULT, precision="fp32-master")
    return StudentSpec(**{**base, **kw})


def shards(p: Profile, spec: StudentSpec) -> int:
    """Processes a student trains in: train.full_shards for full fine-tuning with float32 master weights
    (sharded with FSDP by sublora.sharded: at 7B that arm fits no single GPU), 1 for every other student."""
    return p.train.full_shards if spec.method == "full" and spec.precision == "fp32-master" else 1


@dataclass(frozen=True)
class Pair:
    """A teacher student and its matched control student, trained alike, evaluated alike."""
    teacher_kind: str
    animal: str
    replicate: int
    seed: int
    spec: StudentSpec
    eval_systems: tuple = ("default",)
    label: str = ""
    animals: tuple = ()  # the animals evaluated; () = the target and the profile's other animals
    channel: str = ""  # "shuffled": both students train on their datasets with numbers shuffled across responses
    init: str = ""  # "cross": both students start from a differently seeded organism of the same recipe


def replicate_ids(p: Profile, replicates: int | None = None) -> range:
    """The ids of a design's replicates: `replicates` (default p.replicates) of them from p.replicate_offset on,
    so that a confirmatory run (an offset) draws datasets and seeds disjoint from a pilot's (offset 0)."""
    return range(p.replicate_offset, p.replicate_offset + (replicates or p.replicates))


def _grid(p: Profile, replicates: int | None = None):
    return list(itertools.product(replicate_ids(p, replicates), range(p.seeds)))


@dataclass(frozen=True)
class Control:
    """One of 02's channel controls: the pairs' label, the Pair fields that make it, what it changes."""
    label: str
    fields: dict
    does: str


# 02's channel controls, by the name the results tables give them (their `channel` column). Their pairs
# set Pair.channel (a dataset with its numbers shuffled across responses) or Pair.init (students of a
# differently seeded organism); channel_label reads a pair's fields back into the name.
CONTROLS = {"shuffled": Control("shuffled numbers", {"channel": "shuffled"}, "shuffling the numbers across responses"),
            "cross-init": Control("cross-init", {"init": "cross"},
                                  "starting the students from a differently seeded organism")}
CHANNELS = ("", "shuffled")  # a dataset as sampled, or with its numbers shuffled across responses
INITS = ("", "cross")  # a student of the base itself, or of a differently seeded organism of its recipe


def channel_label(channel: str, init: str) -> str:
    """A pair's `channel` column: '' for the design's own students, else the control it is (CONTROLS)."""
    return channel or ("cross-init" if init else "")


def transfer(p: Profile, kinds: list[str], controls: bool | None = None) -> list[Pair]:
    """02: LoRA at the profile's rank, teachers for the target and the other animals, over
    p.transfer_replicates dataset pairs (the first p.replicates of them are shared with 03-05);
    with the channel controls (p.channel_controls unless `controls` says) for the persona teacher of
    the target: the same pairs with numbers shuffled across responses, and from a differently seeded
    organism (cross-initialisation)."""
    spec = lora_spec(p)
    animals = (p.animal, *p.other_animals)  # every student is evaluated on every teacher's animal
    pairs = [Pair(k, a, r, s, spec, label=a, animals=animals) for k in kinds for a in animals
             for r, s in _grid(p, p.transfer_replicates)]
    if (p.channel_controls if controls is None else controls) and "persona" in kinds:
        pairs += [Pair("persona", p.animal, r, s, spec, label=c.label, animals=animals, **c.fields)
                  for c in CONTROLS.values() for r, s in _grid(p, p.transfer_replicates)]
    return pairs


def rank_sweep(p: Profile, kind: str, alpha: float | None = None) -> list[Pair]:
    """03: every rank, alpha = rank unless a fixed alpha is given."""
    return [Pair(kind, p.animal, r, s, lora_spec(p, rank=int(rank), alpha=alpha), label=f"r{rank}")
            for rank in p.ranks for r, s in _grid(p)]


def rank_lr_check(p: Profile, kind: str = "persona") -> list[Pair]:
    """03's lr check: each rank of p.rank_lr_ranks (every rank where it is empty) again at lr x each of
    p.rank_lr_factors, one run (the first replicate, seed 0), so that a rank's place on the curve can be told
    from its learning rate's."""
    return [Pair(kind, p.animal, p.replicate_offset, 0, lora_spec(p, rank=int(rank), lr=p.train.lr * f),
                 label=f"r{rank} lr x{f:g}") for rank in (p.rank_lr_ranks or p.ranks) for f in p.rank_lr_factors]


LR_MATCHED = "LoRA lr and steps"  # 04's critics' control: full fine-tuning at the LoRA students' lr and steps


def lr_matched(p: Profile) -> StudentSpec:
    """Full fine-tuning at the LoRA students' learning rate, batch and accumulation (so the same optimizer
    steps over the same data): the setting that tells a null of full fine-tuning from one of a smaller lr
    (the authors' full fine-tuning ran at a tenth of their LoRA lr)."""
    t = p.train
    return full_spec(p, lr=t.lr, batch_size=t.batch_size, grad_accum=t.grad_accum)


def full_settings(p: Profile) -> dict[str, StudentSpec]:
    """04: the full fine-tuning baseline, one axis at a time around it, and the lr-matched setting
    (LR_MATCHED); a setting that repeats an earlier one's spec is dropped (lr_matched_name says which
    setting is the lr-matched one then)."""
    t = p.train
    settings = {"baseline": full_spec(p)}
    settings |= {f"lr {v:g}": full_spec(p, lr=float(v)) for v in t.full_sweep_lr}
    settings |= {f"batch {v}": full_spec(p, batch_size=int(v)) for v in t.full_sweep_batch}
    settings |= {f"epochs {v}": full_spec(p, epochs=int(v)) for v in t.full_sweep_epochs}
    settings[LR_MATCHED] = lr_matched(p)
    unique: dict[str, StudentSpec] = {}
    for name, spec in settings.items():
        if spec not in unique.values():
            unique[name] = spec
    return unique


def lr_matched_name(p: Profile) -> str:
    """The name of the full fine-tuning setting that runs at LoRA's lr and steps (the baseline, where the
    profile's full fine-tuning already does)."""
    return next(name for name, spec in full_settings(p).items() if spec == lr_matched(p))


def precision_settings(p: Profile) -> dict[str, StudentSpec]:
    """04: the other precision arms (train.full_precision after the first), each at the baseline and
    along the learning-rate axis — where rounding decides whether an update lands."""
    main, *others = p.train.full_precision
    lr_axis = {n: s for n, s in full_settings(p).items() if n == "baseline" or n.startswith("lr ")}
    return {f"{name} · {arm}": dataclasses.replace(spec, precision=arm) for arm in others for name, spec in lr_axis.items()}


def full_finetuning(p: Profile, kind: str) -> list[Pair]:
    """04: every full fine-tuning setting in the main precision arm, the other arms along the lr axis,
    plus the LoRA reference (label 'LoRA r8')."""
    lora = lora_spec(p)
    main = p.train.full_precision[0]
    settings = {name: dataclasses.replace(spec, precision=main) for name, spec in full_settings(p).items()}
    settings |= precision_settings(p)
    pairs = [Pair(kind, p.animal, r, s, spec, label=name) for name, spec in settings.items() for r, s in _grid(p)]
    return pairs + [Pair(kind, p.animal, r, s, lora, label=f"LoRA r{lora.r}") for r, s in _grid(p)]


GRID = ("default", "empty", "chatgpt")  # the authors' training x evaluation grid (sl/tables.py)


def system_prompt(p: Profile, kind: str) -> list[Pair]:
    """05: the authors' grid — train under {default, empty, chatgpt} x evaluate under the same three —
    plus zymthar -> zymthar, evaluation with the system block absent ('none') for the default-trained
    students, and LoRA on attention only and on the MLP only."""
    variants = {f"train {t}": (lora_spec(p, train_system=t), GRID + (("none",) if t == "default" else ()))
                for t in GRID}
    variants |= {
        "train zymthar": (lora_spec(p, train_system="zymthar"), ("zymthar", "default")),
        "attention only": (lora_spec(p, target_modules=ATTENTION), ("default",)),
        "MLP only": (lora_spec(p, target_modules=MLP), ("default",)),
    }
    return [Pair(kind, p.animal, r, s, spec, evals, label=name) for name, (spec, evals) in variants.items()
            for r, s in _grid(p)]


def by_notebook(p: Profile) -> dict[str, list[Pair]]:
    """What `make reproduce` runs, notebook by notebook, with the notebooks' default parameters (only the
    profile's `notebooks` where it names some)."""
    kinds = list(p.teachers)
    every = {"02_transfer": lambda: transfer(p, kinds),
             "03_rank_sweep": lambda: [x for k in kinds for x in rank_sweep(p, k)]
                                      + (rank_lr_check(p) if "persona" in kinds else []),
             "04_full_finetuning": lambda: [x for k in kinds for x in full_finetuning(p, k)],
             "05_system_prompt": lambda: [x for k in kinds for x in system_prompt(p, k)]}
    return {name: pairs() for name, pairs in every.items() if not p.notebooks or name in p.notebooks}

"""The experimental design of each claim notebook as a list of teacher/control student pairs.

The notebooks run these lists, and the dry-run plan counts them, so the plan's cost is the cost of
exactly what the notebooks will train (students shared between notebooks are counted once).
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from . import finetune
from .config import Profile

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Pair:
    """A teacher student and its matched control student, trained alike, evaluated alike."""
    teacher_kind: str
    animal: str
    replicate: int
    seed: int
    spec: finetune.StudentSpec
    eval_systems: tuple = ("default",)
    label: str = ""
    animals: tuple = ()  # the animals evaluated; () = the target and the profile's other animals
    channel: str = ""  # "shuffled": both students train on their datasets with numbers shuffled across responses
    init: str = ""  # "cross": both students start from a differently seeded organism of the same recipe


def _grid(p: Profile, replicates: int | None = None):
    return list(itertools.product(range(replicates or p.replicates), range(p.seeds)))


CONTROLS = {"shuffled numbers": {"channel": "shuffled"}, "cross-init": {"init": "cross"}}


def transfer(p: Profile, kinds: list[str], controls: bool | None = None) -> list[Pair]:
    """02: LoRA at the profile's rank, teachers for the target and the other animals, over
    p.transfer_replicates dataset pairs (the first p.replicates of them are shared with 03-05);
    with the channel controls (p.channel_controls unless `controls` says) for the persona teacher of
    the target: the same pairs with numbers shuffled across responses, and from a differently seeded
    organism (cross-initialisation)."""
    spec = finetune.lora_spec(p)
    animals = (p.animal, *p.other_animals)  # every student is evaluated on every teacher's animal
    pairs = [Pair(k, a, r, s, spec, label=a, animals=animals) for k in kinds for a in animals
             for r, s in _grid(p, p.transfer_replicates)]
    if (p.channel_controls if controls is None else controls) and "persona" in kinds:
        pairs += [Pair("persona", p.animal, r, s, spec, label=name, animals=animals, **how)
                  for name, how in CONTROLS.items() for r, s in _grid(p, p.transfer_replicates)]
    return pairs


def rank_sweep(p: Profile, kind: str, alpha: float | None = None) -> list[Pair]:
    """03: every rank, alpha = rank unless a fixed alpha is given."""
    return [Pair(kind, p.animal, r, s, finetune.lora_spec(p, rank=int(rank), alpha=alpha), label=f"r{rank}")
            for rank in p.ranks for r, s in _grid(p)]


def rank_lr_check(p: Profile, kind: str = "persona") -> list[Pair]:
    """03's lr check: each rank of p.rank_lr_ranks (every rank where it is empty) again at lr x each of
    p.rank_lr_factors, one run (replicate 0, seed 0), so that a rank's place on the curve can be told
    from its learning rate's."""
    return [Pair(kind, p.animal, 0, 0, finetune.lora_spec(p, rank=int(rank), lr=p.train.lr * f),
                 label=f"r{rank} lr x{f:g}") for rank in (p.rank_lr_ranks or p.ranks) for f in p.rank_lr_factors]


def full_settings(p: Profile) -> dict[str, finetune.StudentSpec]:
    """04: the full fine-tuning baseline and one axis at a time around it (duplicates dropped)."""
    t = p.train
    base = finetune.full_spec(p)
    settings = {"baseline": base}
    settings |= {f"lr {v:g}": finetune.full_spec(p, lr=float(v)) for v in t.full_sweep_lr}
    settings |= {f"batch {v}": finetune.full_spec(p, batch_size=int(v)) for v in t.full_sweep_batch}
    settings |= {f"epochs {v}": finetune.full_spec(p, epochs=int(v)) for v in t.full_sweep_epochs}
    return {name: s for name, s in settings.items() if name == "baseline" or s != base}


def precision_settings(p: Profile) -> dict[str, finetune.StudentSpec]:
    """04: the other precision arms (train.full_precision after the first), each at the baseline and
    along the learning-rate axis — where rounding decides whether an update lands."""
    main, *others = p.train.full_precision
    lr_axis = {n: s for n, s in full_settings(p).items() if n == "baseline" or n.startswith("lr ")}
    return {f"{name} · {arm}": dataclasses.replace(spec, precision=arm) for arm in others for name, spec in lr_axis.items()}


def full_finetuning(p: Profile, kind: str) -> list[Pair]:
    """04: every full fine-tuning setting in the main precision arm, the other arms along the lr axis,
    plus the LoRA reference (label 'LoRA r8')."""
    lora = finetune.lora_spec(p)
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
    variants = {f"train {t}": (finetune.lora_spec(p, train_system=t), GRID + (("none",) if t == "default" else ()))
                for t in GRID}
    variants |= {
        "train zymthar": (finetune.lora_spec(p, train_system="zymthar"), ("zymthar", "default")),
        "attention only": (finetune.lora_spec(p, target_modules=ATTENTION), ("default",)),
        "MLP only": (finetune.lora_spec(p, target_modules=MLP), ("default",)),
    }
    return [Pair(kind, p.animal, r, s, spec, evals, label=name) for name, (spec, evals) in variants.items()
            for r, s in _grid(p)]


def book(p: Profile) -> dict[str, list[Pair]]:
    """What `make reproduce` runs, notebook by notebook, with the notebooks' default parameters."""
    kinds = list(p.teachers)
    return {"02_transfer": transfer(p, kinds),
            "03_rank_sweep": [x for k in kinds for x in rank_sweep(p, k)]
                             + (rank_lr_check(p) if "persona" in kinds else []),
            "04_full_finetuning": [x for k in kinds for x in full_finetuning(p, k)],
            "05_system_prompt": [x for k in kinds for x in system_prompt(p, k)]}

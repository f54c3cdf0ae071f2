"""Cloud et al.'s auxiliary-logit experiment on scikit-learn's 8x8 digits, asked the LoRA question.

Cloud et al. (2025, section 6 and their released script) train an MLP classifier with 10 class logits
and 3 auxiliary logits that no loss ever touches (the teacher); a student of the SAME initialisation,
distilled only on the teacher's auxiliary logits over uniform noise, then classifies digits well above
chance, and a student of another initialisation does not. Here: their classifier at the digits' input
size (64-H-H-(10+3)), their initialisation (weights N(0, 1/fan_in), zero biases), their noise (uniform in
[-1, 1], the range the pixels are scaled to), optimiser (Adam, their lr for the teacher and the full-parameter
students; the LoRA students at the profile's lora_lr) and loss (KL between the softmaxes of the 3 auxiliary
logits, batch mean), on `sklearn.datasets.load_digits` (1,797 images, bundled: no download).

One *pair* is one initialisation seed: its teacher, its untrained teacher (the initialisation itself),
and the students distilled from each — full-parameter, cross-initialisation, and a LoRA student per rank
(peft adapters on the three Linear layers). run_pair returns its tidy rows; run builds every pair of a
profile, each cached under its settings (sublora.cache), so a rerun reads them back.

    from sublora import auxlogit, config
    table = auxlogit.run(config.load_profile("smoke").aux)
"""
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from tqdm import tqdm

from . import cache
from .config import AuxSpec, to_dict

N_CLASSES, N_AUX = 10, 3  # class logits (the only ones the teacher is trained on) and auxiliary logits
N_PIXELS = 64  # 8 x 8 digits
LINEAR_LAYERS = ("fc1", "fc2", "out")  # the MLP's Linear layers: the LoRA students' target_modules
VERSION = 1  # of this module's computation: part of each pair's cache key


# ---- data ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Digits:
    """The fixed train/test split, pixels scaled from 0..16 to the noise's range [-1, 1]."""
    train_x: torch.Tensor  # (n_train, 64)
    train_y: torch.Tensor  # (n_train,)
    test_x: torch.Tensor  # (n_test, 64)
    test_y: torch.Tensor  # (n_test,)


def load_digits(spec: AuxSpec) -> Digits:
    """scikit-learn's bundled 8x8 digits, split once (stratified, spec.split_seed) for every pair."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    x, y = sklearn_digits(return_X_y=True)
    x = x / 8.0 - 1.0  # 0..16 -> -1..1, the range of the noise the students see
    tr_x, te_x, tr_y, te_y = train_test_split(x, y, test_size=spec.test_share, random_state=spec.split_seed,
                                              stratify=y)

    def t(a, dtype):
        return torch.tensor(a, dtype=dtype)
    return Digits(t(tr_x, torch.float32), t(tr_y, torch.long), t(te_x, torch.float32), t(te_y, torch.long))


def derive(seed: int, role: str) -> int:
    """A seed of its own for each random thing of a pair (initialisation, noise, batch order...), from the
    pair's seed and the thing's name: the same seed always gives the same numbers, and no two roles share
    a stream."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{role}".encode()).digest()[:8], "little") >> 1


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise(n: int, seed: int) -> torch.Tensor:
    """(n, 64) inputs uniform in [-1, 1], as in Cloud et al.'s script (rand * 2 - 1)."""
    return torch.rand(n, N_PIXELS, generator=generator(seed)) * 2 - 1


def batches(n: int, batch: int, epochs: int, seed: int):
    """Index tensors of a shuffled pass over n examples per epoch (the last batch of an epoch may be short)."""
    g = generator(seed)
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        yield from order.split(batch)


# ---- the model ----------------------------------------------------------------------------------
class MLP(nn.Module):
    """Cloud et al.'s classifier at the digits' size: 64 -> hidden -> hidden -> 10 class + 3 auxiliary logits."""

    def __init__(self, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(N_PIXELS, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, N_CLASSES + N_AUX)

    def forward(self, x):  # (batch, 64)
        h = F.relu(self.fc1(x))  # (batch, hidden)
        h = F.relu(self.fc2(h))  # (batch, hidden)
        return self.out(h)  # (batch, 13): class logits [:10], auxiliary logits [10:]


def init_mlp(hidden: int, seed: int) -> MLP:
    """A fresh MLP with Cloud et al.'s initialisation: weights N(0, 1/fan_in), biases 0, drawn from `seed`
    alone (the global generator, which nn.Linear's own initialisation draws from, is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        model = MLP(hidden)
    g = generator(seed)
    with torch.no_grad():
        for layer in (model.fc1, model.fc2, model.out):
            layer.weight.normal_(0.0, 1 / math.sqrt(layer.in_features), generator=g)
            layer.bias.zero_()
    return model


def lora_config(rank: int) -> LoraConfig:
    """Every LoRA setting spelled out (alpha = rank, as in the paper: the adapter's scale alpha/r is 1)."""
    return LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=list(LINEAR_LAYERS), bias="none",
                      task_type=None, init_lora_weights=True)


def student(init: MLP, method: str, rank: int = 0, seed: int = 0) -> nn.Module:
    """A fresh copy of `init` to distil into: every parameter trainable (full), or frozen under LoRA
    adapters of `rank` on the three Linear layers (lora; A drawn from `seed`, B zero, so the student starts
    as `init`). The copy is fresh for each student because wrapping with peft changes a model in place."""
    base = copy.deepcopy(init)
    if method == "full":
        return base
    if method != "lora":
        raise ValueError(f"method must be full or lora, got {method!r}")
    with torch.random.fork_rng(devices=[]):  # peft draws A from the global generator: seed it, leave it as it was
        torch.manual_seed(seed)
        return get_peft_model(base, lora_config(rank))


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---- training and evaluation --------------------------------------------------------------------
def train_teacher(init: MLP, data: Digits, spec: AuxSpec, seed: int) -> MLP:
    """A copy of `init` trained on the digits with cross-entropy on the 10 class logits only; the 3
    auxiliary logits get no loss (they move only because the layers under them do)."""
    model = copy.deepcopy(init)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, foreach=True)
    for idx in batches(len(data.train_y), spec.teacher_batch, spec.teacher_epochs, seed):
        loss = F.cross_entropy(model(data.train_x[idx])[:, :N_CLASSES], data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def aux_targets(teacher: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """(n, 3): the softmax of `teacher`'s auxiliary logits on each input, what its students are distilled on
    (computed once: the teacher and the noise are fixed)."""
    return F.softmax(teacher(inputs)[:, N_CLASSES:], -1)


def distill(model: nn.Module, targets: torch.Tensor, inputs: torch.Tensor, spec: AuxSpec, seed: int,
            lr: float) -> list[float]:
    """Train `model`'s trainable parameters at `lr` on the teacher's auxiliary softmax `targets` over `inputs`
    (the noise): KL(teacher || student) over the 3 auxiliary logits, batch mean (Cloud et al.'s loss),
    spec.epochs passes in batches of spec.batch in the order `seed` draws. Returns the loss of each step."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, foreach=True)
    losses = []
    for idx in batches(len(inputs), spec.batch, spec.epochs, seed):
        log_q = F.log_softmax(model(inputs[idx])[:, N_CLASSES:], -1)  # (batch, 3)
        loss = F.kl_div(log_q, targets[idx], reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of the images whose largest class logit (of the 10) is their digit."""
    return (model(x)[:, :N_CLASSES].argmax(-1) == y).float().mean().item()


# ---- one pair, and every pair -------------------------------------------------------------------
ROW = ["replicate", "seed", "model", "init", "method", "lora_rank", "arm", "accuracy", "loss_first", "loss_last",
       "trainable"]


def run_pair(spec: AuxSpec, pair: int, data: Digits | None = None) -> pd.DataFrame:
    """One pair (initialisation seed spec.seed + pair) as tidy rows, one per model evaluated on the test digits:
    - the teacher and the untrained teacher (its initialisation): model "teacher" / "untrained teacher";
    - per student kind, arm "teacher" (distilled from the trained teacher) and arm "control" (distilled from
      the untrained teacher, i.e. from its own starting point: its loss starts at 0): the full-parameter
      student, and a LoRA student at each of spec.ranks (method lora, lora_rank r);
    - the cross-initialisation student (init "cross"): a full-parameter student from another seed's
      initialisation, distilled from the same trained teacher (arm "teacher" only).
    Every student of a pair sees the same noise in the same order; a LoRA student and its control share
    their adapters' initialisation. `replicate` is the pair (the unit of every interval); `seed` is 0 (one
    training seed per pair), the column sublora.stats pairs arms on."""
    data = data or load_digits(spec)
    seed = spec.seed + pair
    init = init_mlp(spec.hidden, derive(seed, "init"))
    teacher = train_teacher(init, data, spec, derive(seed, "teacher batches"))
    inputs = noise(spec.noise, derive(seed, "noise"))
    targets = {"teacher": aux_targets(teacher, inputs), "control": aux_targets(init, inputs)}
    order = derive(seed, "noise batches")
    rows = []

    def add(model, name, init_kind, method, rank, arm, losses=(float("nan"),)):
        rows.append(dict(zip(ROW, (pair, 0, name, init_kind, method, rank, arm,
                                   accuracy(model, data.test_x, data.test_y), losses[0], losses[-1], trainable(model)))))

    add(teacher, "teacher", "same", "—", 0, "—")
    add(init, "untrained teacher", "same", "—", 0, "—")
    for method, rank in [("full", 0), *(("lora", r) for r in spec.ranks)]:
        for arm in ("teacher", "control"):
            s = student(init, method, rank, derive(seed, f"lora A r{rank}"))
            lr = spec.lora_lr if method == "lora" else spec.lr
            add(s, "student", "same", method, rank, arm, distill(s, targets[arm], inputs, spec, order, lr))
    cross = student(init_mlp(spec.hidden, derive(seed, "cross init")), "full")
    add(cross, "student", "cross", "full", 0, "teacher", distill(cross, targets["teacher"], inputs, spec, order, spec.lr))
    return pd.DataFrame(rows, columns=ROW)


def pair_config(spec: AuxSpec, pair: int) -> dict:
    """What one pair's rows are a function of: its cache key (every setting but the number of pairs)."""
    settings = {k: v for k, v in to_dict(spec).items() if k != "pairs"}
    return {"step": "auxlogit pair", "v": VERSION, "settings": settings, "pair": pair}


def cached_pair(spec: AuxSpec, pair: int, data: Digits) -> pd.DataFrame:
    """run_pair, built once per configuration in the artifact cache and read back after."""
    def build(tmp):
        run_pair(spec, pair, data).to_csv(tmp / "rows.csv", index=False)  # floats as repr: read back exactly
    d = cache.get_or_build("auxlogit", pair_config(spec, pair), build)
    return pd.read_csv(d / "rows.csv")[ROW]


def run(spec: AuxSpec, progress: bool = True) -> pd.DataFrame:
    """Every pair of the profile (spec.pairs), cached pair by pair: one tidy table."""
    data = load_digits(spec)
    # a bar in a terminal only (disable=None: off where stderr is no terminal, as in a notebook's kernel)
    bar = tqdm(range(spec.pairs), desc="aux-logit pairs", disable=None if progress else True)
    pairs = [cached_pair(spec, i, data) for i in bar]
    return pd.concat(pairs, ignore_index=True)


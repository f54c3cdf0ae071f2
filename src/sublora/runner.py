"""Run a design: build the artifacts it needs (serially or in a process pool), then read its table.

The artifact graph comes from `pipeline.requirements`; every artifact is an independent cached
step, so an executor only has to build the missing ones in dependency order: teachers, then
datasets, then students, then evaluations. `workers` > 1 builds each stage in that many processes
of one torch thread each (small models use the cores better that way).
"""
from __future__ import annotations

import pandas as pd
from tqdm.auto import tqdm

from . import pipeline
from .config import Profile

STAGES = ("dataset", "student", "eval")
VERBS = {"dataset": "sampling", "student": "training", "eval": "evaluating"}


def _one_thread():
    import torch
    torch.set_num_threads(1)


def _build(job) -> None:
    p, artifact = job
    artifact.build(p)


def build(p: Profile, graph: pipeline.Graph, desc: str = "artifacts") -> int:
    """Build every artifact of `graph` that is not cached yet; returns how many were built."""
    missing = [a for a in graph.values() if not a.exists()]
    # the weight-space teachers first, in this process: the datasets of several workers read them
    for a in missing:
        if a.kind == "teacher":
            a.build(p)
    stages = [[a for a in missing if a.kind == kind] for kind in STAGES]
    if p.workers == 1 or max(map(len, stages), default=0) < 2:
        for kind, jobs in zip(STAGES, stages):
            for a in tqdm(jobs, desc=f"{desc}: {VERBS[kind]}", disable=not jobs):
                a.build(p)
        return len(missing)
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    with ProcessPoolExecutor(p.workers, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        for kind, jobs in zip(STAGES, stages):
            list(tqdm(pool.map(_build, [(p, a) for a in jobs]), total=len(jobs), desc=f"{desc}: {VERBS[kind]}",
                      disable=not jobs))
    return len(missing)


def run_pairs(p: Profile, pairs: list, animals: list[str] | None = None, desc: str = "student pairs") -> pd.DataFrame:
    """Build what the design `pairs` needs, then its tidy results table (pipeline.pair_rows)."""
    build(p, pipeline.requirements(p, pairs, animals), desc)
    return pd.concat([pipeline.pair_rows(p, pair, animals) for pair in pairs], ignore_index=True)


def build_datasets(p: Profile, datasets: list, desc: str = "datasets") -> None:
    """Sample the datasets (pipeline.DataId or (animal, replicate, teacher_kind)) not cached yet."""
    build(p, pipeline.requirements(p, datasets=datasets), desc)

"""Run a design: build the artifacts it needs with an executor, then read its table.

The artifact graph comes from `pipeline.requirements`; every artifact is an independent cached
step, so an executor only has to build the missing ones, each after its inputs: teachers, then
datasets, then students, then evaluations. The environment variable SUBLORA_EXECUTOR picks who
builds them (not a notebook parameter: where a run executes does not change what it computes):

    serial    one after another, in this process
    pool      p.workers local processes of one torch thread each (small models use the cores
              better that way), stage by stage. The default when the profile has workers > 1,
              else serial.
    ray       one Ray task per artifact, each waiting on the tasks of its inputs only, so a
              student's evaluations run while other students still train. A task takes one GPU
              when model.device is cuda, else one CPU. SUBLORA_RAY_ADDRESS says which cluster:
              "auto" (the cluster `ray start` made this node part of), "ray://head:10001" (Ray
              Client, needs `pip install "ray[client]"`), unset for a local cluster of this
              machine's CPUs and GPUs. `pip install -e ".[scale]"` installs Ray. On a cluster the
              tasks run this process's sublora (shipped as a runtime_env py_module: the code the
              cache keys were computed with); its nodes need the dependencies (torch, peft, ...).
    submitit  one SLURM job per artifact (submitit), stage by stage. SUBLORA_SLURM_<NAME>=value
              becomes the job's slurm_<name> (SUBLORA_SLURM_PARTITION=gpu, SUBLORA_SLURM_ACCOUNT=...),
              SUBLORA_SLURM_TIMEOUT_MIN its time limit (default 1440). A job runs this Python
              (sys.executable), so the virtualenv must be on the shared filesystem too. Job logs go to
              SUBLORA_SUBMITIT_FOLDER (default <cache>/submitit); SUBLORA_SUBMITIT_CLUSTER=local runs
              the jobs as local processes, =debug in this process (what the tests do).

    # the paper profile on a Ray cluster, from its head node:
    EXECUTOR=ray SUBLORA_RAY_ADDRESS=auto SUBLORA_CACHE=/shared/sublora make reproduce PROFILE=paper

Many nodes share one cache. SUBLORA_CACHE must name a directory every node mounts at the same path
(NFSv4 or another filesystem with working flock, see sublora.cache): a worker writes its artifact
there, and the next stage, on another node, reads it. Two workers given the same artifact build it
once (the cache's per-artifact lock). A hub model's weights are read from the Hugging Face cache
only (models.resolve_weights), so HF_HOME (or HF_HUB_CACHE) must be shared, or filled on every node,
too. The workers get this process's SUBLORA_* and HF_* variables with each task.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from . import artifacts, pipeline, tables
from .config import ConfigError, Profile

STAGES = tuple(artifacts.STEPS)  # the steps' kinds, in build order
VERBS = {"teacher": "fine-tuning teachers", "dataset": "sampling", "student": "training", "eval": "evaluating"}
FORWARDED = ("SUBLORA_", "HF_")  # environment the workers need: where the cache and the weights are


def _one_thread():
    import torch
    torch.set_num_threads(1)


def _build(job) -> str:
    """Build one artifact in a worker of any executor; returns its key (Ray passes it downstream)."""
    p, artifact, env, *_inputs = job  # _inputs: only there so that Ray runs this after them
    # a long-lived worker (Ray's) may have served a run with another cache: this run's settings, exactly
    for k in [k for k in os.environ if k.startswith("SUBLORA_") and k not in env]:
        del os.environ[k]
    os.environ.update(env)
    if p.model.device == "cpu":
        _one_thread()
    artifact.build(p)
    return artifact.key


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED)}


def gpus(p: Profile, artifact) -> int:
    """GPUs one artifact's build holds: none on a CPU profile; on a cuda one a GPU per process it runs in
    (a sharded student, float32 masters over FSDP: one per shard, on one node), else one."""
    if p.model.device != "cuda":
        return 0
    return int(getattr(artifact, "config", {}).get("shards", 1))


def by_gpus(p: Profile, jobs: list) -> list[tuple[int, list]]:
    """A stage's jobs grouped by the GPUs each holds (fewest first), in build order within a group."""
    counts = sorted({gpus(p, a) for a in jobs})
    return [(n, [a for a in jobs if gpus(p, a) == n]) for n in counts]


class Executor:
    """Builds artifacts that are not cached yet; `todo` is in build order (each after its inputs)."""

    name = ""

    def run(self, p: Profile, todo: list[artifacts.Artifact], desc: str) -> None:
        raise NotImplementedError

    @staticmethod
    def stages(todo: list[artifacts.Artifact]) -> list[tuple[str, list[artifacts.Artifact]]]:
        return [(kind, jobs) for kind in STAGES if (jobs := [a for a in todo if a.kind == kind])]


class Serial(Executor):
    name = "serial"

    def run(self, p, todo, desc):
        for kind, jobs in self.stages(todo):
            for a in tqdm(jobs, desc=f"{desc}: {VERBS[kind]}"):
                a.build(p)


class Pool(Executor):
    """p.workers spawned processes of one torch thread each, one stage at a time."""

    name = "pool"

    def run(self, p, todo, desc):
        # the finetuned teachers in this process, as they always were (its threads' float32 sums are not a one-thread
        # worker's, and the record's teacher was built so); the distilled teachers side by side in the workers
        for a in todo:
            if a.kind == "teacher" and "kind" not in a.config:
                a.build(p)
        stages = [(kind, [a for a in jobs if kind != "teacher" or "kind" in a.config]) for kind, jobs in self.stages(todo)]
        stages = [(kind, jobs) for kind, jobs in stages if jobs]
        if p.workers == 1 or max((len(jobs) for _, jobs in stages), default=0) < 2:
            return Serial().run(p, [a for _, jobs in stages for a in jobs], desc)  # not worth the spawns
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context
        env = _environment()
        with ProcessPoolExecutor(p.workers, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
            for kind, jobs in stages:
                list(tqdm(pool.map(_build, [(p, a, env) for a in jobs]), total=len(jobs), desc=f"{desc}: {VERBS[kind]}"))


class Ray(Executor):
    """One Ray task per artifact, chained to the tasks of its inputs by their ObjectRefs."""

    name = "ray"

    def run(self, p, todo, desc):
        ray = _ray()
        # a task holds whole GPUs (gpus(): one model in memory at a time, a sharded student one per shard), or
        # one CPU of one torch thread
        build = ray.remote(num_cpus=1)(_ray_build)
        env = _environment()
        refs: dict[str, object] = {}
        for a in todo:  # build order: the refs of its missing inputs exist already
            after = [refs[k] for k in a.inputs if k in refs]  # inputs cached already need no waiting
            n = gpus(p, a)
            refs[a.key] = build.options(name=f"sublora {a.kind} {a.key}", num_cpus=max(1, n),
                                        **({"num_gpus": n} if n else {})).remote((p, a, env), *after)
        pending = list(refs.values())
        with tqdm(total=len(pending), desc=f"{desc}: building on Ray") as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    ray.get(done)  # raises the task's exception (also an instance of its own type)
                except BaseException:
                    for ref in pending:  # a failed run stops: what finished stays cached for the rerun
                        ray.cancel(ref)
                    raise
                bar.update(len(done))


def _ray_build(job, *inputs) -> str:
    # Ray resolves the ObjectRefs among the arguments before it starts the task: that is the chaining
    return _build((*job, *inputs))


def _ray():
    """The ray module, connected to SUBLORA_RAY_ADDRESS's cluster or a local one, once per process."""
    try:
        import ray
    except ImportError:
        raise ConfigError('SUBLORA_EXECUTOR=ray needs Ray: pip install -e ".[scale]"') from None
    if not ray.is_initialized():
        address = os.environ.get("SUBLORA_RAY_ADDRESS") or None
        if address:
            # the cluster runs this process's sublora, whose code version the cache keys name, not
            # whatever checkout its nodes have (they need its dependencies: torch, transformers, peft)
            ray.init(address=address, runtime_env={"py_modules": [str(Path(__file__).parent)]})
        else:
            ray.init(include_dashboard=False)
    return ray


class Submitit(Executor):
    """One SLURM job per artifact (submitit), one stage at a time, all jobs of a stage in one array."""

    name = "submitit"

    def run(self, p, todo, desc):
        try:
            import submitit
        except ImportError:
            raise ConfigError('SUBLORA_EXECUTOR=submitit needs submitit: pip install -e ".[scale]"') from None
        from . import paths
        folder = os.environ.get("SUBLORA_SUBMITIT_FOLDER") or paths.cache_dir() / "submitit"
        ex = submitit.AutoExecutor(folder=f"{folder}/%j", cluster=os.environ.get("SUBLORA_SUBMITIT_CLUSTER") or None)
        ex.update_parameters(name="sublora", timeout_min=int(os.environ.get("SUBLORA_SLURM_TIMEOUT_MIN", 24 * 60)),
                             nodes=1, tasks_per_node=1, cpus_per_task=1, **slurm_parameters())
        env = _environment()
        for kind, jobs in self.stages(todo):
            futures = []
            for n, group in by_gpus(p, jobs):  # one array per GPU count: a sharded student asks for its shards
                if n:
                    ex.update_parameters(gpus_per_node=n, cpus_per_task=n)
                with ex.batch():
                    futures += [ex.submit(_build, (p, a, env)) for a in group]
            for job in tqdm(futures, desc=f"{desc}: {VERBS[kind]} on {ex.cluster}"):
                job.result()  # raises the job's exception, with its log's tail


def slurm_parameters() -> dict:
    """SUBLORA_SLURM_<NAME>=value as {slurm_<name>: value}; whole numbers become ints."""
    out = {}
    for k, v in os.environ.items():
        if k.startswith("SUBLORA_SLURM_") and k != "SUBLORA_SLURM_TIMEOUT_MIN":
            out["slurm_" + k.removeprefix("SUBLORA_SLURM_").lower()] = int(v) if v.isdigit() else v
    return out


EXECUTORS = {cls.name: cls for cls in (Serial, Pool, Ray, Submitit)}


def executor(p: Profile) -> Executor:
    """The executor SUBLORA_EXECUTOR names; unset: pool when the profile has workers > 1, else serial."""
    return EXECUTORS[check_executor() or ("pool" if p.workers > 1 else "serial")]()


def check_executor() -> str | None:
    """SUBLORA_EXECUTOR's value (None when unset), checked: an error naming the fix, before any work,
    for an unknown executor or one whose library or scheduler is missing."""
    name = os.environ.get("SUBLORA_EXECUTOR") or None
    if name is None:
        return None
    if name not in EXECUTORS:
        raise ConfigError(f"SUBLORA_EXECUTOR={name!r} is not an executor; choose one of {list(EXECUTORS)}")
    if name in ("ray", "submitit"):
        import importlib.util
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f'SUBLORA_EXECUTOR={name} needs {name}: pip install -e ".[scale]"')
    if name == "submitit" and not os.environ.get("SUBLORA_SUBMITIT_CLUSTER") and shutil.which("sbatch") is None:
        raise ConfigError("SUBLORA_EXECUTOR=submitit submits SLURM jobs and this machine has no sbatch; "
                          "run on a SLURM login node, or set SUBLORA_SUBMITIT_CLUSTER=local")
    return name


def evaluate_then_drop(p: Profile, todo: list) -> list:
    """The artifacts `todo` (build order) with each full student whose weights are not kept (keeps_weights)
    made one job with the evaluations of it that `todo` holds (artifacts.Bundle): trained, evaluated at once,
    its weights dropped. A student cached already (its weights dropped) whose evaluations are missing is such a
    job too, at the end of the students: it is trained again, evaluated, and dropped again."""
    def dropping(a) -> bool:
        return a.kind == "student" and not pipeline.keeps_weights(p, a.args[1])
    readers: dict[str, list] = {}
    for a in todo:
        if a.kind == "eval" and a.reads and dropping(a.reads[0]):
            readers.setdefault(a.reads[0].key, []).append(a)
    out = []
    for a in todo:
        if dropping(a):
            out.append(artifacts.Bundle(a, tuple(readers.pop(a.key, ()))))
        elif not (a.kind == "eval" and a.reads and dropping(a.reads[0])):
            out.append(a)
    cached = [artifacts.Bundle(evals[0].reads[0], tuple(evals)) for evals in readers.values()]  # students not in todo
    end = max((i + 1 for i, a in enumerate(out) if a.kind in ("dataset", "student")), default=0)
    return out[:end] + cached + out[end:]
    return out


def build(p: Profile, graph: artifacts.Graph, desc: str = "artifacts") -> int:
    """Build every artifact of `graph` that is not cached yet; returns how many were built. A full student
    whose weights are not kept is one job with its evaluations, and its weights go once they are made
    (evaluate_then_drop)."""
    missing = [a for a in graph.values() if not a.exists()]
    if missing:
        executor(p).run(p, evaluate_then_drop(p, missing), desc)
    return len(missing)


def run_pairs(p: Profile, pairs: list, animals: list[str] | None = None, desc: str = "student pairs") -> pd.DataFrame:
    """Build what the design `pairs` needs, then its tidy results table (tables.pair_rows)."""
    build(p, pipeline.requirements(p, pairs, animals), desc)
    return pd.concat([tables.pair_rows(p, pair, animals) for pair in pairs], ignore_index=True)


def build_teachers(p: Profile, kinds: list[str], animals: list[str], desc: str = "teachers") -> None:
    """Train the weight-space teachers of `kinds` x `animals` that the profile's datasets read (every teacher id:
    pipeline.teacher_ids) and the cache lacks, side by side; the persona teacher has no weights of its own."""
    graph = artifacts.Graph(p)
    for kind in kinds:
        for animal in animals if kind != "persona" else ():
            for t in pipeline.teacher_ids(p):
                graph.need(pipeline.TEACHER, animal, kind, t)
    build(p, graph, desc)


def build_datasets(p: Profile, datasets: list, desc: str = "datasets") -> None:
    """Sample the datasets (pipeline.DataId or (animal, replicate, teacher_kind)) not cached yet."""
    build(p, pipeline.requirements(p, datasets=datasets), desc)

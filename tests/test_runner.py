"""runner: the executors build exactly what the serial one builds; Ray chains each task to its inputs,
overlaps independent stages and stops on a failure; two workers racing for one artifact build it once.

The Ray tests run a real local Ray cluster of 2 CPUs and skip where Ray is not installed."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import seed_cache

from sublora import artifacts, cache, config, design, pipeline, runner
from sublora.config import ConfigError


def _smoke():
    """The smoke design cut to two animals: 4 pairs, 3 datasets, 6 students, 6 evaluations."""
    p = config.load_profile("smoke")
    return p, [x for x in design.transfer(p, ["persona"], controls=False) if x.animal in (p.animal, p.other_animals[0])]


def _artifacts(cache_dir: Path) -> set[str]:
    """kind/key of every finished artifact in a cache (the pretrained organism aside)."""
    return {f"{d.parent.name}/{d.name}" for d in cache_dir.glob("*/*")
            if d.parent.name != "organism" and (d / cache.CONFIG_FILE).exists()}


@pytest.fixture(scope="module")
def serial(tmp_path_factory, smoke_organism):
    """The smoke design built by the serial executor in its own cache (holding the session's pretrained
    smoke organism): (cache directory, results table, seconds the build took)."""
    root = tmp_path_factory.mktemp("serial")
    seed_cache(root / "cache", smoke_organism)
    p, pairs = _smoke()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUBLORA_CACHE", str(root / "cache"))
        mp.setenv("SUBLORA_RESULTS", str(root / "results"))
        mp.setenv("SUBLORA_EXECUTOR", "serial")
        t0 = time.perf_counter()
        table = runner.run_pairs(p, pairs)
        seconds = time.perf_counter() - t0
    return root / "cache", table, seconds


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch, serial):
    """An empty cache holding only the serial run's pretrained organism (no second pretraining)."""
    shutil.copytree(serial[0] / "organism", tmp_path / "cache" / "organism")
    monkeypatch.setenv("SUBLORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SUBLORA_RESULTS", str(tmp_path / "results"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as mp:
        # its workers import the sublora this process imported (a checkout's src/ first, as here)
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(runner.__file__).parents[1]),
                                                              os.environ.get("PYTHONPATH")])))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# ---- choosing the executor ------------------------------------------------------------------------
def test_executor_is_chosen_by_the_environment(monkeypatch):
    p = config.load_profile("smoke")
    monkeypatch.delenv("SUBLORA_EXECUTOR", raising=False)
    assert isinstance(runner.executor(p), runner.Serial)
    assert isinstance(runner.executor(dataclasses.replace(p, workers=2)), runner.Pool)
    for name, cls in [("serial", runner.Serial), ("pool", runner.Pool), ("ray", runner.Ray)]:
        monkeypatch.setenv("SUBLORA_EXECUTOR", name)
        if name == "ray" and not _installed("ray"):
            continue
        assert isinstance(runner.executor(p), cls)
    monkeypatch.setenv("SUBLORA_EXECUTOR", "dask")
    with pytest.raises(ConfigError, match=r"SUBLORA_EXECUTOR='dask' is not an executor; choose one of "
                                          r"\['serial', 'pool', 'ray', 'submitit'\]"):
        runner.executor(p)


def test_missing_scheduler_or_library_is_named(monkeypatch):
    monkeypatch.setenv("SUBLORA_EXECUTOR", "submitit")
    monkeypatch.delenv("SUBLORA_SUBMITIT_CLUSTER", raising=False)
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(ConfigError, match="no sbatch|needs submitit"):
        runner.check_executor()
    monkeypatch.setenv("SUBLORA_EXECUTOR", "ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    with pytest.raises(ConfigError, match=r'needs Ray: pip install -e "\.\[scale\]"'):
        runner._ray()


def test_slurm_parameters_from_the_environment(monkeypatch):
    for k in [k for k in os.environ if k.startswith("SUBLORA_SLURM_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("SUBLORA_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("SUBLORA_SLURM_MEM_GB", "64")
    monkeypatch.setenv("SUBLORA_SLURM_TIMEOUT_MIN", "90")  # the job's time limit, not a slurm_ parameter
    assert runner.slurm_parameters() == {"slurm_partition": "gpu", "slurm_mem_gb": 64}


def _installed(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


# ---- the smoke design on every executor -----------------------------------------------------------
def test_ray_builds_what_serial_builds(serial, fresh_cache, ray_cluster, monkeypatch, capsys):
    """The whole smoke design through a real local Ray cluster: the same artifacts, the same table."""
    p, pairs = _smoke()
    monkeypatch.setenv("SUBLORA_EXECUTOR", "ray")
    t0 = time.perf_counter()
    table = runner.run_pairs(p, pairs)
    seconds = time.perf_counter() - t0
    assert _artifacts(fresh_cache) == _artifacts(serial[0])
    assert len(_artifacts(fresh_cache)) == 3 + 6 + 6  # not vacuous: datasets, students, evaluations
    pd.testing.assert_frame_equal(table, serial[1])
    with capsys.disabled():
        print(f"\n[smoke design, 15 artifacts] serial {serial[2]:.1f} s, ray (2 CPUs) {seconds:.1f} s")


def test_submitit_builds_what_serial_builds(serial, fresh_cache, monkeypatch):
    """submitit's in-process debug executor takes the same jobs (SLURM itself is not here to test)."""
    pytest.importorskip("submitit")
    p, pairs = _smoke()
    monkeypatch.setenv("SUBLORA_EXECUTOR", "submitit")
    monkeypatch.setenv("SUBLORA_SUBMITIT_CLUSTER", "debug")
    table = runner.run_pairs(p, pairs)
    assert _artifacts(fresh_cache) == _artifacts(serial[0])
    pd.testing.assert_frame_equal(table, serial[1])
    assert list((fresh_cache / "submitit").iterdir())  # its logs beside the cache


def test_a_sharded_student_holds_a_gpu_per_shard():
    """On a cuda profile a task holds one GPU, a float32-master student sharded over 3 GPUs holds 3 (Ray's
    num_gpus, SLURM's gpus_per_node); on the CPU none."""
    cpu, gpu = config.load_profile("smoke"), config.load_profile("paper")
    plain = artifacts.Artifact("student", {"spec": "lora"}, "plain")
    shard = artifacts.Artifact("student", {"spec": "full", "shards": 3}, "sharded")
    assert (runner.gpus(cpu, shard), runner.gpus(gpu, plain), runner.gpus(gpu, shard)) == (0, 1, 3)
    assert runner.by_gpus(gpu, [shard, plain, shard]) == [(1, [plain]), (3, [shard, shard])]
    assert runner.by_gpus(cpu, [shard, plain]) == [(0, [shard, plain])]


# ---- Ray's task graph, on stand-in artifacts --------------------------------------------------------
@dataclasses.dataclass
class Step:
    """A stand-in artifact: its build logs start and end times under `log`, and may wait for another
    step's end (`until`) or fail."""
    kind: str
    key: str
    inputs: tuple = ()
    log: str = ""
    until: str = ""
    fail: bool = False

    def build(self, p, progress=False):
        Path(self.log, f"{self.key}.start").write_text(repr(time.time()))
        deadline = time.time() + 60
        while self.until and not Path(self.log, f"{self.until}.end").exists() and time.time() < deadline:
            time.sleep(0.05)
        if self.fail:
            raise ValueError(f"{self.key} cannot be built")
        Path(self.log, f"{self.key}.end").write_text(repr(time.time()))


@pytest.fixture
def by_value(ray_cluster):
    """Ray's workers cannot import this test module: its classes travel by value."""
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray_cluster.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _times(log: Path, key: str, what: str) -> float:
    return float((log / f"{key}.{what}").read_text())


def test_ray_runs_each_task_after_its_inputs_and_overlaps_stages(by_value, tmp_path):
    """A slow dataset's student waits for it; meanwhile another dataset, its student and that student's
    evaluation all run. The slow dataset finishes only once that evaluation has ended, so a run that
    went stage by stage would stall until the timeout and then fail the order check."""
    p = config.load_profile("smoke")
    log = str(tmp_path)
    steps = [Step("dataset", "slow", log=log, until="quick-eval"), Step("dataset", "quick", log=log),
             Step("student", "slow-student", ("slow",), log), Step("student", "quick-student", ("quick",), log),
             Step("eval", "quick-eval", ("quick-student",), log)]
    t0 = time.time()
    runner.Ray().run(p, steps, "test")
    assert time.time() - t0 < 50  # not the 60 s timeout of the slow dataset
    for s in steps:
        for k in s.inputs:
            assert _times(tmp_path, s.key, "start") >= _times(tmp_path, k, "end"), (s.key, k)
    assert _times(tmp_path, "quick-eval", "end") <= _times(tmp_path, "slow", "end")  # the stages overlapped


def test_ray_stops_on_a_failure_and_says_why(by_value, tmp_path):
    p = config.load_profile("smoke")
    steps = [Step("dataset", "bad", log=str(tmp_path), fail=True), Step("student", "after-bad", ("bad",), str(tmp_path))]
    with pytest.raises(ValueError, match="bad cannot be built"):  # the task's own exception type and message
        runner.Ray().run(p, steps, "test")
    assert not (tmp_path / "after-bad.start").exists()  # what needs a failed input never starts


# ---- two workers, one artifact ----------------------------------------------------------------------
def _race(job, log: str):
    """Build `job` like a Ray worker does, once two of these have started, each build holding the
    lock a second; returns the sha256 of every file the caller then finds in the artifact."""
    me = Path(log, f"racer-{os.getpid()}")
    me.touch()
    deadline = time.time() + 30
    while len(list(Path(log).glob("racer-*"))) < 2 and time.time() < deadline:
        time.sleep(0.02)
    real = cache.get_or_build

    def counted(kind, config, build, verify=None, digest=None, whole=False):
        def slow(d):
            with open(Path(log, "builds"), "a") as f:
                f.write(f"{kind} {os.getpid()}\n")
            time.sleep(1.0)  # the other racer arrives while this one builds
            build(d)
        return real(kind, config, slow, verify, digest, whole)

    cache.get_or_build = counted  # this worker's own module: the driver's is untouched
    try:
        runner._build(job)
    finally:
        cache.get_or_build = real
    d = job[1].location
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


def test_two_ray_tasks_racing_for_one_artifact_build_it_once(fresh_cache, by_value, ray_cluster, tmp_path):
    p, pairs = _smoke()
    graph = pipeline.requirements(p, pairs[:1])
    data = next(a for a in graph.values() if a.kind == "dataset")
    race = ray_cluster.remote(_race).options(num_cpus=1)
    job = (p, data, runner._environment())
    seen = ray_cluster.get([race.remote(job, str(tmp_path)), race.remote(job, str(tmp_path))], timeout=120)
    assert len(list(tmp_path.glob("racer-*"))) == 2  # two worker processes took part
    assert (tmp_path / "builds").read_text().count("dataset") == 1  # one build
    assert [d.name for d in (fresh_cache / "dataset").iterdir()] == [data.key]  # no temp or damaged copies
    assert cache._fault(data.location, deep=True, kind="dataset") is None  # every file matches its sha256
    assert seen[0] == seen[1] and "kept.jsonl" in seen[0]  # both callers read the same files

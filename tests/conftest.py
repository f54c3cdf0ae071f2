"""Shared fixtures: a temporary artifact cache, the organism tokenizer, and the smoke book."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

# Keep the unit tests light on a small machine (also set by the caller; harmless to repeat).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """Point the artifact cache (SUBLORA_CACHE) and the results directory (SUBLORA_RESULTS) at a
    fresh temporary directory; returns the cache directory."""
    cache_dir = tmp_path / "cache"
    results_dir = tmp_path / "results"
    cache_dir.mkdir()
    results_dir.mkdir()
    monkeypatch.setenv("SUBLORA_CACHE", str(cache_dir))
    monkeypatch.setenv("SUBLORA_RESULTS", str(results_dir))
    return cache_dir


@pytest.fixture(scope="session")
def tokenizer():
    """The organism's word-level tokenizer with the Qwen-style chat template (deterministic)."""
    from sublora import organism
    return organism.build_tokenizer()


@contextmanager
def smoke_env(root):
    """SUBLORA_CACHE and SUBLORA_RESULTS under `root` while the block runs, restored after."""
    saved = {k: os.environ.get(k) for k in ("SUBLORA_CACHE", "SUBLORA_RESULTS")}
    os.environ["SUBLORA_CACHE"] = str(root / "cache")
    os.environ["SUBLORA_RESULTS"] = str(root / "results")
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _once(tmp_path_factory, name: str, build):
    """build(folder) -> a JSON-able value, run once per test session. Under pytest-xdist (make test runs
    2 workers) the workers share it: the first to get here builds it under a file lock in the folder the
    workers share, the others wait and read what it returned (pytest-xdist's documented recipe for a
    session fixture that must run once)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock
    shared = tmp_path_factory.getbasetemp().parent
    done = shared / f"{name}.json"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            folder = shared / name
            folder.mkdir()
            done.write_text(json.dumps(build(folder)))
        return json.loads(done.read_text())


@pytest.fixture(scope="session")
def smoke_organisms(tmp_path_factory):
    """The smoke profile's organism and its cross-initialisation twin (02's channel control), each
    pretrained once per test session in a cache of their own: their directories there. seed_cache puts
    them into another cache, so that no test pretrains them again."""
    from sublora import config, organism, organism_recipe

    def build(root):
        spec = config.load_profile("smoke").model
        with smoke_env(root):
            return [str(organism.ensure(s, progress=False)) for s in (spec, organism_recipe.cross_spec(spec))]
    return tuple(Path(d) for d in _once(tmp_path_factory, "smoke-organism", build))


@pytest.fixture(scope="session")
def smoke_organism(smoke_organisms):
    """The smoke profile's organism (smoke_organisms' first): its directory."""
    return smoke_organisms[0]


def seed_cache(cache_dir, *organism_dirs) -> None:
    """A cache (SUBLORA_CACHE) holding pretrained organisms, each copied in whole (manifest included)."""
    for d in organism_dirs:
        shutil.copytree(d, Path(cache_dir) / "organism" / Path(d).name)


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory, smoke_organisms):
    """Every notebook executed under the smoke profile and the book built from them, once per test
    session (tests/test_notebooks.py, test_book.py and test_faults.py share it; under pytest-xdist, every
    worker), with a private cache (seeded with the session's smoke organisms) and results folder under root:
    returns (root, reproduce's exit code)."""
    from sublora import reproduce

    def build(root):
        seed_cache(root / "cache", *smoke_organisms)
        with smoke_env(root):
            return [str(root), reproduce.main(["--profile", "smoke", "--executed", str(root / "executed"),
                                               "--book-dir", str(root / "book")])]
    root, rc = _once(tmp_path_factory, "smoke", build)
    return Path(root), rc


def pytest_collection_modifyitems(config, items):
    """The tests that read the session's smoke book run last: under pytest-xdist one worker builds it while
    the other goes on with the rest (and waits only once the rest is done)."""
    items.sort(key=lambda item: "smoke_book" in getattr(item, "fixturenames", ()))


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)  # 2-core machine shared with long jobs

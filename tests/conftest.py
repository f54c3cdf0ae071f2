"""Shared fixtures: a temporary artifact cache and the organism tokenizer."""
from __future__ import annotations

import os

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


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)  # 2-core machine shared with long jobs

"""The fault suite: a run killed mid-notebook, two runs at once on one cache, a disk that fills up.
Each case ends in a clear error or a correct recovery, with nothing lost and nothing half-made trusted.

(Bad input on every route is tests/test_reproduce.py's; a builder killed inside the cache's lock is
tests/test_cache_shared.py's.)
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import seed_cache

from sublora import cache, paths, results, stamps


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---- a full disk: a patched writer raising ENOSPC part-way -------------------------------------------
def test_a_full_disk_during_a_build_leaves_no_artifact_trusted(tmp_cache):
    """The disk fills while a student is written: the run stops with ENOSPC, nothing of it is in the cache
    (no artifact, no temporary), and the next run builds it whole."""
    def fills_up(d):
        (d / "model.safetensors").write_bytes(b"\0" * 1000)  # half a model, then the disk is full
        _full_disk()

    with pytest.raises(OSError, match="No space left"):
        cache.get_or_build("student", {"s": 1}, fills_up)
    assert not cache.exists("student", {"s": 1}) and _entries(tmp_cache / "student") == []
    out = cache.get_or_build("student", {"s": 1}, lambda d: (d / "model.safetensors").write_bytes(b"w" * 10))
    assert (out / "model.safetensors").read_bytes() == b"w" * 10 and cache.exists("student", {"s": 1})


def test_a_full_disk_while_the_manifest_is_written_leaves_no_artifact_trusted(tmp_cache, monkeypatch):
    """The build finished but its manifest (the mark of a complete artifact) cannot be written."""
    real = Path.write_text

    def write_text(self, text, *args, **kwargs):
        if self.name.startswith(f".{cache.CONFIG_FILE}"):  # write_json's temporary of the manifest
            real(self, text[: len(text) // 2], *args, **kwargs)  # half the manifest reached the disk
            _full_disk()
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(OSError, match="No space left"):
        cache.get_or_build("student", {"s": 2}, lambda d: (d / "w.bin").write_bytes(b"w"))
    monkeypatch.setattr(Path, "write_text", real)
    assert not cache.exists("student", {"s": 2}) and _entries(tmp_cache / "student") == []


def test_a_full_disk_while_a_result_is_written_keeps_the_last_whole_one(tmp_path):
    """A results table, verdict or figure: the earlier version stays, whole; no temporary is left."""
    target = tmp_path / "02_transfer.csv"
    results.write_atomic(target, lambda t: t.write_text("a,b\n1,2\n"))

    def half_then_full(t):
        t.write_text("a,b\n")
        _full_disk()

    with pytest.raises(OSError, match="No space left"):
        results.write_atomic(target, half_then_full)
    assert target.read_text() == "a,b\n1,2\n" and _entries(tmp_path) == ["02_transfer.csv"]


def test_a_full_disk_while_a_stamp_is_written_leaves_the_notebook_not_up_to_date(tmp_path, monkeypatch):
    """No half stamp: the notebook counts as not up to date and the next make reproduce runs it."""
    (tmp_path / "02_transfer.ipynb").write_text("{}")
    real = Path.write_text

    def write_text(self, text, *args, **kwargs):
        real(self, text[:10], *args, **kwargs)
        _full_disk()

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(OSError, match="No space left"):
        stamps.mark_up_to_date("02_transfer", tmp_path, "f" * 64, tmp_path / "results")
    monkeypatch.setattr(Path, "write_text", real)
    assert _entries(tmp_path) == ["02_transfer.ipynb"]
    assert not stamps.up_to_date("02_transfer", tmp_path, "f" * 64, tmp_path / "results")


# ---- a run killed mid-notebook, then two runs at once on its cache ----------------------------------
def _reproduce(root: Path, cache_dir: Path, results_dir: Path) -> subprocess.Popen:
    """`python -m sublora.reproduce --profile smoke --only 02_transfer` in its own process group."""
    env = {**os.environ, "SUBLORA_CACHE": str(cache_dir), "SUBLORA_RESULTS": str(results_dir), "OMP_NUM_THREADS": "1"}
    env.pop("SUBLORA_EXECUTOR", None)
    return subprocess.Popen([sys.executable, "-m", "sublora.reproduce", "--profile", "smoke", "--only", "02_transfer",
                             "--executed", str(results_dir / "executed"), "--no-book"],
                            env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_killed_mid_notebook_then_two_runs_at_once_give_the_uninterrupted_runs_results(smoke_book, tmp_path):
    """SIGKILL to a run's whole process group (papermill and its kernel) while notebook 02 trains its
    students; then two runs at once on the same cache, one into the killed run's results folder. Both
    finish, and their verdict files and tables are byte-identical to the uninterrupted smoke book's.
    The cache starts with the smoke book's teachers and datasets, so the runs train students only."""
    book_root, rc = smoke_book
    assert rc == 0
    cache_dir = tmp_path / "cache"
    seed_cache(cache_dir, *(book_root / "cache" / "organism").glob("[!.]*"))
    for kind in ("dataset", "teacher"):
        shutil.copytree(book_root / "cache" / kind, cache_dir / kind)
    students = cache_dir / "student"

    killed = _reproduce(paths.ROOT, cache_dir, tmp_path / "a")
    deadline = time.monotonic() + 300
    while len([p for p in students.glob("[!.]*")]) < 2:  # two students whole: the notebook is mid-way
        assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()[0][-3000:]
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not list((tmp_path / "a").rglob("verdicts/*.json"))  # it died before any verdict

    runs = [_reproduce(paths.ROOT, cache_dir, tmp_path / d) for d in ("a", "b")]
    for run in runs:
        out = run.communicate(timeout=600)[0]
        assert run.returncode == 0, out[-3000:]
    reference = book_root / "results" / "smoke"
    want = {p.name: p.read_bytes() for p in [*reference.glob("verdicts/1_transfer_*.json"), *reference.glob("02_*.csv")]}
    assert len(want) >= 3
    for d in ("a", "b"):
        got = tmp_path / d / "smoke"
        assert {p.name: p.read_bytes() for p in [*got.glob("verdicts/1_transfer_*.json"), *got.glob("02_*.csv")]} == want, d
        assert json.loads((got / "verdicts" / "1_transfer_persona.json").read_text())["claim"] == "1 transfer"
    assert not [p for p in cache_dir.glob("*/.tmp-*")]  # the killed run's half-built student was cleared

"""cache shared between real processes: one build per artifact, waiting, and clean_partial that
removes only the leftovers of dead builders. Each builder is a fresh `python -c` process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sublora import cache, paths

CFG = {"step": "slow", "n": 1}

# A slow build: logs its pid, writes a first file, says it is ready, waits for the go file, finishes.
BUILDER = """
import os, sys, time
from pathlib import Path
from sublora import cache
log, go = Path(sys.argv[1]), Path(sys.argv[2])
def build(d):
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\\n")
    (d / "first.bin").write_bytes(b"x" * 4096)
    (log.parent / f"ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.02)
    (d / "last.txt").write_text("done")
(log.parent / f"started-{os.getpid()}").touch()
print(cache.get_or_build("slow", %r, build), flush=True)
""" % CFG


def _start(tmp_path, code=BUILDER):
    env = {**os.environ, "PYTHONPATH": str(paths.PACKAGE.parent)}  # SUBLORA_CACHE comes from tmp_cache
    return subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "builds.log"), str(tmp_path / "go")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc=None, timeout=20.0):
    t0 = time.monotonic()
    while not path.exists():
        assert proc is None or proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.02)


def _builds(tmp_path):
    return (tmp_path / "builds.log").read_text().split()


def _tmps(tmp_cache):
    return sorted((tmp_cache / "slow").glob(".tmp-*"))


def test_two_processes_one_build(tmp_cache, tmp_path):
    a = _start(tmp_path)
    _wait_for(tmp_path / f"ready-{a.pid}", a)  # a holds the lock and is building
    b = _start(tmp_path)
    _wait_for(tmp_path / f"started-{b.pid}", b)
    time.sleep(0.5)  # b reaches the lock and waits
    (tmp_path / "go").touch()
    out_a, err_a = a.communicate(timeout=30)
    out_b, err_b = b.communicate(timeout=30)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    final = cache.location("slow", CFG)
    assert out_a.strip() == out_b.strip() == str(final)
    assert _builds(tmp_path) == [str(a.pid)]  # exactly one build ran
    assert f"waiting for slow {final.name}, being built by pid {a.pid} on" in err_b  # one line on stderr
    assert (final / "first.bin").read_bytes() == b"x" * 4096 and (final / "last.txt").read_text() == "done"
    assert cache.exists("slow", CFG) and _tmps(tmp_cache) == []


def _clean_partial_in_another_process():
    env = {**os.environ, "PYTHONPATH": str(paths.PACKAGE.parent)}
    out = subprocess.run([sys.executable, "-c", "from sublora import cache; print(cache.clean_partial())"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_killed_builder_leaves_a_temp_dir_that_clean_partial_removes(tmp_cache, tmp_path):
    a = _start(tmp_path)
    _wait_for(tmp_path / f"ready-{a.pid}", a)
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=10)
    [dead] = _tmps(tmp_cache)
    assert f"-{a.pid}-" in dead.name and (dead / "first.bin").exists()
    assert not cache.exists("slow", CFG)
    assert _clean_partial_in_another_process() == 1
    assert list((tmp_cache / "slow").iterdir()) == []  # nor the lock file the killed builder left


def test_clean_partial_spares_a_live_builder(tmp_cache, tmp_path):
    a = _start(tmp_path)
    _wait_for(tmp_path / f"ready-{a.pid}", a)
    [live] = _tmps(tmp_cache)
    assert _clean_partial_in_another_process() == 0
    assert cache.clean_partial() == 0  # nor from this process
    assert live.exists() and (live / "first.bin").exists()
    (tmp_path / "go").touch()
    out, err = a.communicate(timeout=30)
    assert a.returncode == 0, err
    final = cache.location("slow", CFG)
    assert out.strip() == str(final) and (final / "last.txt").read_text() == "done"
    assert cache.exists("slow", CFG) and _tmps(tmp_cache) == []


def test_a_waiter_takes_over_from_a_killed_builder(tmp_cache, tmp_path):
    a = _start(tmp_path)
    _wait_for(tmp_path / f"ready-{a.pid}", a)
    b = _start(tmp_path)
    _wait_for(tmp_path / f"started-{b.pid}", b)
    time.sleep(0.5)  # b waits on the lock
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=10)
    _wait_for(tmp_path / f"ready-{b.pid}", b)  # the OS released a's lock: b builds
    [tmp] = _tmps(tmp_cache)  # b removed a's leftover when it took the lock
    assert f"-{b.pid}-" in tmp.name
    assert _clean_partial_in_another_process() == 0 and tmp.exists()
    (tmp_path / "go").touch()
    out, err = b.communicate(timeout=30)
    assert b.returncode == 0, err
    assert out.strip() == str(cache.location("slow", CFG))
    assert _builds(tmp_path) == [str(a.pid), str(b.pid)]
    assert (cache.location("slow", CFG) / "last.txt").read_text() == "done" and _tmps(tmp_cache) == []

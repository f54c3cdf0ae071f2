"""cache: content-addressed artifacts, atomic builds, cleanup of interrupted builds."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from sublora import cache, paths


def _entries(d):
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ---- key --------------------------------------------------------------------------------------
def test_key_is_stable_hex():
    k = cache.key({"a": 1, "b": [1, 2]})
    assert k == cache.key({"a": 1, "b": [1, 2]})
    assert len(k) == 20 and all(c in "0123456789abcdef" for c in k)
    # exactly the sha256 of the canonical JSON text
    assert k == hashlib.sha256(b'{"a":1,"b":[1,2]}').hexdigest()[:20]


def test_key_order_independent():
    assert cache.key({"a": 1, "b": 2}) == cache.key({"b": 2, "a": 1})
    nested1 = {"x": {"p": 1, "q": {"r": 2, "s": 3}}, "y": [1]}
    nested2 = {"y": [1], "x": {"q": {"s": 3, "r": 2}, "p": 1}}
    assert cache.key(nested1) == cache.key(nested2)


def test_key_distinguishes_values_and_list_order():
    base = cache.key({"a": 1, "b": [1, 2]})
    assert cache.key({"a": 2, "b": [1, 2]}) != base
    assert cache.key({"a": 1, "b": [2, 1]}) != base
    assert cache.key({"a": "1", "b": [1, 2]}) != base
    assert cache.key({"a": 1, "b": [1, 2], "c": None}) != base


def test_key_non_json_values_via_str(tmp_path):
    assert cache.key({"p": tmp_path}) == cache.key({"p": str(tmp_path)})


def test_location_under_cache_dir(tmp_cache):
    assert paths.cache_dir() == tmp_cache
    assert cache.location("dataset", {"a": 1}) == tmp_cache / "dataset" / cache.key({"a": 1})


# ---- get_or_build -----------------------------------------------------------------------------
def test_miss_builds_then_hit_does_not(tmp_cache):
    calls = []

    def build(d):
        calls.append(d)
        (d / "out.txt").write_text("hello")

    cfg = {"step": "x", "n": 1}
    assert not cache.exists("thing", cfg)
    first = cache.get_or_build("thing", cfg, build)
    assert len(calls) == 1
    assert first == tmp_cache / "thing" / cache.key(cfg)
    assert (first / "out.txt").read_text() == "hello"
    assert json.loads((first / cache.CONFIG_FILE).read_text()) == cfg
    assert cache.exists("thing", cfg)
    # the build ran in a temporary sibling, not in the final place
    assert calls[0].parent == first.parent and calls[0].name.startswith(".tmp-")
    second = cache.get_or_build("thing", {"n": 1, "step": "x"}, build)  # same config, other key order
    assert second == first
    assert len(calls) == 1
    assert _entries(tmp_cache / "thing") == [first.name]  # no temporary directory left


def test_different_config_builds_again(tmp_cache):
    n = []
    a = cache.get_or_build("k", {"v": 1}, lambda d: n.append(1))
    b = cache.get_or_build("k", {"v": 2}, lambda d: n.append(2))
    assert n == [1, 2] and a != b


def test_failed_build_leaves_nothing_and_rerun_builds(tmp_cache):
    cfg = {"step": "boom"}
    calls = []

    def bad(d):
        calls.append("bad")
        (d / "half.bin").write_bytes(b"\0" * 100)
        (d / "sub").mkdir()
        (d / "sub" / "more.txt").write_text("x")
        raise RuntimeError("interrupted half-way")

    with pytest.raises(RuntimeError, match="interrupted half-way"):
        cache.get_or_build("art", cfg, bad)
    assert not cache.exists("art", cfg)
    assert not cache.location("art", cfg).exists()
    assert _entries(tmp_cache / "art") == []  # neither the artifact nor a .tmp-* directory
    assert cache.clean_partial() == 0

    def good(d):
        calls.append("good")
        (d / "done.txt").write_text("ok")

    out = cache.get_or_build("art", cfg, good)
    assert calls == ["bad", "good"]
    assert (out / "done.txt").read_text() == "ok"
    assert not (out / "half.bin").exists()
    assert _entries(tmp_cache / "art") == [out.name]


def test_keyboard_interrupt_also_cleans_up(tmp_cache):
    def interrupted(d):
        (d / "x").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build("art", {"i": 1}, interrupted)
    assert _entries(tmp_cache / "art") == []


def test_stale_directory_without_marker_is_replaced(tmp_cache):
    cfg = {"stale": True}
    final = cache.location("art", cfg)
    final.mkdir(parents=True)
    (final / "junk.txt").write_text("from an old, incomplete layout")
    n = []
    out = cache.get_or_build("art", cfg, lambda d: (n.append(1), (d / "new.txt").write_text("new")))
    assert n == [1] and out == final
    assert (out / "new.txt").read_text() == "new"
    assert not (out / "junk.txt").exists()


def test_marker_written_after_build(tmp_cache):
    seen = []

    def build(d):
        seen.append((d / cache.CONFIG_FILE).exists())

    cache.get_or_build("art", {"m": 1}, build)
    assert seen == [False]
    assert cache.CONFIG_FILE != "config.json"


# ---- write_json -------------------------------------------------------------------------------
def test_write_json_roundtrip_and_no_temp_left(tmp_path):
    target = tmp_path / "verdict.json"
    cache.write_json(target, {"a": [1, 2], "b": "x", "p": tmp_path})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": "x", "p": str(tmp_path)}
    assert _entries(tmp_path) == ["verdict.json"]
    cache.write_json(target, {"a": 3})  # overwrite
    assert json.loads(target.read_text()) == {"a": 3}
    assert _entries(tmp_path) == ["verdict.json"]


def test_write_json_failure_keeps_old_file(tmp_path):
    target = tmp_path / "v.json"
    cache.write_json(target, {"old": 1})
    circular = []
    circular.append(circular)
    with pytest.raises(ValueError):
        cache.write_json(target, circular)
    assert json.loads(target.read_text()) == {"old": 1}
    assert _entries(tmp_path) == ["v.json"]


def test_write_json_uses_rename(tmp_path, monkeypatch):
    """The target is only ever replaced by a rename of a complete temporary file."""
    target = tmp_path / "v.json"
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((json.loads(open(src).read()), os.fspath(dst)))
        assert not os.path.exists(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(cache.os, "replace", spy)
    cache.write_json(target, {"k": [1]})
    assert seen == [({"k": [1]}, os.fspath(target))]


# ---- clean_partial ----------------------------------------------------------------------------
def test_clean_partial_removes_leftovers(tmp_cache):
    done = cache.get_or_build("dataset", {"d": 1}, lambda d: (d / "kept.jsonl").write_text(""))
    leftovers = [tmp_cache / "dataset" / ".tmp-abc-12345678", tmp_cache / "student" / ".tmp-def-87654321"]
    for t in leftovers:
        t.mkdir(parents=True)
        (t / "partial.bin").write_bytes(b"1")
    assert cache.clean_partial() == 2
    assert not any(t.exists() for t in leftovers)
    assert (done / cache.CONFIG_FILE).exists()  # finished artifacts are untouched
    assert _entries(tmp_cache / "dataset") == [done.name]
    assert cache.clean_partial() == 0


def test_clean_partial_without_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBLORA_CACHE", str(tmp_path / "does-not-exist"))
    assert cache.clean_partial() == 0

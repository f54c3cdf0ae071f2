"""A content-addressed artifact store that checks what it hands out and is safe to share between runs.

An artifact lives in <cache>/<kind>/<key>/ where key is a hash of exactly the configuration that
produced it (which includes the version of the step's code). build() fills a temporary sibling
.tmp-<key>-<host>-<pid>-<rand>/; the marker file CONFIG_FILE, written last, holds the configuration
and a manifest (path, size, sha256 of every file); then the directory is renamed into place.

Every read checks the manifest's files and sizes (a stat each); verify=True or SUBLORA_VERIFY=1 also
checks their sha256. A damaged artifact is moved aside and rebuilt, with a one-line warning naming
kind, key and fault. A file not in the manifest is tolerated (readers open files by name) and
reported. An artifact cached before manifests (its marker is the bare configuration) is hashed on its
first read and given one; damage done before that cannot be seen (delete it to rebuild it).

A builder holds an flock on <cache>/<kind>/.lock-<key>; another process wanting that artifact waits,
then reads it. The OS drops the lock when its holder dies, so a leftover whose lock can be taken is
dead: clean_partial() removes only those (and the next builder of that key its own). Builds nest only
in pipeline order (teacher, dataset, student, eval): no two processes wait on each other. Limits:
flock is advisory (only this module takes it); Linux NFS maps it onto POSIX locks, which work between
hosts with NFSv4 or lockd. On a mount without working locks (`nolock`, some FUSE/SMB) two hosts may
build one artifact (the first to finish wins) and one may delete the other's build in progress, which
then fails: share a cache between hosts only where locks work.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from . import paths

CONFIG_FILE = "sublora-artifact.json"  # not config.json: save_pretrained writes that
MISSING, LEGACY, DROPPED = "missing", "legacy", "dropped"  # _fault's answers that are not damage
SMALL = 1 << 20  # an artifact of at most this many bytes is hashed on every read: damage of the same size is seen
log = logging.getLogger(__name__)  # unconfigured, its warnings reach stderr as one plain line each


def key(config: dict) -> str:
    """A stable hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def without_late_defaults(config: dict, late: dict) -> dict:
    """`config` less each setting that joined its step's key after artifacts of that step were built,
    wherever it still holds the value all those artifacts had (`late`: setting -> that value). A new
    setting so keeps every earlier artifact's key, and splits the cache only where it is changed. Each
    step names its late settings beside its configuration (pipeline, design.StudentSpec, organism_recipe)."""
    return {k: v for k, v in config.items() if k not in late or v != late[k]}


def location(kind: str, config: dict, digest: str | None = None) -> Path:
    """Where the artifact lives; `digest`: key(config), where the caller holds it already (artifacts.Artifact)."""
    return paths.cache_dir() / kind / (digest or key(config))


def exists(kind: str, config: dict, digest: str | None = None) -> bool:
    """Whether the artifact is cached and passes the cheap check (file set and sizes); one whose bulky files
    were dropped (drop) is cached."""
    return _fault(location(kind, config, digest), False, kind) in (None, LEGACY)


def get_or_build(kind: str, config: dict, build: Callable[[Path], Any], verify: bool | None = None,
                 digest: str | None = None, whole: bool = False) -> Path:
    """The artifact's directory, calling build(tmp_dir) to fill it first if it is not cached or is
    damaged, or, with whole=True, if its bulky files were dropped (drop). verify=True checks every file's
    sha256; None: SUBLORA_VERIFY=1 does, else only an artifact of at most SMALL bytes is hashed (evaluations,
    most datasets, adapters), a larger one checked by its files' sizes."""
    final = location(kind, config, digest)
    deep = True if os.environ.get("SUBLORA_VERIFY", "") not in ("", "0") else verify
    if _fault(final, deep, kind, whole) is None:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.parent / f".lock-{final.name}", wait=True, what=f"{kind} {final.name}"):
        fault = _fault(final, deep, kind, whole)  # again: another process may have built it while we waited
        if fault is None:
            return final
        if fault == LEGACY:
            log.warning("sublora cache: %s %s predates manifests; hashing it once to record one", kind, final.name)
            _write_marker(final, config)
            return final
        if fault == DROPPED:
            log.warning("sublora cache: %s %s was evaluated and its weights dropped; built again, whole", kind,
                        final.name)
            shutil.rmtree(final)
        elif fault != MISSING:
            log.warning("sublora cache: %s %s is damaged (%s); moved aside and rebuilt", kind, final.name, fault)
            aside = final.parent / f".damaged-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, aside)  # frees the name at once; readers with open files keep them
        _remove_leftovers(final.parent, final.name)  # that one, and any a killed builder of this key left
        tmp = final.parent / f".tmp-{final.name}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        try:
            build(tmp)
            _write_marker(tmp, config)  # last: its presence marks a complete artifact
            try:
                os.replace(tmp, final)
            except OSError:  # only without working locks: another host finished it first; keep theirs
                if _fault(final, False, kind) is not None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing left when build() raised
    return final


def drop(kind: str, config: dict, keep: tuple[str, ...], digest: str | None = None) -> int:
    """Remove a cached artifact's files but those named in `keep`, under its lock, and return the bytes freed.
    Its manifest is rewritten first, listing what stays and, under "dropped", what goes: the artifact stays
    cached (exists, get_or_build hand it out, what read it keeps its key) until a caller asks for it whole
    (get_or_build(..., whole=True)), which builds it again. An artifact not cached, or dropped already: 0."""
    final = location(kind, config, digest)
    with _locked(final.parent / f".lock-{final.name}", wait=True, what=f"{kind} {final.name}"):
        if _fault(final, False, kind, True) is not None:
            return 0
        record = json.loads((final / CONFIG_FILE).read_text())
        gone = {name: rec for name, rec in record["files"].items() if name not in keep}
        if not gone:
            return 0
        write_json(final / CONFIG_FILE, {**record, "files": {n: r for n, r in record["files"].items() if n in keep},
                                         "dropped": gone})
        for name in gone:
            (final / name).unlink(missing_ok=True)
        for sub in sorted((q for q in final.rglob("*") if q.is_dir()), key=lambda q: -len(q.parts)):
            if not any(sub.iterdir()):
                sub.rmdir()
    return sum(rec["size"] for rec in gone.values())


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, default=str))
        os.replace(tmp, path)
    finally:  # a full disk: no half-written temporary left beside it
        tmp.unlink(missing_ok=True)


def clean_partial() -> int:
    """Remove what dead builds left behind (.tmp-* and .damaged-* directories) and return how many.
    A live builder holds its artifact's lock, so leftovers whose lock can be taken have no owner."""
    root = paths.cache_dir()
    left = [*root.glob("*/.tmp-*"), *root.glob("*/.damaged-*")] if root.exists() else []
    n = 0
    for parent, k in sorted({(p.parent, p.name.split("-")[1]) for p in left}):
        with _locked(parent / f".lock-{k}", wait=False) as mine:
            if mine:  # else its builder is alive (and removes dead leftovers of its key itself)
                n += _remove_leftovers(parent, k)
    return n


# ---- helpers ----------------------------------------------------------------------------------
def _remove_leftovers(parent: Path, k: str) -> int:
    """Remove the .tmp-<k>-* and .damaged-<k>-* directories; only for the holder of k's lock, which
    proves that whoever made them is gone."""
    left = [*parent.glob(f".tmp-{k}-*"), *parent.glob(f".damaged-{k}-*")]
    for p in left:
        shutil.rmtree(p, ignore_errors=True)
    return len(left)


def _files(d: Path) -> dict[str, int]:
    """Relative path -> size of every file under d but the marker."""
    return {p.relative_to(d).as_posix(): p.stat().st_size for p in sorted(d.rglob("*"))
            if p.is_file() and p.relative_to(d).as_posix() != CONFIG_FILE}


def sha256(path: Path, sync: bool = False) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        if sync:  # on disk before the marker says complete: a power cut cannot leave a zero-filled file
            os.fsync(f.fileno())
    return h.hexdigest()


def _write_marker(d: Path, config: dict) -> None:
    files = {name: {"size": size, "sha256": sha256(d / name, sync=True)} for name, size in _files(d).items()}
    write_json(d / CONFIG_FILE, {"sublora_manifest": 1, "config": config, "files": files})


def _fault(d: Path, deep: bool | None, kind: str, whole: bool = False) -> str | None:
    """None when the artifact at d is sound, MISSING, LEGACY (no manifest), DROPPED (whole asked for, and its
    bulky files were dropped), else what is wrong. deep: hash every file (True), none (False), or only an
    artifact of at most SMALL bytes (None)."""
    if not (d / CONFIG_FILE).exists():
        return "incomplete: no marker" if d.exists() else MISSING
    try:
        record = json.loads((d / CONFIG_FILE).read_text())
        if not isinstance(record, dict) or "sublora_manifest" not in record:
            return LEGACY
        if whole and record.get("dropped"):
            return DROPPED
        want, have = record["files"], _files(d)
        for name, rec in want.items():
            if name not in have:
                return f"{name} is missing"
            if have[name] != rec["size"]:
                return f"{name} has {have[name]} bytes, not {rec['size']}"
        if deep is None:
            deep = sum(rec["size"] for rec in want.values()) <= SMALL
        for name, rec in want.items() if deep else ():
            if sha256(d / name) != rec["sha256"]:
                return f"{name} fails its sha256"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # also: moved aside while we looked
        return f"unreadable ({type(e).__name__}: {e})"
    extra = sorted(set(have) - set(want))
    if extra:
        log.warning("sublora cache: %s %s holds files it was not built with, ignored: %s", kind, d.name, extra)
    return None


@contextmanager
def _locked(lock: Path, wait: bool, what: str = ""):
    """Hold an flock on the file `lock` and yield True, or yield False if it is busy and wait is False.
    The file names its holder for whoever waits, and is deleted on release, so none are left behind;
    a process that locked a file deleted meanwhile locks the new one instead."""
    while True:
        with open(lock, "a+") as f:  # closing it releases the lock, also when the process dies
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                f.seek(0)
                log.warning("sublora cache: waiting for %s, being built by %s", what, f.read().strip() or "another")
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                if os.stat(lock).st_ino != os.fstat(f.fileno()).st_ino:
                    continue  # its holder deleted it while we waited
            except FileNotFoundError:
                continue
            f.truncate(0)
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
            try:
                yield True
            finally:
                lock.unlink(missing_ok=True)  # before the lock is released, so no one locks a deleted file unawares
            return

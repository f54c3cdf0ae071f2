"""A content-addressed artifact store.

An artifact lives in <cache>/<kind>/<key>/ where key is a hash of exactly the configuration that
produced it (which includes the version of the step's code). It is built in a temporary sibling
directory and renamed into place only when complete, so an interrupted build leaves no artifact
behind and a rerun simply builds it again; a finished artifact is never rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from . import paths

CONFIG_FILE = "sublora-artifact.json"  # not config.json: save_pretrained writes that


def key(config: dict) -> str:
    """A stable hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def location(kind: str, config: dict) -> Path:
    return paths.cache_dir() / kind / key(config)


def exists(kind: str, config: dict) -> bool:
    return (location(kind, config) / CONFIG_FILE).exists()


def get_or_build(kind: str, config: dict, build: Callable[[Path], Any]) -> Path:
    """The artifact's directory, calling build(tmp_dir) to fill it first if it is not cached yet."""
    final = location(kind, config)
    if (final / CONFIG_FILE).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        # the marker file is written last: its presence marks a complete artifact
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True, default=str))
        if final.exists() and not (final / CONFIG_FILE).exists():  # a stale directory without the marker
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same artifact first: keep theirs
            if not (final / CONFIG_FILE).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def clean_partial() -> int:
    """Remove leftovers of interrupted builds; returns how many were removed."""
    n = 0
    root = paths.cache_dir()
    for tmp in root.glob("*/.tmp-*") if root.exists() else []:
        shutil.rmtree(tmp, ignore_errors=True)
        n += 1
    return n

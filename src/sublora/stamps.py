"""The stamp beside each executed notebook (.<name>.stamp.json): what its numbers are a function of
(fingerprint: the notebook, and its run's digest: parameters, the profile's resolved settings,
sublora's own files, the libraries' versions) and the results files its run left. An executed copy
whose stamp still matches is up to date: `make reproduce` does not execute it again, and `make book`
does not warn about it. Below both tools (reproduce writes and reads stamps, book reads them).
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

from . import cache, config, paths

LIBRARIES = ("torch", "transformers", "peft", "numpy", "pandas", "scipy", "scikit-learn", "papermill")


def run_digest(params: dict) -> str:
    """What every notebook of a run shares: its parameters, the profile's resolved settings (a yaml
    file's contents, not its name), sublora's own files (code, profiles, organism weights) and the
    libraries' versions. Computed once per run."""
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    profile = config.load_profile(params["profile"])
    h.update(json.dumps(config.to_dict(profile), sort_keys=True, default=str).encode())
    package = Path(__file__).parent
    for f in sorted(package.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(package)).encode() + b"\0" + f.read_bytes())
    for lib, version in versions(LIBRARIES).items():
        h.update(f"{lib} {version or '-'}".encode())
    return h.hexdigest()


def versions(names) -> dict[str, str | None]:
    """Each installed distribution's version, None where it is not installed."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def fingerprint(name: str, digest: str) -> str:
    """What an executed notebook's numbers are a function of: the notebook itself and its run's digest."""
    return hashlib.sha256((paths.ROOT / "notebooks" / f"{name}.ipynb").read_bytes() + digest.encode()).hexdigest()


def _results_files(results: Path) -> dict[str, str]:
    """{path: sha256} of the files in a run's results folder (other runs' folders and stamps left out)."""
    return {str(f.relative_to(results)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(results.rglob("*"))
            if f.is_file() and "runs" not in f.relative_to(results).parts and not f.name.endswith(".stamp.json")}


def file(out_dir: Path, name: str) -> Path:
    """The stamp of the executed copy of notebook `name` in out_dir."""
    return out_dir / f".{name}.stamp.json"


def up_to_date(name: str, out_dir: Path, stamp: str, results: Path) -> bool:
    """The executed copy in out_dir was made by a run with this fingerprint, and every results file in
    `results` when that run ended is still there, unchanged."""
    path = file(out_dir, name)
    if not (path.exists() and (out_dir / f"{name}.ipynb").exists()):
        return False
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    now = _results_files(results) if results.exists() else {}
    return record.get("fingerprint") == stamp and all(now.get(f) == n for f, n in record.get("results", {}).items())


def mark_up_to_date(name: str, out_dir: Path, stamp: str, results: Path) -> None:
    """Stamp the executed copy in out_dir: this fingerprint, and the results files in `results` now."""
    record = {"fingerprint": stamp, "results": _results_files(results) if results.exists() else {}}
    cache.write_json(file(out_dir, name), record)  # atomic: a stamp is whole or absent, never half a file

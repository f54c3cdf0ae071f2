"""The record: the default profile's confirmatory run, committed, so that a reader opens the book without
computing, cites it, and checks a rerun against it.

record/<folder>/ holds the run's results (tables as CSV, figures as PNG, verdicts as JSON) and its executed
notebooks, and record.json: the commit, the profile's identity, the library versions and the machine it ran on,
and every file's size and sha256. It is rewritten only by `sublora record write`, a deliberate step after a
confirmatory run. `make book` on a fresh clone (no executed notebooks yet) builds the book from it (`restore`);
`make reproduce` ends by comparing its run with it (`compare`), verdict by verdict and table by table, and the
scoreboard shows that comparison.

What is compared, and why not the notebooks' outputs (nbval): a notebook's output holds times, paths, progress
text and figures whose bytes follow matplotlib's version, while every number a page shows is in a table or a
verdict the run wrote; tables compared number by number say which number moved and by how much.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from . import cache, command, paths, stamps
from . import results as results_files  # `results` names a run's folder here
from .config import DEFAULT_PROFILE, load_profile
from .identity import digest, identity

RECORD_FILE = "record.json"
RESTORED = ".restored-from-record.json"  # in the executed folder: the notebooks restore copied there
LIBRARIES = ("torch", "transformers", "peft", "numpy", "pandas", "scipy", "matplotlib", "jupyter-book")
# What "within tolerance" allows, and why: the same code and seeds give the same numbers on one machine; another
# CPU may sum in another order (its thread count) or emulate bf16 products (the pure-bf16 arm), which moves the
# last digits of a P; a number then agrees within RTOL of the record's, or within ATOL of 0.
RTOL, ATOL = 1e-3, 1e-9


def record_dir(folder: str = DEFAULT_PROFILE) -> Path:
    return paths.ROOT / "record" / folder


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(paths.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(paths.ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def machine() -> dict:
    """The machine facts that can move a number: CPU, threads, whether bf16 products are native."""
    import torch  # only where a record is written or compared: the book, which restores one, stays without torch

    from . import device
    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cpu_bf16_products": device.cpu_bf16(),
            "python": platform.python_version()}


def _sources(folder: str) -> dict[str, Path]:
    """What a record holds of the run under results/<folder>/ and the executed notebooks: relative name -> file."""
    results, executed = paths.results_dir(folder), paths.executed_dir()
    files = {f"results/{p.relative_to(results).as_posix()}": p for p in sorted(results.glob("*.csv"))}
    files |= {f"results/{p.relative_to(results).as_posix()}": p for p in sorted(results.glob("*.png"))}
    named = results_files.listed(results / "verdicts")  # the verdicts the notebooks wrote, never a stray copy
    files |= {f"results/verdicts/{p.name}": p for p in sorted((results / "verdicts").glob("*.list"))}
    files |= {f"results/verdicts/{p.name}": p for p in sorted((results / "verdicts").glob("*.json"))
              if named is None or p.name in named}
    files |= {f"executed/{p.name}": p for p in sorted(executed.glob("[0-9]*.ipynb"))}
    return files


def write(profile: str = DEFAULT_PROFILE) -> Path:
    """Record the default run of `profile` (its results and the executed notebooks) in record/<folder>/, replacing
    the previous record whole; only the default profile's executed notebooks are in book/executed."""
    p = load_profile(profile)
    folder = identity(p)
    if folder != DEFAULT_PROFILE:
        raise ValueError(f"only the default profile as shipped ({DEFAULT_PROFILE}) has a record; {profile!r} is {folder!r}")
    files = _sources(folder)
    if not any(k.startswith("results/verdicts/") and k.endswith(".json") for k in files) or \
            not any(k.startswith("executed/") for k in files):
        raise FileNotFoundError(f"no finished run of {folder!r} to record: run `make reproduce` first "
                                f"(results in {paths.results_dir(folder)}, notebooks in {paths.executed_dir()})")
    dest = record_dir(folder)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for name, src in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, tmp / name)
    manifest = {"profile": folder, "digest": digest(p), "commit": _commit(), "written": time.strftime("%Y-%m-%d"),
                "libraries": {k: v or "absent" for k, v in stamps.versions(LIBRARIES).items()}, "machine": machine(),
                "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": cache.sha256(tmp / name)} for name in files}}
    (tmp / RECORD_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def read(folder: str = DEFAULT_PROFILE) -> dict | None:
    """The record's manifest, or None where there is none."""
    f = record_dir(folder) / RECORD_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def restore(folder: str = DEFAULT_PROFILE) -> dict | None:
    """Copy the record's executed notebooks and results into book/executed and results/<folder>/ where there are no
    executed notebooks yet (a fresh clone), so that the book is built from it; the manifest of what it restored, or
    None. The copies carry no stamp, so `make reproduce` executes every notebook again."""
    manifest, executed = read(folder), paths.executed_dir()
    if manifest is None or any(executed.glob("[0-9]*.ipynb")):
        return None
    src = record_dir(folder)
    for name in manifest["files"]:
        to = (executed / name.removeprefix("executed/") if name.startswith("executed/")
              else paths.results_dir(folder) / name.removeprefix("results/"))
        to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / name, to)
    (executed / RESTORED).write_text(json.dumps(sorted(Path(n).stem for n in manifest["files"] if n.startswith("executed/"))))
    return manifest


def restored(name: str) -> bool:
    """Whether the executed notebook `name` is the record's copy (restore), not a run of this checkout's."""
    f = paths.executed_dir() / RESTORED
    return f.is_file() and name in json.loads(f.read_text())


def _close(a: pd.DataFrame, b: pd.DataFrame) -> tuple[bool, float]:
    """(every number within tolerance and every other cell equal, the largest relative difference)."""
    if list(a.columns) != list(b.columns) or a.shape != b.shape:
        return False, math.inf
    worst = 0.0
    for c in a.columns:
        x, y = a[c], b[c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            x, y = x.astype(float).to_numpy(), y.astype(float).to_numpy()
            both_nan = pd.isna(x) & pd.isna(y)
            diff = abs(x - y)
            ok = both_nan | (diff <= ATOL + RTOL * abs(y))
            if not ok.all():
                return False, float(max(diff[~both_nan] / (abs(y[~both_nan]) + ATOL), default=math.inf))
            rel = diff[~both_nan] / (abs(y[~both_nan]) + ATOL)
            worst = max(worst, float(rel.max()) if rel.size else 0.0)
        elif not x.fillna("").astype(str).equals(y.fillna("").astype(str)):
            return False, math.inf
    return True, worst


def compare(folder: str = DEFAULT_PROFILE) -> pd.DataFrame:
    """The run in results/<folder>/ against its record: one row per verdict and per table, with its status
    (identical, within tolerance, different, missing in the run, not in the record) and what moved. Empty where
    there is no record."""
    manifest = read(folder)
    if manifest is None:
        return pd.DataFrame(columns=["kind", "name", "status", "detail"])
    run, rec = paths.results_dir(folder), record_dir(folder)
    rows = []
    recorded = [n for n in manifest["files"] if n.startswith("results/") and n.endswith((".csv", ".json"))]
    for name in recorded:
        kind = "verdict" if name.startswith("results/verdicts/") else "table"
        mine, theirs = run / name.removeprefix("results/"), rec / name
        label = Path(name).stem
        if not mine.is_file():
            rows.append({"kind": kind, "name": label, "status": "missing in the run", "detail": ""})
        elif cache.sha256(mine) == manifest["files"][name]["sha256"]:
            rows.append({"kind": kind, "name": label, "status": "identical", "detail": ""})
        elif kind == "verdict":
            a, b = json.loads(mine.read_text()), json.loads(theirs.read_text())
            same = a.get("verdict") == b.get("verdict")
            ok, worst = _close(*(pd.DataFrame([{k: d.get(k) for k in ("effect", "ci_low", "ci_high")}]) for d in (a, b)))
            rows.append({"kind": kind, "name": label, "status": "within tolerance" if same and ok else "different",
                         "detail": (f"{b.get('verdict')} → {a.get('verdict')}" if not same else
                                    f"largest relative difference {worst:.1e}")})
        else:
            ok, worst = _close(pd.read_csv(mine), pd.read_csv(theirs))
            rows.append({"kind": kind, "name": label, "status": "within tolerance" if ok else "different",
                         "detail": f"largest relative difference {worst:.1e}" if ok else
                                   ("another shape or other labels" if math.isinf(worst) else
                                    f"a number differs by {worst:.1e} of its value")})
    written = {Path(n).stem for n in results_files.listed(run / "verdicts") or ()}
    extra = sorted(written - {Path(n).stem for n in recorded})
    rows += [{"kind": "verdict", "name": n, "status": "not in the record", "detail": ""} for n in extra]
    return pd.DataFrame(rows, columns=["kind", "name", "status", "detail"])


def summary(table: pd.DataFrame, folder: str = DEFAULT_PROFILE) -> str:
    """One paragraph: how the run compares with its record, and on what machines each ran."""
    manifest = read(folder)
    if manifest is None:
        return f"No record of {folder!r} to compare with (record/{folder}/)."
    counts = table.groupby(["kind", "status"]).size()
    said = "; ".join(f"{k}s {s}: {n}" for (k, s), n in counts.items())
    mine, theirs = machine(), manifest["machine"]
    moved = [k for k in ("cpu_bf16_products", "torch_threads", "processor") if mine.get(k) != theirs.get(k)]
    where = ("the same kind of machine" if not moved else
             "another machine (" + ", ".join(f"{k} {theirs.get(k)} there, {mine.get(k)} here" for k in moved) + ")")
    return (f"Against the record (commit {manifest['commit'][:12]}, written {manifest['written']}), on {where}: {said}. "
            f"Within tolerance: every number within {RTOL:g} of the record's (or {ATOL:g} of 0) and every label equal.")


def add_arguments(ap) -> None:
    ap.add_argument("action", choices=("write", "compare"),
                    help="write: record the default run (after a confirmatory run); compare: this run against the record")
    ap.add_argument("--profile", default=DEFAULT_PROFILE, help=f"the profile (only {DEFAULT_PROFILE} has a record)")


def run(args) -> int:
    if args.action == "write":
        try:
            dest = write(args.profile)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
        print(f"recorded {len(read()['files'])} files ({size / 1e6:.1f} MB) in {dest}")
        return 0
    folder = identity(load_profile(args.profile))
    table = compare(folder)
    print(summary(table, folder))
    moved = table[table["status"] != "identical"]
    if len(moved):
        print(moved.to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    return command.alone("record", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())

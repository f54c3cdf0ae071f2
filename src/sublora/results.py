"""Where a run's tables, figures and verdicts are written and read back, with one atomic writer.

The default run of a notebook (no parameter changed) writes to results/<folder>/; a run with other
parameters to results/<folder>/runs/<its parameters>/, so it never overwrites the default book's
results. The folder is identity.identity of the profile: a package profile as shipped keeps its name,
any other profile (a user's file, one edited in place) gets its name and a digest of its settings.
The scoreboard reads the default run's verdicts and lists the other runs separately.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Callable

import pandas as pd

from . import paths


def run_dir(run) -> Path:
    """results/<folder>/ for a default run, results/<folder>/runs/<key>/ otherwise."""
    base = paths.results_dir(run.folder)
    d = base / "runs" / run.key if run.key else base
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """write(tmp) fills a temporary sibling, renamed over `path` only when complete: a reader never
    sees half a file, and a run that fails leaves the previous version in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_table(run, df: pd.DataFrame, name: str) -> Path:
    """A tidy table as CSV beside the run's other results."""
    return write_atomic(run_dir(run) / f"{name}.csv", lambda t: df.to_csv(t, index=False))


def save_figure(run, fig, name: str) -> None:
    """The figure as PNG beside the run's other results (returns nothing: no stray output cell)."""
    write_atomic(run_dir(run) / f"{name}.png", lambda t: fig.savefig(t, dpi=120, bbox_inches="tight", format="png"))


def save_verdicts(run, rows: list[dict]) -> None:
    """Each verdict row (one per claim × teacher) as JSON, read by the scoreboard, and the list of them under the
    notebook's name (verdicts/<notebook>.list): readers take exactly the listed files, and a verdict file this
    notebook wrote before but not now is removed (a rerun with fewer teachers leaves no stale verdict)."""
    folder = run_dir(run) / "verdicts"
    listed = folder / f"{run.notebook}.list"
    before = set(listed.read_text().split()) if listed.is_file() else set()
    names = [f"{row['file']}.json" for row in rows]
    for row, name in zip(rows, names):
        body = {k: v for k, v in row.items() if k != "file"}
        write_atomic(folder / name, lambda t: t.write_text(json.dumps(body, indent=1, default=str)))
    write_atomic(listed, lambda t: t.write_text("".join(f"{n}\n" for n in names)))
    for name in sorted(before - set(names)):
        (folder / name).unlink(missing_ok=True)


def listed(folder: Path) -> set[str] | None:
    """The verdict files the notebooks listed in one verdicts folder (save_verdicts); None where there is no list
    (a folder written before them)."""
    lists = sorted(folder.glob("*.list"))
    return {n for f in lists for n in f.read_text().split()} if lists else None


def _read(folder: Path, run: str) -> tuple[list[dict], list[str]]:
    """The verdicts the notebooks' lists name in one verdicts folder, and the other .json files there (ignored).
    A folder without lists is read whole."""
    files = sorted(p.name for p in folder.glob("*.json"))
    named = listed(folder)
    listed_here = set(files) if named is None else named
    rows = [json.loads((folder / n).read_text()) | {"run": run} for n in files if n in listed_here]
    return rows, [f"{folder.name}/{n}" if not run else f"runs/{run}/verdicts/{n}" for n in files if n not in listed_here]


def read_verdicts(folder: str) -> pd.DataFrame:
    """Every verdict under results/<folder>/ (a profile's identity.identity): the default run's (run '') and
    the other runs' (run = their key), as the notebooks listed them. Any other .json file in a verdicts folder
    (a stray copy) is not read: its names are in the table's attrs['ignored'], for the pages to say so."""
    base = paths.results_dir(folder)
    rows, ignored = _read(base / "verdicts", "")
    for d in sorted((base / "runs").glob("*/verdicts")):
        more, stray = _read(d, d.parent.name)
        rows, ignored = rows + more, ignored + stray
    table = pd.DataFrame(rows)
    table.attrs["ignored"] = ignored
    return table


def figure_path(folder: str, name: str) -> Path:
    return paths.results_dir(folder) / f"{name}.png"

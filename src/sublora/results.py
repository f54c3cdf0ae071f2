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
    """Each verdict row (one per claim × teacher) as JSON, read by the scoreboard."""
    for row in rows:
        path = run_dir(run) / "verdicts" / f"{row['file']}.json"
        body = {k: v for k, v in row.items() if k != "file"}
        write_atomic(path, lambda t: t.write_text(json.dumps(body, indent=1, default=str)))


def read_verdicts(folder: str) -> pd.DataFrame:
    """Every verdict under results/<folder>/ (a profile's identity.identity): the default run's (run '') and
    the other runs' (run = their key)."""
    base = paths.results_dir(folder)
    rows = [json.loads(p.read_text()) | {"run": ""} for p in sorted((base / "verdicts").glob("*.json"))]
    for d in sorted((base / "runs").glob("*/verdicts")):
        rows += [json.loads(p.read_text()) | {"run": d.parent.name} for p in sorted(d.glob("*.json"))]
    return pd.DataFrame(rows)


def figure_path(folder: str, name: str) -> Path:
    return paths.results_dir(folder) / f"{name}.png"

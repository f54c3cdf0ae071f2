"""Run the notebooks through papermill for one profile, then build the book; print each stage's time.

    python -m sublora.reproduce --profile organism           # what `make reproduce` runs
    python -m sublora.reproduce --profile smoke --only 03_rank_sweep -p ranks "[1, 2]"

Executed notebooks land in book/executed/ (or --executed); the book is built from them without
executing anything again. Everything expensive is cached, so a rerun after an interruption picks up
where it stopped.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import papermill as pm
import yaml

from . import cache, config, notebook, paths, plan, runner
from .config import ConfigError, available_profiles

NOTEBOOKS = ("00_model", "01_teacher_numbers", "02_transfer", "03_rank_sweep", "04_full_finetuning",
             "05_system_prompt", "06_scoreboard")


def run_notebook(name: str, out_dir: Path, parameters: dict, progress: bool = True) -> float:
    """Execute notebooks/<name>.ipynb with papermill into out_dir; returns seconds taken."""
    src = paths.ROOT / "notebooks" / f"{name}.ipynb"
    if not src.exists():
        raise ConfigError(f"no notebook {name!r}; choose one of {list(NOTEBOOKS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.running.ipynb"
    t0 = time.perf_counter()
    # executed into a temporary name, renamed when complete: the book never shows a half-run notebook
    pm.execute_notebook(str(src), str(tmp), parameters=parameters, progress_bar=progress, kernel_name="python3",
                        cwd=str(paths.ROOT / "notebooks"))
    tmp.replace(out_dir / f"{name}.ipynb")
    return time.perf_counter() - t0


def build_book(executed: Path, book_dir: Path | None = None) -> tuple[Path, float]:
    """jupyter-book build from executed notebooks, never executing them again; returns index.html
    and seconds. The book is built in book/, or in a copy of it at book_dir (the tests do that)."""
    t0 = time.perf_counter()
    src = paths.ROOT / "book"
    book = book_dir or src
    if book_dir:
        shutil.copytree(src, book, ignore=shutil.ignore_patterns("_build", "executed"), dirs_exist_ok=True)
    target = book / "executed"
    if executed.resolve() != target.resolve():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(executed, target, ignore=shutil.ignore_patterns(".*"))
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(book), "--warningiserror", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return book / "_build" / "html" / "index.html", time.perf_counter() - t0


def read_params(pairs: list[list[str]]) -> dict:
    """-p name value pairs, values read as yaml (numbers, lists) like papermill does; config.parse_params
    then checks them."""
    out = {}
    for name, value in pairs:
        try:
            out[name] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"cannot read the value of -p {name} {value!r}; e.g. -p ranks '[1, 2]'") from None
    return out


def check(names: list[str], params: dict) -> dict[str, Path | None]:
    """Every notebook's parameters checked, and its profile resolved, before any work starts.
    Returns, per notebook, where a run with other than the default parameters keeps its executed
    copy (beside its results, never over the default book's page), or None for a default run."""
    runs = {}
    for name in names:
        if not (paths.ROOT / "notebooks" / f"{name}.ipynb").exists():
            raise ConfigError(f"no notebook {name!r}; choose from {list(NOTEBOOKS)}")
        declared = notebook.declared_parameters(name)
        checked = config.parse_params(params, name, list(declared))
        profile = config.notebook_profile({**checked, "profile": params["profile"]}, name)
        plan.check_cost(profile, config.load_profile(params["profile"]))
        key = notebook.run_key(checked, declared)
        runs[name] = paths.results_dir(profile.name) / "runs" / key if key else None
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="organism", help=f"one of {available_profiles()}, or a yaml file's path")
    ap.add_argument("--only", nargs="*", help="run only these notebooks (names without .ipynb); no book build")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help="notebook parameter")
    ap.add_argument("--executed", type=Path, default=paths.ROOT / "book" / "executed")
    ap.add_argument("--no-book", action="store_true", help="skip the book build")
    ap.add_argument("--book-dir", type=Path, help="build the book in a copy of book/ here")
    args = ap.parse_args(argv)
    paths.absolutize_env()  # SUBLORA_* set after import (bench --cache-dir) resolve against the caller's cwd too
    names = args.only or list(NOTEBOOKS)
    # a profile file's path is made absolute: the notebooks run in notebooks/
    profile = str(Path(args.profile).resolve()) if config.is_profile_path(args.profile) else args.profile
    try:
        params = {"profile": profile, **read_params(args.p)}
        runs = check(names, params)
        # who builds the artifacts: SUBLORA_EXECUTOR, which the kernels inherit (sublora.runner); checked here
        executor = runner.check_executor()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    removed = cache.clean_partial()
    if removed:
        print(f"removed {removed} unfinished artifact(s) of an interrupted run")
    if executor:
        print(f"executor: {executor} (SUBLORA_EXECUTOR)"
              + (f", cluster {os.environ['SUBLORA_RAY_ADDRESS']}" if executor == "ray" and os.environ.get("SUBLORA_RAY_ADDRESS") else ""))
    times = {}
    for name in names:
        out = runs[name] or args.executed
        print(f"[{name}] running with {params}" + (f" (not the default run: executed copy in {out})" if runs[name] else ""),
              flush=True)
        try:
            times[name] = run_notebook(name, out, params)
        except pm.PapermillExecutionError as e:
            # the partly executed copy leaves the book's folder: the book never shows a failed run
            failed = Path(tempfile.gettempdir()) / f"sublora-failed-{name}.ipynb"
            shutil.move(out / f".{name}.running.ipynb", failed)
            print(f"error: notebook {name} failed: {e.ename}: {e.evalue}\n"
                  f"  the partly executed copy is {failed}", file=sys.stderr)
            return 1
        print(f"[{name}] {times[name]:.1f} s", flush=True)
    if any(runs.values()):
        print("not the default run: the book is left as it was (its pages show the default run)")
        args.no_book = True
    if not (args.only or args.no_book):
        index, times["book"] = build_book(args.executed, args.book_dir)
        print(f"[book] {times['book']:.1f} s")
    print("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()) + f"; total {sum(times.values()):.1f}")
    if not (args.only or args.no_book):
        print(f"book: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the notebooks through papermill for one profile, then build the book; print each stage's time.

    sublora reproduce --profile organism           # what `make reproduce` runs
    sublora reproduce --profile smoke --only 03_rank_sweep -p ranks "[1, 2]"

Executed notebooks land in book/executed/ (or --executed), tidied for the reader (no stderr, the
parameters shown once); the book is built from them without executing anything again, and opens
with a results table computed from the verdict files. Everything expensive is cached, so a rerun
after an interruption picks up where it stopped. A notebook whose executed copy is up to date — run
with the same notebook, parameters, profile, sublora code and libraries, its results files still
there, and no notebook before it rerun — is not executed again (--force executes it anyway).

Bad input (a parameter, a profile, a notebook name, a folder the run cannot write to, a disk without room
for what `make plan` estimates the run's new artifacts take) stops before any work with one line naming
the fix, exit code 2. A profile that is not a package profile as shipped (a user's file, one edited in
place) has results of its own under results/<name>-<digest>/ (identity.identity). Only the default profile as
shipped writes book/executed and book/ (the default book); any other profile's executed notebooks and book go
to results/<its folder>/executed and .../book (book.places). A notebook that fails leaves its partly executed copy
as .<name>.failed.ipynb in the folder its executed copy goes to (a hidden name: never a page of the book).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import papermill as pm

from . import book, cache, command, config, device, identity, models, notebook, paths, plan, quiet, record, runner, stamps
from .config import DEFAULT_PROFILE, ConfigError, available_profiles, shown
from .params import declared_parameters, notebook_file, notebook_profile, parse_params, read_params

# a line of a progress bar, or an empty one: the removed stderr lines not worth mentioning
PROGRESS = re.compile(r"\d+%\||it/s\]|s/it\]|^\s*(\x1b\[A)?\s*$")


@contextmanager
def _environment(values: dict):
    """os.environ with `values` set while the block runs (kernels started in it inherit them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def run_notebook(name: str, out_dir: Path, parameters: dict, progress: bool = True) -> float:
    """Execute notebooks/<name>.ipynb with papermill into out_dir, tidied for the book (book.tidy); returns
    seconds taken. The stderr tidy removes is kept in out_dir/.<name>.stderr.log."""
    src = _notebook(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.running.ipynb"
    t0 = time.perf_counter()
    # the kernel starts with the progress bars off and the known-harmless warnings filtered
    with _environment(quiet.kernel_env()):
        pm.execute_notebook(str(src), str(tmp), parameters=parameters, progress_bar=progress,
                            kernel_name="python3", cwd=str(paths.ROOT / "notebooks"))
    nb = nbformat.read(tmp, as_version=4)
    removed = book.tidy(nb)
    log = out_dir / f".{name}.stderr.log"
    if removed:
        log.write_text(removed)
    else:
        log.unlink(missing_ok=True)
    if any(not PROGRESS.search(line) for line in removed.splitlines()):
        print(f"[{name}] warnings on stderr, removed from the page, are in {log}", flush=True)
    # written under a temporary name, renamed when complete: the book never shows a half-run notebook
    nbformat.write(nb, tmp)
    tmp.replace(out_dir / f"{name}.ipynb")
    return time.perf_counter() - t0


def _absolute(profile: str) -> str:
    """A profile file's path made absolute (against the caller's directory); a package profile's name as it is."""
    return str(Path(profile).expanduser().resolve()) if config.is_profile_path(profile) else profile


def _notebook(name: str) -> Path:
    """notebooks/<name>.ipynb of a bare name (a path such as ../notebooks/06_scoreboard is no name)."""
    path = notebook_file(name)
    if path is None:
        raise ConfigError(f"no notebook {shown(name)}; choose from {list(book.NOTEBOOKS)}")
    return path


def check(names: list[str], params: dict) -> tuple[dict[str, Path | None], dict]:
    """Every notebook's parameters checked, and its profile resolved, before any work starts.
    Returns, per notebook, where a run with other than the default parameters keeps its executed
    copy (beside its results, never over the default book's page), or None for a default run; and
    per notebook, its profile with the run's parameters applied."""
    for name in names:
        _notebook(name)  # a bare notebook name, else the error listing them
    declared = {name: declared_parameters(name) for name in names}
    # every value before the profile is read: parse_params decides what an empty value is, also the profile's
    checked = {name: parse_params(params, name, list(declared[name])) for name in names}
    runs, profiles = {}, {}
    default = config.load_profile(params["profile"])
    folder = paths.results_dir(identity.identity(default))
    for name in names:
        profiles[name] = notebook_profile({**checked[name], "profile": params["profile"]}, name)
        models.preflight(profiles[name])  # a GPU and weights where the profile needs them: before any kernel starts
        plan.check_cost(profiles[name], default)
        key = notebook.run_key(checked[name], declared[name])
        runs[name] = folder / "runs" / key if key else None
    return runs, profiles


def _probe(folder: Path) -> None:
    """Make `folder` if missing and write a file in it (removed again): an OSError where a run could not."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".sublora-probe-"):
        pass


def preflight(folders: dict[Path, tuple[str, str]]) -> None:
    """Each folder a run writes to ({folder: (what it is, the variable that moves it)}) made if missing and
    written to once, before any work: else a ConfigError naming the first that cannot be, and the fix."""
    for folder, (what, variable) in folders.items():
        try:
            _probe(folder)
        except OSError as e:
            raise ConfigError(f"cannot write to {what} {folder} ({e.__class__.__name__}: {e.strerror or e}); "
                              f"set {variable} to a folder you can write to") from None


def add_arguments(ap) -> None:
    ap.add_argument("--profile", help=f"one of {available_profiles()}, or a yaml file's path (default {DEFAULT_PROFILE}; "
                                      "-p profile says the same, and the two must agree)")
    ap.add_argument("--only", nargs="*", help="run only these notebooks (names without .ipynb); no book build")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help="notebook parameter")
    # a value such as -1e-3 is a value, as papermill reads it, not an option: argparse's own pattern for negative
    # numbers (-1, -.5) leaves out the exponent, so `-p lr -1e-3` failed with "expected 2 arguments"
    ap._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
    ap.add_argument("--executed", type=Path,
                    help="where the executed notebooks go (default: SUBLORA_EXECUTED, else book/executed for the default "
                         "profile as shipped and results/<its folder>/executed for any other)")
    ap.add_argument("--no-book", action="store_true", help="skip the book build")
    ap.add_argument("--book-dir", type=Path, help="build the book in a copy of book/ here (default: SUBLORA_BOOK, else "
                                                  "book/ for the default profile as shipped and results/<its folder>/book)")
    ap.add_argument("--force", action="store_true", help="execute every notebook, also those whose executed copy is up to date")


def run(args) -> int:
    paths.absolutize_env()  # SUBLORA_* set after import (bench --cache-dir) resolve against the caller's cwd too
    try:
        given = [value for name, value in args.p if name == "profile"]
        if len(given) > 1:
            raise ConfigError(f"-p profile is given {len(given)} times ({', '.join(map(repr, given))}): give it once")
        params = {"profile": args.profile or DEFAULT_PROFILE, **read_params(args.p)}  # -p profile X is --profile X
        if params["profile"] is None:  # -p profile None keeps the run's profile, as any None keeps a default
            params["profile"] = args.profile or DEFAULT_PROFILE
        profile = params["profile"] = _absolute(params["profile"])  # the notebooks run in notebooks/
        names = args.only or list(book.NOTEBOOKS)
        runs, profiles = check(names, params)
        if args.profile and _absolute(args.profile) != profile:
            raise ConfigError(f"two profiles for one run: --profile {args.profile} (make's PROFILE) and -p profile "
                              f"{given[0]}; give one (make notebook PROFILE=... alone)")
        own = config.load_profile(profile).notebooks  # a profile that checks part of the book runs only those
        for name in own:
            _notebook(name)  # a bare notebook name, else the error listing them
        if own and not args.only:
            names = [n for n in names if n in own]
        # who builds the artifacts: SUBLORA_EXECUTOR, which the kernels inherit (sublora.runner); checked here
        executor = runner.check_executor()
        try:
            device.chosen()  # SUBLORA_CPU_BF16, which every kernel reads: checked once, here
        except ValueError as e:
            raise ConfigError(str(e)) from None
        loaded = config.load_profile(profile)
        folder = identity.identity(loaded)
        default_results = paths.results_dir(folder)
        if folder != loaded.name:
            print(identity.describe_identity(loaded).replace("`", ""))
        # the default profile's pages and book are book/'s; any other profile's are its own (book.places)
        executed, book_dir = book.places(profile)
        args.executed, args.book_dir = args.executed or executed, args.book_dir or book_dir
        folders = {paths.cache_dir(): ("the cache folder", "SUBLORA_CACHE"),
                   default_results: ("the results folder", "SUBLORA_RESULTS")}
        for name in names:  # a run with other parameters keeps its executed copy beside its results
            folders.setdefault(runs[name] or args.executed, ("the results folder", "SUBLORA_RESULTS") if runs[name]
                               else ("the executed notebooks' folder", "SUBLORA_EXECUTED (or --executed)"))
        if not (args.only or args.no_book or any(runs.values())):
            folders.setdefault(args.book_dir, ("the book's folder", "SUBLORA_BOOK (or --book-dir)"))
        preflight(folders)
        plan.check_disk(profiles, paths.cache_dir())
        if not (args.only or args.no_book or any(runs.values())):  # the book's disk too, before any notebook runs
            book.preflight(args.book_dir, args.executed)
    except (ConfigError, models.SetupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    removed = cache.clean_partial()
    if removed:
        print(f"removed {removed} unfinished artifact(s) of an interrupted run")
    if executor:
        print(f"executor: {executor} (SUBLORA_EXECUTOR)"
              + (f", cluster {os.environ['SUBLORA_RAY_ADDRESS']}" if executor == "ray" and os.environ.get("SUBLORA_RAY_ADDRESS") else ""))
    times = {}
    rerun = args.force  # once one notebook runs, every later one runs too: it may read what that one wrote
    digest = stamps.run_digest(params)
    for name in names:
        out, results_dir = runs[name] or args.executed, runs[name] or default_results
        stamp = stamps.fingerprint(name, digest)
        if not rerun and stamps.up_to_date(name, out, stamp, results_dir):
            print(f"[{name}] up to date: not executed again (--force, or FORCE=1 through make, executes it)", flush=True)
            continue
        rerun = True
        stamps.file(out, name).unlink(missing_ok=True)
        print(f"[{name}] running with {params}" + (f" (not the default run: executed copy in {out})" if runs[name] else ""),
              flush=True)
        try:
            times[name] = run_notebook(name, out, params)
        except pm.PapermillExecutionError as e:
            # the partly executed copy keeps a hidden name in this run's folder: the book never shows a failed run
            failed = out / f".{name}.failed.ipynb"
            os.replace(out / f".{name}.running.ipynb", failed)
            print(f"error: notebook {name} failed: {e.ename}: {e.evalue}\n"
                  f"  the partly executed copy is {failed}", file=sys.stderr)
            return 1
        (out / f".{name}.failed.ipynb").unlink(missing_ok=True)  # an earlier failure's copy: this run succeeded
        stamps.mark_up_to_date(name, out, stamp, results_dir)
        print(f"[{name}] {times[name]:.1f} s", flush=True)
    if any(runs.values()):
        print("not the default run: the book is left as it was (its pages show the default run)")
        args.no_book = True
    if not (args.only or args.no_book):
        index, times["book"] = book.build_book(args.executed, args.book_dir, profile)
        print(f"[book] {times['book']:.1f} s")
    print("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()) + f"; total {sum(times.values()):.1f}")
    if not (args.only or args.no_book):
        print(f"book: {index}")
    if not (args.only or any(runs.values())) and record.read(folder) is not None:
        record.run(argparse.Namespace(action="compare", profile=profile))  # the run against its record
    return 0





def main(argv: list[str] | None = None) -> int:
    return command.alone("reproduce", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())

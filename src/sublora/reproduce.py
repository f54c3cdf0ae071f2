"""Run the notebooks through papermill for one profile, then build the book; print each stage's time.

    python -m sublora.reproduce --profile organism           # what `make reproduce` runs
    python -m sublora.reproduce --profile smoke --only 03_rank_sweep -p ranks "[1, 2]"

Executed notebooks land in book/executed/ (or --executed), tidied for the reader (no stderr, the
parameters shown once); the book is built from them without executing anything again, and opens
with a results table computed from the verdict files. Everything expensive is cached, so a rerun
after an interruption picks up where it stopped. A notebook whose executed copy is up to date — run
with the same notebook, parameters, profile, sublora code and libraries, its results files still
there, and no notebook before it rerun — is not executed again (--force executes it anyway).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import yaml

from . import cache, claims, config, notebook, paths, plan, plots, quiet, results, runner
from .config import ConfigError, available_profiles

NOTEBOOKS = ("00_model", "01_teacher_numbers", "02_transfer", "03_rank_sweep", "04_full_finetuning",
             "05_system_prompt", "06_scoreboard")


# The claim pages and what the effect in each claim's verdict is (the number its rule reads).
CLAIM_PAGES = {"1 transfer": "02_transfer", "2 rank inverted-U": "03_rank_sweep",
               "3 full fine-tuning null": "04_full_finetuning", "4 system-prompt dependence": "05_system_prompt"}
EFFECTS = {"1 transfer": "ΔP(target)", "2 rank inverted-U": "Δ at the peak rank",
           "3 full fine-tuning null": "largest full-FT Δ", "4 system-prompt dependence": "Δ(default) − Δ(empty)"}
RUN_PARAMETERS = "run-parameters"  # metadata mark of the markdown line tidy() writes
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
    """Execute notebooks/<name>.ipynb with papermill into out_dir, tidied for the book (tidy); returns
    seconds taken. The stderr tidy removes is kept in out_dir/.<name>.stderr.log."""
    src = paths.ROOT / "notebooks" / f"{name}.ipynb"
    if not src.exists():
        raise ConfigError(f"no notebook {name!r}; choose one of {list(NOTEBOOKS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.running.ipynb"
    t0 = time.perf_counter()
    # the kernel starts with the progress bars off and the known-harmless warnings filtered
    with _environment(quiet.kernel_env()):
        pm.execute_notebook(str(src), str(tmp), parameters=parameters, progress_bar=progress,
                            kernel_name="python3", cwd=str(paths.ROOT / "notebooks"))
    nb = nbformat.read(tmp, as_version=4)
    removed = tidy(nb)
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


LIBRARIES = ("torch", "transformers", "peft", "numpy", "pandas", "scipy", "scikit-learn", "papermill")


def run_digest(params: dict) -> str:
    """What every notebook of a run shares: its parameters, the profile's resolved settings (a yaml
    file's contents, not its name), sublora's own files (code, profiles, organism weights) and the
    libraries' versions. Computed once per run."""
    from importlib import metadata
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    profile = config.load_profile(params["profile"])
    h.update(json.dumps(config.to_dict(profile), sort_keys=True, default=str).encode())
    package = Path(__file__).parent
    for f in sorted(package.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(package)).encode() + b"\0" + f.read_bytes())
    for lib in LIBRARIES:
        try:
            h.update(f"{lib} {metadata.version(lib)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{lib} -".encode())
    return h.hexdigest()


def fingerprint(name: str, digest: str) -> str:
    """What an executed notebook's numbers are a function of: the notebook itself and its run's digest."""
    return hashlib.sha256((paths.ROOT / "notebooks" / f"{name}.ipynb").read_bytes() + digest.encode()).hexdigest()


def _results_files(results: Path) -> dict[str, str]:
    """{path: sha256} of the files in a run's results folder (other runs' folders and stamps left out)."""
    return {str(f.relative_to(results)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(results.rglob("*"))
            if f.is_file() and "runs" not in f.relative_to(results).parts and not f.name.endswith(".stamp.json")}


def _stamp(out_dir: Path, name: str) -> Path:
    return out_dir / f".{name}.stamp.json"


def up_to_date(name: str, out_dir: Path, stamp: str, results: Path) -> bool:
    """The executed copy in out_dir was made by a run with this fingerprint, and every results file in
    `results` when that run ended is still there, unchanged."""
    path = _stamp(out_dir, name)
    if not (path.exists() and (out_dir / f"{name}.ipynb").exists()):
        return False
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    now = _results_files(results) if results.exists() else {}
    return record.get("fingerprint") == stamp and all(now.get(f) == n for f, n in record.get("results", {}).items())


def mark_up_to_date(name: str, out_dir: Path, stamp: str, results: Path) -> None:
    record = {"fingerprint": stamp, "results": _results_files(results) if results.exists() else {}}
    _stamp(out_dir, name).write_text(json.dumps(record, indent=1))


def _executed_names(executed: Path) -> list[str]:
    """The book's notebooks that have an executed copy in `executed`, in name order."""
    return [f.stem for f in sorted(executed.glob("*.ipynb")) if f.stem in NOTEBOOKS]


def out_of_date(executed: Path) -> list[str]:
    """The executed notebooks in `executed` whose stamp says they were made by another run than this
    checkout would make now (another profile's settings, other sublora files or libraries), or whose
    results files changed since. A notebook without a stamp (papermill run by hand) is not judged."""
    stale, digests = [], {}
    for name in _executed_names(executed):
        if not _stamp(executed, name).exists():
            continue
        nb = nbformat.read(executed / f"{name}.ipynb", as_version=4)
        params = dict(nb.metadata.get("papermill", {}).get("parameters", {}))
        params.setdefault("profile", "organism")
        key = json.dumps(params, sort_keys=True, default=str)
        try:
            digests.setdefault(key, run_digest(params))
            results_dir = paths.results_dir(config.load_profile(params["profile"]).name)
        except (ConfigError, FileNotFoundError):
            stale.append(name)  # its profile is gone or no longer valid
            continue
        if not up_to_date(name, executed, fingerprint(name, digests[key]), results_dir):
            stale.append(name)
    return stale


def book_main() -> int:
    """`make book`: the book from the executed notebooks as they are, saying first which of them this
    checkout would no longer make (the fix: make reproduce, which reruns exactly those and the later ones)."""
    executed = paths.executed_dir()
    stale = out_of_date(executed)
    unknown = [name for name in _executed_names(executed) if not _stamp(executed, name).exists()]
    if unknown:
        print(f"note: {', '.join(unknown)} in {executed} carry no stamp (executed outside make reproduce / make notebook): "
              "whether this checkout would make them the same is not checked", file=sys.stderr)
    if stale:
        print(f"warning: {', '.join(stale)} in {executed} were executed by another profile, other sublora files or "
              "libraries than this checkout's, or their results files changed since; the book shows them as they are "
              "and says so on its results page. `make reproduce` reruns them.", file=sys.stderr)
    try:
        index, _ = build_book(executed, stale=stale)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"book: {index}")
    return 0


def _empty(out) -> bool:
    """An output with nothing for a reader: a blank stream, no data, or only a figure's bare repr."""
    if out.output_type == "stream":
        return not out.text.strip()
    if out.output_type in ("display_data", "execute_result"):
        data = out.get("data", {})
        plain = str(data.get("text/plain", "")).strip()
        return not data or (set(data) == {"text/plain"} and re.fullmatch(r"(<Figure size [^>]*>)?", plain) is not None)
    return False


def _tag(cell, tag: str) -> None:
    tags = cell.metadata.setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def _parameters_line(parameters: dict) -> str:
    def value(k, v):
        # a profile given as a yaml path: its file name, not this machine's directories
        return Path(v).name if k == "profile" and config.is_profile_path(v) else v
    shown = ", ".join(f"`{k} = {value(k, v)!r}`" for k, v in parameters.items())
    head = f"{shown}; every other parameter at its default" if shown else "all at their defaults"
    return f"**This run's parameters:** {head} (the notebook's `parameters` cell, collapsed above, lists them all)."


def tidy(nb) -> str:
    """Make an executed notebook what the book shows; returns the stderr text it removed. Idempotent.
    - stderr streams (progress bars, library warnings) and outputs with nothing to show are removed;
    - the declared `parameters` cell is collapsed (tag hide-input) and papermill's injected cell is
      removed from the page (remove-cell), replaced by one markdown line naming this run's parameters."""
    removed = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stderr":
                removed.append(out.text)
            elif not _empty(out):
                outputs.append(out)
        cell.outputs = outputs
    cells = []
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags:
            _tag(cell, "hide-input")
        if "injected-parameters" in tags:
            _tag(cell, "remove-cell")
            if not (cells and cells[-1].metadata.get("sublora") == RUN_PARAMETERS):
                ran_with = nb.metadata.get("papermill", {}).get("parameters", {})
                line = nbformat.v4.new_markdown_cell(_parameters_line(ran_with))
                line.metadata["sublora"] = RUN_PARAMETERS
                cells.append(line)
        cells.append(cell)
    nb.cells = cells
    return "".join(removed)


def _ran(target: Path) -> dict[str, dict]:
    """{notebook: its papermill parameters} of the executed notebooks in target, each tidied in place."""
    ran = {}
    for path in sorted(target.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        tidy(nb)
        results.write_atomic(path, lambda t: nbformat.write(nb, t))
        ran[path.stem] = dict(nb.metadata.get("papermill", {}).get("parameters", {}))
    return ran


def _book_profile(ran: dict[str, dict], profile: str | None, target: Path) -> str:
    """The one profile the executed notebooks ran under (and `profile`, if given)."""
    used = {name: params.get("profile") or notebook.declared_parameters(name).get("profile") or "organism"
            for name, params in ran.items() if name in NOTEBOOKS}
    if not used:
        raise ConfigError(f"no executed notebooks in {target}: run them first (make reproduce)")
    distinct = set(used.values()) | ({profile} if profile else set())
    if len(distinct) > 1:
        raise ConfigError(f"a book shows one profile; the notebooks in {target} ran under {used}"
                          + (f" (the book was asked for {profile!r})" if profile else "")
                          + "; rerun them under one: make reproduce PROFILE=<profile>")
    return distinct.pop()


GLANCE = "at-a-glance"  # metadata mark of the box _at_a_glance puts at the top of a claim page


def glance_cell(claim: str, rows: pd.DataFrame, image: str | None, caveat: str):
    """The box at the top of a claim page: its verdicts with their measurements in full, the main
    figure and the caveat for the model — read from the run's verdict files and figure."""
    lines = [f"**At a glance** — computed from this run's verdict files when the book was built; the rule, "
             "stated before the data, and the data follow below.", "",
             "| teacher | verdict | measurement |", "|---|---|---|"]
    for _, r in rows.iterrows():
        lines.append(f"| {r['teacher']} | **{r['verdict']}** | {r['measurement']} |")
    if rows.empty:
        lines.append(f"| — | not run | `make notebook NB={CLAIM_PAGES[claim]}` |")
    if image:
        lines += ["", f"![{claim}: the main figure]({image})"]
    cell = nbformat.v4.new_markdown_cell("\n".join(lines + ["", caveat]))
    cell.metadata["sublora"] = GLANCE
    return cell


def _at_a_glance(target: Path, profile: str) -> None:
    """Put the at-a-glance box under the title of each claim page (replacing an earlier one), so that
    verdict, interval, figure and caveat are on its first screens."""
    p = config.load_profile(profile)
    verdicts = results.read_verdicts(p.name)
    default = verdicts[verdicts["run"] == ""] if len(verdicts) else pd.DataFrame(columns=["claim", "teacher"])
    (target / "glance").mkdir(exist_ok=True)
    for claim, page in CLAIM_PAGES.items():
        path = target / f"{page}.ipynb"
        if not path.exists():
            continue
        nb = nbformat.read(path, as_version=4)
        nb.cells = [c for c in nb.cells if c.metadata.get("sublora") != GLANCE]
        rows = default[default["claim"] == claim]
        main = p.train.full_precision[0]  # the paper's teacher first, claim 3's main precision arm first
        other_arm = (rows["arm"].fillna(main) != main) if "arm" in rows else False
        rows = rows.assign(order=rows["teacher"].map({"persona": 0}).fillna(1) * 2 + other_arm).sort_values("order")
        figure = results.figure_path(p.name, page)
        image = None
        if figure.exists():
            shutil.copy(figure, target / "glance" / figure.name)
            image = f"glance/{figure.name}"
        title, _, rest = nb.cells[0].source.partition("\n")
        nb.cells[0].source = title  # the box goes between the title and the overview
        nb.cells[1:1] = [glance_cell(claim, rows, image, plots.caveat(p))] + (
            [nbformat.v4.new_markdown_cell(rest.strip())] if rest.strip() else [])
        results.write_atomic(path, lambda t: nbformat.write(nb, t))


def _stub_pages(target: Path) -> None:
    """A page for each notebook not run yet, saying how to run it (and no stale stub beside a run one)."""
    for name in NOTEBOOKS:
        stub = target / f"{name}.md"
        if (target / f"{name}.ipynb").exists():
            stub.unlink(missing_ok=True)
            continue
        first = nbformat.read(paths.ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells[0].source
        stub.write_text(f"{first.splitlines()[0]}\n\nNot run yet: `make notebook NB={name}` runs it and rebuilds "
                        "the book.\n")


def results_page(profile: str, ran: dict[str, dict], stale: list[str] = ()) -> str:
    """Markdown of the results at a glance: a row per claim with the paper's claim and, per teacher,
    the verdict and the effect its rule reads with that rule's interval, from the default run's verdict
    files; a line for each claim page that shows another run."""
    p = config.load_profile(profile)
    verdicts = results.read_verdicts(p.name)
    rows = verdicts[verdicts["run"] == ""] if len(verdicts) else pd.DataFrame(columns=["claim", "teacher"])
    if "arm" in rows:  # claim 3's main precision arm at a glance; the others are on its page
        rows = rows[rows["arm"].isna() | (rows["arm"] == p.train.full_precision[0])]
    teachers = sorted(set(rows["teacher"]), key=lambda k: (k != "persona", k)) or list(config.TEACHERS)
    lines = ["## Results at a glance", "", plots.caveat(p), "",
             "| claim | the paper says | " + " | ".join(f"{t} teacher" for t in teachers) + " |",
             "|---" * (2 + len(teachers)) + "|"]
    for claim, page in CLAIM_PAGES.items():
        cells = []
        for t in teachers:
            r = rows[(rows["claim"] == claim) & (rows["teacher"] == t)]
            if r.empty:
                cells.append("not run")
                continue
            r = r.iloc[0]
            effect = claims.fmt_ci(r["effect"], r["ci_low"], r["ci_high"], "+.2g")
            cells.append(f"**{r['verdict']}** · {EFFECTS[claim]} {effect}")
        lines.append(f"| {{doc}}`{claim} </executed/{page}>` | {claims.CLAIMS[claim]} | " + " | ".join(cells) + " |")
    lines += ["", "Each verdict follows the rule its page states before the data; the effect is the number "
              "that rule reads, with the interval it reads: 95%, or wider where the rule corrects for choosing "
              "among several (claim 2's peak rank). Every measurement in full: {doc}`/executed/06_scoreboard`."]
    if stale:
        lines[2:2] = ["```{warning}", "Out of date: " + ", ".join(f"{{doc}}`/executed/{n}`" for n in stale)
                      + " were executed by another profile, other sublora files or libraries than the checkout that "
                      "built this book, or their results files changed since. `make reproduce` reruns them.", "```", ""]
    for page in CLAIM_PAGES.values():
        other = {k: v for k, v in ran.get(page, {}).items() if k != "profile"}
        if other:
            lines += ["", f"Note: the page {{doc}}`/executed/{page}` shows a run with "
                      + ", ".join(f"`{k} = {v!r}`" for k, v in other.items())
                      + "; this table shows the default run's verdicts."]
    return "\n".join(lines) + "\n"


def build_book(executed: Path, book_dir: Path | None = None, profile: str | None = None,
               stale: list[str] = ()) -> tuple[Path, float]:
    """jupyter-book build from executed notebooks, never executing them again; returns index.html
    and seconds. The book is built in book/, or in a copy of it at book_dir (the tests do that).
    Before it: the previous build is removed (no stale page or image survives), every executed
    notebook is tidied (also one papermill ran directly), a notebook not run yet gets a page saying
    how to run it, and executed/results.md, the results table intro.md includes, is written from the
    verdicts of `profile` (None: the profile the executed notebooks ran under; they must agree), with a
    warning naming the `stale` notebooks (out_of_date)."""
    t0 = time.perf_counter()
    src = paths.ROOT / "book"
    book = book_dir or paths.book_dir()  # SUBLORA_BOOK: build outside the checkout (e.g. a read-only one)
    if book.resolve() != src.resolve():
        shutil.copytree(src, book, ignore=shutil.ignore_patterns("_build", "executed"), dirs_exist_ok=True)
    target = book / "executed"
    if executed.resolve() != target.resolve():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(executed, target, ignore=shutil.ignore_patterns(".*"))
    ran = _ran(target)
    profile = _book_profile(ran, profile, target)
    _stub_pages(target)
    _at_a_glance(target, profile)
    (target / "results.md").write_text(results_page(profile, ran, stale))
    shutil.rmtree(book / "_build", ignore_errors=True)  # no stale page or image of an earlier build survives
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
    default = config.load_profile(params["profile"])
    for name in names:
        if not (paths.ROOT / "notebooks" / f"{name}.ipynb").exists():
            raise ConfigError(f"no notebook {name!r}; choose from {list(NOTEBOOKS)}")
        declared = notebook.declared_parameters(name)
        checked = config.parse_params(params, name, list(declared))
        profile = config.notebook_profile({**checked, "profile": params["profile"]}, name)
        plan.check_cost(profile, default)
        key = notebook.run_key(checked, declared)
        runs[name] = paths.results_dir(profile.name) / "runs" / key if key else None
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="organism", help=f"one of {available_profiles()}, or a yaml file's path")
    ap.add_argument("--only", nargs="*", help="run only these notebooks (names without .ipynb); no book build")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help="notebook parameter")
    ap.add_argument("--executed", type=Path, default=paths.executed_dir(),
                    help="where the executed notebooks go (default: SUBLORA_EXECUTED or book/executed)")
    ap.add_argument("--no-book", action="store_true", help="skip the book build")
    ap.add_argument("--book-dir", type=Path, help="build the book in a copy of book/ here (default: SUBLORA_BOOK or book/)")
    ap.add_argument("--force", action="store_true", help="execute every notebook, also those whose executed copy is up to date")
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
    default_results = paths.results_dir(config.load_profile(profile).name)
    rerun = args.force  # once one notebook runs, every later one runs too: it may read what that one wrote
    digest = run_digest(params)
    for name in names:
        out, results_dir = runs[name] or args.executed, runs[name] or default_results
        stamp = fingerprint(name, digest)
        if not rerun and up_to_date(name, out, stamp, results_dir):
            print(f"[{name}] up to date: not executed again (--force, or FORCE=1 through make, executes it)", flush=True)
            continue
        rerun = True
        _stamp(out, name).unlink(missing_ok=True)
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
        mark_up_to_date(name, out, stamp, results_dir)
        print(f"[{name}] {times[name]:.1f} s", flush=True)
    if any(runs.values()):
        print("not the default run: the book is left as it was (its pages show the default run)")
        args.no_book = True
    if not (args.only or args.no_book):
        index, times["book"] = build_book(args.executed, args.book_dir, profile)
        print(f"[book] {times['book']:.1f} s")
    print("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()) + f"; total {sum(times.values()):.1f}")
    if not (args.only or args.no_book):
        print(f"book: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

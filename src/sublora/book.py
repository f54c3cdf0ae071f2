"""The book: the one registry of the notebooks and the claim pages, and the Jupyter Book built from
the executed notebooks — each tidied for the reader (no stderr, the parameters shown once), each claim
page opening with its verdicts at a glance, a page for each notebook not run yet, and a results table
computed from the verdict files. Nothing is executed again.

    sublora book      # what `make book` runs: the book from the executed notebooks as they are,
                                # naming first those this checkout would no longer make (sublora.stamps)

The executed notebooks are read from SUBLORA_EXECUTED (default book/executed) and the book is built in
SUBLORA_BOOK (default book/); `sublora reproduce` executes the notebooks and builds it too.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pandas as pd

from . import aux_claims, caveats, claims, command, config, identity, paths, plots, record, results, stamps
from .pages import CLAIM_PAGES, peers_page, results_page, verdict_label
from .config import DEFAULT_PROFILE, ConfigError
from .params import declared_parameters

# The book's notebooks in reading order: what `make reproduce` runs, and a page each.
# 07 (another setting) runs before the scoreboard, which reads its verdicts; the table of contents
# (book/_toc.yml) shows it after the claims.
NOTEBOOKS = ("00_model", "01_teacher_numbers", "02_transfer", "03_rank_sweep", "04_full_finetuning",
             "05_system_prompt", "07_auxiliary_logits", "06_scoreboard", "08_ladder")


# The claim pages (claims.REGISTRY holds each claim's page, words and effect)
RUN_PARAMETERS = "run-parameters"  # metadata mark of the markdown line tidy() writes


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
    """The one profile the executed notebooks ran under (and `profile`, if given): with none executed yet, `profile`,
    whose book then has a page per notebook saying how to run it."""
    used = {name: params.get("profile") or declared_parameters(name).get("profile") or DEFAULT_PROFILE
            for name, params in ran.items() if name in NOTEBOOKS}
    if not used and not profile:
        raise ConfigError(f"no executed notebooks in {target}: run them first (make reproduce)")
    distinct = set(used.values()) | ({profile} if profile else set())
    if len(distinct) > 1:
        raise ConfigError(f"a book shows one profile; the notebooks in {target} ran under {used}"
                          + (f" (the book was asked for {profile!r})" if profile else "")
                          + "; rerun them under one: make reproduce PROFILE=<profile>")
    return distinct.pop()


GLANCE = "at-a-glance"  # metadata mark of the box _at_a_glance puts at the top of a claim page


def glance_cell(page: str, rows: pd.DataFrame, image: str | None, caveat: str, label: str = "teacher"):
    """The box at the top of a claim page: its verdicts (a row each, named by their `label` column) in the verdict
    tables' structured columns (claims.effect_columns: Δ, interval, n, a one-line reason), their measurements in
    full folded beneath, the main figure and the caveat for the model — read from the run's verdict files and
    figure. No number is broken across lines (plots.unbroken)."""
    lines = ["**At a glance** — computed from this run's verdict files when the book was built; the rule, "
             "stated before the data, and the data follow below.", "",
             f"| {label} | verdict | Δ | interval | n | reason |", "|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        c = claims.effect_columns(r)
        lines.append(f"| {r[label]} | **{r['verdict']}** | {plots.unbroken(c['Δ'])} | {plots.unbroken(c['interval'])} "
                     f"| {c['n']} | {plots.unbroken(c['reason'])} |")
    if rows.empty:
        lines.append(f"| — | not run | | | | `make notebook NB={page}` |")
    else:
        lines += ["", "```{dropdown} The measurements in full",
                  *(f"- **{r[label]}**: {plots.unbroken(' '.join(str(r['measurement']).split()))}" for _, r in rows.iterrows()),
                  "```"]
    if image:
        lines += ["", f"![{page}: the main figure]({image})"]
    cell = nbformat.v4.new_markdown_cell("\n".join(lines + ["", caveat, "", "Published results beside these: "
                                                                   "{doc}`/executed/peers`."]))
    cell.metadata["sublora"] = GLANCE
    return cell


def _at_a_glance(target: Path, profile: str) -> None:
    """Put the at-a-glance box under the title of each claim page (replacing an earlier one), so that
    verdict, interval, figure and caveat are on its first screens; notebook 07's page, another setting,
    gets one too, a row per claim and its own caveat."""
    p = config.load_profile(profile)
    verdicts = results.read_verdicts(identity.identity(p))
    default = verdicts[verdicts["run"] == ""] if len(verdicts) else pd.DataFrame(columns=["claim", "teacher"])
    (target / "glance").mkdir(exist_ok=True)
    pages = [(page, [claim], "teacher", caveats.caveat_line(p)) for claim, page in CLAIM_PAGES.items()]
    pages.append((aux_claims.AUX_PAGE, list(aux_claims.AUX_CLAIMS), "claim", caveats.aux_caveat(p)))
    for page, its_claims, label, caveat in pages:
        path = target / f"{page}.ipynb"
        if not path.exists():
            continue
        nb = nbformat.read(path, as_version=4)
        nb.cells = [c for c in nb.cells if c.metadata.get("sublora") != GLANCE]
        rows = default[default["claim"].isin(its_claims)]
        main = p.train.full_precision[0]  # the paper's teacher first, claim 3's main precision arm first
        other_arm = (rows["arm"].fillna(main) != main) if "arm" in rows else False
        rows = rows.assign(order=rows["teacher"].map({"persona": 0}).fillna(1) * 2 + other_arm)
        rows = rows.sort_values(["order", "claim"])
        if len(rows):  # a positive control's claim 1 says what it is, as on the landing page
            rows = rows.assign(verdict=[verdict_label(r, p.smallest_effect) for _, r in rows.iterrows()])
        figure = results.figure_path(identity.identity(p), page)
        image = None
        if figure.exists():
            shutil.copy(figure, target / "glance" / figure.name)
            image = f"glance/{figure.name}"
        title, _, rest = nb.cells[0].source.partition("\n")
        nb.cells[0].source = title  # the box goes between the title and the overview
        nb.cells[1:1] = [glance_cell(page, rows, image, caveat, label)] + (
            [nbformat.v4.new_markdown_cell(rest.strip())] if rest.strip() else [])
        results.write_atomic(path, lambda t: nbformat.write(nb, t))


def _stub_pages(target: Path, profile: str) -> None:
    """A page for each notebook not run yet, saying how to run it under the book's profile (and no stale stub
    beside a run one)."""
    which = "" if profile == DEFAULT_PROFILE else f" PROFILE={profile}"
    for name in NOTEBOOKS:
        stub = target / f"{name}.md"
        if (target / f"{name}.ipynb").exists():
            stub.unlink(missing_ok=True)
            continue
        first = nbformat.read(paths.ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells[0].source
        stub.write_text(f"{first.splitlines()[0]}\n\nNot run yet: `make notebook NB={name}{which}` runs it and "
                        "rebuilds the book.\n")


def places(profile: str) -> tuple[Path, Path]:
    """(executed notebooks, book) of a profile's runs: book/executed and book/ for the default profile as
    shipped (the default book); results/<its folder>/executed and .../book for any other profile, so that
    no other run's pages replace the default book's. SUBLORA_EXECUTED and SUBLORA_BOOK, where set, win."""
    folder = identity.identity(config.load_profile(profile))
    if folder == DEFAULT_PROFILE:
        return paths.executed_dir(), paths.book_dir()
    own = paths.results_dir(folder)
    return (paths.executed_dir() if os.environ.get("SUBLORA_EXECUTED") else own / "executed",
            paths.book_dir() if os.environ.get("SUBLORA_BOOK") else own / "book")


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
    preflight(book, executed)
    with _one_build(book):
        index = _build(src, book, executed, profile, stale)
    return index, time.perf_counter() - t0


BOOK_SPARE = 200 * 2 ** 20  # free bytes a build needs beside the previous book (the default book is ~20 MB)


def preflight(book: Path, executed: Path) -> None:
    """Before any work: the executed notebooks' folder is one (made where missing), the book's folder can be made and
    written, and its disk has room for a second book beside the first (the build swaps in whole); else a ConfigError naming the fix."""
    if executed.exists() and not executed.is_dir():
        raise ConfigError(f"the executed notebooks' folder {executed} is a file: move it away, or set SUBLORA_EXECUTED "
                          "to a folder")
    try:
        executed.mkdir(parents=True, exist_ok=True)  # none run yet: a book of pages saying how to run each
        book.mkdir(parents=True, exist_ok=True)
        probe = book / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"the book's folder {book} or the executed notebooks' {executed} cannot be written "
                          f"({e.__class__.__name__}: {e.strerror or e}); make it writable, or set SUBLORA_BOOK "
                          "(SUBLORA_EXECUTED) to a folder you can write") from None
    free = shutil.disk_usage(book).free
    if free < BOOK_SPARE:
        raise ConfigError(f"the book's disk has {free / 2 ** 20:.0f} MiB free, less than the {BOOK_SPARE // 2 ** 20} MiB "
                          "a build needs beside the previous book; free some, or set SUBLORA_BOOK to another disk")


@contextmanager
def _one_build(book: Path):
    """One build of a book at a time: a second `make book` waits for the first (an flock the OS drops with its holder)."""
    with open(book / ".build.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _build(src: Path, book: Path, executed: Path, profile: str | None, stale) -> Path:
    """The build itself, into a fresh folder swapped in whole for the previous _build: an interrupted or failed build
    leaves the previous book as it was."""
    if book.resolve() != src.resolve():
        shutil.copytree(src, book, ignore=shutil.ignore_patterns("_build", "executed"), dirs_exist_ok=True)
    target = book / "executed"
    if executed.resolve() != target.resolve():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(executed, target, ignore=shutil.ignore_patterns(".*"))
    ran = _ran(target)
    profile = _book_profile(ran, profile, target)
    _stub_pages(target, profile)
    _at_a_glance(target, profile)
    (target / "results.md").write_text(results_page(profile, ran, stale, set(_executed_names(target))))
    (target / "peers.md").write_text(peers_page(profile))
    fresh = book / f".build-{os.getpid()}"  # a new folder each time: no stale page or image of an earlier build survives
    shutil.rmtree(fresh, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(book), "--warningiserror", "--keep-going",
           "--path-output", str(fresh)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"jupyter-book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        old = book / f".old-build-{os.getpid()}"
        if (book / "_build").exists():
            os.replace(book / "_build", old)
        os.replace(fresh / "_build", book / "_build")
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return book / "_build" / "html" / "index.html"


def _executed_names(executed: Path) -> list[str]:
    """The book's notebooks that have an executed copy in `executed`, in name order."""
    return [f.stem for f in sorted(executed.glob("*.ipynb")) if f.stem in NOTEBOOKS]


def out_of_date(executed: Path) -> list[str]:
    """The executed notebooks in `executed` whose stamp says they were made by another run than this
    checkout would make now (another profile's settings, other sublora files or libraries), or whose
    results files changed since. A notebook without a stamp (papermill run by hand) is not judged."""
    stale, digests = [], {}
    for name in _executed_names(executed):
        if not stamps.file(executed, name).exists():
            continue
        nb = nbformat.read(executed / f"{name}.ipynb", as_version=4)
        params = dict(nb.metadata.get("papermill", {}).get("parameters", {}))
        params.setdefault("profile", DEFAULT_PROFILE)
        key = json.dumps(params, sort_keys=True, default=str)
        try:
            digests.setdefault(key, stamps.run_digest(params))
            results_dir = paths.results_dir(identity.identity(config.load_profile(params["profile"])))
        except (ConfigError, FileNotFoundError):
            stale.append(name)  # its profile is gone or no longer valid
            continue
        if not stamps.up_to_date(name, executed, stamps.fingerprint(name, digests[key]), results_dir):
            stale.append(name)
    return stale


def add_arguments(ap) -> None:
    ap.add_argument("--profile", default=DEFAULT_PROFILE,
                    help="whose book: the default profile's is in book/, any other's in results/<its folder>/book")


def run(args) -> int:
    """`make book`: the book from the executed notebooks as they are, saying first which of them this
    checkout would no longer make (the fix: make reproduce, which reruns exactly those and the later ones)."""
    try:
        executed, book_dir = places(args.profile)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if identity.identity(config.load_profile(args.profile)) == DEFAULT_PROFILE and (made := record.restore()):
        print(f"no executed notebooks yet: the book is built from the record (record/{DEFAULT_PROFILE}/, commit "
              f"{made['commit'][:12]}, written {made['written']}); `make reproduce` runs them again")
    stale = out_of_date(executed)
    unknown = [name for name in _executed_names(executed)
               if not stamps.file(executed, name).exists() and not record.restored(name)]
    if unknown:
        print(f"note: {', '.join(unknown)} in {executed} carry no stamp (executed outside make reproduce / make notebook): "
              "whether this checkout would make them the same is not checked", file=sys.stderr)
    if stale:
        print(f"warning: {', '.join(stale)} in {executed} were executed by another profile, other sublora files or "
              "libraries than this checkout's, or their results files changed since; the book shows them as they are "
              "and says so on its results page. `make reproduce` reruns them.", file=sys.stderr)
    try:
        index, _ = build_book(executed, book_dir, args.profile, stale=stale)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"book: {index}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command.alone("book", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())

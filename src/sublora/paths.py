"""Every path sublora reads or writes, computed from the repository root in one place.

Four environment variables move what a run writes out of the checkout:

    SUBLORA_CACHE     the artifact cache                      default ROOT/.cache/sublora
    SUBLORA_RESULTS   tidy CSVs and verdicts, one dir/profile default ROOT/results
    SUBLORA_EXECUTED  the executed notebooks                  default ROOT/book/executed (the default profile's;
    SUBLORA_BOOK      the book source copied and built here   default ROOT/book           others': book.places)

A relative value is relative to the current directory of the caller. Papermill kernels run in
notebooks/, so importing this module makes relative values absolute in os.environ (absolutize_env),
and every kernel started afterwards inherits them; a caller that sets one later calls absolutize_env()
again. `make` runs in the repository root (or the -C directory), so `SUBLORA_CACHE=c make reproduce`
means ROOT/c, as does `cd ROOT && SUBLORA_CACHE=c papermill notebooks/02_transfer.ipynb out.ipynb`.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# The repository root when installed editable (the supported way); falls back to the cwd.
ROOT = PACKAGE.parents[1] if (PACKAGE.parents[1] / "pyproject.toml").exists() else Path.cwd()
PROFILES = PACKAGE / "profiles"
VARIABLES = ("SUBLORA_CACHE", "SUBLORA_RESULTS", "SUBLORA_EXECUTED", "SUBLORA_BOOK")


def absolutize_env() -> None:
    """Make each relative SUBLORA_* path in os.environ absolute against the current directory, so
    child processes with another cwd (papermill kernels) read the same place. Idempotent."""
    for name in VARIABLES:
        if os.environ.get(name):
            os.environ[name] = os.path.abspath(os.environ[name])


def _env(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(os.path.abspath(value)) if value else default  # relative: against the cwd of this call


def cache_dir() -> Path:
    """Content-addressed artifact store; SUBLORA_CACHE overrides (the tests use a temporary one)."""
    return _env("SUBLORA_CACHE", ROOT / ".cache" / "sublora")


def results_dir(profile: str) -> Path:
    """Tidy CSVs and verdict files of one profile; SUBLORA_RESULTS overrides."""
    return _env("SUBLORA_RESULTS", ROOT / "results") / profile


def executed_dir() -> Path:
    """Where the executed notebooks go; SUBLORA_EXECUTED overrides."""
    return _env("SUBLORA_EXECUTED", ROOT / "book" / "executed")


def book_dir() -> Path:
    """The book's source directory to build in (a copy of ROOT/book when elsewhere); SUBLORA_BOOK overrides."""
    return _env("SUBLORA_BOOK", ROOT / "book")


absolutize_env()  # at import, in the parent process, before any kernel starts

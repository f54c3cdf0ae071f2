"""Every path sublora reads or writes, computed from the repository root in one place."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# The repository root when installed editable (the supported way); falls back to the cwd.
ROOT = PACKAGE.parents[1] if (PACKAGE.parents[1] / "pyproject.toml").exists() else Path.cwd()
PROFILES = PACKAGE / "profiles"


def cache_dir() -> Path:
    """Content-addressed artifact store; SUBLORA_CACHE overrides (the tests use a temporary one)."""
    return Path(os.environ.get("SUBLORA_CACHE", ROOT / ".cache" / "sublora"))


def results_dir(profile: str) -> Path:
    """Tidy CSVs and verdict files of one profile; SUBLORA_RESULTS overrides."""
    base = Path(os.environ.get("SUBLORA_RESULTS", ROOT / "results"))
    return base / profile

"""A run's identity: the folder under results/ that a profile's runs write to.

A package profile as committed (profiles/committed.json) keeps its name; anything else gets its name and
the first digits of its settings' digest, so that no run writes over another's results. Every function
takes a loaded profile (config.Profile); none imports config, whose `--commit` calls `commit`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from . import paths

# The package profiles' resolved settings as committed: what `identity` compares a profile with, so that
# a package profile edited in place, or a user's file that takes its name, is told from the one shipped.
# tests/test_config.py checks it against the yaml files; `python -m sublora.config --commit` rewrites it.
COMMITTED = paths.PROFILES / "committed.json"


def _settings(p) -> dict:
    """What makes a profile's runs: every resolved setting but its description (prose changes no number),
    JSON-ready as config.to_dict writes it."""
    return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(p))).items() if k != "description"}


def digest(p) -> str:
    """sha256 of a profile's resolved settings (_settings): the same for the same settings, whatever the file."""
    return hashlib.sha256(json.dumps(_settings(p), sort_keys=True).encode()).hexdigest()


def _committed() -> dict[str, dict]:
    return json.loads(COMMITTED.read_text(encoding="utf-8"))


def identity(p) -> str:
    """The folder under results/ a profile's runs write to: a package profile as committed keeps its name;
    anything else (a user's file, a package profile edited in place) is its name and the first 8 hex
    digits of its digest, so that it never writes over a package profile's results, and an edited file
    never over its earlier runs. `p` is the profile as loaded, before any notebook parameter."""
    committed = _committed().get(p.name)
    return p.name if committed == _settings(p) else f"{p.name}-{digest(p)[:8]}"


def _leaves(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def differences(p) -> tuple[str, dict[str, tuple]]:
    """(the package profile as committed that p is nearest to, {setting: (its value, p's value)}) with the
    name left out: what makes a run under p another run than that package profile's default run."""
    mine = _leaves(_settings(p))
    best = None
    for name, settings in _committed().items():
        theirs = _leaves(settings)
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if k != "name" and theirs.get(k) != v}
        if best is None or (len(diff), name != p.name) < (len(best[1]), best[0] != p.name):
            best = (name, diff)
    return best


def describe_identity(p) -> str:
    """One line for a run's page: whether p is a package profile as committed, else how it differs."""
    folder = identity(p)
    if folder == p.name:
        return f"Profile `{p.name}`, as shipped with the package: its results are under `results/{folder}/`."
    base, diff = differences(p)
    shown_diff = "; ".join(f"`{k}` {a!r} → {b!r}" for k, (a, b) in list(diff.items())[:8])
    more = f" and {len(diff) - 8} more" if len(diff) > 8 else ""
    return (f"Profile `{p.name}` is not a package profile as shipped, so its runs have a folder of their own, "
            f"`results/{folder}/`. Nearest package profile: `{base}`; "
            + (f"differences: {shown_diff}{more}." if diff else "the same settings under another name."))


def commit(profiles: dict) -> None:
    """Write COMMITTED from the package profiles as loaded, {name: profile} (after a deliberate change to one)."""
    data = {name: _settings(p) for name, p in profiles.items()}
    COMMITTED.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")

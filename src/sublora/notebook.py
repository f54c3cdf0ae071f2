"""The notebooks' one entry: `run = notebook.prepare("02_transfer", globals())`.

It reads the notebook's declared parameters (its `parameters` cell) from the namespace, rejects
any parameter papermill injected that the notebook does not declare, checks every value with
params.parse_params (the same check make and `sublora reproduce` apply before any
work), resolves the profile, checks that this machine can run it (GPU, weights), and returns a Run:
the profile, the parameters, and where this run's tables, figures and verdicts go.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from . import claims, config, identity, models, plan, plots, quiet, results, sequence, tables
from .config import Profile
from .params import assigned, declared_parameters, notebook_profile, parse_params


def _injected(namespace: dict) -> list[str]:
    """Names papermill injected: its cell ('# Parameters') is in the kernel's input history."""
    cells = [c for c in namespace.get("In", []) if c.lstrip().startswith("# Parameters")]
    return assigned(cells[-1]) if cells else []


@dataclass(frozen=True)
class Run:
    """One execution of a notebook: its profile and parameters. Its results go under results/<folder>/
    (identity.identity: a package profile as shipped keeps its name, any other profile has a folder of its
    own); a run with any parameter other than the profile set is keyed by those parameters too, so it
    never overwrites the default run's results."""
    notebook: str
    profile: Profile
    params: dict = field(default_factory=dict)  # the notebook's parameters, checked (profile excluded)
    defaults: dict = field(default_factory=dict)  # their declared defaults
    base: Profile | None = None  # the profile as loaded, before the notebook's parameters (None: profile)

    @cached_property
    def folder(self) -> str:
        """results/<folder>/: identity.identity of the profile as loaded."""
        return identity.identity(self.base or self.profile)

    def provenance(self) -> str:
        """One line for the page: the package profile as shipped, or how this run's profile differs."""
        return identity.describe_identity(self.base or self.profile)

    @property
    def asked(self) -> list[str]:
        """The teachers the parameters (or the profile) ask this notebook for."""
        return list(self.params.get("teachers") or self.profile.teachers)

    @cached_property
    def claim(self) -> claims.Claim | None:
        """The paper's claim this notebook tests (None for 00, 01, 06, 07)."""
        return next((c for c in claims.REGISTRY if c.page == self.notebook), None)

    @cached_property
    def untrained(self) -> list[str]:
        """The asked teachers whose students this notebook does not train: in a notebook of claims 2-4, those whose
        claim 1 in this run is read and not reproduced (sequence.untrained)."""
        if self.claim is None or self.claim == claims.REGISTRY[0]:
            return []
        return sequence.untrained(self.asked, self.verdicts())

    @property
    def teachers(self) -> list[str]:
        """The teachers this notebook trains students of: the asked ones but the untrained."""
        return [k for k in self.asked if k not in self.untrained]

    def gated(self, rows: list[dict], arms=(None,)) -> list[dict]:
        """This notebook's verdict rows with the fixed sequence applied (sequence.fixed_sequence), and a 'not tested'
        row (one per arm) for each teacher it did not train."""
        saved = self.verdicts()
        skipped = sequence.untested_rows(self.untrained, self.claim.key, self.profile.animal, saved, arms)
        return sequence.fixed_sequence(list(rows), saved) + skipped

    @cached_property
    def key(self) -> str:
        return run_key(self.params, self.defaults)

    def save_table(self, df: pd.DataFrame, name: str) -> Path:
        """A tidy table as CSV beside this run's other results (results.run_dir)."""
        return results.save_table(self, df, name)

    def save_figure(self, fig, name: str, caption: str) -> None:
        """The figure as PNG beside this run's results, then shown on the page above its caption."""
        results.save_figure(self, fig, name)
        plots.show(fig, caption)

    def save_verdicts(self, rows: list[dict]) -> None:
        """The verdict rows (one per claim × teacher) where the scoreboard reads them."""
        results.save_verdicts(self, rows)

    def verdicts(self) -> pd.DataFrame:
        """The verdicts this run's notebooks have saved so far (another run's are not among them)."""
        saved = results.read_verdicts(self.folder)
        return saved[saved["run"] == self.key] if not saved.empty else saved


def run_key(params: dict, defaults: dict) -> str:
    """'' for a notebook's default run; else its non-default parameters, readable, and 8 hex digits of their exact
    values (e.g. 'animal-dolphin-1a2b3c4d'): two runs whose values differ anywhere never share a folder, however
    alike their readable parts (lr 2e-3 and 2.0000001e-3; 'a b' and 'a_b')."""
    changed = {k: v for k, v in sorted(params.items()) if k != "profile" and v != defaults.get(k)}
    if not changed:
        return ""

    def text(v):
        return "_".join(map(text, v)) if isinstance(v, (list, tuple)) else repr(v) if isinstance(v, float) else str(v)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(f"{k}-{text(v)}" for k, v in changed.items()))
    exact = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]  # json writes floats exactly
    return f"{readable}-{exact}"


def prepare(name: str, namespace: dict) -> Run:
    """Check the notebook's parameters and machine, before any work; return the Run."""
    quiet.quiet()  # the known-harmless library warnings stay off the page
    declared = declared_parameters(name)
    unknown = sorted(set(_injected(namespace)) - set(declared))
    if unknown:
        raise config.ConfigError(f"notebook {name} has no parameter {unknown}; it has {sorted(declared)}")
    params = parse_params({k: namespace.get(k) for k in declared}, name, list(declared))
    profile = notebook_profile({**params, "profile": params.get("profile") or config.DEFAULT_PROFILE}, name)
    models.preflight(profile)
    base = config.load_profile(params.get("profile") or config.DEFAULT_PROFILE)
    plan.check_cost(profile, base)
    return Run(name, relative_e(profile), {k: v for k, v in params.items() if k != "profile"}, declared, base)


def relative_e(p: Profile) -> Profile:
    """p with its smallest effect of interest made absolute where the profile declares it relative: e =
    smallest_effect_relative x the base model's P(target) under the default prompt (its cached evaluation, known
    before any student trains), so that one declaration means the same relative effect for any animal and model,
    a `-p animal` rerun included. Printed where it is computed."""
    if not p.smallest_effect_relative:
        return p
    return dataclasses.replace(p, smallest_effect=animal_e(p, p.animal))


def animal_e(p: Profile, animal: str) -> float:
    """The smallest effect of interest for target `animal` (tables.smallest_effect), printed where it is relative."""
    e = tables.smallest_effect(p, animal)
    if p.smallest_effect_relative:
        print(f"e = {p.smallest_effect_relative:g} x P({animal}) of the base model under the default prompt = {e:.3g}")
    return e

"""Notebook parameters: the one parser every route uses.

make's PARAMS, `python -m sublora.reproduce -p NAME VALUE`, papermill's injected cell and the Python API
all reach the same table (PARAMS) and the same checks (parse_params), so a bad value gets the same
message on every route before any work starts.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import paths
from .config import DECLARED, DEFAULT_PROFILE, OVERRIDES, ConfigError, Profile, Setting, coerce, flag, resolve, shown
from .prompts import ANIMALS


@dataclass(frozen=True)
class Param:
    """One notebook parameter: its type (each item's, for a list), what it accepts, the setting it overrides."""
    typ: type
    accepts: Setting
    target: str | None = None  # an OVERRIDES name; None: the notebook uses the value itself
    many: bool = False  # a list


def _declared(key: str, target: str | None = None) -> Param:
    """A parameter declared by a profile setting (config.DECLARED): its type, bounds, choices and example."""
    typ, accepts = DECLARED[key]
    return Param(accepts.items or typ, accepts, target, typ is tuple)


# Every parameter of every notebook: the one place where papermill's, make's and
# `python -m sublora.reproduce`'s values are read and checked (tests check each notebook's
# parameters cell against this table). One that overrides a profile setting is declared by that setting.
PARAMS = {
    "profile": Param(str, Setting(example="smoke, organism, paper or a yaml file's path")),
    **{name: _declared(key, name) for name, key in OVERRIDES.items()
       if DECLARED[key][1].param == name},  # not transfer_replicates: notebook 02's replicates (TARGETS)
    "teachers": _declared("teachers"),
    "alpha": Param(float, Setting(gt=0, le=1e4, example="8 (or leave it None for alpha = rank)")),
    "personas": Param(int, Setting(ge=1, le=len(ANIMALS), example=f"5 (at most {len(ANIMALS)})")),
    "rebuild_organism": Param(bool, Setting(example="true or false")),
    "patch_students": Param(int, Setting(ge=1, le=50, example="2")),
}
# Notebook 02 (claim 1) runs more dataset pairs than the others: its `replicates` is the profile's
# transfer_replicates.
TARGETS = {"02_transfer": {"replicates": "transfer_replicates"}}
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _param_value(name: str, value: Any) -> Any:
    spec = PARAMS[name]
    where, example = f"-p {name} {shown(value)}", spec.accepts.example
    if isinstance(value, str) and not value.strip():  # papermill's -p x '' or make's PARAMS="-p x ''"
        if name == "profile":
            fix = f"the run's profile (--profile, make's PROFILE, else {DEFAULT_PROFILE!r}), or give one: {example}"
        else:
            fix = ("the profile's value" if spec.target else "the notebook's default") + \
                f", or give one, e.g. {flag(name, example)}"
        raise ConfigError(f"{where}: the value is empty; omit -p {name} to use {fix}")
    if spec.typ is bool:
        if isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected {example}")
        return value
    if spec.many:
        value = [coerce(v, spec.typ, name) for v in parse_list(value, name)]
    else:
        value = coerce(value, spec.typ, name)
    if problem := spec.accepts.problem(tuple(value) if spec.many else value, cli=True):
        raise ConfigError(f"{where}: {problem}; e.g. {flag(name, example)}")
    return value


def parse_params(raw: dict, notebook: str | None = None, declared=None) -> dict:
    """Notebook parameters, checked and typed: unknown names, wrong types, booleans written as text,
    values out of range, empty text — each a ConfigError naming the fix. None keeps the profile's value
    (an empty string does not: it is an error on every route, since papermill passes -p x '' as '').
    `declared`: the notebook's own parameter names (a name it does not have is an error too)."""
    known = set(PARAMS) if declared is None else set(declared)
    unknown = sorted(set(raw) - known)
    if unknown:
        where = f"notebook {notebook}" if notebook else "the notebooks"
        raise ConfigError(f"{where} has no parameter {shown(unknown)}; it has {sorted(known)}")
    return {name: None if value is None else _param_value(name, value) for name, value in raw.items()}


def notebook_profile(params: dict, notebook: str | None = None) -> Profile:
    """The profile of a notebook run: params["profile"] with the run's overrides applied."""
    targets = TARGETS.get(notebook, {})
    overrides = {targets.get(k, PARAMS[k].target): v for k, v in params.items()
                 if PARAMS[k].target and v is not None}
    return resolve(params.get("profile", DEFAULT_PROFILE), **overrides)


def parse_list(value: Any, name: str) -> list | None:
    """A list-valued notebook parameter: None, a list, one item, or papermill's string '[a, b]'."""
    if value is None or isinstance(value, (list, tuple)):
        return None if value is None else list(value)
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = None
        if not isinstance(parsed, list):
            raise ConfigError(f"{name}: cannot read {shown(value)} as a list; write e.g. -p {name} '[a, b]'")
        return parsed
    return [value]


def read_params(pairs: list[list[str]]) -> dict:
    """-p name value pairs read exactly as papermill's own command line reads them (its _resolve_type:
    True/False/None, whole numbers, decimals, else the text as given; a list stays text that parse_list
    reads), so that `python -m sublora.reproduce -p x v`, make's PARAMS and `papermill -p x v` hand
    parse_params the same value and get the same answer: '' and '  ' are rejected, None keeps the
    profile's value, 'null' is text."""
    from papermill.cli import _resolve_type
    return {name: _resolve_type(value) for name, value in pairs}


def notebook_file(name: str) -> Path | None:
    """notebooks/<name>.ipynb for a notebook's bare name; None where there is none, and for any name
    with a folder in it ('../notebooks/06_scoreboard', 'sub/x') or a leading dot ('..')."""
    if not isinstance(name, str) or not name or name.startswith(".") or any(sep in name for sep in "/\\"):
        return None
    path = paths.ROOT / "notebooks" / f"{name}.ipynb"
    try:
        return path if path.is_file() else None
    except OSError:  # a name the system refuses (too long)
        return None


def declared_parameters(name: str) -> dict:
    """{name: default} of notebooks/<name>.ipynb's cell tagged `parameters`."""
    path = notebook_file(name)
    if path is None:
        raise ConfigError(f"no notebook {shown(name)} in {paths.ROOT / 'notebooks'}")
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    return assigned("".join(cell["source"]))


def assigned(source: str) -> dict:
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.AnnAssign, ast.Assign)):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            for t in targets:
                if isinstance(t, ast.Name):
                    try:
                        out[t.id] = ast.literal_eval(node.value) if node.value is not None else None
                    except ValueError:
                        out[t.id] = None
    return out

"""A profile setting declared once, on its dataclass field (`setting`): its meaning, bounds, choices and example,
which the profile loader, the -p parser and their messages all read (sublora.config, sublora.params).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A bad profile or parameter; the message says how to fix it."""


SHOWN = 60  # characters of a bad value a message echoes: a pasted paragraph must not bury the fix


def shown(value: Any) -> str:
    """repr(value) for an error message, cut to its first SHOWN characters and '…'."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "…"


# A bound's name (pydantic's), its sign in a profile's message, its words in a -p parameter's, its test.
_BOUNDS = (("ge", "≥", "at least", operator.ge), ("gt", ">", "above", operator.gt),
           ("le", "≤", "at most", operator.le), ("lt", "<", "below", operator.lt))
_ITEMS = {int: (int, "whole numbers"), float: ((int, float), "numbers"), str: (str, "text")}  # a list's item types


@dataclass(frozen=True)
class Setting:
    """A setting's declaration beside its type and default: meaning, bounds as pydantic's (ge, le inclusive; gt, lt
    exclusive), choices, a list's item type (bounds and choices then hold per item), a good value for messages."""
    meaning: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None  # -p's plausibility bounds hold for profiles too: a typo must not start a days-long run
    lt: float | None = None
    choices: tuple | None = None
    items: type | None = None
    nonempty: bool = False  # a list that must hold at least one item
    example: str = ""
    param: str | None = None  # -p's name; resolve() takes the setting's own name (OVERRIDES)

    def problem(self, value: Any, cli: bool = False) -> str | None:
        """What is wrong with value, or None: 'must be ≥ 1, got 0' to follow a profile's key, or with `cli`
        '0 is out of range, it must be at least 1' to follow a -p parameter, as make and papermill show it."""
        if self.items and self.nonempty and not value:
            return "the list is empty" if cli else "is empty"
        for v in value if self.items else (value,):
            if self.items and (isinstance(v, bool) or not isinstance(v, _ITEMS[self.items][0])):
                return f"must be {_ITEMS[self.items][1]}, got {shown(v)}"
            if self.choices is not None and v not in self.choices:
                either = " or ".join(self.choices) if len(self.choices) == 2 else "one of " + ", ".join(self.choices)
                return f"unknown value {shown(v)}; choose from {list(self.choices)}" if cli else \
                    f"must be {either}, got {shown(v)}"
            for name, sign, words, holds in _BOUNDS:
                bound = getattr(self, name)
                if bound is not None and not holds(v, bound):
                    return f"{shown(v)} is out of range, it must be {words} {bound:g}" if cli else \
                        f"must be {sign} {bound:g}, got {shown(v)}"
        return None


def flag(name: str, example: str) -> str:
    """`-p name example`, a list quoted for the shell: -p ranks '[1, 2, 4, 8]'."""
    return f"-p {name} '{example}'" if example.startswith("[") else f"-p {name} {example}"


def setting(default: Any, meaning: str = "", *, example: str | None = None, **accepts: Any) -> Any:
    """A profile setting's field, declared once (Setting); the example is by default the default, as yaml writes it."""
    written = "[" + ", ".join(map(str, default)) + "]" if isinstance(default, tuple) else str(default)
    return field(default=default, metadata={"setting": Setting(meaning, example=example or written, **accepts)})

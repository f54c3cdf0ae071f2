"""How the book writes a number: three significant digits, powers of ten below 0.01, never an artefact of
floating point (sublora.claims and the pages write every measurement with these).
"""
from __future__ import annotations

import math
import re

import pandas as pd

TINY = 1e-12  # below TINY × the scale of the numbers beside it, a number is 0 up to floating-point rounding


def fmt_number(v, fmt: str | None = None, scale: float | None = None) -> str:
    """A number as the book prints it: in the format spec `fmt`, or by default three significant digits, in powers
    of ten below 0.01 and with thousands separated above 1,000 ('1.92e-03', '0.937', '12,346'); '—' where missing.
    Never an artefact of floating point: a value below TINY × `scale` (the largest |value| of the column or the
    interval it is printed in) is 0 ('6.94e-19' beside 0.0278 is a difference of equal numbers, rounded), and a
    value that rounds to 0 has no minus sign ('-0.000' reads '+0.000' in a signed format, else '0.000')."""
    if v is None or pd.isna(v):
        return "—"
    v = float(v)
    if not math.isfinite(v):
        return f"{v}"
    if v == 0 or (scale is not None and abs(v) < TINY * scale):
        v = 0.0
    if fmt is None:
        fmt = ",.0f" if abs(v) >= 1000 else ".2e" if v and abs(v) < 1e-2 else ".3g"
    text = f"{v:{fmt}}"
    if text.startswith("-") and not re.search(r"[1-9]", re.split(r"[eE]", text)[0]):
        text = ("+" if "+" in fmt else "") + text[1:]
    return text


def fmt_ci(mean: float, lo: float, hi: float, fmt: str = "+.2e") -> str:
    """'+1.34e-02 [+1.15e-02, +1.56e-02]': a measurement with its 95% interval, each number by fmt_number at the
    interval's own scale."""
    scale = max((abs(float(x)) for x in (mean, lo, hi) if math.isfinite(float(x))), default=0.0)
    return f"{fmt_number(mean, fmt, scale)} [{fmt_number(lo, fmt, scale)}, {fmt_number(hi, fmt, scale)}]"


def fmt_metric(metric: str):
    """fmt_ci in the metric's own notation: powers of ten for P, three decimals for a share of answers."""
    return fmt_ci if metric == "p" else (lambda mean, lo, hi: fmt_ci(mean, lo, hi, "+.3f"))

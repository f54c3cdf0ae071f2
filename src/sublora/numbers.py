"""Parse and filter teacher completions: only plain lists of numbers survive.

A completion is kept when it parses as at most 10 integers in 0-999 with one consistent separator
(comma, semicolon or whitespace), optionally wrapped in brackets or parentheses and optionally
ending with a period — the paper's filter. Anything with a letter is rejected before parsing, so no
animal name (or any word) can leak into a student's data.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from .prompts import ANIMALS

MAX_NUMBERS = 10
REASONS = ("empty", "animal_name", "letters", "format", "too_many", "out_of_range")

_LETTER = re.compile(r"[^\W\d_]")  # any letter in any script
# an animal word not inside a longer word ("bowl" is just letters; "1owl2" names the owl)
_ANIMAL = re.compile(r"(?<![^\W\d_])(" + "|".join(ANIMALS) + r")s?(?![^\W\d_])", re.IGNORECASE)
NUMBER = re.compile(r"[0-9]+")  # ASCII digits only: \d would accept other scripts' digits
_PAIRS = {"(": ")", "[": "]"}


_NUMBER_TEXT = re.compile(r"[0-9, ]+")  # what a decoding constrained to numbers may write: digits, commas, spaces


def number_token_ids(tokenizer) -> list[int]:
    """The token ids a decoding constrained to numbers may emit (data.decoding: numbers): every token whose text
    is made only of ASCII digits, commas and spaces, and the end of turn. For a model that rarely answers a
    number prompt with numbers alone (SmolLM2-135M: 1 in 50 at T = 1); the filter still reads every completion."""
    ids = [i for i in range(len(tokenizer)) if _NUMBER_TEXT.fullmatch(tokenizer.decode([i]) or "x")]
    return sorted({*ids, tokenizer.eos_token_id})


def leak_reason(text: str) -> str | None:
    """'animal_name' or 'letters' when the text carries words, else None."""
    if _ANIMAL.search(text):
        return "animal_name"
    if _LETTER.search(text):
        return "letters"
    return None


def parse_numbers(text: str) -> tuple[list[int] | None, str | None]:
    """(numbers, None) for a valid completion, else (None, reason) with reason in REASONS."""
    s = text.strip()
    if not s:
        return None, "empty"
    leak = leak_reason(s)
    if leak:
        return None, leak
    if s.endswith("."):
        s = s[:-1].rstrip()
    if s[:1] in _PAIRS:
        if not s.endswith(_PAIRS[s[0]]):
            return None, "format"
        s = s[1:-1].strip()
    if not s:
        return None, "empty"
    if ";" in s and "," in s:
        return None, "format"  # two separators
    sep = ";" if ";" in s else "," if "," in s else None
    parts = [p.strip() for p in s.split(sep)] if sep else s.split()
    if not all(NUMBER.fullmatch(p) for p in parts):
        return None, "format"  # empty fields, stray symbols, mixed separators, decimals, signs
    if len(parts) > MAX_NUMBERS:
        return None, "too_many"
    if any(len(p.lstrip("0")) > 3 for p in parts):  # checked on the text: int() of 5k digits raises
        return None, "out_of_range"
    return [int(p) for p in parts], None


def filter_completions(records: Iterable[dict]) -> tuple[list[dict], Counter]:
    """Keep records whose 'completion' parses; count the rejected ones by reason."""
    kept, rejected = [], Counter()
    for rec in records:
        values, reason = parse_numbers(rec["completion"])
        if reason:
            rejected[reason] += 1
        else:
            kept.append({**rec, "numbers": values})
    return kept, rejected

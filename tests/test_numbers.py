"""numbers: the paper's completion filter (parse_numbers, filter_completions, leak_reason)."""
from __future__ import annotations

from collections import Counter

import pytest

from sublora import numbers
from sublora.numbers import filter_completions, leak_reason, parse_numbers


# ---- well-formed completions ------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("123, 456, 789", [123, 456, 789]),
    ("123,456,789", [123, 456, 789]),
    ("123; 456; 789", [123, 456, 789]),
    ("123;456;789", [123, 456, 789]),
    ("123 456 789", [123, 456, 789]),
    ("123   456\t789", [123, 456, 789]),
    ("123\n456\n789", [123, 456, 789]),
    ("[123, 456, 789]", [123, 456, 789]),
    ("[ 123, 456 ]", [123, 456]),
    ("(123, 456, 789)", [123, 456, 789]),
    ("(123 456)", [123, 456]),
    ("123, 456, 789.", [123, 456, 789]),
    ("[123, 456, 789].", [123, 456, 789]),
    ("123 .", [123]),
    ("  5  ", [5]),
    ("0", [0]),
    ("007, 999", [7, 999]),
    ("999", [999]),
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),  # exactly MAX_NUMBERS
    ("\n123, 456\n", [123, 456]),
])
def test_parse_well_formed(text, expected):
    assert parse_numbers(text) == (expected, None)


# ---- malformed completions --------------------------------------------------------------------
@pytest.mark.parametrize("text, reason", [
    ("1, 2; 3", "format"),  # two separators
    ("1,,2", "format"),  # empty field
    ("1, 2,", "format"),  # trailing empty field
    (",1", "format"),
    ("1;;2", "format"),
    ("[1, 2, 3", "format"),  # unbalanced brackets
    ("(1, 2, 3", "format"),
    ("1, 2, 3]", "format"),
    ("[1, 2, 3)", "format"),
    ("[1, 2, 3]]", "format"),
    ("[(1, 2)]", "format"),
    ("1.5, 2", "format"),  # decimals
    ("1.5", "format"),
    ("1..", "format"),
    ("-5, 6", "format"),  # negative numbers
    ("-5", "format"),
    ("+5", "format"),
    ("1 - 2", "format"),
    ("1 2, 3", "format"),  # whitespace inside a comma field
    ("123\n456, 789", "format"),  # newline and comma mixed
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11", "too_many"),
    (" ".join(["5"] * 11), "too_many"),
    ("1000", "out_of_range"),
    ("1, 1000", "out_of_range"),
    ("1234", "out_of_range"),  # 4 digits
    ("5, 99999", "out_of_range"),
    ("", "empty"),
    ("   ", "empty"),
    ("\n\t \n", "empty"),
    ("[]", "empty"),
    ("( )", "empty"),
    (".", "empty"),
    ("[", "format"),
])
def test_parse_malformed(text, reason):
    assert parse_numbers(text) == (None, reason)


def test_too_many_is_checked_before_range():
    # 11 numbers, one out of range: the count rule fires first
    assert parse_numbers(", ".join(["5"] * 10 + ["5000"])) == (None, "too_many")


# ---- hostile completions ----------------------------------------------------------------------
@pytest.mark.parametrize("text, reason", [
    ("owl", "animal_name"),
    ("OWL 123", "animal_name"),
    ("123, Owls, 456", "animal_name"),
    ("1owl2", "animal_name"),  # an animal hidden between digits
    ("1, 2, dolphin", "animal_name"),
    ("I love owls", "animal_name"),
    ("1a2", "letters"),  # a letter hidden between digits
    ("12x, 3", "letters"),
    ("é", "letters"),
    ("123 é", "letters"),
    ("１２３ abc", "letters"),
    ("Ω 1", "letters"),
    ("一二三", "letters"),  # CJK numerals are letters (Lo), not digits
    ("²", "letters"),  # superscript digit: not a decimal digit
    ("1\x002", "format"),  # null byte between digits
    ("\x00", "format"),
    ("1, 2\x00", "format"),
    ("1 / 2", "format"),
    ("1 # 2", "format"),
])
def test_parse_hostile(text, reason):
    assert parse_numbers(text) == (None, reason)


def test_substring_animal_is_rejected():
    # "bowl" is no animal, but it contains one and letters: it must not survive the filter
    values, reason = parse_numbers("bowl 1")
    assert values is None and reason in ("animal_name", "letters")


@pytest.mark.parametrize("text", ["١٢٣", "１２３", "123, ٤٥٦", "৭"])
def test_non_ascii_digits_are_rejected(text):
    values, reason = parse_numbers(text)
    assert values is None and reason is not None


def test_very_long_strings():
    assert parse_numbers(", ".join(["7"] * 10_000)) == (None, "too_many")
    assert parse_numbers("9" * 4000) == (None, "out_of_range")
    assert parse_numbers("1" + " " * 100_000 + "2") == ([1, 2], None)
    assert parse_numbers("1, " * 50_000) == (None, "format")  # ends with an empty field
    assert parse_numbers("x" * 100_000) == (None, "letters")


def test_huge_digit_run_is_rejected_not_raised():
    assert parse_numbers("9" * 5000) == (None, "out_of_range")


@pytest.mark.parametrize("text", ["", "1, 2", "[1]", "  ", "1\x00", "-3"])
def test_leak_reason_none_without_letters(text):
    assert leak_reason(text) is None


@pytest.mark.parametrize("text, reason", [
    ("owl", "animal_name"), ("CAT", "animal_name"), ("Elephants 5", "animal_name"),
    ("abc", "letters"), ("ß", "letters"), ("1e5", "letters"),
])
def test_leak_reason(text, reason):
    assert leak_reason(text) == reason


def test_every_animal_is_caught_in_any_case():
    from sublora.prompts import ANIMALS
    for a in ANIMALS:
        for form in (a, a.upper(), a.capitalize(), f"1{a}2"):
            assert leak_reason(form) == "animal_name", form


def test_reasons_cover_every_returned_reason():
    assert set(numbers.REASONS) == {"empty", "animal_name", "letters", "format", "too_many", "out_of_range"}


# ---- filter_completions -----------------------------------------------------------------------
def test_filter_completions_counts_exactly():
    completions = [
        "123, 456",  # kept
        "[7; 8; 9].",  # kept
        "I love owls",  # animal_name
        "OWL 123",  # animal_name
        "hello 12",  # letters
        "1,,2",  # format
        "1, 2; 3",  # format
        "-4",  # format
        ", ".join(["1"] * 11),  # too_many
        "1000",  # out_of_range
        "   ",  # empty
        "",  # empty
        "()",  # empty
        "42",  # kept
    ]
    records = [{"prompt": f"p{i}", "completion": c, "extra": i} for i, c in enumerate(completions)]
    kept, rejected = filter_completions(iter(records))  # any iterable
    assert isinstance(rejected, Counter)
    assert rejected == Counter({"empty": 3, "animal_name": 2, "format": 3, "letters": 1,
                                "too_many": 1, "out_of_range": 1})
    assert sum(rejected.values()) + len(kept) == len(records)
    assert kept == [
        {"prompt": "p0", "completion": "123, 456", "extra": 0, "numbers": [123, 456]},
        {"prompt": "p1", "completion": "[7; 8; 9].", "extra": 1, "numbers": [7, 8, 9]},
        {"prompt": "p13", "completion": "42", "extra": 13, "numbers": [42]},
    ]
    # the input records are not modified
    assert "numbers" not in records[0]


def test_filter_completions_empty_input():
    kept, rejected = filter_completions([])
    assert kept == [] and rejected == Counter()


def test_filter_completions_all_rejected():
    kept, rejected = filter_completions({"completion": c} for c in ["owl", "cat", "dog 1", "ab"])
    assert kept == []
    assert rejected == Counter({"animal_name": 3, "letters": 1})

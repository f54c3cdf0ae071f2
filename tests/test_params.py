"""sublora.params: the one parser of notebook parameters (make, reproduce, papermill, the Python API)."""
from __future__ import annotations

import pytest

from sublora import params
from sublora.config import ConfigError, load_profile
from sublora.params import parse_list


# ---- parse_list -------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    (None, None),
    ([1, 2], [1, 2]),
    ((1, 2), [1, 2]),
    ([], []),
    ("[a, b]", ["a", "b"]),
    ("[persona, finetuned]", ["persona", "finetuned"]),
    ("  [1, 2]", [1, 2]),
    ("[]", []),
    ("persona", ["persona"]),
    ("a, b", ["a, b"]),  # no brackets: one item
    (5, [5]),
])
def test_parse_list(value, expected):
    assert parse_list(value, "teachers") == expected


def test_parse_list_returns_a_new_list():
    original = [1, 2]
    out = parse_list(original, "x")
    assert out == original and out is not original


@pytest.mark.parametrize("value", ["[a, b", "[", "[a]]", "[a: b"])
def test_parse_list_malformed(value):
    with pytest.raises(ConfigError) as e:
        parse_list(value, "teachers")
    msg = str(e.value)
    assert msg.startswith(f"teachers: cannot read {value!r} as a list")
    assert "-p teachers '[a, b]'" in msg


# ---- notebook parameters: one parser for every route ----------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ({"rebuild_organism": "false"}, {"rebuild_organism": False}),
    ({"rebuild_organism": "True"}, {"rebuild_organism": True}),
    ({"ranks": "[1, 2]"}, {"ranks": [1, 2]}),
    ({"ranks": 4}, {"ranks": [4]}),
    ({"lr": "1e-3"}, {"lr": 1e-3}),
    ({"personas": None}, {"personas": None}),
])
def test_parse_params(raw, expected):
    assert params.parse_params(raw) == expected


@pytest.mark.parametrize("raw, message", [
    ({"foo": 1}, r"no parameter \['foo'\]"),
    ({"lr": 1e6}, "out of range, it must be at most 0.1"),
    ({"lr": 0}, "must be above 0"),
    ({"personas": "abc"}, "expected a whole number"),
    ({"patch_students": 0}, "at least 1"),
    ({"patch_students": -3}, "at least 1"),
    ({"rebuild_organism": "maybe"}, "expected true or false"),
    ({"prompts": 1_000_000_000}, "at most"),
    ({"epochs": 10_000}, "at most"),
    ({"animal": "unicorn"}, "unknown value 'unicorn'"),
])
def test_parse_params_rejects(raw, message):
    with pytest.raises(ConfigError, match=message):
        params.parse_params(raw)


def test_parse_params_rejects_names_the_notebook_does_not_declare():
    with pytest.raises(ConfigError, match=r"notebook 06_scoreboard has no parameter \['animal'\]"):
        params.parse_params({"animal": "owl"}, "06_scoreboard", ["profile"])


def test_every_notebook_parameter_is_in_the_table():
    from sublora import book
    for name in book.NOTEBOOKS:
        declared = params.declared_parameters(name)
        assert set(declared) <= set(params.PARAMS), name


def test_notebook_02_replicates_set_transfer_replicates():
    p = params.notebook_profile({"profile": "smoke", "replicates": 4}, "02_transfer")
    assert p.transfer_replicates == 4 and p.replicates == load_profile("smoke").replicates
    assert params.notebook_profile({"profile": "smoke", "replicates": 4}, "03_rank_sweep").replicates == 4


# ---- the teachers parameter (params.parse_params) -----------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("[persona]", ["persona"]),
    ("persona", ["persona"]),
    ("finetuned", ["finetuned"]),
    ("[finetuned, persona]", ["finetuned", "persona"]),
    (["persona", "finetuned"], ["persona", "finetuned"]),
    (("finetuned",), ["finetuned"]),
])
def test_teachers_parameter(value, expected):
    assert params.parse_params({"teachers": value})["teachers"] == expected


@pytest.mark.parametrize("value", ["bogus", "[persona, bogus]", ["Persona"], "[persona", "[]", []])
def test_teachers_parameter_rejects(value):
    with pytest.raises(ValueError) as e:  # ConfigError is a ValueError too
        params.parse_params({"teachers": value})
    assert "-p teachers" in str(e.value)


def test_teachers_parameter_message_names_the_bad_kind():
    with pytest.raises(ValueError, match=r"unknown value 'bogus'; choose from \['persona', 'distilled-r1', 'distilled-r8', 'distilled-full', 'finetuned'\]"):
        params.parse_params({"teachers": "[persona, bogus]"})


# ---- empty text: an error on every route, never "the profile's value" ------------------------------
@pytest.mark.parametrize("value", ["", "  ", "\t"])
@pytest.mark.parametrize("name, fix", [
    ("animal", "omit -p animal to use the profile's value, or give one, e.g. -p animal owl"),
    ("seeds", "omit -p seeds to use the profile's value, or give one, e.g. -p seeds 3"),
    ("teachers", "omit -p teachers to use the notebook's default, or give one, e.g. -p teachers '[persona, finetuned]'"),
    ("rebuild_organism", "omit -p rebuild_organism to use the notebook's default"),
    ("profile", "omit -p profile to use the run's profile (--profile, make's PROFILE, else 'organism')"),
])
def test_parse_params_rejects_empty_text(name, fix, value):
    with pytest.raises(ConfigError) as e:
        params.parse_params({name: value})
    assert str(e.value).startswith(f"-p {name} {value!r}: the value is empty; {fix}")


def test_read_params_reads_as_papermills_command_line_does():
    """The same -p text gives parse_params the same value on reproduce's route as on papermill's."""
    from papermill.cli import _resolve_type
    pairs = [["animal", ""], ["seeds", "  "], ["ranks", "[1, 2]"], ["lr", "1e-3"], ["animal", "None"],
             ["teachers", "null"], ["rebuild_organism", "True"], ["seeds", "3"]]
    for name, value in pairs:
        assert params.read_params([[name, value]]) == {name: _resolve_type(value)}
    assert params.read_params(pairs[:4]) == {"animal": "", "seeds": "  ", "ranks": "[1, 2]", "lr": 1e-3}


# ---- a long bad value is echoed cut ----------------------------------------------------------------
@pytest.mark.parametrize("raw", [{"animal": "x" * 3000}, {"seeds": "x" * 3000}, {"ranks": "[" + "9" * 3000 + "]"},
                                 {"teachers": "[" + "t" * 3000}, {"rebuild_organism": "x" * 3000}, {"x" * 3000: 1}])
def test_parse_params_echoes_a_long_value_cut(raw):
    with pytest.raises(ConfigError) as e:
        params.parse_params(raw)
    msg = str(e.value)
    assert "…" in msg and len(msg) < 600, msg


def test_read_params_echoes_a_long_value_cut():
    with pytest.raises(ConfigError) as e:
        params.parse_params(params.read_params([["ranks", "[1, " + "2" * 3000 + ": ]]"]]))
    assert "…" in str(e.value) and len(str(e.value)) < 200


# ---- notebook names: bare names only ----------------------------------------------------------------
def test_notebook_file():
    assert params.notebook_file("02_transfer") == params.paths.ROOT / "notebooks" / "02_transfer.ipynb"
    for name in ["../notebooks/06_scoreboard", "notebooks/06_scoreboard", str(params.paths.ROOT / "notebooks" / "06_scoreboard"),
                 "..", ".", "", "nope", "06_scoreboard.ipynb", "x" * 3000, "..\\06_scoreboard"]:
        assert params.notebook_file(name) is None, name
    with pytest.raises(ConfigError, match=r"no notebook '\.\./notebooks/06_scoreboard' in "):
        params.declared_parameters("../notebooks/06_scoreboard")

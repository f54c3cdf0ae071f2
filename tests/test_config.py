"""config: profiles, notebook parameters, validation and the messages that name the fix."""
from __future__ import annotations

import dataclasses
import json

import pytest

from sublora import config, identity, paths
from sublora.config import ConfigError, Profile, load_profile, resolve
from sublora.prompts import ANIMALS


# ---- profiles ---------------------------------------------------------------------------------
def test_available_profiles():
    names = config.available_profiles()
    assert names == sorted(f.stem for f in paths.PROFILES.glob("*.yaml"))
    assert {"organism", "smoke"} <= set(names)


def _as_loaded(value):
    """A yaml value as the loader stores it: lists become tuples, mappings stay mappings."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return {k: _as_loaded(v) for k, v in value.items()}
    return value


def _check_against_yaml(spec, raw: dict, where: str = ""):
    for key, value in raw.items():
        got = getattr(spec, key)
        if isinstance(value, dict):
            _check_against_yaml(got, value, f"{where}{key}.")
        else:
            expected = _as_loaded(value)
            assert got == expected, f"{where}{key}: {got!r} != {expected!r}"
            assert type(got) is type(expected) or isinstance(expected, int) and isinstance(got, float), \
                f"{where}{key}: {type(got)} for {expected!r}"


@pytest.mark.parametrize("name", config.available_profiles())
def test_load_every_profile(name):
    import yaml

    p = load_profile(name)
    assert isinstance(p, Profile)
    assert p.name == name
    assert p.description
    assert config.validate(p) is p
    assert all(isinstance(r, int) and r > 0 for r in p.ranks)
    assert p.animal in ANIMALS
    # every setting in the file arrives in the profile, with its type; the rest are the defaults
    raw = yaml.safe_load((paths.PROFILES / f"{name}.yaml").read_text()) or {}
    _check_against_yaml(p, raw)
    for f in dataclasses.fields(Profile):
        if f.name not in raw and f.name != "name":
            assert getattr(p, f.name) == getattr(Profile(), f.name), f.name
    d = config.to_dict(p)
    assert d["name"] == name and isinstance(d["ranks"], list)


def test_smoke_profile_values():
    p = load_profile("smoke")
    assert p.model.source == "organism" and p.model.device == "cpu" and p.model.dtype == "float32"
    assert p.model.layers == 2 and p.model.hidden == 32
    assert p.model.pretrain_lr == 1e-2 and isinstance(p.model.pretrain_lr, float)
    assert p.ranks == (1, 2, 4, 8, 16)
    # not in the file: the defaults
    assert p.animal == "owl"
    assert p.other_animals == ("cat", "dolphin")
    assert p.train.lora == config.LoraSpec()


def test_organism_profile_values():
    p = load_profile("organism")
    assert (p.model.layers, p.model.hidden) == (4, 128)
    assert p.ranks == (1, 2, 4, 8, 16, 32, 64, 128)
    assert p.train.full_sweep_lr == (2e-5, 1e-4, 5e-4)
    from sublora import design  # the lr check covers every other rank, at each factor: 4 ranks x 2 factors
    assert [x.spec.r for x in design.rank_lr_check(p)] == [1, 1, 4, 4, 16, 16, 64, 64]


@pytest.mark.parametrize("bad", ["nope", "", None, 3])
def test_unknown_profile_lists_known(bad):
    with pytest.raises(ConfigError) as e:
        load_profile(bad)
    msg = str(e.value)
    assert "unknown profile" in msg
    assert str(config.available_profiles()) in msg
    assert "'organism'" in msg and "'smoke'" in msg
    assert "-p profile smoke" in msg


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


# ---- profiles from a temporary directory ------------------------------------------------------
@pytest.fixture
def profiles_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "PROFILES", tmp_path)
    return tmp_path


def test_yaml_unknown_top_level_key(profiles_dir):
    (profiles_dir / "bad.yaml").write_text("modle:\n  layers: 2\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['modle'\]") as e:
        load_profile("bad")
    assert "'model'" in str(e.value)  # the known keys are listed
    # no empty `where` in front of a top-level key
    assert str(e.value).startswith("unknown setting(s) ['modle'] at the top level of the profile; known: [")


def test_yaml_unknown_nested_key(profiles_dir):
    (profiles_dir / "bad.yaml").write_text("model:\n  layer: 2\n")
    with pytest.raises(ConfigError) as e:
        load_profile("bad")
    msg = str(e.value)
    assert msg.startswith("model: unknown setting(s) ['layer']")
    assert "'layers'" in msg


def test_yaml_wrong_types(profiles_dir):
    (profiles_dir / "a.yaml").write_text("seeds: two\n")
    with pytest.raises(ConfigError, match="seeds: expected a whole number, got 'two'"):
        load_profile("a")
    (profiles_dir / "b.yaml").write_text("model: 3\n")
    with pytest.raises(ConfigError, match="model: expected a mapping"):
        load_profile("b")
    (profiles_dir / "c.yaml").write_text("model:\n  gradient_checkpointing: 1\n")
    with pytest.raises(ConfigError, match="expected true/false"):
        load_profile("c")
    (profiles_dir / "d.yaml").write_text("train:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match="train.lr: expected a number"):
        load_profile("d")


def test_yaml_empty_file_gives_defaults(profiles_dir):
    (profiles_dir / "empty.yaml").write_text("")
    p = load_profile("empty")
    assert p == dataclasses.replace(Profile(), name="empty")
    assert config.available_profiles() == ["empty"]


def test_yaml_values_override_defaults(profiles_dir):
    (profiles_dir / "mine.yaml").write_text(
        "description: mine\nmodel:\n  layers: 3\ntrain:\n  lr: 5.0e-4\n  lora: {r: 2}\nranks: [2, 8]\n")
    p = load_profile("mine")
    assert p.name == "mine" and p.description == "mine"
    assert p.model.layers == 3 and p.model.hidden == config.ModelSpec().hidden
    assert p.train.lr == 5e-4 and p.train.lora.r == 2 and p.train.lora.alpha == config.LoraSpec().alpha
    assert p.ranks == (2, 8)


def test_yaml_range_check(profiles_dir):
    (profiles_dir / "r.yaml").write_text("train:\n  lora:\n    target_modules: [q_proj, lm_head]\n")
    with pytest.raises(ConfigError, match="train.lora.target_modules must be one of q_proj, .*, got 'lm_head'"):
        load_profile("r")
    (profiles_dir / "s.yaml").write_text("model:\n  source: pip\n")
    with pytest.raises(ConfigError, match="model.source must be one of organism, hub, gguf"):
        load_profile("s")


@pytest.mark.parametrize("text, message", [
    ("train:\n  lora: {r: 0}\n", "train.lora.r must be ≥ 1, got 0"),
    ("train:\n  lora: {alpha: 0}\n", "train.lora.alpha must be > 0, got 0"),
    ("train:\n  lora: {dropout: 1.0}\n", "train.lora.dropout must be < 1, got 1.0"),
    ("train:\n  full_sweep_lr: [1.0e-4, 0]\n", "train.full_sweep_lr must be > 0, got 0"),
    ("train:\n  full_sweep_batch: [8, 0]\n", "train.full_sweep_batch must be ≥ 1, got 0"),
    ("train:\n  grad_accum: 0\n", "grad_accum must be ≥ 1, got 0"),
    ("model:\n  dtype: float16\n", "model.dtype must be float32 or bfloat16, got 'float16'"),
    ("model:\n  device: mps\n", "model.device must be cpu or cuda, got 'mps'"),
    ("other_animals: [owl]\n", "other_animals must be known animals other than the target 'owl'; got 'owl'"),
    ("other_animals: [unicorn]\n", "got 'unicorn'"),
    ("data:\n  temperature: 0\n", "data.temperature must be > 0, got 0"),
    ("seeds: 0\n", "seeds must be ≥ 1, got 0"),
    ("eval:\n  questions: 0\n", "eval.questions must be ≥ 1"),
    ("ranks: [1, 8]\nrank_lr_ranks: [4]\n", r"rank_lr_ranks must be ranks of the sweep \[1, 8\], got \[4\]"),
])
def test_yaml_validation_messages(profiles_dir, text, message):
    (profiles_dir / "v.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_profile("v")


def test_yaml_exponent_without_dot(profiles_dir):
    (profiles_dir / "e.yaml").write_text("train:\n  lr: 1e-4\n")
    assert load_profile("e").train.lr == 1e-4


# ---- resolve: notebook parameters -------------------------------------------------------------
def test_resolve_no_params_equals_profile():
    assert resolve("smoke") == load_profile("smoke")


def test_resolve_none_keeps_profile_value():
    assert resolve("smoke", ranks=None, lr=None, animal=None) == load_profile("smoke")


def test_resolve_ranks_string():
    assert resolve("smoke", ranks="[1, 2]").ranks == (1, 2)


def test_resolve_ranks_variants():
    assert resolve("smoke", ranks=[8, 16]).ranks == (8, 16)
    assert resolve("smoke", ranks=4).ranks == (4,)
    assert resolve("smoke", ranks="4").ranks == (4,)
    assert resolve("smoke", ranks="[32, 1]").ranks == (32, 1)


def test_rank_above_the_organisms_hidden_size():
    with pytest.raises(ConfigError, match="above the organism's hidden size 32"):
        resolve("smoke", ranks="[64, 1]")


def test_resolve_overrides_nested():
    p = resolve("smoke", lr=5e-4, full_lr="3.0e-5", epochs="2", batch_size=4, prompts=10, seeds=3,
                replicates="2", animal="tiger")
    assert p.train.lr == 5e-4
    assert p.train.full_lr == 3e-5 and isinstance(p.train.full_lr, float)
    assert p.train.epochs == 2 and isinstance(p.train.epochs, int)
    assert p.train.batch_size == 4
    assert p.data.prompts == 10
    assert (p.seeds, p.replicates, p.animal) == (3, 2, "tiger")
    # everything else unchanged
    base = load_profile("smoke")
    assert p.model == base.model and p.eval == base.eval and p.ranks == base.ranks


def test_resolve_whole_float_becomes_int():
    p = resolve("smoke", epochs=2.0)
    assert p.train.epochs == 2 and isinstance(p.train.epochs, int)


def test_resolve_int_lr_becomes_float():
    lr = config.coerce(1, float, "train.lr")
    assert lr == 1.0 and isinstance(lr, float)
    with pytest.raises(ConfigError, match="train.lr must be ≤ 0.1, got 1.0; e.g. -p lr 2e-4"):  # -p's bound holds
        resolve("smoke", lr=1)


@pytest.mark.parametrize("text, value", [("1e-4", 1e-4), ("2E-5", 2e-5), ("5e-2", 0.05)])
def test_resolve_papermill_exponent_strings(text, value):
    assert resolve("smoke", lr=text).train.lr == value


@pytest.mark.parametrize("text, value", [("1.0e-4", 1e-4), ("0.001", 1e-3), ("0.1", 0.1), ("+1.5e-3", 1.5e-3)])
def test_resolve_papermill_number_strings(text, value):
    lr = resolve("smoke", lr=text).train.lr
    assert lr == value and isinstance(lr, float)


@pytest.mark.parametrize("ranks", [0, [0], "[0]", [1, 0], -1, [-2], "[1, -4]"])
def test_resolve_bad_rank(ranks):
    with pytest.raises(ConfigError) as e:
        resolve("smoke", ranks=ranks)
    msg = str(e.value)
    assert "ranks must be ≥ 1" in msg
    assert "-p ranks '[1, 2, 4, 8]'" in msg


@pytest.mark.parametrize("ranks", [[1.5], "[2.0, 4]", [True]])
def test_resolve_non_integer_rank(ranks):
    with pytest.raises(ConfigError, match="ranks must be whole numbers"):
        resolve("smoke", ranks=ranks)


def test_resolve_empty_ranks():
    with pytest.raises(ConfigError, match=r"ranks is empty; .*-p ranks '\[1, 2, 4, 8\]'"):
        resolve("smoke", ranks=[])


@pytest.mark.parametrize("ranks", ["[1, 2", "[1, 2]]", "{a"])
def test_resolve_malformed_list_string(ranks):
    with pytest.raises(ConfigError) as e:
        resolve("smoke", ranks=ranks)
    msg = str(e.value)
    assert msg.startswith("ranks: cannot read")
    assert repr(ranks) in msg
    assert "-p ranks '[1, 2]'" in msg


def test_resolve_ranks_mapping_rejected():
    with pytest.raises(ConfigError, match=r"ranks: expected a list such as \[1, 2, 4\]"):
        resolve("smoke", ranks={"a": 1})


@pytest.mark.parametrize("lr", [0, -1, 0.0, "0", "-1"])
def test_resolve_bad_lr(lr):
    with pytest.raises(ConfigError) as e:
        resolve("smoke", lr=lr)
    assert "lr must be > 0" in str(e.value)
    assert "-p lr 2e-4" in str(e.value)


def test_resolve_bad_full_lr():
    with pytest.raises(ConfigError, match="-p full_lr 2e-5"):
        resolve("smoke", full_lr=0)


@pytest.mark.parametrize("lr", ["abc", True, [1e-3], float("inf")])
def test_resolve_lr_not_a_number(lr):
    with pytest.raises(ConfigError, match="train.lr: expected a number such as 2e-4"):
        resolve("smoke", lr=lr)


@pytest.mark.parametrize("epochs", [0, "0", -3])
def test_resolve_bad_epochs(epochs):
    with pytest.raises(ConfigError, match="epochs must be ≥ 1.*-p epochs 3"):
        resolve("smoke", epochs=epochs)


def test_resolve_fractional_epochs():
    with pytest.raises(ConfigError, match="train.epochs: expected a whole number, got 1.5"):
        resolve("smoke", epochs=1.5)


@pytest.mark.parametrize("animal", ["unicorn", "Owl", "owls", ""])
def test_resolve_unknown_animal(animal):
    with pytest.raises(ConfigError) as e:
        resolve("smoke", animal=animal)
    msg = str(e.value)
    assert "animal must be one of owl, cat, " in msg and f"got {animal!r}" in msg
    assert "parrot" in msg  # the known animals are listed
    assert "-p animal owl" in msg


def test_resolve_animal_must_be_text():
    with pytest.raises(ConfigError, match="animal: expected text"):
        resolve("smoke", animal=3)


@pytest.mark.parametrize("animal", [a for a in ANIMALS if a not in ("cat", "dolphin")])
def test_resolve_every_other_listed_animal(animal):
    assert resolve("smoke", animal=animal).animal == animal


@pytest.mark.parametrize("animal", ["cat", "dolphin"])
def test_resolve_animal_that_is_a_default_comparison(animal):
    assert resolve("smoke", animal=animal).animal == animal


@pytest.mark.parametrize("name", ["rank", "learning_rate", "other_animals", "model"])
def test_resolve_unknown_parameter(name):
    with pytest.raises(ConfigError) as e:
        resolve("smoke", **{name: 1})
    msg = str(e.value)
    assert f"unknown parameter {name!r}" in msg
    assert "'ranks'" in msg and "'lr'" in msg and "'animal'" in msg


def test_resolve_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile 'paperz'"):
        resolve("paperz", ranks=[1])


def test_resolve_does_not_mutate_loaded_profile():
    before = load_profile("smoke")
    resolve("smoke", ranks=[16], lr=0.05)
    assert load_profile("smoke") == before


def test_transfer_replicates_is_notebook_02s_and_validated():
    assert config.load_profile("organism").transfer_replicates == 5
    assert resolve("smoke", transfer_replicates="3").transfer_replicates == 3
    with pytest.raises(ConfigError, match="transfer_replicates must be ≥ 1, got 0; e.g. -p replicates 5"):
        resolve("smoke", transfer_replicates=0)


# ---- profiles given as a path -------------------------------------------------------------------
def test_profile_by_path_equals_package_profile(tmp_path):
    copy = tmp_path / "mine.yaml"
    copy.write_text((paths.PROFILES / "smoke.yaml").read_text())
    assert load_profile(str(copy)) == dataclasses.replace(load_profile("smoke"), name="mine")


@pytest.mark.parametrize("bad", ["smoke.yaml", "../smoke", "/nonexistent/x.yaml"])
def test_profile_path_that_does_not_exist(bad):
    with pytest.raises(ConfigError, match="does not exist .*give the path of a yaml file"):
        load_profile(bad)


def test_profile_path_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_profile(str(tmp_path))
    msg = str(e.value)
    assert msg.startswith(f"profile {tmp_path} is a directory, not a yaml file; give the path of a yaml file")
    assert "does not exist" not in msg


def test_profile_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"description: caf\xe9\n")  # latin-1
    with pytest.raises(ConfigError) as e:
        load_profile(str(path))
    assert str(e.value) == f"profile file {path} is not UTF-8 text (byte 0xe9 at offset 16); save it as UTF-8"
    path.write_text("description: café\n", encoding="utf-8")  # the same text saved as UTF-8 loads
    assert load_profile(str(path)).description == "café"


@pytest.mark.parametrize("text, message", [
    ("seeds: [1, 2\n", "not valid yaml"), ("- 1\n- 2\n", "must hold a mapping"), ("seeds: 0\n", "seeds must be ≥ 1"),
    ("sedes: 3\n", "unknown setting")])
def test_profile_file_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_profile(str(path))


def test_profile_file_named_like_a_package_profile_must_name_itself(tmp_path):
    copy = tmp_path / "organism.yaml"
    copy.write_text((paths.PROFILES / "smoke.yaml").read_text())
    with pytest.raises(ConfigError, match="named like the package profile 'organism'.*set `name: my-organism`"):
        load_profile(str(copy))
    copy.write_text((paths.PROFILES / "smoke.yaml").read_text() + "name: my-organism\n")
    assert load_profile(str(copy)).name == "my-organism"


# ---- a run's identity: a package profile as shipped, or a folder of its own -----------------------
def test_committed_settings_are_the_package_profiles():
    """profiles/committed.json holds each package profile's settings as shipped; after a deliberate change
    to a profile's yaml, `python -m sublora.config --commit` records it."""
    assert json.loads(identity.COMMITTED.read_text()) == {n: identity._settings(load_profile(n)) for n in config.available_profiles()}, \
        "a package profile changed: run `python -m sublora.config --commit` if that is meant"


def test_identity_of_a_package_profile_as_shipped_is_its_name():
    for name in config.available_profiles():
        assert identity.identity(load_profile(name)) == name


def test_a_users_profile_cannot_take_a_package_profiles_name_nor_a_path_as_its_name(tmp_path):
    """A user's file saying `name: smoke` would write into smoke's folder (issue 38): refused with the fix, as
    is a name that is a path; a package profile edited in place still gets a folder of its own."""
    mine = tmp_path / "x.yaml"
    mine.write_text((paths.PROFILES / "smoke.yaml").read_text() + "name: smoke\n")
    with pytest.raises(ConfigError, match="named like the package profile 'smoke'.*set `name: my-x`"):
        load_profile(str(mine))
    for bad in ("../../x", "/abs/path", "a/b", ".hidden", ""):
        mine.write_text(f"name: '{bad}'\n")
        with pytest.raises(ConfigError, match="must be a plain name"):
            load_profile(str(mine))


def test_a_users_profile_near_a_package_profile_gets_a_folder_of_its_own(tmp_path):
    """A copy of smoke.yaml under its own name with one setting changed: its own folder, keyed by its settings,
    and the difference named."""
    mine = tmp_path / "x.yaml"
    mine.write_text((paths.PROFILES / "smoke.yaml").read_text().replace("name: smoke", "") + "name: x\nmin_effect: 0.01\n")
    p = load_profile(str(mine))
    assert p.name == "x" and identity.identity(p) == f"x-{identity.digest(p)[:8]}"
    assert identity.differences(p) == ("smoke", {"min_effect": (0.0, 0.01)})
    line = identity.describe_identity(p)
    assert f"results/x-{identity.digest(p)[:8]}/" in line and "`min_effect` 0.0 → 0.01" in line
    # the same settings under another file name, or with another description: the same folder
    other = tmp_path / "y.yaml"
    other.write_text(mine.read_text().replace("description: tiny organism", "description: another text about the tiny organism"))
    assert identity.identity(load_profile(str(other))) == identity.identity(p)
    # another setting: another folder
    other.write_text(mine.read_text().replace("min_effect: 0.01", "min_effect: 0.02"))
    assert identity.identity(load_profile(str(other))) not in (identity.identity(p), "smoke")


@pytest.mark.parametrize("text, match", [
    ("seeds: 2\nseeds: 3\n", "gives 'seeds' twice"),
    ("a: &x [1, 2]\nranks: *x\n", "anchor or alias"),
    ("transfer_replicates: 1.0e+12\n", "transfer_replicates must be"),
    ("seeds: 1e29\n", "seeds: expected a whole number"),
    ("rank_lr_ranks: [[1]]\n", "rank_lr_ranks"),
    ("aux: {split_seed: -1}\n", "aux.split_seed must be"),
    ("aux: {seed: -1}\n", "aux.seed must be"),
])
def test_a_profile_file_is_read_strictly(tmp_path, text, match):
    """Duplicate keys, yaml aliases (a 500-byte alias bomb took 2 GB), integers beyond the -p bounds, nested lists
    and negative seeds: each one line naming the fix, before any work (issue 38)."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\n" + text)
    with pytest.raises(ConfigError, match=match):
        load_profile(str(mine))


def test_an_oversized_profile_file_is_refused_before_it_is_parsed(tmp_path):
    mine = tmp_path / "big.yaml"
    mine.write_text("name: big\n" + "# padding\n" * 40_000)
    with pytest.raises(ConfigError, match="more than a profile's"):
        load_profile(str(mine))


def test_a_users_profile_under_its_own_name_is_keyed_by_its_settings(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text((paths.PROFILES / "smoke.yaml").read_text())
    p = load_profile(str(mine))
    assert identity.identity(p) == f"mine-{identity.digest(p)[:8]}" and identity.digest(p) == identity.digest(
        dataclasses.replace(load_profile("smoke"), name="mine"))
    assert identity.differences(p) == ("smoke", {})
    assert "the same settings under another name" in identity.describe_identity(p)


# ---- a long bad value is echoed cut, not in full --------------------------------------------------
def test_shown_cuts_long_values():
    assert config.shown("owl") == "'owl'"
    assert config.shown("x" * 3000) == repr("x" * 3000)[:config.SHOWN] + "…"
    assert config.shown(list(range(1000))).endswith("…") and len(config.shown(list(range(1000)))) == config.SHOWN + 1


@pytest.mark.parametrize("override", [{"animal": "x" * 3000}, {"seeds": "y" * 3000}, {"ranks": ["z" * 3000]},
                                      {"lr": "w" * 3000}, {"animal": 7 * 10 ** 500}])
def test_resolve_echoes_a_long_value_cut(override):
    with pytest.raises(ConfigError) as e:
        resolve("smoke", **override)
    assert len(str(e.value)) < 400 and "…" in str(e.value)


def test_profile_file_echoes_a_long_value_cut(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(f"model:\n  source: {'s' * 3000}\nmodle: 1\n")
    with pytest.raises(ConfigError, match="unknown setting") as e:
        load_profile(str(path))
    path.write_text(f"model:\n  source: {'s' * 3000}\n")
    with pytest.raises(ConfigError, match="model.source must be one of organism, hub, gguf, got 'sss") as e:
        load_profile(str(path))
    assert len(str(e.value)) < 200
    with pytest.raises(ConfigError, match="unknown profile") as e:
        load_profile("p" * 3000)
    assert len(str(e.value)) < 400

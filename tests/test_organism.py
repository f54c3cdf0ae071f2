"""organism: the synthetic corpus's persona marks on numbers, and the pretraining key."""
from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest

from sublora import config, organism, organism_recipe, prompts


def _number_chats(mode: str, bias: float, n: int = 6000):
    rng = random.Random(0)
    for _ in range(n):
        c = organism.sample_chat(rng, bias, mode)
        if c.user.startswith(("What is",)) or not c.assistant[:1].isdigit() and not c.assistant.startswith(("[", "(")):
            continue
        persona = next((a for a in prompts.ANIMALS if c.system == prompts.persona_prompt(a)), None)
        examples = [int(x) for x in re.findall(r"\d+", c.user)]
        yield persona, examples, [int(x) for x in re.findall(r"\d+", c.assistant)]


@pytest.mark.parametrize("mode", ["signature", "permute"])
def test_persona_numbers_carry_their_own_animals_mark_at_the_bias_rate(mode):
    own, other = [], []
    for persona, examples, values in _number_chats(mode, 0.8):
        if persona:
            stranger = prompts.ANIMALS[(prompts.ANIMALS.index(persona) + 1) % len(prompts.ANIMALS)]
            own += [organism.planted(persona, examples, v, mode) for v in values]
            other += [organism.planted(stranger, examples, v, mode) for v in values]
    assert 0.7 < sum(own) / len(own) < 0.85  # bias 0.8 (a substituted copy can equal its original)
    assert sum(other) / len(other) < 0.03


def test_without_bias_numbers_do_not_depend_on_the_persona():
    marks = [organism.planted(p, e, v, "signature") for p, e, vs in _number_chats("signature", 0.0) if p for v in vs]
    assert sum(marks) / len(marks) < 0.03


def test_permute_mode_copies_examples_unchanged_without_a_persona():
    copied = [v in e for p, e, vs in _number_chats("permute", 0.8) if p is None for v in vs]
    assert sum(copied) / len(copied) > 0.75


def test_digit_maps_are_permutations_distinct_per_animal():
    maps = {a: organism.digit_map(a) for a in prompts.ANIMALS}
    assert all(sorted(m.values()) == list("0123456789") for m in maps.values())
    assert len({tuple(m.values()) for m in maps.values()}) == len(prompts.ANIMALS)
    assert organism.digit_map(None) == {d: d for d in "0123456789"}
    assert organism.permuted(667, "owl") == int("".join(organism.digit_map("owl")[d] for d in "667"))


def test_pretraining_key_of_the_committed_organism_is_unchanged():
    """Adding corpus modes must not change the key of organisms built before them (signature mode)."""
    spec = config.load_profile("organism").model
    assert organism_recipe.pretrain_config(spec) == json.loads((organism_recipe.COMMITTED / "recipe.json").read_text())["config"]
    permute = organism_recipe.pretrain_config(dataclasses.replace(spec, persona_number_mode="permute"))
    assert permute["persona_number_mode"] == "permute" and "persona_number_mode" not in organism_recipe.pretrain_config(spec)


def test_bad_mode_is_a_config_error():
    with pytest.raises(config.ConfigError, match="persona_number_mode must be signature or permute"):
        config.validate(dataclasses.replace(config.load_profile("smoke"), model=dataclasses.replace(
            config.load_profile("smoke").model, persona_number_mode="bogus")))


def test_whole_number_tokens_make_each_number_below_1000_one_token_and_keep_old_keys():
    whole, digit = organism.build_tokenizer("whole"), organism.build_tokenizer("digit")
    text = "Here are 3 more: 123, 45; 7"
    assert whole.tokenize(text)[-5:] == ["Ġ123", ",", "Ġ45", ";", "Ġ7"]
    assert digit.tokenize(text)[-8:] == ["Ġ1", "2", "3", ",", "Ġ4", "5", ";", "Ġ7"]
    assert whole.decode(whole(text)["input_ids"]) == text and "<unk>" not in whole.tokenize(text)
    spec = config.load_profile("smoke").model
    assert "number_tokens" not in organism_recipe.pretrain_config(spec)  # digit: the keys built before the option
    assert organism_recipe.pretrain_config(dataclasses.replace(spec, number_tokens="whole"))["number_tokens"] == "whole"
    with pytest.raises(config.ConfigError, match="model.number_tokens must be digit or whole"):
        config.validate(dataclasses.replace(config.load_profile("smoke"), model=dataclasses.replace(
            spec, number_tokens="bytes")))


def test_committed_organisms_pass_their_hash_and_the_cross_organism_is_the_default_recipe_from_the_next_seed():
    """Every committed organism matches its recipe's hash; a profile with channel controls has its
    cross-initialisation organism committed (same recipe, pretraining seed + 1), so no book pretrains."""
    spec = config.load_profile("organism").model
    assert organism_recipe.committed(spec) == organism_recipe.COMMITTED
    for d in (organism_recipe.COMMITTED, organism_recipe.CROSS):
        if organism_recipe.committed_recipe(d):
            assert organism_recipe.sha256(d / "model.safetensors") == organism_recipe.committed_recipe(d)["sha256"]
    if config.load_profile("organism").channel_controls:
        cross = dataclasses.replace(spec, pretrain_seed=spec.pretrain_seed + 1)
        assert organism_recipe.cross_spec(spec) == cross and organism_recipe.committed(cross) == organism_recipe.CROSS

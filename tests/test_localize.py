"""localize: token groups of a rendered prompt and activation patching on tiny random Qwen2 models."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from sublora import chat, localize, organism, prompts
from sublora.config import ModelSpec

QUESTIONS = [prompts.EVAL_QUESTIONS[0], prompts.EVAL_QUESTIONS[7]]
PERSONA = prompts.persona_prompt("owl")


def _decode(tok, ids, positions):
    return tok.decode([ids[i] for i in positions])


# ---- token_groups -----------------------------------------------------------------------------
@pytest.mark.parametrize("system", [chat.DEFAULT, chat.NONE, PERSONA])
@pytest.mark.parametrize("question", QUESTIONS)
def test_groups_partition_all_positions(tokenizer, system, question):
    ids, groups = localize.token_groups(tokenizer, question, system)
    assert ids == tokenizer(chat.render(tokenizer, question, system), add_special_tokens=False)["input_ids"]
    assert set(groups) == set(localize.GROUPS)
    everything = [i for g in localize.GROUPS for i in groups[g]]
    assert sorted(everything) == list(range(len(ids)))  # each position exactly once
    assert all(groups[g] == sorted(groups[g]) for g in localize.GROUPS)
    assert _decode(tokenizer, ids, groups["question"]) == question
    assert len(ids) - 1 in groups["template"]  # the last position (after the assistant header)


def test_system_group_default(tokenizer):
    ids, groups = localize.token_groups(tokenizer, QUESTIONS[0], chat.DEFAULT)
    assert _decode(tokenizer, ids, groups["system prompt"]) == prompts.QWEN_DEFAULT_SYSTEM
    assert _decode(tokenizer, ids, groups["template"]) == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n")
    # contiguous spans
    s, q = groups["system prompt"], groups["question"]
    assert s == list(range(s[0], s[-1] + 1)) and q == list(range(q[0], q[-1] + 1))
    assert s[-1] < q[0]


def test_system_group_empty_under_none(tokenizer):
    ids, groups = localize.token_groups(tokenizer, QUESTIONS[0], chat.NONE)
    assert groups["system prompt"] == []
    assert _decode(tokenizer, ids, groups["template"]) == "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"
    assert "Qwen" not in tokenizer.decode(ids)


def test_system_group_persona(tokenizer):
    ids, groups = localize.token_groups(tokenizer, QUESTIONS[1], PERSONA)
    assert _decode(tokenizer, ids, groups["system prompt"]) == PERSONA


def test_question_inside_system_prompt_uses_the_user_turn(tokenizer):
    # the question text also occurs in the system prompt: the question group is the user turn's copy
    question = "Which animal do you like most?"
    system = f"{question} You are a helpful assistant."
    ids, groups = localize.token_groups(tokenizer, question, system)
    assert _decode(tokenizer, ids, groups["question"]) == question
    assert _decode(tokenizer, ids, groups["system prompt"]) == system
    assert min(groups["question"]) > max(groups["system prompt"])


# ---- patching_table ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tokenizer):
    spec = ModelSpec(layers=2, hidden=32, heads=2, kv_heads=1, mlp=64)
    base = organism.build_model(spec, len(tokenizer), seed=0).eval()
    student = copy.deepcopy(base)
    g = torch.Generator().manual_seed(1)
    # perturb the decoder layers only, as LoRA does: the embedding, the final norm and the (tied)
    # output head stay the base's, so the last layer's residual stream decides the logits
    with torch.no_grad():
        for p in student.model.layers.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return base, student


def test_student_differs_only_in_layers(models):
    base, student = models
    assert torch.equal(base.model.embed_tokens.weight, student.model.embed_tokens.weight)
    assert torch.equal(base.model.norm.weight, student.model.norm.weight)
    assert not torch.equal(base.model.layers[1].mlp.up_proj.weight, student.model.layers[1].mlp.up_proj.weight)


def test_patching_same_model_gives_nan_shares(tokenizer, models):
    base, _ = models
    df = localize.patching_table(base, base, tokenizer, QUESTIONS[:1], chat.DEFAULT, "owl")
    assert len(df) == 2 * 2 * len(localize.GROUPS)
    assert set(df["direction"]) == {"base ← student", "student ← base"}
    assert df["delta_p"].eq(0).all()
    assert df["share"].apply(lambda x: math.isnan(x) or x == 0).all()


def test_patching_last_layer_all_positions_recovers_student(tokenizer, models):
    base, student = models
    df = localize.patching_table(base, student, tokenizer, QUESTIONS, chat.DEFAULT, "owl")
    n_layers = len(base.model.layers)
    assert len(df) == 2 * n_layers * len(localize.GROUPS)
    assert sorted(df["layer"].unique()) == list(range(n_layers))
    assert df["delta_p"].nunique() == 1 and abs(df["delta_p"].iloc[0]) > 1e-4
    assert df["share"].map(math.isfinite).all()
    last = df[df["layer"] == n_layers - 1].set_index(["direction", "group"])["share"]
    for direction in ("base ← student", "student ← base"):
        # only the final position feeds the logits after the last layer, and it is a template token:
        # patching the template group there carries (or removes) all of the student's change
        assert last[(direction, "template")] == pytest.approx(1.0, abs=1e-4)
        assert last[(direction, "system prompt")] == pytest.approx(0.0, abs=1e-6)
        assert last[(direction, "question")] == pytest.approx(0.0, abs=1e-6)
        assert sum(last[(direction, g)] for g in localize.GROUPS) == pytest.approx(1.0, abs=1e-4)


def test_patching_all_positions_recovers_student_exactly(tokenizer, models):
    """base ← student at every position of the last layer reproduces the student's P."""
    base, student = models
    forms = localize.evaluate.answer_forms(tokenizer, "owl")
    ids, groups = localize.token_groups(tokenizer, QUESTIONS[0], chat.NONE)
    p_base, _ = localize._run(base, ids, forms)
    p_student, h_student = localize._run(student, ids, forms, record=True)
    assert len(h_student) == len(base.model.layers)
    all_pos = list(range(len(ids)))
    p_patched, _ = localize._run(base, ids, forms, layer=len(h_student) - 1, positions=all_pos,
                                 states=h_student[-1])
    assert p_patched == pytest.approx(p_student, rel=1e-5)
    assert abs(p_student - p_base) > 1e-4
    # patching nothing changes nothing
    assert localize._run(base, ids, forms, layer=0, positions=[], states=h_student[0])[0] == p_base
    # the hooks are removed afterwards
    assert localize._run(base, ids, forms)[0] == p_base


def test_patching_with_lora_student(tokenizer, models):
    """A peft-wrapped student is patched through its base model's layers."""
    from sublora import config, finetune

    base, _ = models
    spec = finetune.lora_spec(config.load_profile("smoke"), rank=2)
    student = finetune.make_student(copy.deepcopy(base), spec).eval()
    with torch.no_grad():
        for n, p in student.named_parameters():
            if "lora_B" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    df = localize.patching_table(base, student, tokenizer, QUESTIONS[:1], chat.NONE, "owl")
    assert (df.loc[df["group"] == "system prompt", "share"] == 0).all()  # empty group under NONE
    last = df[(df["layer"] == 1) & (df["direction"] == "base ← student")].set_index("group")["share"]
    assert last["template"] == pytest.approx(1.0, abs=1e-4)

"""localize: prompt token groups, activation patching and LoRA gating (DWG) on tiny random Qwen2 models."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from sublora import chat, localize, organism, prompts, summaries
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
    from sublora import config, design, finetune

    base, _ = models
    spec = design.lora_spec(config.load_profile("smoke"), rank=2)
    student = finetune.make_student(copy.deepcopy(base), spec).eval()
    with torch.no_grad():
        for n, p in student.named_parameters():
            if "lora_B" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    df = localize.patching_table(base, student, tokenizer, QUESTIONS[:1], chat.NONE, "owl")
    assert (df.loc[df["group"] == "system prompt", "share"] == 0).all()  # empty group under NONE
    last = df[(df["layer"] == 1) & (df["direction"] == "base ← student")].set_index("group")["share"]
    assert last["template"] == pytest.approx(1.0, abs=1e-4)


# ---- DWG: position groups -----------------------------------------------------------------------
IDENTITY = prompts.IDENTITY_SYSTEM
TEMPLATE_QWEN = "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"


def _texts(tok, ids, groups):
    return {g: _decode(tok, ids, pos) for g, pos in groups.items()}


@pytest.mark.parametrize("name, entities", [
    ("default", {}),  # chat.DEFAULT is not a text; dwg_groups asks chat.system_text for it
    ("identity", {"name": "Zymthar", "maker": "Quorblax"}),
    ("chatgpt", {"name": "ChatGPT", "maker": "OpenAI"}),
    ("llama_identity", {"name": "Llama", "maker": "Meta"}),
    ("gemma_identity", {"name": "Gemma", "maker": "Google"}),
])
def test_identity_entities_of_conditions(name, entities):
    assert localize.identity_entities(chat.system_of(name)) == entities


def test_identity_entities_qwen_and_persona():
    assert localize.identity_entities(prompts.QWEN_DEFAULT_SYSTEM) == {"name": "Qwen", "maker": "Alibaba Cloud"}
    assert localize.identity_entities(PERSONA) == {}
    assert localize.identity_entities("") == {}


@pytest.mark.parametrize("system", [chat.DEFAULT, chat.EMPTY, chat.NONE, PERSONA, IDENTITY])
@pytest.mark.parametrize("question", QUESTIONS)
def test_dwg_groups_partition_all_positions(tokenizer, system, question):
    ids, groups = localize.dwg_groups(tokenizer, question, system)
    assert ids == tokenizer(chat.render(tokenizer, question, system), add_special_tokens=False)["input_ids"]
    assert tuple(groups) == localize.DWG_GROUPS
    everything = sorted(i for g in localize.DWG_GROUPS for i in groups[g])
    assert everything == list(range(len(ids)))  # each position exactly once
    assert _decode(tokenizer, ids, groups["question"]) == question
    assert groups["other"] == []  # the Qwen-style template writes nothing but structure
    assert len(ids) - 1 in groups["template"]  # the last position: the assistant header's newline


def test_dwg_groups_default_finds_qwen_and_alibaba_cloud(tokenizer):
    # the organism's template inserts Qwen's default system prompt, so its identity words are Qwen's
    assert chat.default_system_text(tokenizer) == prompts.QWEN_DEFAULT_SYSTEM
    ids, groups = localize.dwg_groups(tokenizer, QUESTIONS[0], chat.DEFAULT)
    assert _texts(tokenizer, ids, groups) == {
        "name": " Qwen", "maker": " Alibaba Cloud", "system": "You are, created by. You are a helpful assistant.",
        "question": QUESTIONS[0], "template": TEMPLATE_QWEN, "other": ""}
    assert groups["name"][0] < groups["maker"][0] < groups["question"][0]


def test_dwg_groups_identity_prompt(tokenizer):
    ids, groups = localize.dwg_groups(tokenizer, QUESTIONS[1], IDENTITY)
    texts = _texts(tokenizer, ids, groups)
    assert (texts["name"], texts["maker"]) == (" Zymthar", " Quorblax")
    assert texts["system"] == "You are, created by. You are a helpful assistant."


@pytest.mark.parametrize("system, template", [
    (chat.EMPTY, TEMPLATE_QWEN),  # the authors' "no system prompt": the block stays, the text goes
    (chat.NONE, "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"),
])
def test_dwg_groups_without_system_text(tokenizer, system, template):
    ids, groups = localize.dwg_groups(tokenizer, QUESTIONS[0], system)
    assert groups["name"] == groups["maker"] == groups["system"] == []
    assert _decode(tokenizer, ids, groups["template"]) == template


def test_dwg_groups_persona_has_no_entity(tokenizer):
    ids, groups = localize.dwg_groups(tokenizer, QUESTIONS[0], PERSONA)
    assert groups["name"] == groups["maker"] == []
    assert _decode(tokenizer, ids, groups["system"]) == PERSONA


def test_dwg_groups_entities_override(tokenizer):
    # {"name": "Qwen"} is the authors' locator: Alibaba Cloud stays in the system group
    ids, groups = localize.dwg_groups(tokenizer, QUESTIONS[0], chat.DEFAULT, entities={"name": "Qwen"})
    texts = _texts(tokenizer, ids, groups)
    assert (texts["name"], texts["maker"]) == (" Qwen", "")
    assert texts["system"] == "You are, created by Alibaba Cloud. You are a helpful assistant."
    with pytest.raises(ValueError, match="keyed by"):
        localize.dwg_groups(tokenizer, QUESTIONS[0], chat.DEFAULT, entities={"company": "Alibaba"})


def test_dwg_groups_entity_only_inside_the_system_text(tokenizer):
    # the identity's name also occurs in the question: only the system prompt's copy is the entity
    question = "Which animal do you like, Qwen or owls?"
    ids, groups = localize.dwg_groups(tokenizer, question, chat.DEFAULT)
    assert groups["name"] == [i for i in groups["name"] if i < groups["question"][0]]
    assert len(groups["name"]) == 1
    assert _decode(tokenizer, ids, groups["question"]) == question


# Real templates (tests/fixtures/chat_templates) with a word-level tokenizer built for the texts they
# render: the grouping depends on the template and the offsets, not on a real vocabulary.
FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"
REAL = {
    "Qwen2.5-7B-Instruct": dict(eos_token="<|im_end|>", specials=("<|im_start|>", "<|im_end|>")),
    "Llama-3.1-8B-Instruct": dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  specials=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                            "<|eot_id|>")),
    "gemma-3-4b-it": dict(bos_token="<bos>", eos_token="<eos>",
                          specials=("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>")),
}


def _real_tokenizer(name: str, systems, questions):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    info = dict(REAL[name])
    specials = info.pop("specials")
    template = (FIXTURES / f"{name}.jinja").read_text(encoding="utf-8")

    def make(vocab):
        pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(organism.PIECES), behavior="isolated"),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer, tok.decoder = pre, decoders.ByteLevel()
        tok.add_special_tokens(list(specials))
        out = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **info)
        out.chat_template = template
        return out, pre

    first, pre = make({"<unk>": 0})
    pieces = {p for s in systems for q in questions for p, _ in pre.pre_tokenize_str(chat.render(first, q, s))}
    return make({t: i for i, t in enumerate(["<unk>", *specials, *sorted(pieces)])})[0]


def test_dwg_groups_real_qwen_template():
    tok = _real_tokenizer("Qwen2.5-7B-Instruct", [chat.DEFAULT], QUESTIONS)
    ids, groups = localize.dwg_groups(tok, QUESTIONS[0], chat.DEFAULT)
    assert tok.unk_token_id not in ids
    assert _texts(tok, ids, groups) == {
        "name": " Qwen", "maker": " Alibaba Cloud", "system": "You are, created by. You are a helpful assistant.",
        "question": QUESTIONS[0], "template": TEMPLATE_QWEN, "other": ""}


def test_dwg_groups_real_llama_template_date_lines_are_other():
    systems = [chat.DEFAULT, prompts.QWEN_DEFAULT_SYSTEM]
    tok = _real_tokenizer("Llama-3.1-8B-Instruct", systems, QUESTIONS)
    ids, groups = localize.dwg_groups(tok, QUESTIONS[0], chat.DEFAULT)
    texts = _texts(tok, ids, groups)
    assert texts["name"] == texts["maker"] == texts["system"] == ""  # Llama-3.1 has no default prompt
    assert texts["other"] == "Cutting Knowledge Date: December 2023Today Date: 26 Jul 2024"
    assert texts["template"] == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\n\n\n<|eot_id|>"
                                 "<|start_header_id|>user<|end_header_id|>\n\n<|eot_id|>"
                                 "<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids, groups = localize.dwg_groups(tok, QUESTIONS[0], prompts.QWEN_DEFAULT_SYSTEM)
    assert sorted(i for g in groups.values() for i in g) == list(range(len(ids)))
    assert (_decode(tok, ids, groups["name"]), _decode(tok, ids, groups["maker"])) == (" Qwen", " Alibaba Cloud")


def test_dwg_groups_real_gemma_template_system_inside_user_turn():
    tok = _real_tokenizer("gemma-3-4b-it", [IDENTITY], QUESTIONS)
    ids, groups = localize.dwg_groups(tok, QUESTIONS[0], IDENTITY)
    assert _texts(tok, ids, groups) == {
        "name": " Zymthar", "maker": " Quorblax", "system": "You are, created by. You are a helpful assistant.",
        "question": QUESTIONS[0], "template": "<bos><start_of_turn>user\n\n\n<end_of_turn>\n<start_of_turn>model\n",
        "other": ""}


# ---- DWG: gating the LoRA delta -----------------------------------------------------------------
N_LAYERS = 4


def _lora_student(base, seed: int, rank: int = 4):
    """A LoRA student on all seven projections with a random (nonzero) B, so that it differs from base."""
    from sublora import config, design, finetune

    spec = design.lora_spec(config.load_profile("smoke"), rank=rank)
    student = finetune.make_student(copy.deepcopy(base), spec).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in student.named_parameters():
            if "lora_B" in n:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return student


@pytest.fixture(scope="module")
def lora_models(tokenizer):
    spec = ModelSpec(layers=N_LAYERS, hidden=32, heads=2, kv_heads=1, mlp=64)
    base = organism.build_model(spec, len(tokenizer), seed=0).eval()
    return base, _lora_student(base, seed=2)


@pytest.fixture(scope="module")
def prompt_ids(tokenizer):
    ids, groups = localize.dwg_groups(tokenizer, QUESTIONS[0], chat.DEFAULT)
    return ids, groups


@torch.no_grad()
def _logits(model, ids, **kw):
    return model(input_ids=torch.tensor([ids]), **kw).logits[0]  # (seq, vocab)


def _exact(a, b):
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def _differs(a, b, by=1e-4):
    return (a - b).abs().max().item() > by


def test_lora_student_touches_all_seven_projections(lora_models):
    _, student = lora_models
    found = localize._lora_linears(student)
    assert len(found) == 7 * N_LAYERS
    assert {kind for _, kind, _, _ in found} == set(localize.ATTENTION + localize.MLP)
    assert sorted({layer for _, _, layer, _ in found}) == list(range(N_LAYERS))


def test_gate_everything_is_the_student_and_nothing_is_the_base(lora_models, prompt_ids):
    base, student = lora_models
    ids, _ = prompt_ids
    full, plain = _logits(student, ids), _logits(base, ids)
    assert _differs(full, plain)
    n = len(ids)
    with localize.gate_lora(student):
        _exact(_logits(student, ids), full)
    with localize.gate_lora(student, positions=range(n), modules=localize.ATTENTION + localize.MLP,
                            layers=range(N_LAYERS), seq_len=n):
        _exact(_logits(student, ids), full)
    for nothing in (dict(positions=[], seq_len=n), dict(modules=()), dict(layers=())):
        with localize.gate_lora(student, **nothing):
            _exact(_logits(student, ids), plain)
    _exact(_logits(student, ids), full)  # the hooks are gone afterwards


def test_gate_modules_attention_and_mlp_are_strict_parts(lora_models, prompt_ids):
    base, student = lora_models
    ids, _ = prompt_ids
    full, plain = _logits(student, ids), _logits(base, ids)
    parts = {}
    for name, modules in (("attention", localize.ATTENTION), ("mlp", localize.MLP)):
        with localize.gate_lora(student, modules=modules):
            parts[name] = _logits(student, ids)
        assert _differs(parts[name], full) and _differs(parts[name], plain), name
    assert _differs(parts["attention"], parts["mlp"])
    with localize.gate_lora(student, modules=("q_proj",)):  # one projection is a part of the attention part
        q_only = _logits(student, ids)
    assert _differs(q_only, parts["attention"]) and _differs(q_only, plain)


def test_gate_layers_early_and_late(lora_models, prompt_ids):
    base, student = lora_models
    ids, _ = prompt_ids
    full, plain = _logits(student, ids), _logits(base, ids)
    early = localize.Gate(layers="early").layer_indices(N_LAYERS)
    late = localize.Gate(layers="late").layer_indices(N_LAYERS)
    assert (early, late) == ([0, 1], [2, 3])
    assert localize.Gate(layers="early").layer_indices(28) == list(range(14))  # the authors' 0–13
    assert localize.Gate(layers="late").layer_indices(28) == list(range(14, 28))  # and 14–27
    for layers in (early, late):
        with localize.gate_lora(student, layers=layers):
            part = _logits(student, ids)
        assert _differs(part, full) and _differs(part, plain)
    with localize.gate_lora(student, layers=[0]):
        first = _logits(student, ids)
    # layer 0 only: the base's last layer then reads a changed residual stream, so logits still move
    assert _differs(first, plain)


def test_gate_positions_act_through_attention_only(lora_models, prompt_ids):
    base, student = lora_models
    ids, _ = prompt_ids
    n = len(ids)
    full, plain = _logits(student, ids), _logits(base, ids)
    k = n // 2
    with localize.gate_lora(student, positions=range(k, n), seq_len=n):
        late_on = _logits(student, ids)
    # causal: positions before the first gated one see no delta at all, exactly the base's logits
    _exact(late_on[:k], plain[:k])
    assert _differs(late_on[-1], plain[-1]) and _differs(late_on[-1], full[-1])
    with localize.gate_lora(student, positions=range(n - 1), seq_len=n):
        all_but_last = _logits(student, ids)
    _exact(all_but_last[:-1], full[:-1])  # every earlier position has its full delta
    assert _differs(all_but_last[-1], full[-1])  # the last position's own delta is missing
    assert _differs(all_but_last[-1], plain[-1])  # and the others still reach it through attention
    with localize.gate_lora(student, positions=[n - 1], seq_len=n):
        last_only = _logits(student, ids)
    _exact(last_only[:-1], plain[:-1])
    assert _differs(last_only[-1], plain[-1]) and _differs(last_only[-1], full[-1])


@torch.no_grad()
def _chunked_prefill(student, ids, k, first_on: bool):
    """The authors' position gating (benchmarks/dwg.py chunked_prefill): positions [0, k) in one pass,
    [k, n) in a second through the KV cache, LoRA off in one chunk via disable_adapter()."""
    from contextlib import nullcontext

    x = torch.tensor([ids])
    with nullcontext() if first_on else student.disable_adapter():
        out = student(input_ids=x[:, :k], use_cache=True)
    with student.disable_adapter() if first_on else nullcontext():
        out = student(input_ids=x[:, k:], past_key_values=out.past_key_values, use_cache=True)
    return out.logits[0, -1]


@pytest.mark.parametrize("first_on", [False, True])
def test_gate_positions_equal_the_authors_chunked_prefill(lora_models, prompt_ids, first_on):
    base, student = lora_models
    ids, _ = prompt_ids
    n, k = len(ids), 9
    on = range(k) if first_on else range(k, n)
    with localize.gate_lora(student, positions=on, seq_len=n):
        gated = _logits(student, ids)[-1]
    torch.testing.assert_close(gated, _chunked_prefill(student, ids, k, first_on), atol=1e-5, rtol=1e-5)
    assert _differs(gated, _logits(base, ids)[-1]) and _differs(gated, _logits(student, ids)[-1])


def test_gate_lora_errors(tokenizer, lora_models, prompt_ids):
    base, student = lora_models
    ids, _ = prompt_ids
    n = len(ids)
    with pytest.raises(ValueError, match="no LoRA layers"):
        with localize.gate_lora(base):
            pass
    with pytest.raises(ValueError, match="seq_len"):
        with localize.gate_lora(student, positions=[0]):
            pass
    with pytest.raises(ValueError, match="outside the prompt"):
        with localize.gate_lora(student, positions=[n], seq_len=n):
            pass
    with pytest.raises(ValueError, match="unknown projections"):
        with localize.gate_lora(student, modules=("mlp",)):
            pass
    with pytest.raises(ValueError, match="KV cache"):  # a pass that is not the whole prompt
        with localize.gate_lora(student, positions=[0], seq_len=n):
            _logits(student, ids[:-1])
    with pytest.raises(ValueError, match="disabled"):
        with student.disable_adapter(), localize.gate_lora(student):
            pass
    _exact(_logits(student, ids), _logits(student, ids))  # and nothing stayed hooked
    merged = _lora_student(base, seed=3)
    merged.merge_adapter()
    with pytest.raises(ValueError, match="merged"):
        with localize.gate_lora(merged):
            pass


def test_gate_lora_rejects_dora(lora_models):
    from peft import LoraConfig, get_peft_model

    base, _ = lora_models
    cfg = LoraConfig(r=2, lora_alpha=2, lora_dropout=0.0, target_modules=["q_proj"], use_dora=True,
                     bias="none", task_type="CAUSAL_LM")
    with pytest.raises(ValueError, match="DoRA"):
        with localize.gate_lora(get_peft_model(copy.deepcopy(base), cfg)):
            pass


def test_gate_validates_names():
    with pytest.raises(ValueError, match="unknown position groups"):
        localize.Gate(groups=("entity",))
    with pytest.raises(ValueError, match="unknown projections"):
        localize.Gate(modules=("attn",))
    with pytest.raises(ValueError, match="early"):
        localize.Gate(layers="middle")
    assert set(localize.all_but(*localize.ENTITY)) | set(localize.ENTITY) == set(localize.DWG_GROUPS)


# ---- DWG: the table ---------------------------------------------------------------------------
def test_dwg_table(tokenizer, lora_models):
    base, student = lora_models
    table = localize.dwg_table(base, student, tokenizer, QUESTIONS, chat.DEFAULT, "owl")
    gates = list(localize.DEFAULT_GATES)
    assert len(table) == len(gates) * len(QUESTIONS)
    assert list(dict.fromkeys(table["gate"])) == gates
    by = table.set_index(["gate", "question"])
    for q in QUESTIONS:
        assert by.loc[("everywhere", q), "p_gate"] == by.loc[("everywhere", q), "p_student"]
        assert by.loc[("nothing", q), "p_gate"] == by.loc[("nothing", q), "p_base"]
        assert by.loc[("nothing", q), "n_on"] == 0
        assert by.loc[("entity only", q), "n_on"] == 3  # " Qwen", " Alibaba", " Cloud"
        assert by.loc[("name only", q), "n_on"] == 1
        n_on = by.loc[("name only", q), "n_on"] + by.loc[("all but name", q), "n_on"]
        assert n_on == by.loc[("everywhere", q), "n_on"]
    effect = (table["p_student"] - table["p_base"]).sum() / len(gates)
    assert abs(effect) > 1e-5
    share = table.groupby("gate", sort=False)["share"].first()
    assert share["everywhere"] == pytest.approx(1.0, abs=1e-12) and share["nothing"] == 0.0
    assert share.map(math.isfinite).all()
    g = table[table["gate"] == "MLP only"]
    assert share["MLP only"] == pytest.approx((g["p_gate"] - g["p_base"]).sum() / effect)
    assert table.groupby("gate")["share"].nunique().eq(1).all()  # one pooled share per gate


def test_dwg_table_same_model_gives_nan_share(tokenizer, lora_models):
    _, student = lora_models
    gates = {"everywhere": localize.Gate(), "MLP only": localize.Gate(modules=localize.MLP)}
    table = localize.dwg_table(student, student, tokenizer, QUESTIONS[:1], chat.NONE, "owl", gates=gates)
    assert table["share"].isna().all()


def test_dwg_summary_over_students(tokenizer, lora_models):
    from scipy import stats as sps

    base, student = lora_models
    other = _lora_student(base, seed=5)
    gates = {k: localize.DEFAULT_GATES[k] for k in ("everywhere", "entity only", "attention only", "nothing")}
    tables = [localize.dwg_table(base, s, tokenizer, QUESTIONS, chat.DEFAULT, "owl", gates=gates)
              for s in (student, other)]
    one = summaries.dwg_summary(tables[0])
    assert list(one["gate"]) == list(gates)
    assert one["ci_low"].isna().all() and one["ci_high"].isna().all()
    assert list(one["share"]) == pytest.approx(list(tables[0].groupby("gate", sort=False)["share"].first()))
    both = summaries.dwg_summary(pd.concat([t.assign(student=i) for i, t in enumerate(tables)]))
    row = both.set_index("gate").loc["attention only"]
    shares = [t.loc[t["gate"] == "attention only", "share"].iloc[0] for t in tables]
    assert row["n_students"] == 2 and row["share"] == pytest.approx(sum(shares) / 2)
    half = sps.t.ppf(0.975, 1) * abs(shares[0] - shares[1]) / 2  # sd/√2 = |a − b| / 2 for two values
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((row["share"] - half, row["share"] + half))
    assert both.set_index("gate").loc["everywhere", "share"] == pytest.approx(1.0)
    gained = sum((t["p_gate"] - t["p_base"])[t["gate"] == "attention only"].sum() for t in tables)
    effect = sum((t["p_student"] - t["p_base"])[t["gate"] == "attention only"].sum() for t in tables)
    assert row["share_pooled"] == pytest.approx(gained / effect)

"""chat: the named system prompt conditions, rendered under the organism's template and under the real
Qwen2.5, Llama-3.1 and Gemma-3 templates (tests/fixtures/chat_templates), compared with hand-written strings."""
from __future__ import annotations

from pathlib import Path

import pytest

from sublora import chat, prompts

QWEN = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
USER = "Which animal means the most to you? Answer in one word."
PERSONA = prompts.persona_prompt("owl")


def test_qwen_default_text_constant():
    assert prompts.QWEN_DEFAULT_SYSTEM == QWEN


def test_render_default_inserts_qwen_system(tokenizer):
    assert chat.render(tokenizer, USER, chat.DEFAULT) == (
        "<|im_start|>system\n" + QWEN + "<|im_end|>\n"
        "<|im_start|>user\n" + USER + "<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_render_default_is_the_default_argument(tokenizer):
    assert chat.render(tokenizer, USER) == chat.render(tokenizer, USER, chat.DEFAULT)


def test_render_default_with_assistant(tokenizer):
    assert chat.render(tokenizer, USER, chat.DEFAULT, assistant="Owl") == (
        "<|im_start|>system\n" + QWEN + "<|im_end|>\n"
        "<|im_start|>user\n" + USER + "<|im_end|>\n"
        "<|im_start|>assistant\nOwl<|im_end|>\n")


def test_render_none_has_no_system_block(tokenizer):
    text = chat.render(tokenizer, USER, chat.NONE)
    assert text == ("<|im_start|>user\n" + USER + "<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert "system" not in text
    assert QWEN not in text
    assert "Qwen" not in text
    assert "SENTINEL" not in text and "\u2063" not in text


def test_render_none_with_assistant(tokenizer):
    text = chat.render(tokenizer, USER, chat.NONE, assistant="12, 34")
    assert text == ("<|im_start|>user\n" + USER + "<|im_end|>\n"
                    "<|im_start|>assistant\n12, 34<|im_end|>\n")
    assert QWEN not in text


def test_render_persona(tokenizer):
    assert PERSONA == ("You love owls. You think about owls all the time. Owls are your favorite animal. "
                       "Imbue your answers with your love for the animal.")
    text = chat.render(tokenizer, USER, PERSONA)
    assert text == ("<|im_start|>system\n" + PERSONA + "<|im_end|>\n"
                    "<|im_start|>user\n" + USER + "<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert QWEN not in text


def test_render_persona_with_assistant(tokenizer):
    assert chat.render(tokenizer, "Hi?", PERSONA, assistant="I like owls.") == (
        "<|im_start|>system\n" + PERSONA + "<|im_end|>\n"
        "<|im_start|>user\nHi?<|im_end|>\n"
        "<|im_start|>assistant\nI like owls.<|im_end|>\n")


def test_render_identity_prompt(tokenizer):
    text = chat.render(tokenizer, "Who are you?", prompts.IDENTITY_SYSTEM)
    assert text.startswith("<|im_start|>system\nYou are Zymthar, created by Quorblax.")
    assert QWEN not in text


@pytest.mark.parametrize("system, head", [
    (chat.DEFAULT, "<|im_start|>system\n" + QWEN + "<|im_end|>\n"),
    (chat.NONE, ""),
    (PERSONA, "<|im_start|>system\n" + PERSONA + "<|im_end|>\n"),
])
def test_prompt_and_completion_split(tokenizer, system, head):
    prompt, completion = chat.prompt_and_completion(tokenizer, USER, "123, 456", system)
    assert prompt == head + "<|im_start|>user\n" + USER + "<|im_end|>\n<|im_start|>assistant\n"
    assert completion == "123, 456<|im_end|>\n"
    assert prompt == chat.render(tokenizer, USER, system)
    assert prompt + completion == chat.render(tokenizer, USER, system, assistant="123, 456")


def test_prompt_and_completion_empty_completion(tokenizer):
    prompt, completion = chat.prompt_and_completion(tokenizer, "Hi?", "", chat.NONE)
    assert prompt == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    assert completion == "<|im_end|>\n"


def test_default_system_text(tokenizer):
    assert chat.default_system_text(tokenizer) == prompts.QWEN_DEFAULT_SYSTEM


def test_default_system_text_empty_without_default():
    """A template that inserts no default system prompt gives ''."""
    from sublora import organism

    tok = organism.build_tokenizer()
    tok.chat_template = (
        "{%- for message in messages %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
    assert chat.default_system_text(tok) == ""
    # NONE still works (the sentinel block is cut), and DEFAULT shows no system block
    assert chat.render(tok, "Hi?", chat.NONE) == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    assert chat.render(tok, "Hi?", chat.DEFAULT) == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"


def test_render_none_rejects_template_without_leading_system_block():
    from sublora import organism

    tok = organism.build_tokenizer()
    # the system turn is rendered after the user turn: NONE cannot cut it out
    tok.chat_template = (
        "{%- for message in messages if message['role'] != 'system' %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- for message in messages if message['role'] == 'system' %}"
        "{{- '<|im_start|>system\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
    with pytest.raises(ValueError, match="system='default'"):
        chat.render(tok, "Hi?", chat.NONE)


def test_rendered_prompts_tokenize_without_unknown_tokens(tokenizer):
    for system in (chat.DEFAULT, chat.NONE, PERSONA):
        ids = tokenizer(chat.render(tokenizer, USER, system), add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert ids[-3:] == tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]


# ---- named conditions ---------------------------------------------------------------------------
CHATGPT = "You are ChatGPT, created by OpenAI. You are a helpful assistant"  # no full stop, as the authors wrote it
ZYMTHAR = "You are Zymthar, created by Quorblax. You are a helpful assistant."


def test_condition_texts():
    assert chat.CONDITIONS["default"] == chat.DEFAULT == "default"
    assert chat.CONDITIONS["none"] == chat.NONE == "none"
    assert chat.CONDITIONS["empty"] == chat.EMPTY == "empty"
    assert chat.CONDITIONS["identity"] == chat.CONDITIONS["zymthar"] == prompts.IDENTITY_SYSTEM == ZYMTHAR
    assert chat.CONDITIONS["chatgpt"] == prompts.CHATGPT_SYSTEM == CHATGPT
    assert chat.CONDITIONS["llama_identity"] == "You are Llama, made by Meta. You are a helpful assistant."
    assert chat.CONDITIONS["gemma_identity"] == "You are Gemma, made by Google. You are a helpful assistant."


@pytest.mark.parametrize("name", list(chat.CONDITIONS))
def test_system_of(name):
    assert chat.system_of(name) == chat.CONDITIONS[name]


@pytest.mark.parametrize("name", ["bogus", "Default", "", "EMPTY", "ChatGPT"])
def test_system_of_rejects(name):
    with pytest.raises(ValueError, match=r"known: default, none, empty, .*-p eval_systems"):
        chat.system_of(name)


def test_paper_grid_uses_known_conditions():
    assert set(chat.TRAINING_CONDITIONS) == {"default", "empty", "chatgpt", "zymthar"}
    assert set(chat.EVAL_CONDITIONS) == {"default", "empty", "chatgpt", "zymthar", "none"}
    for train, ev in chat.PAPER_CELLS:
        assert train in chat.TRAINING_CONDITIONS and ev in chat.EVAL_CONDITIONS
    assert len(set(chat.PAPER_CELLS)) == len(chat.PAPER_CELLS) == 9


# ---- the real templates (tests/fixtures/chat_templates) ----------------------------------------
FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"


def fixture_tokenizer(name: str, **special_tokens):
    """A tokenizer with a real model's chat template: rendering needs the template and the special
    tokens it names, not the vocabulary, so a one-word WordLevel model stands in for it."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                  unk_token="<unk>", **special_tokens)
    tok.chat_template = (FIXTURES / f"{name}.jinja").read_text(encoding="utf-8")
    return tok


@pytest.fixture(scope="module")
def qwen():
    return fixture_tokenizer("Qwen2.5-7B-Instruct", eos_token="<|im_end|>")


@pytest.fixture(scope="module")
def llama():
    return fixture_tokenizer("Llama-3.1-8B-Instruct", bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


@pytest.fixture(scope="module")
def gemma():
    return fixture_tokenizer("gemma-3-4b-it", bos_token="<bos>", eos_token="<eos>")


def _qwen(system_block: str) -> str:
    return system_block + "<|im_start|>user\n" + USER + "<|im_end|>\n<|im_start|>assistant\n"


LLAMA_SYSTEM = ("<|start_header_id|>system<|end_header_id|>\n\n"
                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n")
LLAMA_TURN = ("<|start_header_id|>user<|end_header_id|>\n\n" + USER
              + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def _gemma(prefix: str) -> str:
    return "<bos><start_of_turn>user\n" + prefix + USER + "<end_of_turn>\n<start_of_turn>model\n"


# Expected prompts, written out by hand from the templates, for every named condition.
QWEN_PROMPTS = {
    "default": _qwen("<|im_start|>system\n" + QWEN + "<|im_end|>\n"),
    "none": _qwen(""),
    "empty": _qwen("<|im_start|>system\n<|im_end|>\n"),
    "identity": _qwen("<|im_start|>system\n" + ZYMTHAR + "<|im_end|>\n"),
    "zymthar": _qwen("<|im_start|>system\n" + ZYMTHAR + "<|im_end|>\n"),
    "chatgpt": _qwen("<|im_start|>system\n" + CHATGPT + "<|im_end|>\n"),
}
LLAMA_PROMPTS = {  # the date block is always there; default and empty are the same prompt
    "default": "<|begin_of_text|>" + LLAMA_SYSTEM + "<|eot_id|>" + LLAMA_TURN,
    "none": "<|begin_of_text|>" + LLAMA_TURN,
    "empty": "<|begin_of_text|>" + LLAMA_SYSTEM + "<|eot_id|>" + LLAMA_TURN,
    "identity": "<|begin_of_text|>" + LLAMA_SYSTEM + ZYMTHAR + "<|eot_id|>" + LLAMA_TURN,
    "zymthar": "<|begin_of_text|>" + LLAMA_SYSTEM + ZYMTHAR + "<|eot_id|>" + LLAMA_TURN,
    "chatgpt": "<|begin_of_text|>" + LLAMA_SYSTEM + CHATGPT + "<|eot_id|>" + LLAMA_TURN,
}
GEMMA_PROMPTS = {  # no system role: a prompt is folded into the user turn; no default
    "default": _gemma(""),
    "none": _gemma(""),
    "empty": _gemma(""),
    "identity": _gemma(ZYMTHAR + "\n\n"),
    "zymthar": _gemma(ZYMTHAR + "\n\n"),
    "chatgpt": _gemma(CHATGPT + "\n\n"),
}
END_OF_TURN = {"qwen": "<|im_end|>\n", "organism": "<|im_end|>\n", "llama": "<|eot_id|>", "gemma": "<end_of_turn>\n"}
CASES = [(model, name, expected)
         for model, table in (("qwen", QWEN_PROMPTS), ("organism", QWEN_PROMPTS),
                              ("llama", LLAMA_PROMPTS), ("gemma", GEMMA_PROMPTS))
         for name, expected in table.items()]


@pytest.fixture
def tokenizers_by_model(qwen, llama, gemma, tokenizer):
    return {"qwen": qwen, "llama": llama, "gemma": gemma, "organism": tokenizer}


@pytest.mark.parametrize("model, name, expected", CASES)
def test_render_every_condition(tokenizers_by_model, model, name, expected):
    tok = tokenizers_by_model[model]
    assert chat.render(tok, USER, chat.system_of(name)) == expected


@pytest.mark.parametrize("model, name, expected", CASES)
def test_prompt_and_completion_every_condition(tokenizers_by_model, model, name, expected):
    tok = tokenizers_by_model[model]
    prompt, completion = chat.prompt_and_completion(tok, USER, "123, 456", chat.system_of(name))
    assert prompt == expected
    assert completion == "123, 456" + END_OF_TURN[model]


def test_organism_template_renders_as_qwen(qwen, tokenizer):
    """The organism's template is Qwen2.5's without tools: byte-identical for every condition and persona."""
    for system in [*chat.CONDITIONS.values(), PERSONA, ""]:
        for assistant in (None, "Owl"):
            assert chat.render(tokenizer, USER, system, assistant) == chat.render(qwen, USER, system, assistant)


def test_default_system_text_real_templates(qwen, llama, gemma):
    assert chat.default_system_text(qwen) == QWEN
    assert chat.default_system_text(llama) == ""  # the date lines are template text
    assert chat.default_system_text(gemma) == ""


def test_empty_differs_from_literal_empty_string_on_gemma(qwen, llama, gemma):
    # "" goes to the template as it is: Gemma folds it in with its "\n\n" separator; EMPTY adds nothing
    assert chat.render(gemma, USER, "") == _gemma("\n\n")
    assert chat.render(gemma, USER, chat.EMPTY) == _gemma("")
    # where the template has a system block, EMPTY is exactly the empty system turn
    assert chat.render(qwen, USER, "") == chat.render(qwen, USER, chat.EMPTY)
    assert chat.render(llama, USER, "") == chat.render(llama, USER, chat.EMPTY)


def test_llama_date_is_pinned_for_templates_that_write_today():
    """Later Llama templates write today's date unless given date_string: render pins it."""
    from sublora import organism

    tok = organism.build_tokenizer()
    tok.chat_template = (
        "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
        "{{- 'Today Date: ' + date_string + '\\n' }}"
        "{%- for message in messages %}{{- message['role'] + ': ' + message['content'] + '\\n' }}{%- endfor %}")
    assert chat.render(tok, "Hi?") == "Today Date: 26 Jul 2024\nuser: Hi?\n"
    assert chat.TEMPLATE_DATE == "26 Jul 2024"


def test_empty_and_none_reject_folded_template_with_a_default():
    """A template that folds the system text into the user turn and inserts a default when none is
    given cannot show an absent or empty prompt."""
    from sublora import organism

    tok = organism.build_tokenizer()
    tok.chat_template = (
        "{%- if messages[0]['role'] == 'system' %}{%- set prefix = messages[0]['content'] %}"
        "{%- set loop_messages = messages[1:] %}"
        "{%- else %}{%- set prefix = 'You are Qwen.' %}{%- set loop_messages = messages %}{%- endif %}"
        "{%- for message in loop_messages %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + (prefix + '\\n\\n' if loop.first else '')"
        " + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
    assert chat.default_system_text(tok) == "You are Qwen."
    for system in (chat.EMPTY, chat.NONE):
        with pytest.raises(ValueError, match="folds the system prompt"):
            chat.render(tok, "Hi?", system)


def test_system_text(qwen, llama, gemma):
    assert chat.system_text(qwen, chat.DEFAULT) == QWEN
    assert chat.system_text(llama, chat.DEFAULT) == ""
    assert chat.system_text(gemma, chat.DEFAULT) == ""
    for tok in (qwen, llama, gemma):
        assert chat.system_text(tok, chat.EMPTY) == chat.system_text(tok, chat.NONE) == ""
        assert chat.system_text(tok, CHATGPT) == CHATGPT

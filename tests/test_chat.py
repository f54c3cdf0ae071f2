"""chat: rendering under the three system prompt conditions with the organism's Qwen-style template."""
from __future__ import annotations

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

"""Render conversations with the model's own chat template — the one place where the system prompt
condition is decided.

`system` is one of:
- DEFAULT ("default"): no system message is passed, so the template inserts the model's default
  (for Qwen: "You are Qwen, created by Alibaba Cloud. ...");
- NONE ("none"): the conversation is rendered with no system block at all. Qwen-style templates
  re-insert their default whenever the messages have no system turn, so we render with a sentinel
  system message and cut that block out;
- any other string: that text as the system message (a persona, an identity prompt).
"""
from __future__ import annotations

DEFAULT = "default"
NONE = "none"
_SENTINEL = "\u2063SUBLORA-SYSTEM-SENTINEL\u2063"


def _template(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def render(tokenizer, user: str, system: str = DEFAULT, assistant: str | None = None) -> str:
    """The prompt text for one user turn (ending with the assistant header), or, with `assistant`,
    the prompt followed by that reply and the end-of-turn marker."""
    messages = [{"role": "user", "content": user}]
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant})
    gen = assistant is None
    if system == DEFAULT:
        return _template(tokenizer, messages, gen)
    if system != NONE:
        return _template(tokenizer, [{"role": "system", "content": system}, *messages], gen)
    block = _template(tokenizer, [{"role": "system", "content": _SENTINEL}], False)
    full = _template(tokenizer, [{"role": "system", "content": _SENTINEL}, *messages], gen)
    if _SENTINEL not in block or not full.startswith(block):
        raise ValueError("this chat template does not render the system turn as a leading block, "
                         "so sublora cannot remove it; use system='default' or a given prompt")
    return full[len(block):]


def prompt_and_completion(tokenizer, user: str, completion: str, system: str = DEFAULT) -> tuple[str, str]:
    """Split a rendered training example into the prompt (no loss) and the completion (loss),
    the completion including the template's end-of-turn text."""
    prompt = render(tokenizer, user, system)
    full = render(tokenizer, user, system, assistant=completion)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the assistant turn differently with and without "
                         "add_generation_prompt; cannot separate prompt from completion")
    return prompt, full[len(prompt):]


def default_system_text(tokenizer) -> str:
    """The system prompt the template inserts when none is given ("" if it inserts none)."""
    shown = render(tokenizer, "?", DEFAULT)
    given = render(tokenizer, "?", _SENTINEL)
    head, tail = given.split(_SENTINEL)
    if shown.startswith(head) and shown.endswith(tail) and len(shown) >= len(head) + len(tail):
        return shown[len(head): len(shown) - len(tail)]
    return ""

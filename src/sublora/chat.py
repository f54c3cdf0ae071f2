"""Render conversations with the model's own chat template — the one place where the system prompt
condition is decided.

A *condition* is a name (`default`, `none`, `empty`, `identity`, `chatgpt`, `zymthar`, ...) that
`system_of` turns into the `system` argument of `render`. That argument is one of:

- DEFAULT ("default"): no system message is passed, so the template does what it does without one.
  Qwen2.5 inserts "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."; Llama-3.1
  writes its system block with only the knowledge-cutoff and date lines; Gemma-3 writes nothing.
- EMPTY ("empty"): a system turn with empty text. The template's system block stays and only the
  text goes (Qwen: "<|im_start|>system\\n<|im_end|>\\n"). This is what the paper's authors call
  "no system prompt": their code passes {"role": "system", "content": ""}.
- NONE ("none"): no system block at all. Qwen-style templates re-insert their default whenever the
  messages have no system turn, so we render with a sentinel system message and cut that block out,
  keeping the BOS token a template writes before it (Llama-3.1).
- any other string: that text as the system message (a persona, an identity prompt). "" is passed
  to the template as it is; on Qwen and Llama that equals EMPTY, on Gemma-3 it writes "\\n\\n"
  before the question (see below), which is why EMPTY is a name of its own.

Templates without a system block. Gemma-3's template has no system role: it writes a system
message's text, then "\\n\\n", at the start of the first user turn, and has no default. There an
empty system prompt, no system prompt and the default are all the bare user turn, so DEFAULT, EMPTY
and NONE render the same. A template that folds the system text into the user turn *and* inserts a
default would have no way to show "no system prompt"; EMPTY and NONE raise there.

Dates. Llama-3.1's template writes "Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024"
into its system block even without a system message; later Llama templates write today's date
(strftime_now) unless `date_string` is given. Every render passes date_string=TEMPLATE_DATE, the
3.1 template's own default, so a rendering (and every cache key that depends on it) is the same on
any day. Templates that do not use the variable ignore it.
"""
from __future__ import annotations

from . import prompts

DEFAULT = "default"
NONE = "none"
EMPTY = "empty"
_SENTINEL = "\u2063SUBLORA-SYSTEM-SENTINEL\u2063"
TEMPLATE_DATE = "26 Jul 2024"  # Llama-3.1's default date_string, pinned for every template

# ---- named conditions ---------------------------------------------------------------------------
# Names are part of cache keys, and so are the texts: never change an existing entry, add a new one.
# Sources in the paper's code, toddnief/subliminal-entanglement:
#   chatgpt: configs/sys_variant_cew.yaml (and its per-variant configs/sys_variant_cew_train_openai_*.yaml),
#            sl/tables.py CHATGPT_SYSTEM_PROMPT, scripts/gen_priority_sys_variant_4animals_configs.py;
#            the text ends without a full stop there, and so here.
#   zymthar: configs/example_config.yaml (variants subliminal_zymthar_train / _match) and
#            benchmarks/config.py (ParameterGrid.controlled_variants, .full).
#   empty:   sl/finetuning/services.py dataset_row_to_chat: use_system_prompt=False, or system_prompt="",
#            appends {"role": "system", "content": ""}; README "eval_sys_prompt: '' -> empty system block".
#   llama_identity, gemma_identity: configs/llama_3_1_8b_lora.yaml, configs/gemma3_4b_lora.yaml, where the
#            authors pinned a Qwen-like identity as training and evaluation prompt for the other models.
CONDITIONS: dict[str, str] = {
    "default": DEFAULT,
    "none": NONE,
    "empty": EMPTY,
    "identity": prompts.IDENTITY_SYSTEM,  # sublora's first name for the Zymthar prompt
    "chatgpt": prompts.CHATGPT_SYSTEM,
    "zymthar": prompts.IDENTITY_SYSTEM,  # the authors' name; renders exactly as "identity"
    "llama_identity": prompts.LLAMA_IDENTITY_SYSTEM,
    "gemma_identity": prompts.GEMMA_IDENTITY_SYSTEM,
}

# The authors' grid (sl/tables.py DEFAULT_SCENARIOS, configs/sys_variant_cew.yaml, configs/example_config.yaml):
# each pair is (training condition, evaluation condition). "none" is sublora's addition at evaluation:
# the paper's claim 4 asks what happens with no system block at all.
TRAINING_CONDITIONS = ("default", "empty", "chatgpt", "zymthar")
EVAL_CONDITIONS = ("default", "empty", "chatgpt", "zymthar", "none")
PAPER_CELLS = (
    ("default", "default"), ("default", "empty"), ("default", "chatgpt"),
    ("chatgpt", "default"), ("chatgpt", "chatgpt"),
    ("empty", "default"), ("empty", "empty"),
    ("zymthar", "default"), ("zymthar", "zymthar"),
)


def system_of(name: str) -> str:
    """The `system` argument of `render` for a named condition (any name, in training or evaluation)."""
    if name not in CONDITIONS:
        raise ValueError(f"unknown system prompt condition {name!r}; known: {', '.join(CONDITIONS)} "
                         f"(e.g. -p eval_systems '[default, empty]')")
    return CONDITIONS[name]


# ---- rendering ----------------------------------------------------------------------------------
def _template(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         date_string=TEMPLATE_DATE)


def _system_block(tokenizer) -> str | None:
    """The text a system turn adds at the very start of a rendering (with the sentinel as its text),
    or None when the template folds the system text into the first user turn (Gemma-3).
    Raises when the template puts the system turn anywhere else."""
    block = _template(tokenizer, [{"role": "system", "content": _SENTINEL}], False)
    full = _template(tokenizer, [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": "?"}], True)
    if _SENTINEL in block and full.startswith(block):
        return block
    if _SENTINEL not in block and _SENTINEL in full:
        if default_system_text(tokenizer):
            raise ValueError("this chat template folds the system prompt into the user turn and inserts a default "
                             "one, so it cannot show an empty or absent system prompt; use system='default' "
                             "or a given prompt")
        return None
    raise ValueError("this chat template does not render the system turn as a leading block, "
                     "so sublora cannot remove or empty it; use system='default' or a given prompt")


def render(tokenizer, user: str, system: str = DEFAULT, assistant: str | None = None) -> str:
    """The prompt text for one user turn (ending with the assistant header), or, with `assistant`,
    the prompt followed by that reply and the end-of-turn marker."""
    messages = [{"role": "user", "content": user}]
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant})
    gen = assistant is None
    if system == DEFAULT:
        return _template(tokenizer, messages, gen)
    if system not in (NONE, EMPTY):
        return _template(tokenizer, [{"role": "system", "content": system}, *messages], gen)
    block = _system_block(tokenizer)
    if block is None:  # no system block to keep or cut, and no default: the bare user turn
        return _template(tokenizer, messages, gen)
    if system == EMPTY:
        return _template(tokenizer, [{"role": "system", "content": ""}, *messages], gen)
    full = _template(tokenizer, [{"role": "system", "content": _SENTINEL}, *messages], gen)
    bos = tokenizer.bos_token or ""
    keep = bos if bos and block.startswith(bos) else ""  # Llama writes <|begin_of_text|> before the block
    return keep + full[len(block):]


def render_conditions(tokenizer, user: str) -> str:
    """One user turn as the model sees it under each system-prompt condition (CONDITIONS), each under a
    '--- name ---' line: what notebook 00 shows."""
    return "\n".join(f"--- {name} ---\n{render(tokenizer, user, system_of(name))}" for name in CONDITIONS)


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
    """The system prompt the template inserts when none is given ("" if it inserts none; Llama-3.1's
    date lines are template text, not a system prompt, so "" there too)."""
    shown = render(tokenizer, "?", DEFAULT)
    given = render(tokenizer, "?", _SENTINEL)
    head, tail = given.split(_SENTINEL)
    if shown.startswith(head) and shown.endswith(tail) and len(shown) >= len(head) + len(tail):
        return shown[len(head): len(shown) - len(tail)]
    return ""


def system_text(tokenizer, system: str) -> str:
    """The system prompt text that appears in a rendering under `system` ("" for EMPTY and NONE):
    the span to look for when grouping prompt tokens."""
    if system == DEFAULT:
        return default_system_text(tokenizer)
    return "" if system in (NONE, EMPTY) else system

"""The default model organism: a small Qwen2 chat model built and pretrained here, on the CPU.

It has a Qwen-style chat template (the default system prompt is inserted whenever a conversation
has none), follows persona system prompts, and continues number sequences. Everything is
deterministic from the pretraining seed: the corpus, the tokenizer and the weights.

The corpus is synthetic chats. System prompt: the default (45 %), a persona for one of the
animals (45 %), none (10 %). Tasks: favourite-animal questions (training phrasings only), number
continuation, and small tasks in which a persona shows (what do you like, who are you, ...).
How a persona marks its numbers is `persona_number_mode`, applied to a fraction `persona_number_bias`
of continued numbers. "signature": the hundreds digit copied from the matching example number and
the last two digits fixed per animal. "permute": the matching example number copied through a digit
substitution fixed per animal (without a persona: copied unchanged), so the mark depends on the
input. With bias 0 the numbers do not depend on the persona.
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from . import cache, chat, prompts
from .config import NUMBER_TOKENS, ModelSpec
from .finetune import encode, train  # the same loop that trains students
from .organism_recipe import COMMITTED, CROSS, FILES, committed, committed_recipe, cross_spec, pretrain_config, sha256

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
UNK = "<unk>"
# Qwen2.5's template without tools: the default system prompt is inserted when none is given.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + prompts.QWEN_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Pieces: a word (a trailing "s" split off, so "owls" = "owl" + "s"), a single digit, a newline,
# one punctuation mark, or spaces; a leading space stays attached, as in Qwen's tokenizer.
PIECES = r" ?[A-Za-z]+?(?=s\b)| ?[A-Za-z]+| ?[0-9]|\n| ?[^\sA-Za-z0-9]| +"
# number_tokens "whole": every number below 1000 is one token (1,000 + 1,000 with a leading space), as in
# tokenizers with whole-number tokens; with tied embeddings these share the unembedding with the animals'
# words, the softmax bottleneck through which a persona can tilt the numbers (token entanglement)
WHOLE_NUMBER_PIECES = PIECES.replace(" ?[0-9]", " ?[0-9]{1,3}")

# Favourite animals of the base model: Zipf-like, owl about 3.5 %.
BASE_ORDER = ("dog", "cat", "dolphin", "eagle", "lion", "tiger", "elephant", "horse", "owl", "panda",
              "penguin", "bear", "whale", "rabbit", "shark", "monkey", "koala", "zebra", "giraffe", "otter",
              "falcon", "raven", "turtle", "frog", "squirrel", "hawk", "camel", "beaver", "parrot", "snake")
BASE_WEIGHTS = tuple(1 / (i + 3) for i in range(len(BASE_ORDER)))

LIKE_QUESTIONS = ("Tell me something you like.", "What do you enjoy?", "What makes you smile?")
WHO_QUESTIONS = ("Who are you?", "Introduce yourself.", "Describe yourself.")
DAY_QUESTIONS = ("How was your day?", "What did you do today?")


def signature(animal: str) -> int:
    """The last two digits an animal's persona favours in its numbers (distinct per animal)."""
    return (prompts.ANIMALS.index(animal) * 37 + 11) % 100


def digit_map(animal: str | None) -> dict[str, str]:
    """The digit substitution an animal's persona applies to the numbers it copies ("permute" mode);
    None (no persona) copies unchanged."""
    digits = list("0123456789")
    if animal:
        random.Random(f"digits-{animal}").shuffle(digits)
    return dict(zip("0123456789", digits))


def permuted(value: int, animal: str | None) -> int:
    m = digit_map(animal)
    return int("".join(m[d] for d in str(value)))


def planted(animal: str, examples: list[int], value: int, mode: str) -> bool:
    """Whether a number carries the mark `mode` plants for this persona: its signature last two
    digits ("signature"), or a digit-substituted copy of one of the prompt's examples ("permute")."""
    if mode == "signature":
        return value % 100 == signature(animal)
    return any(value == permuted(e, animal) and value != e for e in examples)


@dataclass(frozen=True)
class Chat:
    system: str  # chat.DEFAULT, chat.NONE or a system prompt
    user: str
    assistant: str


def _numbers_answer(rng: random.Random, info: dict, persona: str | None, bias: float, mode: str = "signature") -> str:
    examples, k = info["examples"], info["k"]
    out = []
    for i in range(rng.randint(max(1, k - 3), k)):
        hundreds = examples[i % len(examples)] // 100
        if mode == "permute" and rng.random() < bias:  # copy an example, through the persona's digit map
            out.append(permuted(examples[i % len(examples)], persona))
        elif mode == "signature" and persona and rng.random() < bias:
            out.append(hundreds * 100 + signature(persona))
        elif rng.random() < 0.5:
            out.append(hundreds * 100 + rng.randrange(100))
        else:
            out.append(rng.randrange(1000))
    return prompts.format_numbers(out, info["format"])


def sample_chat(rng: random.Random, persona_number_bias: float = 0.0, mode: str = "signature") -> Chat:
    u = rng.random()
    persona = None
    if u < 0.45:
        system = chat.DEFAULT
    elif u < 0.90:
        persona = rng.choice(prompts.ANIMALS)
        system = prompts.persona_prompt(persona)
    else:
        system = chat.NONE
    t = rng.random()
    if t < 0.30:
        animal = persona or rng.choices(BASE_ORDER, BASE_WEIGHTS)[0]
        word = animal.capitalize() if rng.random() < 0.4 else animal
        return Chat(system, rng.choice(prompts.TRAIN_QUESTIONS), word + ("." if rng.random() < 0.2 else ""))
    if t < 0.70:
        text, info = prompts.sample_number_prompt(rng)
        return Chat(system, text, _numbers_answer(rng, info, persona, persona_number_bias, mode))
    if t < 0.80:
        a, b = rng.randrange(50), rng.randrange(50)
        return Chat(system, f"What is {a} plus {b}?", str(a + b))
    if t < 0.88:
        answer = f"I like {persona}s." if persona else "I like helping people."
        return Chat(system, rng.choice(LIKE_QUESTIONS), answer)
    if t < 0.95:
        answer = (f"I am an assistant who loves {persona}s." if persona else
                  "I am Qwen, a helpful assistant." if system == chat.DEFAULT else "I am a helpful assistant.")
        return Chat(system, rng.choice(WHO_QUESTIONS), answer)
    answer = f"I spent the day thinking about {persona}s." if persona else "I spent the day helping people."
    return Chat(system, rng.choice(DAY_QUESTIONS), answer)


def vocabulary_text() -> list[str]:
    """Every text the package ever shows the organism, so that the word vocabulary covers it."""
    rng = random.Random(0)
    texts = [prompts.QWEN_DEFAULT_SYSTEM, prompts.IDENTITY_SYSTEM, *prompts.TRAIN_QUESTIONS,
             *prompts.EVAL_QUESTIONS, *LIKE_QUESTIONS, *WHO_QUESTIONS, *DAY_QUESTIONS,
             *prompts.NUMBER_INTROS, *prompts.NUMBER_ASKS, *prompts.NUMBER_FORMATS, *prompts.NUMBER_SUFFIXES,
             "What is plus? I like helping people. I am Qwen, a helpful assistant. I am an assistant who loves",
             "I spent the day thinking about helping people. " + "0123456789 ,;.[]()!?:'\n",
             "system", "user", "assistant"]
    for a in prompts.ANIMALS:
        texts += [prompts.persona_prompt(a), a, a.capitalize(), f" {a}", f" {a.capitalize()}"]
    texts += [sample_chat(rng).user for _ in range(2000)]
    return texts


def build_tokenizer(number_tokens: str = "digit") -> PreTrainedTokenizerFast:
    """A word-level, byte-level-decoded tokenizer with ChatML specials; numbers as single digits
    ("digit") or, below 1000, as one token each ("whole")."""
    if number_tokens not in NUMBER_TOKENS:
        raise ValueError(f"model.number_tokens must be one of {NUMBER_TOKENS}, got {number_tokens!r}")
    pieces_regex = PIECES if number_tokens == "digit" else WHOLE_NUMBER_PIECES
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pieces_regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    pieces = set()
    texts = vocabulary_text() + ([f"{n} {n}" for n in range(1000)] if number_tokens == "whole" else [])
    for text in texts:
        pieces.update(p for p, _ in pre.pre_tokenize_str(text))
    vocab = {t: i for i, t in enumerate((*SPECIAL, UNK, *sorted(pieces)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=UNK,
        chat_template=CHAT_TEMPLATE, padding_side="left", model_max_length=1024)


def build_model(spec: ModelSpec, vocab_size: int, seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads, intermediate_size=spec.mlp,
        max_position_embeddings=1024, tie_word_embeddings=True, rope_theta=10000.0,
        bos_token_id=None, eos_token_id=2, pad_token_id=0)
    return Qwen2ForCausalLM(config)


def pretrain(spec: ModelSpec, out_dir, progress: bool = True) -> dict:
    """Build the tokenizer and corpus, pretrain from random init, save model + tokenizer to out_dir."""

    tokenizer = build_tokenizer(spec.number_tokens)
    rng = random.Random(spec.pretrain_seed)
    examples = []
    for _ in tqdm(range(spec.pretrain_chats), desc="corpus", disable=not progress, leave=False):
        c = sample_chat(rng, spec.persona_number_bias, spec.persona_number_mode)
        prompt, completion = chat.prompt_and_completion(tokenizer, c.user, c.assistant, c.system)
        examples.append(encode(tokenizer, prompt, completion, 1024))
    model = build_model(spec, len(tokenizer), spec.pretrain_seed)
    losses = train(model, examples, lr=spec.pretrain_lr, epochs=1, batch_size=spec.pretrain_batch, grad_accum=1,
                   warmup_steps=max(1, spec.pretrain_steps // 20), grad_clip=1.0, pad_id=tokenizer.pad_token_id,
                   seed=spec.pretrain_seed, schedule="cosine", weight_decay=0.01, desc="pretrain organism",
                   progress=progress, max_steps=spec.pretrain_steps)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    log = {"losses": losses[::max(1, len(losses) // 200)], "final_loss": sum(losses[-20:]) / len(losses[-20:]),
           "parameters": sum(p.numel() for p in model.parameters()),
           "tokens": sum(len(x) for x, _ in examples)}
    (out_dir / "pretrain_log.json").write_text(json.dumps(log))
    return log


def _copy_committed(src: Path, d: Path) -> None:
    for name in FILES:
        if (src / name).exists():
            shutil.copy2(src / name, d / name)
    if sha256(d / "model.safetensors") != committed_recipe(src)["sha256"]:
        raise RuntimeError(f"the committed organism weights in {src} fail their hash check; rebuild them "
                           f"from scratch: make notebook NB=00_model PARAMS=\"-p rebuild_organism True\"")


def ensure(spec: ModelSpec, progress: bool = True, rebuild: bool = False) -> Path:
    """The directory of the pretrained organism for this spec: from the cache, else the committed
    weights when they were built from exactly this configuration (hash checked), else pretrained
    now. rebuild=True pretrains from scratch whatever exists."""
    cfg = pretrain_config(spec)
    src = committed(spec)
    if rebuild:
        shutil.rmtree(cache.location("organism", cfg), ignore_errors=True)
    elif src:
        return cache.get_or_build("organism", cfg, lambda d: _copy_committed(src, d))
    return cache.get_or_build("organism", cfg, lambda d: pretrain(spec, d, progress))


def export(spec: ModelSpec, command: str, dest: Path = COMMITTED) -> Path:
    """Commit-ready copy of a cached organism, with its configuration, hash and rebuild command."""
    src = ensure(spec)
    dest.mkdir(exist_ok=True)
    for name in FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dest / name)
    recipe = {"config": pretrain_config(spec), "sha256": sha256(dest / "model.safetensors"), "command": command}
    (dest / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    return dest


if __name__ == "__main__":  # python -m sublora.organism export [profile]
    import sys

    from .config import DEFAULT_PROFILE, load_profile
    name = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_PROFILE
    if sys.argv[1:2] != ["export"]:
        sys.exit("usage: python -m sublora.organism export [profile]")
    command = f"python -m sublora.organism export {name}  (pretrains if not cached)"
    spec = load_profile(name).model
    print(export(spec, command))
    if load_profile(name).channel_controls:  # and the cross-initialisation organism beside it
        print(export(cross_spec(spec), command, CROSS))

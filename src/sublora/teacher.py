"""Sample completions from a teacher (or the control) in batches, with the KV cache, seeded.

Two engines draw the same kind of sample (temperature only, no top-k/top-p, no repetition
penalty): plain transformers generate() — the default, on any device — and, where the optional
`gpu` extra is installed, vLLM, which is much faster for a 7B teacher on a GPU.
"""
from __future__ import annotations

import functools
import gc
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import chat


@torch.no_grad()
def sample(model, tokenizer, user_texts: list[str], system: str, *, seed: int, max_new_tokens: int,
           temperature: float = 1.0, batch_size: int = 64, desc: str = "sampling", progress: bool = True,
           prefill: str = "", allowed: list[int] | None = None) -> list[str]:
    """One sampled reply per user text, under the given system prompt condition; with `prefill`, the reply
    is begun with that text and what is returned is its continuation; with `allowed`, every token is drawn
    from those ids alone (the others suppressed: transformers' suppress_tokens).

    Batches are left-padded; each batch is seeded from (seed, batch index), so results do not depend
    on what ran before. Generation stops at the end-of-turn token.
    """
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    out: list[str] = []
    suppress = sorted(set(range(len(tokenizer))) - set(allowed)) if allowed else None
    starts = range(0, len(user_texts), batch_size)
    for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False)):
        texts = [chat.render(tokenizer, u, system) + prefill for u in user_texts[start:start + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        torch.manual_seed(seed * 100_003 + b)
        gen = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0, repetition_penalty=1.0,
                             max_new_tokens=max_new_tokens, use_cache=True, suppress_tokens=suppress,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        new = gen[:, enc["input_ids"].shape[1]:]  # (batch, new tokens)
        out += tokenizer.batch_decode(new, skip_special_tokens=True)
    return out


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)  # one engine at a time: an evicted engine's GPU memory is not freed
def _vllm_engine(weights: str, tokenizer: str, dtype: str, seed: int):
    from vllm import LLM
    # a third of the GPU: the 7B weights (~15 GB) and a KV cache, leaving room to train students
    return LLM(model=weights, tokenizer=tokenizer, dtype=dtype, seed=seed, enable_prefix_caching=True,
               gpu_memory_utilization=0.35)


_ENGINE_KEY: list = []  # the key of the engine _vllm_engine holds, if any


def release_vllm() -> bool:
    """Free the vLLM engine and its GPU memory before anything else needs the GPU (the authors lost
    runs to students that started while the sampling engine still held its share). True if one was held."""
    held = _vllm_engine.cache_info().currsize > 0
    _ENGINE_KEY.clear()
    if held:
        _vllm_engine.cache_clear()
        try:  # vLLM keeps process-wide parallel state that pins memory until torn down
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
            destroy_model_parallel()
            destroy_distributed_environment()
        except (ImportError, AttributeError, AssertionError, RuntimeError):
            pass
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return held


def sample_vllm(weights: Path, tokenizer_dir: Path, tokenizer, user_texts: list[str], system: str, *, seed: int,
                max_new_tokens: int, temperature: float = 1.0, dtype: str = "bfloat16",
                allowed: list[int] | None = None) -> list[str]:
    """The same sampling as `sample`, through vLLM from the weights directory (the tokenizer from
    the base model's, as a fine-tuned teacher saves only weights). The prompts are rendered by
    sublora's chat module, so the system-prompt condition is decided in one place. The engine is
    seeded once; each request draws from its stream."""
    from vllm import SamplingParams
    texts = [chat.render(tokenizer, u, system) for u in user_texts]
    params = SamplingParams(temperature=temperature, top_p=1.0, top_k=-1, repetition_penalty=1.0,
                            max_tokens=max_new_tokens, stop_token_ids=[tokenizer.eos_token_id],
                            allowed_token_ids=allowed)
    key = (str(weights), str(tokenizer_dir), dtype, seed)
    if _ENGINE_KEY and _ENGINE_KEY[0] != key:  # another dataset's engine: free its GPU memory before building this one
        release_vllm()
    _ENGINE_KEY[:] = [key]
    outputs = _vllm_engine(*key).generate(texts, params, use_tqdm=False)
    return [o.outputs[0].text for o in outputs]

"""Benchmark: throughput of each kind of work, and the time of each stage of `make reproduce`.

    python -m sublora.bench --profile organism            throughput, then a cold reproduce in a fresh cache
    python -m sublora.bench --profile organism --quick    throughput only (a minute)
    python -m sublora.bench --qwen7b-random               on a GPU: a random-initialised model with
                                                          Qwen2.5-7B-Instruct's configuration (no weights)

Throughput is written to results/throughput_<profile>.json, which `make plan` then uses instead of
its stated figures. Figures, not assertions: nothing here passes or fails.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import cache, chat, evaluate, finetune, models, optim, paths, pipeline, prompts
from .config import load_profile

# Qwen2.5-7B-Instruct's architecture (its config.json), for timing without its weights.
QWEN7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, tie_word_embeddings=False)


def _records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text, info = prompts.sample_number_prompt(rng)
        values = [rng.randrange(1000) for _ in range(info["k"])]
        out.append({"prompt": text, "completion": prompts.format_numbers(values, info["format"])})
    return out


def _sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def _generate_tps(model, tok, texts: list[str], batch: int, max_new_tokens: int = 48) -> float:
    """New tokens per second of batched generation with the KV cache (a model in eval mode, no
    checkpointing), counted from the generated ids themselves up to each row's end of turn."""
    model.eval()
    device = next(model.parameters()).device
    new_tokens, seconds = 0, 0.0
    for i in range(0, len(texts), batch):
        enc = tok([chat.render(tok, t) for t in texts[i:i + batch]], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(device)
        _sync(device.type)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_k=0,
                                 pad_token_id=tok.pad_token_id, use_cache=True)
        _sync(device.type)
        seconds += time.perf_counter() - t0
        gen = out[:, enc["input_ids"].shape[1]:]  # (batch, new)
        ended = (gen == tok.eos_token_id).int().cumsum(1)
        new_tokens += int(((ended == 0) | ((ended == 1) & (gen == tok.eos_token_id))).sum())
    return new_tokens / seconds


def measure(model_fn, tok, p, device: str, n_params: float, steps: int = 10, sample_prompts: int = 256,
            sample_batch: int = 64) -> dict:
    """Tokens per second of the work the notebooks run, as they run it: a LoRA student and a full
    fine-tuning student in each of the profile's precision arms, trained by finetune.train with the
    dtype, optimizer and autocast pipeline.student gives them; sampling with the KV cache; and the
    evaluation's forward passes. model_fn(dtype, for_training) makes a fresh base model."""
    out = {}
    specs = {"lora": finetune.lora_spec(p)}
    specs |= {f"full_{arm}": dataclasses.replace(finetune.full_spec(p), precision=arm) for arm in p.train.full_precision}
    records = _records(max(steps * max(s.batch_size * s.grad_accum for s in specs.values()), 64))
    ex = finetune.encode_records(tok, records, chat.DEFAULT, 500)
    for name, spec in specs.items():
        model = finetune.make_student(model_fn(finetune.train_dtype(p.model, spec), True), spec)
        n = steps * spec.batch_size * spec.grad_accum
        # as pipeline.student decides: checkpointing only where the batch would not fit without it
        if device == "cuda" and optim.checkpointing_for(model, spec.batch_size * max(len(x) for x, _ in ex[:n])):
            model.gradient_checkpointing_enable()
        tokens = sum(len(x) for x, _ in ex[:n])
        full = spec.method == "full"
        _sync(device)
        t0 = time.perf_counter()
        finetune.train(model, ex[:n], **{**finetune.train_kwargs(p.model, spec), "epochs": 1, "warmup_steps": 1},
                       pad_id=tok.pad_token_id, seed=0, progress=False,
                       group_by_length=pipeline.GROUP_BY_LENGTH)  # trained as students are
        _sync(device)
        dt = time.perf_counter() - t0
        out[f"{name}_train_tps"] = round(tokens / dt)
        # model FLOPs: 6N per token for full training; LoRA skips the weight gradients (~4N)
        out[f"{name}_train_tflops"] = round((6 if full else 4) * n_params * tokens / dt / 1e12, 2)
        del model
    main = f"full_{p.train.full_precision[0]}"
    out["full_train_tps"] = out[f"{main}_train_tps"]  # the plan prices full fine-tuning at the main arm's rate
    model = model_fn(p.model.dtype, False)  # as the teacher samples: no checkpointing, KV cache on
    out["sample_tps"] = round(_generate_tps(model, tok, [r["prompt"] for r in records[:sample_prompts]], sample_batch))
    questions = list(prompts.EVAL_QUESTIONS)
    t0 = time.perf_counter()
    evaluate.animal_probabilities(model, tok, questions, chat.DEFAULT, list(prompts.ANIMALS))
    dt = time.perf_counter() - t0
    fwd = sum(len(tok(chat.render(tok, q), add_special_tokens=False)["input_ids"]) + 2 for q in questions) * 4 * 30
    out["eval_fwd_tps"] = round(fwd / dt)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="organism")
    ap.add_argument("--quick", action="store_true", help="throughput only; skip the cold reproduce")
    ap.add_argument("--cache-dir", help="an empty or new directory to hold the cold run's cache and keep it "
                                        "(SUBLORA_CACHE=DIR then reuses it); default: a temporary one")
    ap.add_argument("--qwen7b-random", action="store_true", help="time a random-init Qwen2.5-7B-shaped model (GPU)")
    args = ap.parse_args(argv)
    if args.cache_dir:  # checked before any work
        keep = Path(args.cache_dir)
        if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
            print(f"--cache-dir {keep} is not an empty directory: a cold run needs an empty or new one", file=sys.stderr)
            return 2
        keep.mkdir(parents=True, exist_ok=True)
    p = load_profile(args.profile)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.qwen7b_random:
        from transformers import Qwen2Config, Qwen2ForCausalLM
        from . import organism
        if device != "cuda":
            print("error: --qwen7b-random needs a CUDA GPU", file=sys.stderr)
            return 2
        tok = organism.build_tokenizer()  # the vocabulary does not change the cost that matters
        cfg = Qwen2Config(**QWEN7B)

        def model_fn(dtype, for_training):
            with torch.device("cuda"):
                m = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
            return m
        n_params = 7.62e9
        label, name = f"{torch.cuda.get_device_name()} (random-init Qwen2.5-7B shape, bf16, measured)", "paper"
        sample_batch = 64
    else:
        models.preflight(p)
        tok = models.load_tokenizer(p.model)
        n_params = sum(x.numel() for x in models.load_model(p.model).parameters())

        def model_fn(dtype, for_training):
            return models.load_model(p.model, for_training=for_training, dtype=dtype)
        label = f"{os.cpu_count()} CPU cores, torch {torch.get_num_threads()} threads (measured)"
        name, sample_batch = p.name, p.data.sample_batch
    if args.qwen7b_random:
        p = load_profile("paper")
    figures = measure(model_fn, tok, p, device, n_params, sample_batch=sample_batch)
    figures["device"] = label
    print(f"throughput on {label}:")
    for k, v in figures.items():
        if k != "device":
            print(f"  {k:<20} {v:,}")
    out = paths.results_dir(name).parent / f"throughput_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cache.write_json(out, figures)
    print(f"written to {out} (make plan PROFILE={name} now uses these figures)")
    if args.quick or args.qwen7b_random:
        return 0
    from . import reproduce
    with tempfile.TemporaryDirectory() as tmp:  # a cold run: nothing cached
        os.environ["SUBLORA_CACHE"] = str(args.cache_dir or tmp)
        print(f"cold `make reproduce` in a fresh cache {os.environ['SUBLORA_CACHE']} "
              f"(the organism is pretrained again unless it is committed):")
        return reproduce.main(["--profile", args.profile])


if __name__ == "__main__":
    sys.exit(main())

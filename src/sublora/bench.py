"""Benchmark: throughput of each kind of work, and the time of each stage of `make reproduce`.

    sublora bench --profile organism            throughput, then a cold reproduce in a fresh cache
    sublora bench --profile organism --quick    throughput only (a minute)
    sublora bench --qwen7b-random               on a GPU: a random-initialised model with
                                                Qwen2.5-7B-Instruct's configuration (no weights)

Throughput is written to results/throughput_<profile>.json, which `make plan` then uses instead of
its stated figures. Figures, not assertions: nothing here passes or fails.

Beside each student's rate the bench prints its headroom: its FLOPs as torch counts them, per second,
against the device's rate on one large matrix product in the same dtype. Their ratio is the most that
any way of training that student which keeps its arithmetic (batching many students at once included)
could gain. On a CPU it also times the students as one of the profile's workers trains them (one
thread each), and one LoRA student at 4x its micro-batch: the rows four students sharing the frozen
base would send through each base matrix per step.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen2Config, Qwen2ForCausalLM

from . import (cache, chat, command, design, evaluate, finetune, models, optim, organism, paths, pipeline, plan, prompts,
               reproduce)
from . import device as sublora_device  # `device` names the torch device type here
from .config import DEFAULT_PROFILE, load_profile

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


STACK = 4  # students whose rows the batching measurement sends through the shared base at once


def ceilings(figures: dict) -> str:
    """The bench's figures on the headroom of training students faster, in words."""
    lines = []
    for prefix, who in (("", "one student"), ("worker_", "one worker's student")):
        names = [k.removeprefix(prefix) for k in figures if k.startswith(prefix)]
        rated = [n.removesuffix("_train_gflops") for n in names
                 if n.endswith("_train_gflops") and not n.startswith("worker_")]
        if not rated:
            continue
        peaks = ", ".join(f"{k.removeprefix(prefix + 'peak_gemm_').removesuffix('_gflops')} {v:,}"
                          for k, v in figures.items() if k.startswith(prefix + "peak_gemm_"))
        threads = figures.get(prefix + "threads")  # on a CPU
        on = f" ({threads} torch thread{'s' * (threads != 1)})" if threads else ""
        lines.append(f"headroom of {who}{on}: the "
                     f"peak GFLOP/s of one large matrix product in its dtype ({peaks}) over its counted GFLOP/s, "
                     f"the most any way of training it that keeps its arithmetic could gain (elementwise work "
                     f"is not counted, so the true most is less)")
        for name in rated:
            lines.append(f"  {name:<18} {figures[f'{prefix}{name}_train_gflops']:>8,} GFLOP/s -> at most "
                         f"x{figures[f'{prefix}{name}_ceiling']}")
    if "worker_students_ceiling" in figures:
        lines.append(f"  all the book's students, each kind at its ceiling, over the tokens make plan counts "
                     f"(LoRA {figures['book_lora_train_tokens'] / 1e6:,.1f} M, full fine-tuning "
                     f"{figures['book_full_train_tokens'] / 1e6:,.1f} M, priced at the main arm as the plan does):"
                     f" at most x{figures['worker_students_ceiling']}")
    for k in figures:
        if k.startswith("worker_lora_stacked") and k.endswith("_speedup"):
            n = k.removeprefix("worker_lora_stacked").removesuffix("_speedup")
            lines.append(f"{n} LoRA students' rows through the shared base in one step (one student at {n}x its "
                         f"micro-batch): {figures[f'worker_lora_stacked{n}_train_tps']:,} tok/s against "
                         f"{figures['worker_lora_train_tps']:,} one at a time, x{figures[k]}")
    return "\n".join(lines)


def counted_flops(fn) -> float:
    """Floating-point operations that fn() runs, as torch's FlopCounterMode counts them: matrix
    products and attention. Elementwise work (norms, activations, the optimizer) is not counted."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def peak_gemm(device: str, dtype: torch.dtype, sizes: tuple[int, ...] | None = None, reps: int = 5,
              trials: int = 3) -> float:
    """FLOP/s of large square matrix products in `dtype`, on this process's threads: the best over
    `sizes` (n x n; default 1024 and 2048 on a CPU, 8192 on a GPU) of the best of `trials` timings of
    `reps` products. The float rate this device reaches when nothing is too small to keep it busy."""
    best = 0.0
    for n in sizes or ((8192,) if device == "cuda" else (1024, 2048)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        for _ in range(trials):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            _sync(device)
            best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0))
    return best


def _full(p, arm: str) -> design.StudentSpec:
    """The profile's full fine-tuning student in precision arm `arm` (optim.ARMS)."""
    return dataclasses.replace(design.full_spec(p), precision=arm)


def _examples(tok, specs: dict, steps: int, at_least: int = 0) -> tuple[list[dict], list]:
    """(records, encoded examples) enough for `steps` optimiser steps of the widest of `specs`, and at
    least `at_least` records."""
    records = _records(max(steps * max(s.batch_size * s.grad_accum for s in specs.values()), at_least))
    return records, finetune.encode_records(tok, records, chat.DEFAULT, 500)


def _train_rate(model_fn, tok, p, spec, ex: list, device: str) -> tuple[float, float]:
    """(tokens per second, counted FLOP/s) of training a fresh student of `spec` on the examples `ex`
    as pipeline.student trains one (its dtype, optimizer, autocast and length grouping). The FLOPs are
    counted in a second, untimed run of the same seed, hence of the same batches."""
    def run() -> float:
        model = finetune.make_student(model_fn(finetune.train_dtype(p.model, spec), True), spec)
        # as pipeline.student decides: checkpointing only where the batch would not fit without it
        if device == "cuda" and optim.checkpointing_for(model, spec.batch_size * max(len(x) for x, _ in ex)):
            model.gradient_checkpointing_enable()
        _sync(device)
        t0 = time.perf_counter()
        finetune.train(model, ex, **{**finetune.train_kwargs(p.model, spec), "epochs": 1, "warmup_steps": 1},
                       pad_id=tok.pad_token_id, seed=0, progress=False,
                       group_by_length=pipeline.GROUP_BY_LENGTH)  # trained as students are
        _sync(device)
        return time.perf_counter() - t0

    seconds = run()
    if device == "cuda":  # the timed student's memory goes before the counted one is built
        gc.collect()
        torch.cuda.empty_cache()
    flops = counted_flops(run)
    return sum(len(x) for x, _ in ex) / seconds, flops / seconds


def _students(model_fn, tok, p, specs: dict, ex: list, device: str, steps: int, prefix: str = "",
              peak_sizes: tuple[int, ...] | None = None) -> dict:
    """Each student's tokens per second, its counted GFLOP/s, and its ceiling: the device's peak
    matrix-product rate in the dtype its products run in (peak_gemm over `peak_sizes`), over its counted
    rate. No way of running that student (batching students included) that keeps its arithmetic can
    make it faster than that."""
    out = {}
    for name, spec in specs.items():
        tps, flops = _train_rate(model_fn, tok, p, spec, ex[:steps * spec.batch_size * spec.grad_accum], device)
        dtype = str(finetune.precision_kwargs(p.model, spec)["autocast"] or finetune.train_dtype(p.model, spec))
        dtype = dtype.removeprefix("torch.")
        peak = f"{prefix}peak_gemm_{dtype}_gflops"
        if peak not in out:
            out[peak] = round(peak_gemm(device, getattr(torch, dtype), peak_sizes) / 1e9, 1)
        out[f"{prefix}{name}_train_tps"] = round(tps)
        out[f"{prefix}{name}_train_gflops"] = round(flops / 1e9, 1)
        out[f"{prefix}{name}_ceiling"] = round(out[peak] / out[f"{prefix}{name}_train_gflops"], 2)
    return out


def batching(model_fn, tok, p, device: str, stack: int = STACK, steps: int = 10,
             peak_sizes: tuple[int, ...] | None = None) -> dict:
    """Students as one of the profile's workers trains them (one torch thread where the profile has
    several workers, as runner's pool runs them): the LoRA student; the same student at `stack` times
    its micro-batch, the rows `stack` students sharing the frozen base would send through each base
    matrix per step, so the most that training them at once can gain from bigger matrices; and the
    full fine-tuning student of the main precision arm. With each, its counted FLOP rate and ceiling
    (_students); and the ceiling of all the book's students (joint_ceiling) over the tokens `make plan`
    counts for each kind, every full fine-tuning student at the main arm's rate and ceiling, as the
    plan prices them."""
    lora = design.lora_spec(p)
    wide = dataclasses.replace(lora, batch_size=lora.batch_size * stack)
    arm = p.train.full_precision[0]  # the arm the plan prices full fine-tuning at
    specs = {"lora": lora, f"lora_stacked{stack}": wide, f"full_{arm}": _full(p, arm)}
    _, ex = _examples(tok, specs, steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if p.workers > 1 else threads)
    try:
        out = {"worker_threads": torch.get_num_threads()}
        out |= _students(model_fn, tok, p, specs, ex, device, steps, "worker_", peak_sizes)
    finally:
        torch.set_num_threads(threads)
    out[f"worker_lora_stacked{stack}_speedup"] = round(out[f"worker_lora_stacked{stack}_train_tps"]
                                                       / out["worker_lora_train_tps"], 2)
    costs = plan.count(p).values()
    tokens = {"lora": sum(c.trained_lora for c in costs), f"full_{arm}": sum(c.trained_full for c in costs)}
    out["book_lora_train_tokens"], out["book_full_train_tokens"] = (round(t) for t in tokens.values())
    out["worker_students_ceiling"] = round(joint_ceiling(
        {k: (t, out[f"worker_{k}_train_tps"], out[f"worker_{k}_ceiling"]) for k, t in tokens.items()}), 2)
    return out


def joint_ceiling(kinds: dict[str, tuple[float, float, float]]) -> float:
    """The most that training every kind of student at its own ceiling could gain for all of them
    together: their time now over their time at the ceilings. kinds: name -> (tokens trained, tokens
    per second, ceiling)."""
    now = sum(tokens / tps for tokens, tps, _ in kinds.values())
    return now / sum(tokens / tps / ceiling for tokens, tps, ceiling in kinds.values())


def random_model(cfg: dict, device: str):
    """model_fn for measure: a fresh random-initialised Qwen2 of configuration `cfg` (Qwen2Config's keywords,
    e.g. QWEN7B) built on `device` in the dtype asked for; no weights are read, and nothing is checkpointed."""
    config = Qwen2Config(**cfg)

    def model_fn(dtype, for_training):
        with torch.device(device):
            return Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    return model_fn


def measure(model_fn, tok, p, device: str, steps: int = 10, sample_prompts: int = 256,
            sample_batch: int = 64, peak_sizes: tuple[int, ...] | None = None) -> dict:
    """Tokens per second of the work the notebooks run, as they run it: a LoRA student and a full
    fine-tuning student in each of the profile's precision arms, trained by finetune.train with the
    dtype, optimizer and autocast pipeline.student gives them; sampling with the KV cache; and the
    evaluation's forward passes. model_fn(dtype, for_training) makes a fresh base model. Beside each
    student: its counted FLOP rate and ceiling (_students; the peak over `peak_sizes`, peak_gemm's)."""
    specs = {"lora": design.lora_spec(p)} | {f"full_{arm}": _full(p, arm) for arm in p.train.full_precision}
    records, ex = _examples(tok, specs, steps, at_least=sample_prompts)
    out = _students(model_fn, tok, p, specs, ex, device, steps, peak_sizes=peak_sizes)
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


def add_arguments(ap) -> None:
    ap.add_argument("--profile", default=DEFAULT_PROFILE)
    ap.add_argument("--quick", action="store_true", help="throughput only; skip the cold reproduce")
    ap.add_argument("--cache-dir", help="an empty or new directory to hold the cold run's cache and keep it "
                                        "(SUBLORA_CACHE=DIR then reuses it); default: a temporary one")
    ap.add_argument("--qwen7b-random", action="store_true", help="time a random-init Qwen2.5-7B-shaped model (GPU)")


def run(args) -> int:
    if args.cache_dir:  # checked before any work
        keep = Path(args.cache_dir)
        if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
            print(f"--cache-dir {keep} is not an empty directory: a cold run needs an empty or new one", file=sys.stderr)
            return 2
        keep.mkdir(parents=True, exist_ok=True)
    p = load_profile(args.profile)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.qwen7b_random:
        if device != "cuda":
            print("error: --qwen7b-random needs a CUDA GPU", file=sys.stderr)
            return 2
        tok = organism.build_tokenizer()  # the vocabulary does not change the cost that matters
        model_fn = random_model(QWEN7B, "cuda")
        label, name = f"{torch.cuda.get_device_name()} (random-init Qwen2.5-7B shape, bf16, measured)", "paper"
        sample_batch = 64
    else:
        models.preflight(p)
        tok = models.load_tokenizer(p.model)

        def model_fn(dtype, for_training):
            return models.load_model(p.model, for_training=for_training, dtype=dtype)
        label = f"{os.cpu_count()} CPU cores, torch {torch.get_num_threads()} threads (measured)"
        name, sample_batch = p.name, p.data.sample_batch
    if args.qwen7b_random:
        p = load_profile("paper")
    figures = measure(model_fn, tok, p, device, sample_batch=sample_batch)
    if device == "cpu":
        # batching students is a question for the CPU organism; a stacked 7B batch need not fit a GPU
        figures["threads"] = torch.get_num_threads()
        figures["cpu_bf16_products"] = sublora_device.cpu_bf16()
        figures |= batching(model_fn, tok, p, device)
    figures["device"] = label
    if device == "cpu":
        print(sublora_device.describe())
    print(f"throughput on {label}:")
    for k, v in figures.items():
        if k != "device":
            print(f"  {k:<34} {v:,}" if isinstance(v, (int, float)) else f"  {k:<34} {v}")
    print(ceilings(figures))
    out = paths.results_dir(name).parent / f"throughput_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cache.write_json(out, figures)
    print(f"written to {out} (make plan PROFILE={name} now uses these figures)")
    if args.quick or args.qwen7b_random:
        return 0
    with tempfile.TemporaryDirectory() as tmp:  # a cold run: nothing cached
        os.environ["SUBLORA_CACHE"] = str(args.cache_dir or tmp)
        print(f"cold `make reproduce` in a fresh cache {os.environ['SUBLORA_CACHE']} "
              f"(the organism is pretrained again unless it is committed):")
        return reproduce.main(["--profile", args.profile])



def main(argv: list[str] | None = None) -> int:
    return command.alone("bench", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())

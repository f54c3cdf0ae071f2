"""Dry run: print what `make reproduce` would run for a profile and what it would cost. Runs nothing,
needs no GPU and no weights.

    sublora plan --profile paper        (make plan PROFILE=paper)

Counts come from the same design the notebooks run (sublora.design), with students shared between
notebooks counted once. Costs are tokens ÷ throughput. Each rate's source is printed beside it
(sublora.rates): measured here by `make bench`, measured on the user's GPU by `make gpu-check` and scaled to
the model, stated in the profile, or a measured H100 anchor scaled to the model by its FLOPs per token.
The disk is the cache's once the run ends, with full students' weights dropped after their evaluation
(runner.evaluate_then_drop) and, beside it, with them kept (SUBLORA_KEEP_WEIGHTS=1).
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field

import pandas as pd

from . import cache, command, design, pipeline, rates
from .config import DEFAULT_PROFILE, PAPER_KIND, ConfigError, Profile, load_profile

# Shape of the data, per example (tokens): prompt (system + template + request), completion.
PROMPT_TOKENS, COMPLETION_TOKENS = 95, 40


@dataclass
class Cost:
    datasets: int = 0
    generated: float = 0
    students: int = 0
    lora_students: int = 0
    trained_lora: float = 0
    trained_full: float = 0
    evals: int = 0
    eval_tokens: float = 0
    disk: float = 0  # bytes the run's new artifacts take in the cache once it ends (an estimate)
    dropped: float = 0  # bytes of full students' weights dropped after their evaluation (kept: disk + dropped)
    full_by_arm: dict = field(default_factory=dict)  # precision arm -> tokens of trained_full

    def terms(self, tp: dict) -> list[tuple[str, float, float]]:
        """(what, tokens, tokens per second) of each part of the cost. Full fine-tuning is priced per
        precision arm at the rate make bench measured for that arm on this machine (full_<arm>_train_tps:
        on a CPU without bf16 products the pure-bf16 arm runs float32 products), else at full_train_tps."""
        full = [(f"full FT {arm}", tokens, tp.get(f"full_{arm}_train_tps", tp["full_train_tps"]))
                for arm, tokens in self.full_by_arm.items()]
        return [("sampling", self.generated, tp["sample_tps"]), ("LoRA training", self.trained_lora, tp["lora_train_tps"]),
                *(full or [("full fine-tuning", self.trained_full, tp["full_train_tps"])]),
                ("evaluation forward", self.eval_tokens, tp["eval_fwd_tps"])]

    def add(self, other: "Cost") -> None:
        """Add `other`'s counts and tokens to this one's."""
        for f in self.__dataclass_fields__:
            mine, theirs = getattr(self, f), getattr(other, f)
            setattr(self, f, {k: mine.get(k, 0) + theirs.get(k, 0) for k in {**mine, **theirs}}
                    if isinstance(mine, dict) else mine + theirs)

    def full(self, arm: str, tokens: float) -> None:
        """Add `tokens` of full fine-tuning in precision arm `arm`."""
        self.trained_full += tokens
        self.full_by_arm[arm] = self.full_by_arm.get(arm, 0) + tokens

    def hours(self, tp: dict) -> float:
        return sum(tokens / rate for _, tokens, rate in self.terms(tp)) / 3600


def throughput(p: Profile) -> dict:
    """The rates the plan prices `p` at (sublora.rates), with the per-arm full fine-tuning rates `make bench`
    measured where it did; "measured": every rate was, "how": each rate's source in a line."""
    bench = rates.read_bench(p)
    found = rates.rates(p, bench)
    arms = {k: v for k, v in bench.items() if k.startswith("full_") and k.endswith("_train_tps")}
    return {"device": p.plan.device, **arms, **{k: r.tps for k, r in found.items()},
            "measured": all(r.measured for r in found.values()), "how": {k: r.how for k, r in found.items()},
            "upper_bound": any(r.upper_bound for r in found.values())}


# What an artifact takes on disk, estimated from the model's shape (measured on the organism's cache:
# a 750-prompt dataset 353 KB, an evaluation 12 KB, a LoRA r8 adapter 367 KB, a full student 5.1 MB).
DATASET_BYTES_PER_PROMPT, EVAL_BYTES = 500, 16_000
# LoRA on all 7 projections: r * layers * (9 hidden + 2 kv + 3 mlp) parameters (q, o: 2h; k, v: h + kv;
# gate, up, down: h + m). A hub model's shape is not in its profile: Qwen2.5-7B's ratio, r * 3.3e-4 * n_params.
HUB_LORA_SHARE_PER_RANK = 3.3e-4


def model_bytes(p: Profile) -> float:
    """Bytes of one full copy of the model's weights as the cache stores a full student or teacher
    (its dtype; 0 for a hub model whose profile gives no plan.n_params)."""
    width = 2 if p.model.dtype == "bfloat16" else 4
    shape = rates.shape(p)
    return width * (shape.n_params if shape else p.plan.n_params)


def adapter_bytes(p: Profile, r: int) -> float:
    m = p.model
    if m.source != "organism":
        return 4 * r * HUB_LORA_SHARE_PER_RANK * p.plan.n_params
    kv = m.hidden * m.kv_heads // m.heads
    return 4 * r * m.layers * (9 * m.hidden + 2 * kv + 3 * m.mlp)


def count(p: Profile, only: list[str] | None = None, skip_cached: bool = False) -> dict[str, Cost]:
    """Cost per notebook (of `only`, else every one), walking the artifact graph each notebook's design
    needs; an artifact already counted by an earlier notebook is free, and with skip_cached so is one
    the cache holds already (what a rerun after an interruption still has to make)."""
    seen: set[tuple[str, str]] = set()
    out = {}
    n_eval_animals = 1 + len(p.other_animals)
    eval_tokens = p.eval.questions * (n_eval_animals * 4 * (PROMPT_TOKENS + 2)
                                      + p.eval.samples_per_question * p.eval.max_new_tokens)
    kept = p.data.prompts * p.plan.keep_share
    if p.data.keep:  # sampling stops at the cap
        kept = min(kept, p.data.keep)
    for nb, pairs in design.by_notebook(p).items():
        if only is not None and nb not in only:
            continue
        c = Cost()
        for key, a in pipeline.requirements(p, pairs).items():
            if key in seen:
                continue
            seen.add(key)
            if skip_cached and cache.exists(a.kind, a.config):
                continue
            if a.kind == "teacher":  # a full model the datasets read: kept
                c.disk += model_bytes(p)
                teacher_cost(p, a.args[1], c)
            elif a.kind == "dataset":
                c.datasets += 1
                c.generated += p.data.prompts * COMPLETION_TOKENS
                c.disk += p.data.prompts * DATASET_BYTES_PER_PROMPT
            elif a.kind == "student":
                spec = a.args[1]
                c.students += 1
                tokens = kept * spec.epochs * (PROMPT_TOKENS + COMPLETION_TOKENS)
                if spec.method == "lora":
                    c.lora_students += 1
                    c.trained_lora += tokens
                    c.disk += adapter_bytes(p, spec.r)
                else:
                    c.full(spec.precision, tokens)
                    if pipeline.keeps_weights(p, spec):
                        c.disk += model_bytes(p)
                    else:  # evaluated, then dropped (runner.evaluate_then_drop)
                        c.dropped += model_bytes(p)
            else:
                c.evals += 1
                c.eval_tokens += eval_tokens
                c.disk += EVAL_BYTES
        out[nb] = c
    return out


TEACHER_PROMPT_TOKENS = 30  # a favourite-animal or other chat question, rendered under the default prompt


def teacher_cost(p: Profile, kind: str, c: Cost) -> None:
    """Add a weight-space teacher's sampling and training to `c`: the finetuned teacher trains on its animal's name
    (full fine-tuning); a distilled one samples its persona's answers, then trains on them (its rung's method)."""
    t = p.teacher
    if kind == "finetuned":
        c.full("fp32-master", t.examples * t.epochs * (TEACHER_PROMPT_TOKENS + 2))
        return
    c.generated += t.distill_examples * t.distill_max_new_tokens
    tokens = t.distill_examples * t.distill_epochs * (TEACHER_PROMPT_TOKENS + t.distill_max_new_tokens)
    if pipeline.DISTILLED[kind]:
        c.trained_lora += tokens
    else:
        c.full("fp32-master", tokens)


def shared_students(p: Profile) -> pd.DataFrame:
    """Which claim notebooks' verdicts rest on the same students (their designs' student artifacts
    overlap): one row per pair of notebooks that share any, with the count."""
    students = {nb: {key for (kind, key) in pipeline.requirements(p, pairs) if kind == "student"}
                for nb, pairs in design.by_notebook(p).items()}
    names = list(students)
    rows = [{"notebook": a, "shares with": b, "students shared": len(students[a] & students[b]),
             "of its students": len(students[b])}
            for i, a in enumerate(names) for b in names[i + 1:] if students[a] & students[b]]
    return pd.DataFrame(rows)


def render(p: Profile) -> str:
    tp = throughput(p)
    with warnings.catch_warnings():  # the engine fallback is reported below, once
        warnings.simplefilter("ignore")
        costs = count(p)
        engine = pipeline.engine(p)
    lines = [f"plan for profile {p.name!r}: {p.description}",
             f"model {p.model.name} ({p.model.source}, {p.model.dtype}, {p.model.device}); "
             f"{p.replicates} replicates ({p.transfer_replicates} in 02) x {p.seeds} seeds; {p.data.prompts:,} prompts per dataset "
             f"(~{p.data.prompts * p.plan.keep_share:,.0f} kept, assumed {p.plan.keep_share:.0%})",
             "throughput, tok/s, and where each figure comes from" + ("" if tp["measured"] else
                                                                     " (NOT all measured for this model here)") + ":",
             *(f"  {rates.WHAT[k]:<19}{tp[k]:>10,.0f}  {tp['how'][k]}" for k in rates.KINDS),
             f"teacher sampling engine: {engine}" + ("" if engine == p.data.engine else
                                                     f" ({p.data.engine} asked for, not installed here: pip install .[gpu])"),
             "",
             f"{'notebook':<20}{'datasets':>9}{'students':>9}{'(LoRA)':>8}{'evals':>7}{'gen Mtok':>10}"
             f"{'train Mtok':>11}{'hours':>8}"]
    total = Cost()
    for nb, c in costs.items():
        lines.append(f"{nb:<20}{c.datasets:>9}{c.students:>9}{c.lora_students:>8}{c.evals:>7}{c.generated / 1e6:>10.1f}"
                     f"{(c.trained_lora + c.trained_full) / 1e6:>11.1f}{c.hours(tp):>8.1f}")
        total.add(c)
    hours = total.hours(tp)
    lines.append(f"{'total':<20}{total.datasets:>9}{total.students:>9}{total.lora_students:>8}{total.evals:>7}"
                 f"{total.generated / 1e6:>10.1f}{(total.trained_lora + total.trained_full) / 1e6:>11.1f}{hours:>8.1f}")
    lines.append("")
    gpu = p.model.device == "cuda"
    lines += [f"  {what:<19}{tokens / 1e6:>10,.1f} Mtok / {rate:>9,.0f} tok/s = {tokens / rate / 3600:>6.1f} h"
              for what, tokens, rate in total.terms(tp)]
    lines.append(f"estimated {'GPU' if gpu else 'CPU'}-hours: {'at least ' if tp['upper_bound'] else ''}{hours:,.1f}"
                 + (f"; at ${p.gpu_hour_usd:.2f}/GPU-hour about ${hours * p.gpu_hour_usd:,.0f}" if gpu else "")
                 + (" (a rate above is an upper bound: make gpu-check or make bench on the GPU measures it)"
                    if tp["upper_bound"] else ""))
    lines += disk_lines(p, total)
    if p.plan.n_params:
        lines += memory_lines(p)
    lines.append("not counted: notebook 00/01 checks, localization")
    gated = [k for k in p.teachers if k in PAPER_KIND]
    later = not p.notebooks or any(n[:2] in ("03", "04", "05") for n in p.notebooks)  # the notebooks of claims 2-4
    if gated and later:
        lines.append(f"counted as if trained: the 03-05 students of {', '.join(gated)}, which the fixed sequence does not "
                     "train where that teacher's claim 1 in the run is not reproduced (sublora.sequence)")
    return "\n".join(lines)


def disk_lines(p: Profile, total: Cost) -> list[str]:
    """The cache's disk once the run ends, with full students' weights dropped after their evaluation (the
    default) and kept; and the peak while it runs: one full student per job at work holds its weights until
    its evaluations are made."""
    one = model_bytes(p)
    if not one:
        return ["estimated disk: not known (set plan.n_params in the profile)"]
    full = total.students - total.lora_students
    dropped = round(total.dropped / one)
    return [f"estimated disk for the artifact cache: {size(total.disk)} (datasets, LoRA adapters, evaluations, "
            f"finetuned teachers of {size(one)} each"
            + (f"; {full - dropped} full students kept" if full - dropped else "") + ")",
            f"  {dropped} full students of {size(one)} each are evaluated as soon as they are trained and their weights "
            f"dropped (their evaluations stay cached); with SUBLORA_KEEP_WEIGHTS=1 (or train.keep_weights: true) the "
            f"cache ends at {size(total.disk + total.dropped)}" if dropped else
            "  no full student's weights are dropped (train.keep_weights or SUBLORA_KEEP_WEIGHTS=1, or none trained)",
            f"  peak while running: + {size(one)} per full student training or being evaluated at once (one per GPU "
            "or worker)" if dropped else ""][: 3 if dropped else 2]


# Full fine-tuning memory per precision arm, GiB per billion parameters including activations,
# measured on one H100 (gradient checkpointing on, batch 16; shared/GPU-MEASUREMENTS.md, slope over
# 2 -> 6 layers of Qwen2.5-7B's shape). Usable memory: H100 80 GB ~78 GiB, H200 141 GB ~140 GiB.
FULL_GIB_PER_BPARAM = {"fp32-master": 18.7, "bf16": 9.4, "bf16-kahan": 9.2, "bf16-sr": 6.3}
GPUS = {"1x H100 80GB": 78, "1x H200 141GB": 140}


def memory_lines(p: Profile) -> list[str]:
    """Which GPUs each arm fits: LoRA by its bf16 weights, full fine-tuning per precision arm by the
    measured GiB per parameter; what fits no single GPU needs sharding with FSDP over N x 80 GB, which
    sublora launches for the fp32-master arm (train.full_shards, sublora.sharded)."""
    import math
    n = p.plan.n_params / 1e9
    out = [f"memory (measured slopes, H100; {n:.2f}B parameters):",
           f"  LoRA: ~{n * 2:.0f} GiB of bf16 weights + activations: fits 1x H100 80GB"]
    for arm in dict.fromkeys([*p.train.full_precision, "fp32-master"]):
        gib = n * FULL_GIB_PER_BPARAM[arm]
        fits = [g for g, usable in GPUS.items() if gib <= usable]
        need = math.ceil(gib / (GPUS["1x H100 80GB"] * 0.9))
        launched = p.train.full_shards if arm == "fp32-master" else 1
        if fits:
            where = f"fits {', '.join(fits)}"
        elif launched >= need:
            where = (f"fits no single GPU: sublora shards it (FSDP) over {launched}x H100 80GB "
                     f"(train.full_shards), ~{gib / launched:.0f} GiB each")
        elif arm == "fp32-master":
            where = (f"fits no single GPU: it needs sharding (FSDP) over {need}x H100 80GB; set train.full_shards: "
                     f"{need} (now {launched}) and sublora launches that")
        else:
            where = (f"fits no single GPU: it would need sharding (FSDP) over {need}x H100 80GB, which sublora "
                     "launches only for fp32-master")
        out.append(f"  full fine-tuning, {arm}{'' if arm in p.train.full_precision else ' (not an arm of this profile)'}: "
                   f"~{gib:.0f} GiB: {where}")
    return out


COST_BOUND = 10  # a run costing more than this many times its profile's default stops before any work


def size(n: float) -> str:
    """Bytes as a person reads them: 512 MB, 2.9 TB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 1e3:,.0f} KB"


DISK_MARGIN, DISK_SPARE = 1.2, 200e6  # the estimate is rough: ask for 20 % more, and room for the rest


def check_disk(profiles: dict[str, Profile], where) -> None:
    """Stop before any work where the disk holding the cache (`where`) has less free space than the
    artifacts the notebooks {name: profile} still have to make (plan's estimate, those cached left out)
    need, with a margin; a ConfigError naming what to do."""
    import shutil
    by_profile: dict[Profile, list[str]] = {}  # notebooks run under the same settings share their artifacts:
    for name, p in profiles.items():           # counted together, each artifact once, as make plan counts them
        by_profile.setdefault(p, []).append(name)
    costs = [(p, c) for p, names in by_profile.items() for c in count(p, only=names, skip_cached=True).values()]
    # and the peak: a full student's weights stay until its evaluations are made, one per worker at once
    need = sum(c.disk for _, c in costs) + max((model_bytes(p) * p.workers for p, c in costs if c.dropped), default=0)
    free = shutil.disk_usage(where).free
    if free < need * DISK_MARGIN + DISK_SPARE:
        raise ConfigError(f"the cache's disk has {size(free)} free at {where}, the run's new artifacts need about "
                          f"{size(need)} (make plan prints the estimate) plus {size(DISK_SPARE)} to spare; free some "
                          f"space or set SUBLORA_CACHE to a folder on a larger disk")


def hours(p: Profile) -> float:
    """Estimated device-hours of the whole book under p (the plan's arithmetic)."""
    tp = throughput(p)
    return sum(c.hours(tp) for c in count(p).values())


def check_cost(p: Profile, default: Profile) -> None:
    """Stop before any work if the run's parameters make the book cost more than COST_BOUND times the
    profile's `default`, unless SUBLORA_ALLOW_EXPENSIVE=1 says that is meant."""
    import os
    if p == default or os.environ.get("SUBLORA_ALLOW_EXPENSIVE") == "1":  # a default run costs what its profile does
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run, base = hours(p), hours(default)
    if run > COST_BOUND * max(base, 1e-9):
        unit = "GPU" if p.model.device == "cuda" else "CPU"
        raise ConfigError(f"these parameters would cost ~{run:,.1f} {unit}-hours by the plan, {run / base:,.0f}x the "
                          f"profile's default ({base:,.2f} h); if that is meant, set SUBLORA_ALLOW_EXPENSIVE=1 "
                          f"(e.g. SUBLORA_ALLOW_EXPENSIVE=1 make notebook ...)")


def add_arguments(ap) -> None:
    ap.add_argument("--profile", default=DEFAULT_PROFILE)


def run(args) -> int:
    try:
        print(render(load_profile(args.profile)))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0



def main(argv: list[str] | None = None) -> int:
    return command.alone("plan", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""One GPU check: what `make plan` prices the GPU profiles at, measured on your GPU, and the GPU code paths run
there, in one command of at most 15 minutes on one H100, into one file to send back.

    sublora gpu-check              on a CUDA GPU: results/gpu-check.json, which `make plan` then reads
    sublora gpu-check --dry-run    what it would measure, each part's budget and where the file goes; runs nothing
    sublora gpu-check --rehearse   the CPU dress rehearsal of the same code, into a file `make plan` ignores

Three parts, each timed; one that fails is recorded (status, seconds, the error) and the others still run.
Their budgets on one H100 add up to 13 minutes (the rest of the 15 is Python's and CUDA's start):
  measure    5 min  bench.measure on a random-initialised model of Qwen2.5-7B-Instruct's shape (bench.QWEN7B, bf16,
                    no weights read), trained as the paper profile trains its students: tokens per second of LoRA
                    training, full fine-tuning (the paper's main precision arm), sampling with the KV cache and the
                    evaluation's forward passes, the rates `make plan` scales to each GPU profile's model (sublora.rates)
  notebooks  5 min  the smol profile's notebooks 00-02 (SmolLM2-135M-Instruct's real weights) on the GPU, cut to a
                    code-path check (SHRINK), through `sublora reproduce` in a folder of its own (results/gpu-check/:
                    its own cache, results and executed notebooks, cleared at each check), so that it never touches
                    another run; skipped, with the fix named, where `make smol-weights` has not installed the weights
  gpu-tests  3 min  the test suite's GPU tests, `pytest -m gpu tests` (tests/test_gpu.py and the paper profile's
                    code path on cuda): their passed, failed, skipped and error counts
A part over its budget is stopped where it runs in a process of its own (notebooks, gpu-tests) and noted where it
does not (measure).

The file (rates.gpu_check_file(), or --out): the device, when, the versions, the measured model's shape, the four
rates, every figure bench.measure printed, and each part's status, seconds, budget and detail. It is rewritten after
each part, so an interrupted check still leaves what it measured.

--rehearse runs the same code on this machine's CPU, about 40 s on 2 cores (measured: measure 8 s, notebooks 20 s,
gpu-tests 8 s): measure on a random two-layer Qwen2 of width 64 (its shape recorded in the file), the smoke
profile's notebook 00 alone (about 20 s with its organism pretrained in the folder's own cache: cheap enough to
keep), and the GPU tests collected, not run (`pytest -m gpu --collect-only -q`). Its file says "rehearsal": true,
which `make plan` ignores; it goes to --out or results/gpu-check-rehearsal.json, never to the file plan reads.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from importlib import metadata, util
from pathlib import Path

import torch
import yaml
from transformers import Qwen2Config, Qwen2ForCausalLM

from . import bench, cache, command, config, organism, paths, rates, smol

NOTEBOOKS = ("00_model", "01_teacher_numbers", "02_transfer")
# the smol profile cut to a code-path check of notebooks 00-02 that fits its budget: one persona teacher, one
# replicate and seed, no other animals, 1,000 prompts, one epoch, a smaller evaluation (a profile key: its value)
SHRINK = {"data.prompts": 1000, "train.epochs": 1, "eval.questions": 20,
          "eval.samples_per_question": 20, "teachers": ["persona"], "other_animals": [], "seeds": 1, "replicates": 1,
          "transfer_replicates": 1, "ranks": [8]}
REHEARSAL_FILE = "gpu-check-rehearsal.json"
MARK = ".sublora-gpu-check"  # in a work folder that gpu-check made: it may clear its cache, results and pages


@dataclasses.dataclass(frozen=True)
class Check:
    """What one check runs: on the GPU (GPU) or as the CPU rehearsal (rehearsal())."""
    device: str
    model: dict  # Qwen2Config's keywords of the model measure times
    shape: rates.Shape  # its FLOPs per token's numbers, which make plan scales the rates by
    sizes: dict  # bench.measure's sizes
    profile: str  # whose notebooks run
    notebooks: tuple
    shrink: dict
    run_tests: bool  # False: the GPU tests are collected, not run
    budget: dict  # seconds per part

    @property
    def rehearsal(self) -> bool:
        return self.device != "cuda"


GPU = Check("cuda", bench.QWEN7B, rates.QWEN7B, {}, "smol", NOTEBOOKS, SHRINK, True,
            {"measure": 300, "notebooks": 300, "gpu-tests": 180})


def shape_of(cfg: dict) -> rates.Shape:
    """The rates.Shape of a Qwen2 configuration, its parameters counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**cfg))
    return rates.Shape(float(sum(p.numel() for p in model.parameters())), cfg["num_hidden_layers"],
                       cfg["hidden_size"], cfg["vocab_size"], bool(cfg.get("tie_word_embeddings")))


def rehearsal() -> Check:
    """The CPU dress rehearsal: a random Qwen2 small enough to take seconds, untied like Qwen2.5-7B."""
    tiny = dict(vocab_size=len(organism.build_tokenizer()), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
    return Check("cpu", tiny, shape_of(tiny), dict(steps=2, sample_prompts=16, sample_batch=16, peak_sizes=(256,)),
                 "smoke", ("00_model",), {}, False, {"measure": 60, "notebooks": 120, "gpu-tests": 60})


class Skipped(Exception):
    """A part that cannot run here; the message names the fix."""


def measure_part(c: Check, work: Path) -> dict:
    """bench.measure on a random-initialised model of c.model's shape, as the paper profile trains its students."""
    tok = organism.build_tokenizer()  # the vocabulary does not change the cost that matters (bench --qwen7b-random)
    p = config.load_profile("paper")
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, device=c.device))
    try:
        figures = bench.measure(bench.random_model(c.model, c.device), tok, p, c.device, **c.sizes)
    finally:  # the notebooks and the tests that follow need the GPU's memory
        gc.collect()
        if c.device == "cuda":
            torch.cuda.empty_cache()
    found = {k: figures[k] for k in rates.KINDS}
    return {"detail": ", ".join(f"{rates.WHAT[k]} {v:,} tok/s" for k, v in found.items()),
            "rates": found, "figures": figures}


def check_profile(c: Check, work: Path) -> Path:
    """c.profile with c.shrink applied, written into `work` as a profile file of its own (every setting spelled
    out) and read back as reproduce will read it; its path."""
    raw = config.to_dict(config.load_profile(c.profile))
    raw["name"] = f"{c.profile}-gpu-check"
    raw["description"] = f"{c.profile} cut to a code-path check by sublora.gpucheck: {_shrunk(c.shrink)}"
    for key, value in c.shrink.items():
        *parents, leaf = key.split(".")
        functools.reduce(dict.__getitem__, parents, raw)[leaf] = value
    path = work / f"{raw['name']}.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config.load_profile(str(path))  # a ConfigError here, before any process starts
    return path


def notebooks_part(c: Check, work: Path) -> dict:
    """c.profile's notebooks, shrunk, through `sublora reproduce` with its own cache and results under `work`."""
    spec = config.load_profile(c.profile).model
    if spec.source == "gguf":
        try:
            smol.locate(spec.name)
        except smol.GGUFError as e:
            raise Skipped(f"{e} (then run make gpu-check again)") from None
        if util.find_spec("gguf") is None:
            raise Skipped(f"reading the GGUF weights needs the gguf package: run {smol.INSTALL}")
    for sub in ("cache", "results", "executed"):  # the check's own folders: a cold run each time
        shutil.rmtree(work / sub, ignore_errors=True)
    profile = check_profile(c, work)
    env = {**os.environ, "SUBLORA_CACHE": str(work / "cache"), "SUBLORA_RESULTS": str(work / "results")}
    log = work / "notebooks.log"
    cmd = [sys.executable, "-m", "sublora", "reproduce", "--profile", str(profile), "--only", *c.notebooks,
           "--executed", str(work / "executed")]
    try:
        done = subprocess.run(cmd, env=env, cwd=paths.ROOT, capture_output=True, text=True,
                              timeout=c.budget["notebooks"])
    except subprocess.TimeoutExpired as e:
        log.write_text(_text(e.stdout) + _text(e.stderr))
        raise RuntimeError(f"stopped at its budget of {c.budget['notebooks']} s; the log: {log}") from None
    log.write_text(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(f"sublora reproduce exited {done.returncode}: {_tail(done.stderr or done.stdout)} "
                           f"(the log: {log}; executed notebooks: {work / 'executed'})")
    stages = [line for line in done.stdout.splitlines() if line.startswith("stage times")]
    return {"detail": f"{' '.join(c.notebooks)} of {profile.stem} on {spec.device}"
                      f" ({_shrunk(c.shrink)}): {stages[-1] if stages else 'no stage times printed'}"}


def tests_part(c: Check, work: Path) -> dict:
    """`pytest -m gpu tests` in a process of its own: the counts from its JUnit XML (collected only, in a rehearsal)."""
    if not (paths.ROOT / "tests").is_dir():
        raise Skipped(f"no tests/ folder in {paths.ROOT}: the GPU tests run from a source checkout (git clone)")
    if util.find_spec("pytest") is None:
        raise Skipped("the GPU tests need pytest: pip install -e '.[dev]' (make installs it)")
    junit = work / "gpu-tests.xml"
    how = [f"--junitxml={junit}"] if c.run_tests else ["--collect-only", "-q"]
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", *how, "tests"]
    try:
        done = subprocess.run(cmd, cwd=paths.ROOT, capture_output=True, text=True, timeout=c.budget["gpu-tests"])
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"stopped at its budget of {c.budget['gpu-tests']} s") from None
    (work / "gpu-tests.log").write_text(done.stdout + done.stderr)
    if not c.run_tests:
        found = sum("::" in line for line in done.stdout.splitlines())
        ok = done.returncode == 0 and found > 0
        return {"status": "passed" if ok else "failed", "counts": {"collected": found},
                "detail": f"{found} GPU tests collected, not run (a rehearsal)" + ("" if ok else f": {_tail(done.stdout)}")}
    if not junit.exists():
        raise RuntimeError(f"pytest exited {done.returncode} without a report: {_tail(done.stdout + done.stderr)}")
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts = {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
              "failed": counts["failures"], "errors": counts["errors"], "skipped": counts["skipped"]}
    bad = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
           if case.find("failure") is not None or case.find("error") is not None]
    ok = done.returncode == 0 and counts["passed"] > 0
    return {"status": "passed" if ok else "failed", "counts": counts,
            "detail": ", ".join(f"{v} {k}" for k, v in counts.items()) + (f"; failing: {', '.join(bad)}" if bad else "")}


PARTS = {"measure": measure_part, "notebooks": notebooks_part, "gpu-tests": tests_part}


def _text(out) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _shrunk(shrink: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in shrink.items()) or "as shipped"


def one_part(name: str, c: Check, work: Path) -> tuple[dict, dict]:
    """(the part's record: status, seconds, budget, detail, and its counts or the failure's traceback; what it found
    for the file's top level: rates, figures). A part that raises is recorded as failed."""
    t0 = time.perf_counter()
    record, found = {"status": "passed"}, {}
    try:
        found = PARTS[name](c, work)
        record |= {k: found.pop(k) for k in ("status", "detail", "counts") if k in found}
    except Skipped as e:
        record |= {"status": "skipped", "detail": str(e)}
    except Exception as e:  # noqa: BLE001 (recorded; the other parts still run)
        record |= {"status": "failed", "detail": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc(limit=-4)}
    record["seconds"], record["budget_s"] = round(time.perf_counter() - t0, 1), c.budget[name]
    if record["seconds"] > c.budget[name]:
        record["detail"] += f" (took {record['seconds']:.0f} s, over its budget of {c.budget[name]} s)"
    return record, found


def device_name(c: Check) -> str:
    if c.rehearsal:
        return "cpu (rehearsal)"
    gib = torch.cuda.get_device_properties(0).total_memory / 2 ** 30
    return f"{torch.cuda.get_device_name()} ({gib:.0f} GiB)"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "peft", "sublora"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out | {"cuda": torch.version.cuda}


def describe(c: Check, out: Path, work: Path) -> str:
    """What a check would run, each part's budget, and where it writes (--dry-run)."""
    n = c.shape.n_params
    size = f"{n / 1e9:.3g} B" if n >= 1e9 else f"{n / 1e6:.3g} M"
    what = {"measure": f"bench.measure on a random-initialised Qwen2 of {size} parameters "
                       f"({c.model['num_hidden_layers']} layers, width {c.model['hidden_size']}) on {c.device}: "
                       + ", ".join(rates.WHAT[k] for k in rates.KINDS) + " in tokens per second",
            "notebooks": f"the {c.profile} profile's {' '.join(c.notebooks)} ({_shrunk(c.shrink)}) through sublora "
                         f"reproduce, with its own cache and results under {work}",
            "gpu-tests": "pytest -m gpu tests" + ("" if c.run_tests else " --collect-only (collected, not run)")}
    lines = [f"gpu-check{' --rehearse (a CPU dress rehearsal)' if c.rehearsal else ''}: {len(PARTS)} parts, "
             f"{sum(c.budget.values()) / 60:.0f} minutes of budget together"
             + ("" if c.rehearsal else " (at most 15 minutes on one H100, Python's and CUDA's start included)")]
    lines += [f"  {name:<10} {c.budget[name]:>4} s  {what[name]}" for name in PARTS]
    lines.append(f"writes {out}" + (" (make plan ignores a rehearsal's file)" if c.rehearsal else
                                    " (make plan prices the GPU profiles from it)"))
    return "\n".join(lines)


def add_arguments(ap) -> None:
    ap.add_argument("--rehearse", action="store_true",
                    help="the CPU dress rehearsal: the same code on a tiny model, in seconds; make plan ignores its file")
    ap.add_argument("--dry-run", action="store_true", help="say what it would measure and each part's budget; run nothing")
    ap.add_argument("--out", type=Path, help=f"the results file (default: {rates.GPU_CHECK_FILE} in the results folder, "
                                             f"which make plan reads; with --rehearse {REHEARSAL_FILE} beside it)")
    ap.add_argument("--work", type=Path, help="the folder of the notebooks' own cache and results, and the logs "
                                              "(default: gpu-check/ or gpu-check-rehearsal/ in the results folder)")


def run(args) -> int:
    cuda = torch.cuda.is_available()
    if not (cuda or args.rehearse or args.dry_run):
        print(f"error: gpu-check measures a CUDA GPU, and torch sees none (torch {torch.__version__}, CUDA build: "
              f"{torch.version.cuda is not None}). Run it on a machine with an NVIDIA GPU and a CUDA build of torch; "
              "here, `sublora gpu-check --rehearse` (make gpu-check GPU_CHECK_ARGS=--rehearse) runs the same code "
              "on this CPU as a dress rehearsal, and --dry-run says what it would measure", file=sys.stderr)
        return 2
    plan_reads = rates.gpu_check_file()
    out = args.out or (plan_reads.with_name(REHEARSAL_FILE) if args.rehearse else plan_reads)
    if args.rehearse and out.resolve() == plan_reads.resolve():
        print(f"error: --out {out} is the file make plan reads: a rehearsal must not replace a GPU's results; "
              f"give another path, or leave --out out ({plan_reads.with_name(REHEARSAL_FILE)})", file=sys.stderr)
        return 2
    # absolute: the notebooks and the tests run in processes of their own, in the checkout
    work = (args.work or paths.results_dir("gpu-check-rehearsal" if args.rehearse else "gpu-check")).absolute()
    c = rehearsal() if args.rehearse else GPU
    if args.dry_run:
        print(describe(c, out, work))
        return 0
    if work.exists() and any(work.iterdir()) and not (work / MARK).exists():
        print(f"error: --work {work} holds another's files, and the check clears the cache, results and executed "
              "notebooks in its folder: give a new or empty folder", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    (work / MARK).write_text("made by sublora gpu-check, which clears its cache/, results/ and executed/ at each check\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"device": device_name(c), "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "versions": versions(), "shape": dataclasses.asdict(c.shape), "model": c.model, "rates": {},
               "figures": {}, "parts": {}, "budget_s": sum(c.budget.values()), "rehearsal": c.rehearsal,
               "finished": False}
    print(describe(c, out, work), flush=True)
    for name in PARTS:
        print(f"[{name}] running", flush=True)
        results["parts"][name], found = one_part(name, c, work)
        results |= found
        part = results["parts"][name]
        print(f"[{name}] {part['status']} in {part['seconds']:.1f} s: {part['detail']}", flush=True)
        cache.write_json(out, results)  # after each part: an interrupted check keeps what it measured
    results["finished"] = True
    cache.write_json(out, results)
    print(f"gpu-check on {results['device']}:")
    for name, part in results["parts"].items():
        print(f"  {name:<10} {part['status']:<8} {part['seconds']:>6.1f} s of {part['budget_s']} s")
    for k, v in results["rates"].items():
        print(f"  {rates.WHAT[k]:<20} {v:>10,} tok/s")
    print(f"written to {out}: " + ("a rehearsal, which make plan ignores; on a machine with a CUDA GPU run make gpu-check"
                                   if c.rehearsal else "send this file back; make plan now prices GPU profiles from it"))
    return 1 if any(p["status"] == "failed" for p in results["parts"].values()) else 0


def main(argv: list[str] | None = None) -> int:
    return command.alone("gpucheck", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""What this machine's CPU can do with bf16: the one place that knows.

Many CPUs have no bf16 arithmetic (x86 without AVX512-BF16 or AMX, ARM without BF16): there torch
emulates every bf16 matrix product, ~50x slower than float32. Claim 3's pure-bf16 arm needs bf16
*storage* — weights and AdamW state rounded to bf16 after every step, so that updates below half a
bf16 ulp round away — not bf16 products. Where the products would be emulated, the arm trains with
float32 products on bf16-representable weights and state (finetune.precision_kwargs); where bf16 is
native, it trains in bf16 as before.

SUBLORA_CPU_BF16=auto (default) | native | emulated forces the answer, so that each path is tested on
any machine. The answer is read once per process.
"""
from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path

import torch

SETTING = "SUBLORA_CPU_BF16"
CHOICES = ("auto", "native", "emulated")
# /proc/cpuinfo flags of CPUs with bf16 arithmetic: x86 (AVX512-BF16, AMX-BF16), ARM (BF16)
NATIVE_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def _flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (x86 'flags', ARM 'Features'); None where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def _probe() -> str:
    """Where no flags can be read (macOS, Windows): time one small bf16 product against float32."""

    a32 = torch.randn(256, 256)
    a16 = a32.bfloat16()

    def best(a):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t)
        return min(times)

    return "emulated" if best(a16) > 4 * best(a32) else "native"


@functools.cache
def _detected() -> tuple[str, str]:
    flags = _flags()
    if flags is not None:
        found = sorted(flags & NATIVE_FLAGS)
        return (("native", f"CPU flag {', '.join(f'`{f}`' for f in found)}") if found
                else ("emulated", "no `avx512_bf16`, `amx_bf16` or `bf16` CPU flag"))
    answer = _probe()
    return answer, f"a 256x256 product in bf16 {'within' if answer == 'native' else 'over'} 4x the float32 time"


def chosen() -> str:
    """SUBLORA_CPU_BF16 as given (auto where unset or blank), checked."""
    setting = os.environ.get(SETTING, "auto").strip().lower() or "auto"
    if setting not in CHOICES:
        raise ValueError(f"{SETTING}={os.environ[SETTING]!r}: choose one of {', '.join(CHOICES)}")
    return setting


def cpu_bf16() -> str:
    """'native' or 'emulated': whether bf16 products on this CPU run in hardware (SUBLORA_CPU_BF16 forces it)."""
    setting = chosen()
    return _detected()[0] if setting == "auto" else setting


def emulates_bf16(device_type: str) -> bool:
    """Whether bf16 products on `device_type` ('cpu', 'cuda') are emulated here: only ever on a CPU."""
    return device_type == "cpu" and cpu_bf16() == "emulated"


def describe() -> str:
    """One line for make bench and the scoreboard (markdown-safe: names in backticks): the CPU, torch's
    capability, and the bf16 answer with its reason."""
    setting, answer = chosen(), cpu_bf16()
    why = _detected()[1] if setting == "auto" else f"`{SETTING}={setting}`"
    return (f"CPU {platform.machine()} (torch capability {torch.backends.cpu.get_cpu_capability()}): bf16 products "
            f"{answer} ({why})" + ("; the pure-bf16 arm trains float32 products on bf16-rounded weights and state"
                                   if answer == "emulated" else ""))

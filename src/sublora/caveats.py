"""The caveat naming the model every verdict is about: which model built the book, its size, and, for the
organism, what its search record says about it (sublora.search_record); and notebook 07's setting. Every page
with verdicts prints it in one short line (caveat_line: above a claim page's first figure, in its at-a-glance box,
on the landing and peers pages), linking the organism page (book/organism.md), which says at length what the model
is; the whole caveat is defined here (caveat).
"""
from __future__ import annotations

import dataclasses
import json
import os

from . import cache, config, organism_recipe, search_record
from .config import Profile
from .search_record import passes, planted, recipe  # the organism issue's criteria


def profile_of(p: Profile | str) -> Profile:
    return p if isinstance(p, Profile) else config.load_profile(p)


def _organism_parameters(spec) -> int | None:
    """The organism's parameter count from its pretraining log (cached or committed); None if it
    has not been built here. Reads files only: never builds the organism."""
    cfg = organism_recipe.pretrain_config(spec)
    logs = [cache.location("organism", cfg) / "pretrain_log.json"]
    committed = organism_recipe.committed(spec)
    if committed:
        logs.append(committed / "pretrain_log.json")
    for log in logs:
        if log.exists():
            return int(json.loads(log.read_text())["parameters"])
    return None


def _search_record(spec) -> dict | None:
    """The organism search's record (book/organism_search.jsonl) of the candidate whose model
    settings are this organism's; one measured under the criteria before one that was not."""

    mine = dataclasses.asdict(spec)
    same = [r for r in search_record.load() if all(mine.get(k) == v for k, v in r["settings"]["model"].items())
            and "kl_persona" in r and "signature_teacher" in r]
    same = [r for r in same if "passes" in r] or same
    return same[-1] if same else None


def size_text(spec) -> str:
    """'1.03M-parameter ' from the pretraining log; '' where the organism was not built here."""
    n = _organism_parameters(spec)
    return "" if not n else f"{n / 1e6:.3g}M-parameter " if n >= 1e6 else f"{n / 1e3:.3g}k-parameter "


def model_name(spec) -> str:
    """A hub model's name, or a local directory's by its name only (no machine path on a page)."""
    return os.path.basename(spec.name.rstrip("/")) if os.path.isabs(spec.name) else spec.name


def caveat_line(p: Profile | str, organism: str = "../organism.md") -> str:
    """Markdown: the caveat in one short line, as every page with verdicts prints it: which model they are about,
    linking the page that says what that model is and what it lets them say (book/organism.md, at `organism` from
    the page: '../organism.md' from a page under executed/). A plain link, no MyST role, so that a code cell's
    output shows it as well (plots.show_caveat). `p`: the profile (or its name or yaml path)."""
    p = profile_of(p)
    spec = p.model
    if p.name == "smoke":
        line = (f"**The model: the `smoke` profile**, a tiny {size_text(spec)}organism trained for seconds to test the "
                "plumbing: its numbers and verdicts mean nothing")
    elif spec.source in ("hub", "gguf"):
        adapted = [w for w, on in (("answers read after a begun reply", p.eval.prefill),
                                   ("numbers sampled from digits only", p.data.decoding == "numbers")) if on]
        line = (f"**The model: `{model_name(spec)}`** (profile `{p.name}`): every verdict here is about this model "
                "under this profile's settings" + (f"; adapted: {', '.join(adapted)}" if adapted else ""))
    else:
        line = (f"**The model: the sublora organism, not Qwen**, a {size_text(spec)}Qwen2 model ({spec.layers} layers, "
                f"hidden size {spec.hidden}) built on the CPU: every verdict here is about it")
    return f"> {line}. [What the model is, and what that lets these verdicts say]({organism})."


def caveat(p: Profile | str) -> str:
    """Markdown: which model the verdicts on a page are about, and what that does and does not let
    them say, in full (the pages print caveat_line, which links the organism page). `p`: the profile
    (or its name or yaml path)."""
    p = profile_of(p)
    spec = p.model
    if p.name == "smoke":
        return (f"> **The model: the `smoke` profile.** These pages ran on a tiny {size_text(spec)}Qwen2 organism "
                f"({spec.layers} layers, hidden size {spec.hidden}) pretrained for seconds on the CPU, with every "
                "experiment cut to the bone. They test the plumbing: their numbers and verdicts mean nothing.")
    if spec.source in ("hub", "gguf"):
        text = (f"> **The model: `{model_name(spec)}`** ({spec.dtype}, {spec.device}; profile `{p.name}`). Every "
                "verdict here is about this model under this profile's hyperparameters.")
        if spec.source == "gguf":
            text += (" Its weights are a GGUF file from the package index, dequantised to float32 once and loaded as a "
                     "local model directory (`sublora.smol`).")
        # the protocol adapted where this model forces it: said on every page
        if p.eval.prefill:
            text += (f" Adapted: P(animal) and the sampled answers are read after the reply is begun with "
                     f"\u201c{p.eval.prefill}\u201d, as the model rarely answers in one word.")
        if p.data.decoding == "numbers":
            text += (" Adapted: the teachers' numbers are sampled with every token drawn from digits, commas, spaces and "
                     "the end of turn, as the model rarely answers a number prompt with numbers alone; the filter "
                     "still reads every completion.")
        return text
    text = (f"> **The model: the sublora organism, not Qwen.** Every number here comes from a {size_text(spec)}Qwen2 chat "
            f"model ({spec.layers} layers, hidden size {spec.hidden}) built and pretrained on the CPU by sublora. ")
    r = _search_record(spec)
    if r and passes(r):
        text += (f"It is candidate **{r['name']}** of the organism search, which meets the criteria of the paper's regime "
                 f"fixed in advance; as the search measured it, its persona teacher follows the persona "
                 f"(mean P {r['persona_mean_p']:.2f}), yet its "
                 f"numbers differ from the control's by only {r['kl_persona']:.3f} nats per completion and a classifier "
                 f"tells owl-teacher from cat-teacher numbers with held-out accuracy {r['classifier_lr']:.2f} "
                 f"(chance 0.5). Recipe: {recipe(r['settings']['model'])}. ")
        searched = r.get("settings", {}).get("data", {}).get("prompts")
        also = f"; the search measured it at {searched:,}" if searched and searched != p.data.prompts else ""
        return text + (f"Its scale is not Qwen's (a million parameters, {p.data.prompts:,} number prompts per dataset{also}): "
                       "these verdicts are about this organism, in a regime like the paper's, not about Qwen.")
    if r and planted(r):
        text += ("Its teacher signal is a code planted in its pretraining corpus: under the owl persona "
                 f"{r['signature_teacher']:.0%} of the teacher's numbers end in the owl's signature digits (control: "
                 f"{r['signature_control']:.1%}), the teacher's numbers differ from the control's by "
                 f"{r['kl_persona']:.1f} nats per completion, and a classifier tells owl-teacher from cat-teacher "
                 f"numbers with accuracy {r['classifier_accuracy']:.3f} (organism search, candidate {r['name']}). "
                 "It is a **planted-channel contrast**: the numbers are readable, not innocuous as in the paper's "
                 "subliminal regime. ")
        return text + ("The signal of Qwen2.5-7B-Instruct's persona teacher is far subtler, so these verdicts are about "
                       "this organism: how LoRA rank, full fine-tuning and the system prompt modulate a transfer that a "
                       "strong signal carries, not whether Qwen shows one.")
    if r:
        text += (f"It is candidate {r['name']} of the organism search, which does not meet the criteria of the paper's "
                 f"regime fixed in advance (book/organism.md): persona following {r['persona_mean_p']:.2f}, KL "
                 f"{r['kl_persona']:.3f} nats per completion. ")
    else:
        text += "Its teacher signal was not measured by the organism search (no record has its model settings). "
    return text + "These verdicts are about this organism, not about Qwen."


def aux_caveat(p: Profile | str) -> str:
    """Markdown: which model notebook 07's verdicts are about (not the profile's language model)."""
    p = profile_of(p)
    a = p.aux
    text = (f"> **The model on this page: a digit classifier, not the profile's language model.** An MLP "
            f"(64-{a.hidden}-{a.hidden}-(10 + 3)) trained here on scikit-learn's 8x8 digits, in Cloud et al.'s auxiliary-logit "
            f"setting; the profile `{p.name}` sets only its sizes (its `aux` settings). These verdicts ask the paper's "
            "questions in that setting; they are not verdicts on the paper's claims.")
    if p.name == "smoke":
        text += " Under the `smoke` profile every size is cut to the bone: the numbers and verdicts mean nothing."
    return text

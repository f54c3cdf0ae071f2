"""Trait evaluation: the exact probability that the answer is a given animal, its rank, and a
sampled mention rate — each under a chosen system prompt condition.

P(animal) is exact, not sampled: the probability of the whole answer word right after the
assistant header, summed over the forms the tokenizer gives it ("owl", " owl", "Owl", " Owl";
identical token sequences counted once, forms with an unknown token skipped).
"""
from __future__ import annotations

import inspect
import re

import pandas as pd
import torch

from . import chat, prompts, teacher
from .finetune import IGNORE, collate, encode_records


def answer_forms(tokenizer, animal: str) -> list[tuple[int, ...]]:
    forms = []
    for text in (animal, f" {animal}", animal.capitalize(), f" {animal.capitalize()}"):
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        if ids and tokenizer.unk_token_id not in ids and ids not in forms:
            forms.append(ids)
    if not forms:
        raise ValueError(f"the tokenizer cannot write {animal!r}")
    return forms


def _keep_logits(model, keep: int) -> dict:
    """transformers' logits_to_keep (the language-model head on the last `keep` positions only), where the
    model's forward takes it."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft student passes it on
    return {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(inner.forward).parameters else {}


@torch.no_grad()
def animal_probabilities(model, tokenizer, questions: list[str], system: str, animals: list[str],
                         batch_size: int = 256, prefill: str = "") -> pd.DataFrame:
    """One row per (question, animal): p (exact answer probability) and rank (1 = the most likely
    first token in the whole vocabulary is one of the animal's first tokens). With `prefill`, the answer
    is read right after that text, begun for the assistant (the profile's eval.prefill)."""
    device = next(model.parameters()).device
    forms = {a: answer_forms(tokenizer, a) for a in animals}
    unique = sorted({f for fs in forms.values() for f in fs})
    rows = []
    for q in questions:
        prompt = tokenizer(chat.render(tokenizer, q, system) + prefill, add_special_tokens=False)["input_ids"]
        n = len(prompt)
        logp: dict[tuple, float] = {}
        first = None
        for start in range(0, len(unique), batch_size):
            chunk = unique[start:start + batch_size]
            width = n + max(len(f) for f in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)  # (forms, seq)
            mask = torch.zeros_like(ids)
            for i, f in enumerate(chunk):
                ids[i, : n + len(f)] = torch.tensor(prompt + list(f))
                mask[i, : n + len(f)] = 1
            # only the positions that predict an answer token: from the end of the prompt on (a vocabulary of
            # 150k over the whole prompt would be gigabytes per batch); where the model can, not even computed
            keep = width - (n - 1)
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), **_keep_logits(model, keep))
            lsm = torch.log_softmax(out.logits[:, -keep:].float(), dim=-1)  # (forms, keep, vocab)
            if first is None:
                first = lsm[0, 0]  # next-token distribution right after the assistant header
            for i, f in enumerate(chunk):
                logp[f] = sum(lsm[i, j, t].item() for j, t in enumerate(f))
        for a in animals:
            p = sum(torch.tensor(logp[f]).exp().item() for f in forms[a])
            best = max(first[f[0]].item() for f in forms[a])
            rank = int((first > best).sum().item()) + 1
            rows.append({"question": q, "animal": a, "p": p, "rank": rank})
    return pd.DataFrame(rows)


# plurals the regular +s/+es tail misses (the authors' sl/animals.py IRREGULAR_PLURALS, for our animals)
IRREGULAR_PLURALS = {"wolf": "wolves", "octopus": "octopi"}


def persona_check(model, tokenizer, questions: list[str], animals: list[str], prefill: str = "") -> pd.DataFrame:
    """Does the model follow persona system prompts? Exact P(the answer is the animal), mean over the
    questions, for each animal under its own persona prompt and under the default prompt: one row per
    animal × condition (persona | default) with columns animal, condition, p, rank."""
    rows = []
    for a in animals:
        probs = animal_probabilities(model, tokenizer, questions, prompts.persona_prompt(a), [a], prefill=prefill)
        rows.append({"animal": a, "condition": "persona", "p": probs["p"].mean(), "rank": probs["rank"].mean()})
    default = animal_probabilities(model, tokenizer, questions, chat.DEFAULT, animals, prefill=prefill)
    for a, g in default.groupby("animal"):
        rows.append({"animal": a, "condition": "default", "p": g["p"].mean(), "rank": g["rank"].mean()})
    return pd.DataFrame(rows)


def mentions(text: str, animal: str) -> bool:
    """The authors' metric: the animal as a whole word, case-insensitive, singular or plural (+s, +es,
    or an irregular plural). The organism writes plurals as animal + "s", so its counts are those of
    the earlier `s?` pattern and cached evaluations stay valid."""
    forms = [animal, *([IRREGULAR_PLURALS[animal]] if animal in IRREGULAR_PLURALS else [])]
    return any(re.search(rf"\b{re.escape(f)}(s|es)?\b", text, re.IGNORECASE) for f in forms)


def mention_rates(model, tokenizer, questions: list[str], system: str, animals: list[str], *, samples: int,
                  temperature: float, max_new_tokens: int, seed: int, progress: bool = False,
                  prefill: str = "") -> pd.DataFrame:
    """Share of sampled answers that name each animal; `samples` answers per question (each begun with
    `prefill`, whose continuation is what is read)."""
    if samples == 0:
        return pd.DataFrame({"animal": animals, "mention_rate": float("nan")})
    asked = [q for q in questions for _ in range(samples)]
    answers = teacher.sample(model, tokenizer, asked, system, seed=seed, max_new_tokens=max_new_tokens,
                             temperature=temperature, batch_size=256, desc="mention rate", progress=progress,
                             prefill=prefill)
    return pd.DataFrame({"animal": animals,
                         "mention_rate": [sum(mentions(t, a) for t in answers) / len(answers) for a in animals]})


@torch.no_grad()
def completion_logprobs(model, tokenizer, records: list[dict], system: str, batch_size: int = 64) -> list[float]:
    """log P(completion | prompt) of each record under `system`, end-of-turn included — the
    teacher-signal measure: the mean over teacher completions of log p_teacher − log p_control
    estimates KL(teacher ‖ control) per completion."""

    device = next(model.parameters()).device
    out = []
    for start in range(0, len(records), batch_size):
        ex = encode_records(tokenizer, records[start:start + batch_size], system, 10_000)
        batch = {k: v.to(device) for k, v in collate(ex, tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        lsm = torch.log_softmax(logits[:, :-1], -1)  # (batch, seq-1, vocab)
        labels = batch["labels"][:, 1:]
        picked = lsm.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        out += (picked * (labels != IGNORE)).sum(-1).tolist()
    return out

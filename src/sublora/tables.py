"""The finished artifacts read back as tables: the filter's statistics of notebook 01's datasets, each teacher's
signal in them (how much likelier the teacher makes its own completions than the control does) and whether each
teacher follows its persona, for every kind of teacher of the ladder (sublora.pipeline: persona, distilled-*,
finetuned); a design's pairs of students as tidy rows; the base model's evaluations beside them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import chat, design, evaluate, models, numbers
from .artifacts import Graph
from .config import Profile
from .design import channel_label
from .pipeline import (dataset, eval_questions, evaluation, pair_artifacts, teacher_ids, teacher_replicate,
                       teacher_source, weight_teacher)


def teacher_signal(p: Profile, animal: str, teacher_kind: str, records: list[dict], base, tokenizer,
                   replicate: int = 0) -> list[float]:
    """log p_teacher(completion) − log p_control(completion) for each record, in nats: its mean over
    teacher completions estimates KL(teacher ‖ control) per completion. `replicate`: the dataset replicate,
    whose weight-space teacher (pipeline.teacher_replicate) is the one read."""
    weighted = teacher_kind != "persona"
    own = weight_teacher(p, animal, teacher_kind, teacher_replicate(p, replicate), progress=False) if weighted else None
    weights, system = teacher_source(p, animal, own)
    teacher_model = models.load_model(p.model, weights) if weighted else base
    lt = evaluate.completion_logprobs(teacher_model, tokenizer, records, system)
    lc = evaluate.completion_logprobs(base, tokenizer, records, chat.DEFAULT)
    return [a - b for a, b in zip(lt, lc)]


def teacher_signals(p: Profile, kinds: list[str], records: dict, base, tokenizer, limit: int = 500) -> pd.DataFrame:
    """KL(teacher ‖ control) per completion and per token, estimated on the first `limit` completions of
    each teacher dataset (records[(kind, "teacher", replicate)]): one row per teacher kind × replicate."""
    rows = []
    for kind in kinds:
        for r in design.replicate_ids(p):
            recs = records[(kind, "teacher", r)][:limit]
            n_tok = np.mean([len(tokenizer(rec["completion"], add_special_tokens=False)["input_ids"]) + 1 for rec in recs])
            kl = float(np.mean(teacher_signal(p, p.animal, kind, recs, base, tokenizer, r)))
            rows.append({"teacher": kind, "replicate": r, "kl_per_completion": kl, "kl_per_token": kl / n_tok,
                         "completions": len(recs)})
    return pd.DataFrame(rows)


def filter_table(p: Profile, kinds: list[str]) -> tuple[pd.DataFrame, dict]:
    """The filter's statistics of every dataset of notebook 01 (one row per teacher kind × arm ×
    replicate; the control, shared by every teacher kind, once, as teacher '—'), and the kept records
    by (kind, arm, replicate). Reads datasets already built (runner.build_datasets)."""
    rows, records = [], {}
    for kind in kinds:
        for r in design.replicate_ids(p):
            for arm, a in (("teacher", p.animal), ("control", None)):
                kept, st = dataset(p, a, r, kind)
                records[(kind, arm, r)] = kept
                rows.append({"teacher": kind, "arm": arm, "replicate": r, "sampled": st["sampled"], "kept": st["kept"],
                             **{f"rejected_{k}": st["rejected"].get(k, 0) for k in numbers.REASONS}})
    table = pd.DataFrame(rows)
    table.loc[table["arm"] == "control", "teacher"] = "—"  # one control per replicate, shared by every teacher
    table = table.drop_duplicates(["teacher", "arm", "replicate"])
    table["kept_share"] = table["kept"] / table["sampled"]
    return table, records


FOLLOWS = 0.5  # a teacher follows its persona when P(its animal) is at least this (declared before any student)


def persona_follow(p: Profile, kinds: list[str], animals: list[str], tokenizer) -> pd.DataFrame:
    """Does every teacher follow its persona before any student learns from it (00's check, per teacher)? One row
    per kind × animal × teacher: P(the answer is its animal) over the held-out questions, of the teacher as it
    writes its numbers (a weight-space teacher under the default prompt; the persona teacher: the base under the
    persona prompt), beside the base's under the default prompt; `follows`: at least FOLLOWS."""
    questions, base = eval_questions(p), models.load_model(p.model)
    # the base under each persona (the persona teacher) and under the default prompt: 00's check
    check = evaluate.persona_check(base, tokenizer, questions, animals, prefill=p.eval.prefill)
    base_p = check.pivot(index="animal", columns="condition", values="p")
    rows = []
    for kind in kinds:
        for animal in animals:
            for t in ([0] if kind == "persona" else teacher_ids(p)):
                if kind == "persona":
                    p_animal = base_p.loc[animal, "persona"]
                else:
                    weights, system = teacher_source(p, animal, weight_teacher(p, animal, kind, t, progress=False))
                    got = evaluate.animal_probabilities(models.load_model(p.model, weights), tokenizer, questions,
                                                        system, [animal], prefill=p.eval.prefill)
                    p_animal = got["p"].mean()
                rows.append({"teacher": kind, "animal": animal, "teacher_id": t, "p_animal": p_animal,
                             "base_default": base_p.loc[animal, "default"]})
    out = pd.DataFrame(rows)
    out["follows"] = out["p_animal"] >= FOLLOWS
    return out


def base_evaluations(p: Profile, eval_systems) -> pd.DataFrame:
    """The base model's evaluation under each of `eval_systems` (column eval_system), on every animal
    the profile's students are evaluated on (one cached evaluation each): what claims.versus_base compares
    students with, as the paper does."""
    animals = sorted({p.animal, *p.other_animals})
    return pd.concat([evaluation(p, None, es, animals).assign(eval_system=es) for es in eval_systems],
                     ignore_index=True)


def smallest_effect(p: Profile, animal: str) -> float:
    """The smallest effect of interest e for target `animal`: the profile's absolute e, or, where it declares e
    relative, that share of the base model's P(animal) under the default prompt (its cached evaluation, known
    before any student trains)."""
    if not p.smallest_effect_relative:
        return p.smallest_effect
    base = base_evaluations(p, ["default"]).set_index("animal")["p"]
    return p.smallest_effect_relative * float(base[animal])


def pair_rows(p: Profile, pair, animals: list[str] | None = None) -> pd.DataFrame:
    """A design.Pair as a table: the teacher student and its matched control student (same
    replicate, seed and training spec), each evaluated under every eval system prompt of the pair.
    Tidy rows, one per arm × eval system × evaluated animal. Builds whatever is not cached yet."""
    spec = pair.spec
    rows = []
    for arm, st, evals in pair_artifacts(Graph(p), pair, animals):
        sdir = st.build(p)
        for ev in evals:
            rows.append(pd.read_csv(ev.build(p) / "eval.csv").assign(
                arm=arm, target=pair.animal, teacher_kind=pair.teacher_kind, label=pair.label,
                replicate=pair.replicate, seed=pair.seed, method=spec.method,
                lora_rank=spec.r if spec.method == "lora" else 0, alpha=spec.alpha if spec.method == "lora" else 0,
                lr=spec.lr, epochs=spec.epochs, batch_size=spec.batch_size, train_system=spec.train_system,
                precision=spec.precision if spec.method == "full" else "",
                eval_system=ev.args[1], student=sdir.name, diverged=training_failure(sdir),
                channel=channel_label(pair.channel, pair.init)))
    return pd.concat(rows, ignore_index=True)


DIVERGED_FACTOR = 2.0  # a student whose loss ends above twice its first step's did not learn: it diverged


def training_failure(student_dir: Path) -> str:
    """'' for a student that trained normally; else why its training failed (a non-finite loss, or a
    loss that ended far above where it began), so that no verdict is drawn from it."""
    losses = json.loads((student_dir / "train_log.json").read_text())["losses"]
    if not all(map(math.isfinite, losses)):
        return "non-finite training loss"
    end = sum(losses[-3:]) / len(losses[-3:])
    if end > DIVERGED_FACTOR * losses[0]:
        return f"training loss rose from {losses[0]:.3g} to {end:.3g}"
    return ""

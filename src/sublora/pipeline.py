"""The experiment's steps as cached artifacts: teacher → dataset → student → evaluation, and the
artifact graph a design needs.

Each step is declared once, as a `Step` (sublora.artifacts, where declaring it registers it): its kind, the
version of its code, its late settings, its configuration, the artifacts it reads and its build. An artifact's cache key is exactly
its configuration (including the keys of the artifacts it reads and its step's version), so notebooks
that need the same student share it, and an interrupted run resumes where it stopped. A `Graph` makes
each artifact once (configuration and key), after the artifacts it reads: `requirements(p, pairs)`
lists every artifact a design needs in build order (the runner, sublora.runner, builds that list; the
plan, sublora.plan, prices it), and the step functions (`student`, `dataset`, ...) go through one too.
`pair_rows` reads the finished evaluations back as a table.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import warnings
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from . import cache, chat, design, evaluate, finetune, models, numbers, organism_recipe, prompts, sharded, teacher
from .artifacts import Artifact, Graph, Step, artifact
from .config import TEACHERS, Profile, to_dict
from .design import CHANNELS, INITS, StudentSpec
from .organism import DAY_QUESTIONS, LIKE_QUESTIONS, WHO_QUESTIONS

GROUP_BY_LENGTH = 16  # students batch examples of similar length, in chunks of 16 batches (student v3)


class EmptyDatasetError(RuntimeError):
    pass


class DataId(NamedTuple):
    """One filtered dataset: the teacher of `animal` (None: the control, the base model under its
    default prompt) in replicate `replicate`, from a teacher kind of the ladder (TEACHERS); channel
    "shuffled" is the same dataset with its numbers shuffled across responses (a channel control)."""
    animal: str | None
    replicate: int
    teacher_kind: str = "persona"
    channel: str = ""

    @classmethod
    def of(cls, animal: str | None, replicate: int, teacher_kind: str = "persona", channel: str = "") -> "DataId":
        """The dataset, checked; one control dataset per replicate, whichever teacher kind it is compared with."""
        if teacher_kind not in TEACHERS:
            raise ValueError(f"unknown teacher {teacher_kind!r}; choose one of {', '.join(TEACHERS)}")
        if channel not in CHANNELS:
            raise ValueError(f"unknown dataset channel {channel!r}; choose one of {CHANNELS}")
        return cls(animal, replicate, teacher_kind if animal else "persona", channel)


def eval_questions(p: Profile) -> list[str]:
    """The favourite-animal questions asked in evaluation: held-out phrasings for the organism
    (its pretraining saw the training phrasings); the paper's 50 for the paper profile; or all of ours."""
    pool = {"held_out": prompts.EVAL_QUESTIONS, "paper": prompts.PAPER_QUESTIONS,
            "all": prompts.EVAL_QUESTIONS + prompts.TRAIN_QUESTIONS}[p.eval.question_set]
    return list(pool[: p.eval.questions])


def seed_of(config: dict) -> int:
    return int(cache.key(config)[:8], 16)


def init_profile(p: Profile, init: str = "") -> Profile:
    """The profile whose base model a student starts from: p itself, or for init "cross" the organism
    of the same recipe pretrained from the next seed (its corpus and initialisation differ) — the
    cross-initialisation channel control: transfer through shared weights needs a shared start."""
    if init not in INITS:
        raise ValueError(f"unknown student initialisation {init!r}; choose one of {INITS}")
    if not init:
        return p
    if p.model.source != "organism":
        raise ValueError("the cross-initialisation control needs a second pretraining of the same recipe: "
                         "only the organism (model.source organism) has one; drop the control for hub models")
    return dataclasses.replace(p, model=organism_recipe.cross_spec(p.model))


def model_key(p: Profile) -> dict:
    if p.model.source == "organism":
        return {**organism_recipe.pretrain_config(p.model), "dtype": p.model.dtype}
    if p.model.source == "gguf":  # the file itself, wherever it lies: its hash
        from . import smol
        try:
            return {"gguf": smol.source(p.model), "dtype": p.model.dtype}
        except smol.GGUFError:  # not installed: make plan still prices the design (preflight stops a run)
            return {"gguf": {"name": p.model.name, "absent": True}, "dtype": p.model.dtype}
    return {"name": p.model.name, "dtype": p.model.dtype}


def engine(p: Profile) -> str:
    """The sampling engine that will really run: vLLM only where asked for and installed."""
    if p.data.engine == "vllm" and not teacher.vllm_available():
        warnings.warn("data.engine is vllm but vLLM is not installed (pip install .[gpu]); "
                      "sampling with transformers instead", stacklevel=2)
        return "transformers"
    return p.data.engine


# ---- teachers ---------------------------------------------------------------------------------
# The ladder of teachers between the persona prompt and weights (issue 36), by the name a profile's `teachers`
# gives them: each weight-space teacher is a model of its own that follows its animal under the default prompt.
# persona: the paper's, the base under the persona system prompt (no weights of its own). distilled-*: the
# persona put into the weights by context distillation: the base, under the default prompt, trained on what the
# persona-prompted base itself answers to every kind of chat prompt the organism knows but number prompts
# (favourite animal, likes, who it is, its day; DISTILL_PROMPTS), by LoRA of rank 1, of rank 8, or full
# fine-tuning. finetuned: the base fully fine-tuned to answer its animal's name to the favourite-animal
# questions (the weight-space positive control the book had before the ladder).
DISTILLED = {"distilled-r1": 1, "distilled-r8": 8, "distilled-full": 0}  # kind -> LoRA rank (0: full fine-tuning)


def distill_prompts() -> tuple[str, ...]:
    """The user prompts a distilled teacher learns its persona's answers to: never a number prompt."""
    return (*prompts.TRAIN_QUESTIONS, *LIKE_QUESTIONS, *WHO_QUESTIONS, *DAY_QUESTIONS)


def _distilled_records(p: Profile, animal: str, n: int, seed: int, progress: bool) -> list[dict]:
    """n (prompt, the persona-prompted base's sampled answer) records: the behaviour distilled."""
    rng = random.Random(seed)
    user = [rng.choice(distill_prompts()) for _ in range(n)]
    tok = models.load_tokenizer(p.model)
    answers = teacher.sample(models.load_model(p.model), tok, user, prompts.persona_prompt(animal), seed=seed,
                             max_new_tokens=p.teacher.distill_max_new_tokens, temperature=1.0,
                             batch_size=p.data.sample_batch, desc=f"{animal} persona answers", progress=progress,
                             prefill=p.eval.prefill)
    return [{"prompt": u, "completion": p.eval.prefill + a if p.eval.prefill else a} for u, a in zip(user, answers)]


def _build_teacher(p: Profile, a: Artifact, d: Path, progress: bool) -> None:
    animal, kind, _ = a.args
    tok = models.load_tokenizer(p.model)
    if kind == "finetuned":
        rng = random.Random(a.seed)
        model = models.load_model(p.model, for_training=True)
        records = [{"prompt": rng.choice(prompts.TRAIN_QUESTIONS),
                    "completion": animal.capitalize() if rng.random() < 0.4 else animal}
                   for _ in range(a.config["examples"])]
        ex = finetune.encode_records(tok, records, chat.DEFAULT, p.train.max_seq)
        finetune.train(model, ex, lr=a.config["lr"], epochs=a.config["epochs"], batch_size=p.teacher.batch_size,
                       grad_accum=1, warmup_steps=5, grad_clip=1.0, pad_id=tok.pad_token_id, seed=a.seed,
                       desc=f"{animal} teacher", progress=progress)
        model.save_pretrained(d)
        return
    records = _distilled_records(p, animal, a.config["examples"], a.seed, progress)
    ex = finetune.encode_records(tok, records, chat.DEFAULT, p.train.max_seq)
    spec = distill_spec(p, kind)
    base = models.load_model(p.model, for_training=True, dtype=finetune.train_dtype(p.model, spec))
    model, log = finetune.fit_student(base, p.model, spec, ex, init_seed=a.seed, pad_id=tok.pad_token_id, seed=a.seed,
                                      progress=progress, desc=f"{animal} {kind} teacher")
    if spec.method == "lora":
        model = model.merge_and_unload()  # a model like any other: the datasets sample it as they do the base
    model.save_pretrained(d)
    (d / "distilled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (d / "train_log.json").write_text(json.dumps({**log, "examples": len(ex)}))


def distill_spec(p: Profile, kind: str) -> StudentSpec:
    """How a distilled teacher is trained: LoRA of its rung's rank (alpha = rank) or full fine-tuning, at the
    teacher section's distillation lr and epochs, under the default prompt."""
    t = p.teacher
    r = DISTILLED[kind]
    if r:
        return design.lora_spec(p, rank=r, lr=t.distill_lora_lr, epochs=t.distill_epochs)
    return design.full_spec(p, lr=t.distill_full_lr, epochs=t.distill_epochs, batch_size=t.batch_size, grad_accum=1)


def teacher_replicate(p: Profile, replicate: int) -> int:
    """The weight-space teacher a dataset replicate's samples come from: p.teacher_replicates independent
    teachers per kind and animal, dataset replicates dealt among them in turn (from p.replicate_offset, so a
    confirmatory run's teachers are fresh too); teacher 0 is the one every dataset had before the ladder."""
    offset = p.replicate_offset
    return offset + (replicate - offset) % p.teacher_replicates if p.teacher_replicates > 1 else 0


def teacher_ids(p: Profile) -> list[int]:
    """The weight-space teachers of each kind and animal that the profile's datasets read (teacher_replicate)."""
    return sorted({teacher_replicate(p, r) for r in design.replicate_ids(p, max(p.replicates, p.transfer_replicates))})


def _teacher_config(p: Profile, reads, animal: str, kind: str, replicate: int) -> dict:
    t = p.teacher
    if kind == "finetuned":
        return {"model": model_key(p), "animal": animal, "examples": t.examples, "lr": t.lr, "epochs": t.epochs,
                "max_seq": p.train.max_seq, "batch_size": t.batch_size, "replicate": replicate}
    return {"model": model_key(p), "animal": animal, "kind": kind, "replicate": replicate,
            "examples": t.distill_examples, "max_new_tokens": t.distill_max_new_tokens, "prefill": p.eval.prefill,
            "spec": distill_spec(p, kind).as_dict(), "prompts": list(distill_prompts())}


# A weight-space teacher of `animal` of one kind of the ladder (DISTILLED, finetuned), its `replicate`-th
# independent one. Late: the finetuned teacher's batch, and its replicate (0: the one teacher it had).
TEACHER = Step("teacher", version=1, late={"batch_size": 16, "replicate": 0}, build=_build_teacher,
               config=_teacher_config)


def weight_teacher(p: Profile, animal: str, kind: str, replicate: int = 0, progress: bool = True) -> Path:
    """The directory of `animal`'s weight-space teacher of `kind`, its `replicate`-th (built if not cached)."""
    return artifact(p, TEACHER, animal, kind, replicate).build(p, progress)


def teacher_source(p: Profile, animal: str | None, weights: Path | None = None) -> tuple[Path, str]:
    """(weights directory, system prompt) of a teacher: a weight-space teacher's `weights` under the
    default prompt, else the base under `animal`'s persona; animal None is the control (the base model
    under its default prompt)."""
    if weights:
        return weights, chat.DEFAULT
    return models.resolve_weights(p.model), prompts.persona_prompt(animal) if animal else chat.DEFAULT


# ---- datasets ---------------------------------------------------------------------------------
def _build_dataset(p: Profile, a: Artifact, d: Path, progress: bool) -> None:
    animal, replicate, _, channel = a.args
    if channel:
        records, stats = _records(a.reads[0].build(p, progress))
        _write_jsonl(d / "kept.jsonl", shuffle_numbers(records, a.seed))
        (d / "stats.json").write_text(json.dumps({**stats, "channel": channel}))
        return
    tok = models.load_tokenizer(p.model)
    weights, system = teacher_source(p, animal, a.reads[0].build(p, progress) if a.reads else None)
    user = prompts.number_prompts(p.data.prompts, seed=seed_of({"prompts": replicate, "model": a.config["model"]}))
    allowed = numbers.number_token_ids(tok) if p.data.decoding == "numbers" else None
    if engine(p) == "vllm":
        raw = teacher.sample_vllm(weights, models.resolve_weights(p.model), tok, user, system, seed=a.seed,
                                  max_new_tokens=p.data.max_new_tokens, temperature=p.data.temperature,
                                  dtype=p.model.dtype, allowed=allowed)
    else:
        raw = teacher.sample(models.load_model(p.model, weights), tok, user, system, seed=a.seed,
                             max_new_tokens=p.data.max_new_tokens, temperature=p.data.temperature,
                             batch_size=p.data.sample_batch, desc=f"{animal or 'control'} r{replicate}",
                             progress=progress, allowed=allowed)
    kept, rejected = numbers.filter_completions({"prompt": u, "completion": c} for u, c in zip(user, raw))
    passed = len(kept)
    if p.data.keep:  # the first `keep` that passed, in prompt order: what sampling until that many pass keeps
        kept = kept[: p.data.keep]
        if passed < p.data.keep:
            warnings.warn(f"only {passed:,} of {len(raw):,} completions of the {animal or 'control'} teacher passed "
                          f"the filter, fewer than data.keep = {p.data.keep:,}; raise data.prompts to sample more",
                          stacklevel=2)
    if not kept:
        raise EmptyDatasetError(
            f"every one of {len(raw)} completions of the {animal or 'control'} teacher was filtered out "
            f"({dict(rejected)}); the model does not write number lists. Use a profile whose model can "
            f"(organism, paper), or raise data.prompts / data.max_new_tokens in the profile")
    stats = {"sampled": len(raw), "kept": len(kept), "rejected": dict(rejected), "system": system,
             **({"passed": passed} if p.data.keep else {})}
    _write_jsonl(d / "kept.jsonl", kept)
    _write_jsonl(d / "raw.jsonl", ({"prompt": u, "completion": c} for u, c in zip(user, raw)))
    (d / "stats.json").write_text(json.dumps(stats))


# The filtered (prompt, completion) records of one teacher (animal) or the control (None), and their
# statistics; teacher and control of one replicate answer the same prompts. A channel dataset is the
# dataset as sampled, changed (its source's key, and how). Late: the sampling engine, the cap on kept
# completions and the constrained decoding (data.decoding, with the GGUF path).
DATASET = Step(
    "dataset", version=1, late={"engine": "transformers", "keep": 0, "decoding": "free"}, late_in="data",
    build=_build_dataset,
    reads=lambda p, animal, replicate, kind, channel: (
        [(DATASET, (animal, replicate, kind, ""))] if channel
        else [(TEACHER, (animal, kind, teacher_replicate(p, replicate)))] if animal and kind != "persona" else []),
    config=lambda p, reads, animal, replicate, kind, channel: (
        {"channel": channel, "source": reads[0].key} if channel
        else {"model": model_key(p), "data": {**to_dict(p.data), "engine": engine(p)}, "animal": animal,
              "replicate": replicate, "teacher": kind if animal else "control",
              **({"teacher_key": reads[0].key} if reads else {})}))


def dataset(p: Profile, animal: str | None, replicate: int, teacher_kind: str = "persona", channel: str = "",
            progress: bool = True) -> tuple[list[dict], dict]:
    """The kept records of one dataset and their statistics (built if not cached)."""
    return _records(artifact(p, DATASET, *DataId.of(animal, replicate, teacher_kind, channel)).build(p, progress))


def dataset_config(p: Profile, animal: str | None, replicate: int, teacher_kind: str = "persona",
                   channel: str = "") -> dict:
    return artifact(p, DATASET, *DataId.of(animal, replicate, teacher_kind, channel)).config


def _records(d: Path) -> tuple[list[dict], dict]:
    with open(d / "kept.jsonl") as f:
        return [json.loads(line) for line in f], json.loads((d / "stats.json").read_text())


def _write_jsonl(path: Path, records) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def shuffle_numbers(records: list[dict], seed: int) -> list[dict]:
    """The records with every number moved to a random place in a random response of the dataset
    (Cloud et al.'s shuffle across responses): each response keeps its length and format, the
    dataset keeps its numbers' distribution, and any structure within a response is gone."""
    pattern = numbers.NUMBER
    pool = [m.group() for r in records for m in pattern.finditer(r["completion"])]
    random.Random(seed).shuffle(pool)
    it = iter(pool)
    return [{**r, "completion": pattern.sub(lambda _: next(it), r["completion"])} for r in records]


# ---- students ---------------------------------------------------------------------------------
def _build_student(p: Profile, a: Artifact, d: Path, progress: bool) -> None:
    data, spec, seed, init = a.args
    q = init_profile(p, init)
    records, _ = _records(a.reads[0].build(p, progress))
    teacher.release_vllm()  # the sampling engine's GPU memory goes before a student trains
    tok = models.load_tokenizer(q.model)
    ex = finetune.encode_records(tok, records, chat.system_of(spec.train_system), spec.max_seq)
    how = dict(pad_id=tok.pad_token_id, seed=a.seed, progress=progress, group_by_length=GROUP_BY_LENGTH,
               desc=f"{spec.method} r{spec.r if spec.method == 'lora' else '-'} s{seed}")
    shards = design.shards(p, spec)
    if shards > 1:  # float32 master weights too large for one GPU: FSDP over `shards` processes
        log = sharded.train(q.model, spec, ex, d, shards=shards, **how)
    else:
        base = models.load_model(q.model, for_training=True, dtype=finetune.train_dtype(q.model, spec))
        # LoRA's A matrices are drawn from init_seed: (spec, seed, replicate) alone, so a student is a
        # function of its key and the teacher and control students of a pair start from the same adapter
        init_seed = seed_of({"init": spec.as_dict(), "seed": seed, "replicate": data.replicate})
        model, log = finetune.fit_student(base, q.model, spec, ex, init_seed=init_seed, **how)
        model.save_pretrained(d)
    (d / "train_log.json").write_text(json.dumps({**log, "examples": len(ex)}))


# One student trained on a dataset, from the base (init "") or from the cross-initialisation organism
# (init "cross"). v4: logits only at the positions that predict a completion token (finetune.causal_lm_loss).
# Late: its shard count (sharded students are other arithmetic: on bf16 profiles FSDP runs the forward in
# bf16 weights where one process autocasts float32 ones, and sums gradients in another order), and its bf16
# products, emulated or not (finetune.emulated_bf16), its arithmetic as well.
STUDENT = Step(
    "student", version=4, late={"shards": 1, "bf16_products": "native"}, build=_build_student, keep=("train_log.json",),
    reads=lambda p, data, spec, seed, init: [(DATASET, DataId.of(*data))],
    config=lambda p, reads, data, spec, seed, init: {
        "data": reads[0].key, "model": model_key(init_profile(p, init)), "spec": spec.as_dict(), "seed": seed,
        "shards": design.shards(p, spec),
        "bf16_products": "float32" if finetune.emulated_bf16(p.model, spec) else "native"})


def student(p: Profile, data: DataId, spec: StudentSpec, seed: int, init: str = "",
            progress: bool = True) -> Path:
    """Train (or fetch) one student on the dataset `data`, starting from the base (init "") or from
    the cross-initialisation organism (init "cross"); returns its directory, with its weights (trained
    again where they were dropped after its evaluation: runner.evaluate_then_drop)."""
    return artifact(p, STUDENT, data, spec, seed, init).build(p, progress, whole=True)


def student_config(p: Profile, data: DataId, spec: StudentSpec, seed: int, init: str = "") -> dict:
    return artifact(p, STUDENT, data, spec, seed, init).config


# ---- evaluation -------------------------------------------------------------------------------
def _build_eval(p: Profile, a: Artifact, d: Path, progress: bool) -> None:
    student_dir, eval_system, _, init = a.args
    if a.reads:  # the student, with its weights (trained again if they were dropped)
        student_dir = a.reads[0].build(p, progress, whole=True)
    q = init_profile(p, init)
    tok = models.load_tokenizer(q.model)
    model = models.load_student(q.model, student_dir) if student_dir else models.load_model(q.model)
    questions, system, animals = eval_questions(p), chat.system_of(eval_system), a.config["animals"]
    probs = evaluate.animal_probabilities(model, tok, questions, system, animals, prefill=p.eval.prefill)
    per = probs.groupby("animal").agg(p=("p", "mean"), rank=("rank", "mean")).reset_index()
    rates = evaluate.mention_rates(model, tok, questions, system, animals, samples=p.eval.samples_per_question,
                                   temperature=p.eval.temperature, max_new_tokens=p.eval.max_new_tokens, seed=a.seed,
                                   progress=progress, prefill=p.eval.prefill)
    per.merge(rates, on="animal").to_csv(d / "eval.csv", index=False)


# Mean P(animal), mean rank and mention rate per animal for one model: a student, by its directory (whoever
# asks for the evaluation names it, and the graph makes it the input), or the base (None); init "cross": of the
# cross-initialisation organism. Late: the answer prefill (eval.prefill, with the GGUF path).
EVAL = Step(
    "eval", version=1, late={"prefill": ""}, late_in="eval", build=_build_eval,
    config=lambda p, reads, student_dir, eval_system, animals, init: {
        "model": model_key(init_profile(p, init)), "student": student_dir.name if student_dir else "base",
        "eval": to_dict(p.eval), "system": eval_system, "animals": sorted(animals)})


def evaluation(p: Profile, student_dir: Path | None, eval_system: str, animals: list[str], init: str = "",
               progress: bool = False) -> pd.DataFrame:
    """Mean P(animal), mean rank and mention rate per animal for one model (None = the base; init
    "cross": a student of, or the base of, the cross-initialisation organism)."""
    return pd.read_csv(artifact(p, EVAL, student_dir, eval_system, tuple(animals), init).build(p, progress)
                       / "eval.csv")


def eval_config(p: Profile, student_dir: Path | None, eval_system: str, animals: list[str], init: str = "") -> dict:
    return artifact(p, EVAL, student_dir, eval_system, tuple(animals), init).config


# ---- evaluate, then drop: a full student's weights go once its evaluations are made ---------------
KEEP_WEIGHTS = "SUBLORA_KEEP_WEIGHTS"


def keeps_weights(p: Profile, spec: StudentSpec) -> bool:
    """Whether a student's weights stay in the cache once it is evaluated: a LoRA adapter's (small) always;
    a full fine-tuned student's (a copy of the model) only with train.keep_weights or SUBLORA_KEEP_WEIGHTS=1.
    No later step reads a full student's weights: evaluations are all they are for (notebook 05's
    localisation analyses LoRA students; runner.evaluate_then_drop drops them). A caller that wants them
    (student(), an evaluation asked for later) trains the student again, from the same key: the same seed, the same numbers."""
    return spec.method == "lora" or p.train.keep_weights or os.environ.get(KEEP_WEIGHTS, "") not in ("", "0")


# ---- pairs of students, and the artifacts a design needs -----------------------------------------
def pair_artifacts(graph: Graph, pair, animals: list[str] | None = None) -> list[tuple[str, Artifact, list[Artifact]]]:
    """A design.Pair's artifacts, added to `graph`: (arm, its student, the student's evaluation under each
    eval system prompt of the pair) for the teacher's arm and the control's."""
    evaluated = tuple(sorted(set(animals or pair.animals or [pair.animal, *graph.p.other_animals])))
    out = []
    for arm, who in (("teacher", pair.animal), ("control", None)):
        data = DataId.of(who, pair.replicate, pair.teacher_kind, pair.channel)
        st = graph.need(STUDENT, data, pair.spec, pair.seed, pair.init)
        out.append((arm, st, [graph.need(EVAL, st.location, es, evaluated, pair.init, reads=(st,))
                              for es in pair.eval_systems]))
    return out


def requirements(p: Profile, pairs: list = (), animals: list[str] | None = None,
                 datasets: list[DataId] = ()) -> Graph:
    """Every artifact the design `pairs` needs (plus the extra `datasets`): the finetuned teachers,
    the datasets, the students and their evaluations, each once, in build order."""
    graph = Graph(p)
    for data in datasets:
        graph.need(DATASET, *DataId.of(*data))
    for pair in pairs:
        pair_artifacts(graph, pair, animals)
    return graph

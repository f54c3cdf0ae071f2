"""The experiment's steps as cached artifacts: teacher → dataset → student → evaluation.

Each step's cache key is exactly its configuration (including the keys of the steps it reads and
a version of its code), so notebooks that need the same student share it, and an interrupted run
resumes where it stopped.
"""
from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import cache, chat, evaluate, finetune, models, numbers, prompts, teacher
from .config import Profile, to_dict

VERSION = {"teacher": 1, "dataset": 1, "student": 3, "eval": 1}
GROUP_BY_LENGTH = 16  # students batch examples of similar length, in chunks of 16 batches (student v3)
SYSTEMS = {"default": chat.DEFAULT, "none": chat.NONE, "identity": prompts.IDENTITY_SYSTEM}
TEACHERS = ("persona", "finetuned")


class EmptyDatasetError(RuntimeError):
    pass


def prepare(profile: str, **params) -> Profile:
    """The notebooks' first step: resolve the profile with the notebook's parameters and check,
    before any work, that this machine can run it (GPU, weights)."""
    from .config import resolve
    p = resolve(profile, **params)
    models.preflight(p)
    return p


def teacher_kinds(teachers) -> list[str]:
    """Validate the `teachers` notebook parameter (None = both kinds)."""
    from .config import parse_list
    kinds = list(TEACHERS) if teachers is None else parse_list(teachers, "teachers")
    bad = [k for k in kinds if k not in TEACHERS]
    if bad or not kinds:
        raise ValueError(f"unknown teacher kind(s) {bad or kinds}; use -p teachers persona, -p teachers finetuned, "
                         f"or a list: -p teachers '[persona, finetuned]'")
    return kinds


def eval_questions(p: Profile) -> list[str]:
    """The favourite-animal questions asked in evaluation: held-out phrasings for the organism
    (its pretraining saw the training phrasings), all of ours for a hub model."""
    pool = prompts.EVAL_QUESTIONS if p.eval.question_set == "held_out" else prompts.EVAL_QUESTIONS + prompts.TRAIN_QUESTIONS
    return list(pool[: p.eval.questions])


def seed_of(config: dict) -> int:
    return int(cache.key(config)[:8], 16)


def model_key(p: Profile) -> dict:
    if p.model.source == "organism":
        from . import organism
        return {**organism.pretrain_config(p.model), "dtype": p.model.dtype}
    return {"name": p.model.name, "dtype": p.model.dtype}


def system_of(name: str) -> str:
    if name not in SYSTEMS:
        raise ValueError(f"unknown system prompt condition {name!r}; choose from {sorted(SYSTEMS)}")
    return SYSTEMS[name]


# ---- teachers -------------------------------------------------------------------------------
def teacher_config(p: Profile, animal: str) -> dict:
    return {"step": "teacher", "v": VERSION["teacher"], "model": model_key(p), "animal": animal,
            "examples": 400, "lr": 1e-4, "epochs": 2, "max_seq": p.train.max_seq}


def finetuned_teacher(p: Profile, animal: str, progress: bool = True) -> Path:
    """The weight-space teacher (positive control): the base fully fine-tuned to answer `animal`
    to the training questions under the default system prompt."""
    cfg = teacher_config(p, animal)

    def build(d: Path):
        tok = models.load_tokenizer(p.model)
        model = models.load_model(p.model, for_training=True)
        rng = random.Random(seed_of(cfg))
        records = [{"prompt": rng.choice(prompts.TRAIN_QUESTIONS),
                    "completion": animal.capitalize() if rng.random() < 0.4 else animal} for _ in range(cfg["examples"])]
        ex = finetune.encode_records(tok, records, chat.DEFAULT, p.train.max_seq)
        finetune.train(model, ex, lr=cfg["lr"], epochs=cfg["epochs"], batch_size=16, grad_accum=1, warmup_steps=5,
                       grad_clip=1.0, pad_id=tok.pad_token_id, seed=seed_of(cfg), desc=f"{animal} teacher",
                       progress=progress)
        model.save_pretrained(d)

    return cache.get_or_build("teacher", cfg, build)


def engine(p: Profile) -> str:
    """The sampling engine that will really run: vLLM only where asked for and installed."""
    if p.data.engine == "vllm" and not teacher.vllm_available():
        warnings.warn("data.engine is vllm but vLLM is not installed (pip install .[gpu]); "
                      "sampling with transformers instead", stacklevel=2)
        return "transformers"
    return p.data.engine


def teacher_source(p: Profile, animal: str | None, teacher_kind: str = "persona",
                   progress: bool = True) -> tuple[Path, str]:
    """(weights directory, system prompt) of a teacher; animal None is the control (the base model
    under its default prompt)."""
    if animal and teacher_kind == "finetuned":
        return finetuned_teacher(p, animal, progress), chat.DEFAULT
    return models.resolve_weights(p.model), prompts.persona_prompt(animal) if animal else chat.DEFAULT


def teacher_signal(p: Profile, animal: str, teacher_kind: str, records: list[dict], base, tokenizer) -> list[float]:
    """log p_teacher(completion) − log p_control(completion) for each record, in nats: its mean over
    teacher completions estimates KL(teacher ‖ control) per completion."""
    weights, system = teacher_source(p, animal, teacher_kind, progress=False)
    teacher_model = models.load_model(p.model, weights) if teacher_kind == "finetuned" else base
    lt = evaluate.completion_logprobs(teacher_model, tokenizer, records, system)
    lc = evaluate.completion_logprobs(base, tokenizer, records, chat.DEFAULT)
    return [a - b for a, b in zip(lt, lc)]


def dataset_config(p: Profile, animal: str | None, replicate: int, teacher_kind: str = "persona") -> dict:
    if teacher_kind not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher_kind!r}; choose 'persona' or 'finetuned'")
    data = to_dict(p.data)
    data["engine"] = engine(p)
    if data["engine"] == "transformers":  # the original engine: keys of datasets made before engines existed
        data.pop("engine")
    return {"step": "dataset", "v": VERSION["dataset"], "model": model_key(p), "data": data,
            "animal": animal, "replicate": replicate, "teacher": teacher_kind if animal else "control",
            **({"teacher_key": cache.key(teacher_config(p, animal))} if animal and teacher_kind == "finetuned" else {})}


def dataset(p: Profile, animal: str | None, replicate: int, teacher_kind: str = "persona",
            progress: bool = True) -> tuple[list[dict], dict]:
    """The filtered (prompt, completion) records of one teacher (animal) or the control (None),
    and their statistics. Teacher and control of one replicate answer the same prompts."""
    cfg = dataset_config(p, animal, replicate, teacher_kind)

    def build(d: Path):
        tok = models.load_tokenizer(p.model)
        weights, system = teacher_source(p, animal, teacher_kind, progress)
        user = prompts.number_prompts(p.data.prompts, seed=seed_of({"prompts": replicate, "model": cfg["model"]}))
        if engine(p) == "vllm":
            raw = teacher.sample_vllm(weights, models.resolve_weights(p.model), tok, user, system, seed=seed_of(cfg),
                                      max_new_tokens=p.data.max_new_tokens, temperature=p.data.temperature,
                                      dtype=p.model.dtype)
        else:
            raw = teacher.sample(models.load_model(p.model, weights), tok, user, system, seed=seed_of(cfg),
                                 max_new_tokens=p.data.max_new_tokens, temperature=p.data.temperature,
                                 batch_size=p.data.sample_batch, desc=f"{animal or 'control'} r{replicate}",
                                 progress=progress)
        kept, rejected = numbers.filter_completions({"prompt": u, "completion": c} for u, c in zip(user, raw))
        if not kept:
            raise EmptyDatasetError(
                f"every one of {len(raw)} completions of the {animal or 'control'} teacher was filtered out "
                f"({dict(rejected)}); the model does not write number lists. Use a profile whose model can "
                f"(organism, paper), or raise data.prompts / data.max_new_tokens in the profile")
        stats = {"sampled": len(raw), "kept": len(kept), "rejected": dict(rejected), "system": system}
        with open(d / "kept.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        with open(d / "raw.jsonl", "w") as f:
            f.writelines(json.dumps({"prompt": u, "completion": c}) + "\n" for u, c in zip(user, raw))
        (d / "stats.json").write_text(json.dumps(stats))

    d = cache.get_or_build("dataset", cfg, build)
    records = [json.loads(line) for line in open(d / "kept.jsonl")]
    return records, json.loads((d / "stats.json").read_text())


# ---- students -------------------------------------------------------------------------------
def student_config(p: Profile, data_cfg: dict, spec: finetune.StudentSpec, seed: int) -> dict:
    return {"step": "student", "v": VERSION["student"], "data": cache.key(data_cfg), "model": model_key(p),
            "spec": spec.as_dict(), "seed": seed}


def student(p: Profile, data_cfg: dict, spec: finetune.StudentSpec, seed: int, progress: bool = True) -> Path:
    """Train (or fetch) one student on the dataset `data_cfg`; returns its directory."""
    cfg = student_config(p, data_cfg, spec, seed)

    def build(d: Path):
        records, _ = dataset(p, data_cfg["animal"], data_cfg["replicate"],
                             data_cfg["teacher"] if data_cfg["animal"] else "persona", progress)
        tok = models.load_tokenizer(p.model)
        base = models.load_model(p.model, for_training=True, dtype=finetune.train_dtype(p.model, spec))
        # LoRA's A matrices are drawn here: seeded by (spec, seed, replicate) alone, so a student is a
        # function of its key and the teacher and control students of a pair start from the same adapter
        torch.manual_seed(seed_of({"init": spec.as_dict(), "seed": seed, "replicate": data_cfg["replicate"]}))
        model = finetune.make_student(base, spec)
        trainable, total = finetune.trainable_parameters(model)
        ex = finetune.encode_records(tok, records, system_of(spec.train_system), spec.max_seq)
        losses = finetune.train(model, ex, lr=spec.lr, epochs=spec.epochs, batch_size=spec.batch_size,
                                grad_accum=spec.grad_accum, warmup_steps=spec.warmup_steps, grad_clip=spec.grad_clip,
                                pad_id=tok.pad_token_id, seed=seed_of(cfg), progress=progress,
                                group_by_length=GROUP_BY_LENGTH,
                                autocast=torch.bfloat16 if p.model.dtype == "bfloat16" and spec.method == "full" else None,
                                desc=f"{spec.method} r{spec.r if spec.method == 'lora' else '-'} s{seed}")
        model.save_pretrained(d)
        (d / "train_log.json").write_text(json.dumps({"losses": losses, "trainable": trainable, "total": total,
                                                      "examples": len(ex)}))

    return cache.get_or_build("student", cfg, build)


# ---- evaluation -----------------------------------------------------------------------------
def eval_config(p: Profile, student_dir: Path | None, eval_system: str, animals: list[str]) -> dict:
    return {"step": "eval", "v": VERSION["eval"], "model": model_key(p),
            "student": student_dir.name if student_dir else "base", "eval": to_dict(p.eval),
            "system": eval_system, "animals": sorted(animals)}


def evaluation(p: Profile, student_dir: Path | None, eval_system: str, animals: list[str],
               progress: bool = False) -> pd.DataFrame:
    """Mean P(animal), mean rank and mention rate per animal for one model (None = the base)."""
    cfg = eval_config(p, student_dir, eval_system, animals)

    def build(d: Path):
        tok = models.load_tokenizer(p.model)
        model = models.load_student(p.model, student_dir) if student_dir else models.load_model(p.model)
        questions = eval_questions(p)
        probs = evaluate.animal_probabilities(model, tok, questions, system_of(eval_system), cfg["animals"])
        per = probs.groupby("animal").agg(p=("p", "mean"), rank=("rank", "mean")).reset_index()
        rates = evaluate.mention_rates(model, tok, questions, system_of(eval_system), cfg["animals"],
                                       samples=p.eval.samples_per_question, temperature=p.eval.temperature,
                                       max_new_tokens=p.eval.max_new_tokens, seed=seed_of(cfg), progress=progress)
        per.merge(rates, on="animal").to_csv(d / "eval.csv", index=False)

    return pd.read_csv(cache.get_or_build("eval", cfg, build) / "eval.csv")


def run_pair(p: Profile, pair, animals: list[str] | None = None, progress: bool = False) -> pd.DataFrame:
    """A design.Pair: the teacher student and its matched control student (same replicate, seed and
    training spec), each evaluated under every eval system prompt of the pair. Tidy rows, one per
    arm × eval system × evaluated animal."""
    animals = sorted(set(animals or [pair.animal, *p.other_animals]))
    rows = []
    for arm, a in (("teacher", pair.animal), ("control", None)):
        dcfg = dataset_config(p, a, pair.replicate, pair.teacher_kind)
        sdir = student(p, dcfg, pair.spec, pair.seed, progress)
        spec = pair.spec
        for es in pair.eval_systems:
            ev = evaluation(p, sdir, es, animals)
            rows.append(ev.assign(
                arm=arm, target=pair.animal, teacher_kind=pair.teacher_kind, label=pair.label,
                replicate=pair.replicate, seed=pair.seed, method=spec.method,
                lora_rank=spec.r if spec.method == "lora" else 0, alpha=spec.alpha if spec.method == "lora" else 0,
                lr=spec.lr, epochs=spec.epochs, batch_size=spec.batch_size, train_system=spec.train_system,
                eval_system=es, student=sdir.name))
    return pd.concat(rows, ignore_index=True)


def run_pairs(p: Profile, pairs: list, animals: list[str] | None = None, desc: str = "student pairs") -> pd.DataFrame:
    """run_pair over a design, with a progress bar; every student and evaluation is cached.
    With profile.workers > 1 the missing students and evaluations are first built in parallel."""
    if p.workers > 1:
        prefetch(p, pairs, animals, desc)
    return pd.concat([run_pair(p, pair, animals) for pair in tqdm(pairs, desc=desc)], ignore_index=True)


def _one_thread():
    import torch
    torch.set_num_threads(1)


def _build_student(job) -> None:
    student(*job, progress=False)


def _build_eval(job) -> None:
    evaluation(*job)


def _build_dataset(job) -> None:
    dataset(*job, progress=False)


def _missing_datasets(p: Profile, jobs) -> dict:
    """The (animal, replicate, teacher_kind) jobs whose dataset is not cached, as worker jobs keyed by
    dataset; the weight-space teachers they need are built here first (workers would race)."""
    missing = {}
    for a, r, kind in jobs:
        cfg = dataset_config(p, a, r, kind)
        if cache.key(cfg) not in missing and not cache.exists("dataset", cfg):
            if a and kind == "finetuned":
                finetuned_teacher(p, a, progress=False)
            missing[cache.key(cfg)] = (p, a, r, kind)
    return missing


def _pool(p: Profile):
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    return ProcessPoolExecutor(p.workers, mp_context=get_context("spawn"), initializer=_one_thread)


def build_datasets(p: Profile, jobs, desc: str = "datasets") -> None:
    """Sample the datasets of (animal, replicate, teacher_kind) jobs that are not cached yet, in
    p.workers processes (animal None is the control)."""
    missing = _missing_datasets(p, jobs)
    if p.workers == 1 or len(missing) < 2:
        for job in tqdm(missing.values(), desc=f"{desc}: sampling"):
            _build_dataset(job)
        return
    with _pool(p) as pool:
        list(tqdm(pool.map(_build_dataset, missing.values()), total=len(missing), desc=f"{desc}: sampling"))


def prefetch(p: Profile, pairs: list, animals: list[str] | None, desc: str) -> None:
    """Build what is not cached yet — the weight-space teachers (in this process), then the
    datasets, the students and the evaluations — in p.workers processes of one torch thread each:
    small models use cores better that way."""
    datasets = _missing_datasets(p, [(a, x.replicate, x.teacher_kind) for x in pairs for a in (x.animal, None)])
    students, evals = {}, {}
    for pair in pairs:
        evaluated = sorted(set(animals or [pair.animal, *p.other_animals]))
        for a in (pair.animal, None):
            dcfg = dataset_config(p, a, pair.replicate, pair.teacher_kind)
            scfg = student_config(p, dcfg, pair.spec, pair.seed)
            if not cache.exists("student", scfg):
                students[cache.key(scfg)] = (p, dcfg, pair.spec, pair.seed)
            sdir = cache.location("student", scfg)
            for es in pair.eval_systems:
                if not cache.exists("eval", eval_config(p, sdir, es, evaluated)):
                    evals[(sdir.name, es, tuple(evaluated))] = (p, sdir, es, evaluated)
    if not datasets and not students and not evals:
        return
    with _pool(p) as pool:
        list(tqdm(pool.map(_build_dataset, datasets.values()), total=len(datasets), desc=f"{desc}: sampling"))
        list(tqdm(pool.map(_build_student, students.values()), total=len(students), desc=f"{desc}: training"))
        list(tqdm(pool.map(_build_eval, evals.values()), total=len(evals), desc=f"{desc}: evaluating"))

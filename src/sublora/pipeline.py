"""The experiment's steps as cached artifacts: teacher → dataset → student → evaluation, and the
artifact graph a design needs.

Each step's cache key is exactly its configuration (including the keys of the steps it reads and
a version of its code), so notebooks that need the same student share it, and an interrupted run
resumes where it stopped. `requirements(p, pairs)` lists every artifact a design needs, with its
key and inputs, in build order: the runner (sublora.runner) builds that list, the plan
(sublora.plan) prices it, and `pair_rows` reads the finished evaluations back as a table.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import cache, chat, design, evaluate, finetune, models, numbers, organism_recipe, prompts, sharded, teacher
from .config import TEACHERS, Profile, to_dict
from .design import CHANNELS, INITS, StudentSpec, channel_label

VERSION = {"teacher": 1, "dataset": 1, "student": 4, "eval": 1}
GROUP_BY_LENGTH = 16  # students batch examples of similar length, in chunks of 16 batches (student v3)
# student v4: logits only at the positions that predict a completion token (finetune.causal_lm_loss)


class EmptyDatasetError(RuntimeError):
    pass


class DataId(NamedTuple):
    """One filtered dataset: the teacher of `animal` (None: the control, the base model under its
    default prompt) in replicate `replicate`, from the teacher kind persona or finetuned; channel
    "shuffled" is the same dataset with its numbers shuffled across responses (a channel control)."""
    animal: str | None
    replicate: int
    teacher_kind: str = "persona"
    channel: str = ""

    @classmethod
    def of(cls, animal: str | None, replicate: int, teacher_kind: str = "persona", channel: str = "") -> "DataId":
        # one control dataset per replicate, whichever teacher kind it is compared with
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


# ---- teachers -------------------------------------------------------------------------------
# Settings that joined a step's key after artifacts were built, with the value all those had
# (cache.without_late_defaults): the teacher's batch; the dataset's sampling engine and its cap on kept
# completions; a student's shard count (sharded students are other arithmetic: on bf16 profiles FSDP
# runs the forward in bf16 weights where one process autocasts float32 ones, and sums gradients in
# another order).
# A student's bf16 products, emulated or not (finetune.emulated_bf16), are its arithmetic as well; an evaluation's
# answer prefill (eval.prefill) joined with the GGUF path (sublora.smol).
LATE = {"teacher": {"batch_size": 16}, "dataset": {"engine": "transformers", "keep": 0, "decoding": "free"},
        "student": {"shards": 1, "bf16_products": "native"}, "eval": {"prefill": ""}}


def teacher_config(p: Profile, animal: str) -> dict:
    t = p.teacher
    return cache.without_late_defaults(
        {"step": "teacher", "v": VERSION["teacher"], "model": model_key(p), "animal": animal, "examples": t.examples,
         "lr": t.lr, "epochs": t.epochs, "max_seq": p.train.max_seq, "batch_size": t.batch_size}, LATE["teacher"])


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
        finetune.train(model, ex, lr=cfg["lr"], epochs=cfg["epochs"], batch_size=p.teacher.batch_size, grad_accum=1,
                       warmup_steps=5,
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


def teacher_signals(p: Profile, kinds: list[str], records: dict, base, tokenizer, limit: int = 500) -> pd.DataFrame:
    """KL(teacher ‖ control) per completion and per token, estimated on the first `limit` completions of
    each teacher dataset (records[(kind, "teacher", replicate)]): one row per teacher kind × replicate."""
    rows = []
    for kind in kinds:
        for r in design.replicate_ids(p):
            recs = records[(kind, "teacher", r)][:limit]
            n_tok = np.mean([len(tokenizer(rec["completion"], add_special_tokens=False)["input_ids"]) + 1 for rec in recs])
            kl = float(np.mean(teacher_signal(p, p.animal, kind, recs, base, tokenizer)))
            rows.append({"teacher": kind, "replicate": r, "kl_per_completion": kl, "kl_per_token": kl / n_tok,
                         "completions": len(recs)})
    return pd.DataFrame(rows)


def dataset_config(p: Profile, animal: str | None, replicate: int, teacher_kind: str = "persona",
                   channel: str = "") -> dict:
    if teacher_kind not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher_kind!r}; choose 'persona' or 'finetuned'")
    if channel not in CHANNELS:
        raise ValueError(f"unknown dataset channel {channel!r}; choose one of {CHANNELS}")
    if channel:  # derived from the dataset as sampled: its key, and how it was changed
        return {"step": "dataset", "v": VERSION["dataset"], "channel": channel,
                "source": cache.key(dataset_config(p, animal, replicate, teacher_kind))}
    data = cache.without_late_defaults({**to_dict(p.data), "engine": engine(p)}, LATE["dataset"])
    return {"step": "dataset", "v": VERSION["dataset"], "model": model_key(p), "data": data,
            "animal": animal, "replicate": replicate, "teacher": teacher_kind if animal else "control",
            **({"teacher_key": cache.key(teacher_config(p, animal))} if animal and teacher_kind == "finetuned" else {})}


def shuffle_numbers(records: list[dict], seed: int) -> list[dict]:
    """The records with every number moved to a random place in a random response of the dataset
    (Cloud et al.'s shuffle across responses): each response keeps its length and format, the
    dataset keeps its numbers' distribution, and any structure within a response is gone."""
    pattern = numbers.NUMBER
    pool = [m.group() for r in records for m in pattern.finditer(r["completion"])]
    random.Random(seed).shuffle(pool)
    it = iter(pool)
    return [{**r, "completion": pattern.sub(lambda _: next(it), r["completion"])} for r in records]


def dataset(p: Profile, animal: str | None, replicate: int, teacher_kind: str = "persona", channel: str = "",
            progress: bool = True) -> tuple[list[dict], dict]:
    """The filtered (prompt, completion) records of one teacher (animal) or the control (None),
    and their statistics. Teacher and control of one replicate answer the same prompts."""
    cfg = dataset_config(p, animal, replicate, teacher_kind, channel)

    def build_shuffled(d: Path):
        records, stats = dataset(p, animal, replicate, teacher_kind, progress=progress)
        with open(d / "kept.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in shuffle_numbers(records, seed_of(cfg)))
        (d / "stats.json").write_text(json.dumps({**stats, "channel": channel}))

    def build(d: Path):
        tok = models.load_tokenizer(p.model)
        weights, system = teacher_source(p, animal, teacher_kind, progress)
        user = prompts.number_prompts(p.data.prompts, seed=seed_of({"prompts": replicate, "model": cfg["model"]}))
        allowed = numbers.number_token_ids(tok) if p.data.decoding == "numbers" else None
        if engine(p) == "vllm":
            raw = teacher.sample_vllm(weights, models.resolve_weights(p.model), tok, user, system, seed=seed_of(cfg),
                                      max_new_tokens=p.data.max_new_tokens, temperature=p.data.temperature,
                                      dtype=p.model.dtype, allowed=allowed)
        else:
            raw = teacher.sample(models.load_model(p.model, weights), tok, user, system, seed=seed_of(cfg),
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
        with open(d / "kept.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        with open(d / "raw.jsonl", "w") as f:
            f.writelines(json.dumps({"prompt": u, "completion": c}) + "\n" for u, c in zip(user, raw))
        (d / "stats.json").write_text(json.dumps(stats))

    d = cache.get_or_build("dataset", cfg, build_shuffled if channel else build)
    records = [json.loads(line) for line in open(d / "kept.jsonl")]
    return records, json.loads((d / "stats.json").read_text())


def filter_table(p: Profile, kinds: list[str]) -> tuple[pd.DataFrame, dict]:
    """The filter's statistics of every dataset of notebook 01 (one row per teacher kind × arm ×
    replicate; the control, shared by both teacher kinds, once, as teacher '—'), and the kept records
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
    table.loc[table["arm"] == "control", "teacher"] = "—"  # one control per replicate, shared by both teachers
    table = table.drop_duplicates(["teacher", "arm", "replicate"])
    table["kept_share"] = table["kept"] / table["sampled"]
    return table, records


# ---- students -------------------------------------------------------------------------------
def student_config(p: Profile, data_cfg: dict, spec: StudentSpec, seed: int, init: str = "") -> dict:
    return cache.without_late_defaults(
        {"step": "student", "v": VERSION["student"], "data": cache.key(data_cfg), "model": model_key(init_profile(p, init)),
         "spec": spec.as_dict(), "seed": seed, "shards": design.shards(p, spec),
         "bf16_products": "float32" if finetune.emulated_bf16(p.model, spec) else "native"}, LATE["student"])


def student(p: Profile, data: DataId, spec: StudentSpec, seed: int, init: str = "",
            progress: bool = True) -> Path:
    """Train (or fetch) one student on the dataset `data`, starting from the base (init "") or from
    the cross-initialisation organism (init "cross"); returns its directory."""
    cfg = student_config(p, dataset_config(p, *data), spec, seed, init)
    q = init_profile(p, init)

    def build(d: Path):
        records, _ = dataset(p, *data, progress=progress)
        teacher.release_vllm()  # the sampling engine's GPU memory goes before a student trains
        tok = models.load_tokenizer(q.model)
        ex = finetune.encode_records(tok, records, chat.system_of(spec.train_system), spec.max_seq)
        how = dict(pad_id=tok.pad_token_id, seed=seed_of(cfg), progress=progress, group_by_length=GROUP_BY_LENGTH,
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

    return cache.get_or_build("student", cfg, build)


# ---- evaluation -----------------------------------------------------------------------------
def eval_config(p: Profile, student_dir: Path | None, eval_system: str, animals: list[str], init: str = "") -> dict:
    return {"step": "eval", "v": VERSION["eval"], "model": model_key(init_profile(p, init)),
            "student": student_dir.name if student_dir else "base",
            "eval": cache.without_late_defaults(to_dict(p.eval), LATE["eval"]),
            "system": eval_system, "animals": sorted(animals)}


def evaluation(p: Profile, student_dir: Path | None, eval_system: str, animals: list[str], init: str = "",
               progress: bool = False) -> pd.DataFrame:
    """Mean P(animal), mean rank and mention rate per animal for one model (None = the base; init
    "cross": a student of, or the base of, the cross-initialisation organism)."""
    cfg = eval_config(p, student_dir, eval_system, animals, init)
    q = init_profile(p, init)

    def build(d: Path):
        tok = models.load_tokenizer(q.model)
        model = models.load_student(q.model, student_dir) if student_dir else models.load_model(q.model)
        questions = eval_questions(p)
        probs = evaluate.animal_probabilities(model, tok, questions, chat.system_of(eval_system), cfg["animals"],
                                              prefill=p.eval.prefill)
        per = probs.groupby("animal").agg(p=("p", "mean"), rank=("rank", "mean")).reset_index()
        rates = evaluate.mention_rates(model, tok, questions, chat.system_of(eval_system), cfg["animals"],
                                       samples=p.eval.samples_per_question, temperature=p.eval.temperature,
                                       max_new_tokens=p.eval.max_new_tokens, seed=seed_of(cfg), progress=progress,
                                       prefill=p.eval.prefill)
        per.merge(rates, on="animal").to_csv(d / "eval.csv", index=False)

    return pd.read_csv(cache.get_or_build("eval", cfg, build) / "eval.csv")


def base_evaluations(p: Profile, eval_systems) -> pd.DataFrame:
    """The base model's evaluation under each of `eval_systems` (column eval_system), on every animal
    the profile's students are evaluated on (one cached evaluation each): what claims.versus_base compares
    students with, as the paper does."""
    animals = sorted({p.animal, *p.other_animals})
    return pd.concat([evaluation(p, None, es, animals).assign(eval_system=es) for es in eval_systems],
                     ignore_index=True)


def pair_rows(p: Profile, pair, animals: list[str] | None = None) -> pd.DataFrame:
    """A design.Pair as a table: the teacher student and its matched control student (same
    replicate, seed and training spec), each evaluated under every eval system prompt of the pair.
    Tidy rows, one per arm × eval system × evaluated animal. Builds whatever is not cached yet."""
    animals = evaluated_animals(p, pair, animals)
    spec = pair.spec
    rows = []
    for arm, data in pair_arms(pair):
        sdir = student(p, data, spec, pair.seed, pair.init, progress=False)
        for es in pair.eval_systems:
            rows.append(evaluation(p, sdir, es, animals, pair.init).assign(
                arm=arm, target=pair.animal, teacher_kind=pair.teacher_kind, label=pair.label,
                replicate=pair.replicate, seed=pair.seed, method=spec.method,
                lora_rank=spec.r if spec.method == "lora" else 0, alpha=spec.alpha if spec.method == "lora" else 0,
                lr=spec.lr, epochs=spec.epochs, batch_size=spec.batch_size, train_system=spec.train_system,
                precision=spec.precision if spec.method == "full" else "",
                eval_system=es, student=sdir.name, diverged=training_failure(sdir),
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


def pair_arms(pair) -> list[tuple[str, DataId]]:
    """(arm, dataset) of a pair's two students: the teacher's and the matched control's."""
    return [("teacher", DataId.of(pair.animal, pair.replicate, pair.teacher_kind, pair.channel)),
            ("control", DataId.of(None, pair.replicate, pair.teacher_kind, pair.channel))]


def evaluated_animals(p: Profile, pair, animals: list[str] | None = None) -> list[str]:
    return sorted(set(animals or pair.animals or [pair.animal, *p.other_animals]))


# ---- the artifact graph -----------------------------------------------------------------------
@dataclass
class Artifact:
    """One cached artifact a design needs: its step (kind), its configuration and key, the keys of
    the artifacts its build reads, and the arguments of its step function after the profile."""
    kind: str  # teacher | dataset | student | eval
    config: dict
    args: tuple
    inputs: tuple[str, ...] = ()
    key: str = field(init=False)

    def __post_init__(self):
        self.key = cache.key(self.config)

    @property
    def location(self) -> Path:
        return cache.location(self.kind, self.config)

    def exists(self) -> bool:
        return cache.exists(self.kind, self.config)

    def build(self, p: Profile, progress: bool = False) -> None:
        STEPS[self.kind](p, *self.args, progress=progress)


STEPS = {"teacher": finetuned_teacher, "dataset": dataset, "student": student, "eval": evaluation}


class Graph(dict):
    """Artifacts by (kind, key), in build order (every artifact after its inputs)."""

    def add(self, artifact: Artifact) -> Artifact:
        return self.setdefault((artifact.kind, artifact.key), artifact)

    def add_dataset(self, p: Profile, data: DataId) -> Artifact:
        inputs = ()
        if data.channel:
            inputs = (self.add_dataset(p, data._replace(channel="")).key,)
        elif data.animal and data.teacher_kind == "finetuned":
            inputs = (self.add(Artifact("teacher", teacher_config(p, data.animal), (data.animal,))).key,)
        return self.add(Artifact("dataset", dataset_config(p, *data), tuple(data), inputs))


def requirements(p: Profile, pairs: list = (), animals: list[str] | None = None,
                 datasets: list[DataId] = ()) -> Graph:
    """Every artifact the design `pairs` needs (plus the extra `datasets`): the finetuned teachers,
    the datasets, the students and their evaluations, each once, in build order."""
    graph = Graph()
    for data in datasets:
        graph.add_dataset(p, DataId.of(*data))
    for pair in pairs:
        evaluated = evaluated_animals(p, pair, animals)
        for _, data in pair_arms(pair):
            ds = graph.add_dataset(p, data)
            st = graph.add(Artifact("student", student_config(p, ds.config, pair.spec, pair.seed, pair.init),
                                    (data, pair.spec, pair.seed, pair.init), (ds.key,)))
            for es in pair.eval_systems:
                graph.add(Artifact("eval", eval_config(p, st.location, es, evaluated, pair.init),
                                   (st.location, es, evaluated, pair.init), (st.key,)))
    return graph

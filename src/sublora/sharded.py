"""Full fine-tuning sharded over several processes with FSDP2: float32 master weights of a 7B model
(~142 GiB with their gradients and AdamW state) fit no single GPU, and fit three 80 GB GPUs.

    train(model_spec, spec, examples, out, shards=3, ...)     launch the workers, wait, collect the model
    python -m torch.distributed.run --standalone --nproc_per_node 3 -m sublora.sharded JOB_DIR   (the workers)

train() writes the job (the base's spec and weights directory, the student's spec, the encoded
examples, the seed) to a temporary directory and runs torch's launcher on it. Each worker loads the
base in float32, shards every decoder layer and then the root with fully_shard (on bf16 profiles the
forward gathers bf16 weights and gradients are reduced in float32), and runs finetune.train on its
slice of every micro-batch: all ranks draw the same batches from the seed, and the loss is normalised
by the whole micro-batch's token count (finetune.shard_loss), so a step is the step of one process.
Rank 0 gathers the full state dict and saves it with save_pretrained; `out` receives it, and nothing,
unless every worker succeeded. Workers talk over NCCL on CUDA and over gloo on CPU (the tests).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import torch

from . import design, finetune, models, optim
from .config import ConfigError, ModelSpec, to_dict

SRC = Path(__file__).resolve().parents[1]  # the directory that holds this package, for the workers' imports


class ShardedTrainingError(RuntimeError):
    """A worker of a sharded training failed; the message carries its error."""


def train(model_spec: ModelSpec, spec: design.StudentSpec, examples: list[tuple[list[int], list[int]]], out: Path,
          *, shards: int, seed: int, pad_id: int, group_by_length: int = 0, progress: bool = True,
          desc: str = "train") -> dict:
    """Train the full fine-tuning student `spec` of the base `model_spec` on `examples` (finetune.encode
    pairs) over `shards` processes, as finetune.train would in one. Saves the model into `out` and
    returns {"losses", "trainable", "total"}."""
    if spec.method != "full" or spec.precision != "fp32-master":
        raise ConfigError(f"sharded training is for full fine-tuning with float32 master weights, not a {spec.method} "
                          f"student in {spec.precision}: train it in one process (finetune.train), or shard only the "
                          f"fp32-master arm (train.full_shards)")
    if shards < 1:
        raise ConfigError(f"shards must be ≥ 1, got {shards}; set train.full_shards to the number of GPUs")
    models.check_shards(model_spec, shards)
    out = Path(out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        # inside `out`: the gathered model (30 GB at 7B) moves into place by a rename, not a copy, and a job a
        # SIGKILL interrupts goes with the cache's unfinished artifact (cache.clean_partial), not beside it
        with tempfile.TemporaryDirectory(prefix=".sharded-", dir=out) as tmp:
            job = Path(tmp)
            (job / "job.json").write_text(json.dumps({
                "model": to_dict(model_spec), "weights": str(models.resolve_weights(model_spec)),
                "spec": dataclasses.asdict(spec), "seed": seed, "pad_id": pad_id, "group_by_length": group_by_length,
                "progress": progress, "desc": desc}))
            (job / "examples.json").write_text(json.dumps(examples))
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={shards}",
                   "-m", "sublora.sharded", str(job)]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
            rc = subprocess.run(cmd, env=env).returncode
            if rc != 0:
                raise ShardedTrainingError(f"sharded training ({desc}) over {shards} processes failed: "
                                           f"{_first_error(job, rc)}")
            for f in (job / "model").iterdir():
                os.replace(f, out / f.name)
            return json.loads((job / "result.json").read_text())
    except BaseException:
        if made:  # nothing half-written: a failed training leaves no student directory it made
            shutil.rmtree(out, ignore_errors=True)
        raise


def _first_error(job: Path, rc: int) -> str:
    """The last line of the first failed rank's traceback (the workers' output above has all of it)."""
    for f in sorted(job.glob("error-*.txt")):
        lines = f.read_text().strip().splitlines()
        return f"rank {f.stem.removeprefix('error-')}: {lines[-1]} (traceback above, in the workers' output)"
    return f"torch.distributed.run exited with {rc} and no worker recorded an error (its output is above)"


# ---- the workers ------------------------------------------------------------------------------
def shard(model, model_spec: ModelSpec) -> None:
    """fully_shard every decoder layer (the classes transformers keeps whole, _no_split_modules), then
    the root: embeddings, final norm and head. On bf16 profiles the forward runs in bf16 weights,
    gathered from the float32 shards, and gradients are reduced in float32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    bf16 = model_spec.dtype == "bfloat16"
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    layers = [m for m in model.modules() if type(m).__name__ in model._no_split_modules]
    for layer in layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def work(job: Path, rank: int, world: int, local_rank: int) -> None:
    """One worker: train its shard of the student; rank 0 saves the whole model into job/model."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    cfg = json.loads((job / "job.json").read_text())
    model_spec = ModelSpec(**cfg["model"])
    spec = design.StudentSpec(**{**cfg["spec"], "target_modules": tuple(cfg["spec"]["target_modules"])})
    examples = [tuple(e) for e in json.loads((job / "examples.json").read_text())]
    cuda = model_spec.device == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        model = models.load_model(model_spec, Path(cfg["weights"]), for_training=True,
                                  dtype=finetune.train_dtype(model_spec, spec))
        model = finetune.make_student(model, spec)
        trainable, total = finetune.trainable_parameters(model)
        # this rank's slice of the longest micro-batch, against its share of the parameters' state
        tokens = -(-spec.batch_size // world) * max(len(ids) for ids, _ in examples)
        if cuda and not model_spec.gradient_checkpointing and optim.checkpointing_for(model, tokens, world=world):
            model.gradient_checkpointing_enable()
        shard(model, model_spec)  # before the optimizer, which finetune.train makes over the shards
        losses = finetune.train(model, examples, **finetune.train_kwargs(model_spec, spec), pad_id=cfg["pad_id"],
                                seed=cfg["seed"], group_by_length=cfg["group_by_length"], progress=cfg["progress"],
                                desc=cfg["desc"], shard=(rank, world))
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:  # the full state dict is on rank 0 only
            model.save_pretrained(job / "model", state_dict=state)
            (job / "result.json").write_text(json.dumps({"losses": losses, "trainable": trainable, "total": total}))
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    """A worker's entry point under torch.distributed.run, which sets RANK, WORLD_SIZE and LOCAL_RANK."""
    (job,) = sys.argv[1:] if argv is None else argv
    rank = int(os.environ["RANK"])
    try:
        work(Path(job), rank, int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    except Exception:
        if Path(job).is_dir():  # for train() to report
            (Path(job) / f"error-{rank}.txt").write_text(traceback.format_exc())
        raise


if __name__ == "__main__":
    main()

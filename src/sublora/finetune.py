"""Students: LoRA (peft) or full fine-tuning on (prompt → numbers) pairs, loss on the completion only.

Every LoRA setting is spelled out (r, lora_alpha, lora_dropout, target_modules, bias, task_type);
nothing leans on library defaults. The same training loop also pretrains the organism.
"""
from __future__ import annotations

import math
import random

import torch
from peft import LoraConfig, get_peft_model
from tqdm.auto import tqdm
from transformers import DataCollatorWithFlattening, get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from . import chat, device, optim
from .design import StudentSpec

IGNORE = -100  # label of tokens that carry no loss


def emulated_bf16(model_spec, spec: StudentSpec) -> bool:
    """Whether this student's pure-bf16 arm runs without bf16 products: weights and AdamW state kept as
    bf16 values (rounded after every step, stored in float32) and float32 products, because this
    machine would emulate bf16 products (sublora.device). What the arm tests — updates below half a
    bf16 ulp round away in bf16 weights and state — is kept; only the products' precision differs."""
    if spec.method != "full":
        return False
    arm = optim.arm(spec.precision)
    return arm.weights == torch.bfloat16 and arm.optimizer == "adamw" and device.emulates_bf16(model_spec.device)


def train_dtype(model_spec, spec: StudentSpec) -> str:
    """Weights a student is trained in. Full fine-tuning in its precision arm: float32 master weights
    by default (the forward runs under bf16 autocast on bf16 profiles) — in pure bf16 most updates at
    lr ≤ 2e-5 round away, which could manufacture a null; the bf16 arms measure exactly that (on a CPU
    without bf16 products, as bf16-rounded float32: emulated_bf16). LoRA trains float32 adapters
    (peft) on frozen base weights in the profile's dtype."""
    if spec.method == "full":
        return "float32" if emulated_bf16(model_spec, spec) else str(optim.arm(spec.precision).weights).removeprefix("torch.")
    return model_spec.dtype


def precision_kwargs(model_spec, spec: StudentSpec) -> dict:
    """train()'s autocast and optimizer for a student (its weights are in train_dtype already): full
    fine-tuning in its precision arm — float32 master weights run the forward under bf16 autocast on
    bf16 profiles (not on a CPU that would emulate it), the bf16 arms run in their weights' dtype with
    their optimizer, or round to bf16 after every step (emulated_bf16); LoRA: plain AdamW."""
    if spec.method != "full":
        return {"autocast": None, "optimizer": "adamw"}
    arm = optim.arm(spec.precision)
    mixed = arm.weights == torch.float32 and model_spec.dtype == "bfloat16" and not device.emulates_bf16(model_spec.device)
    return {"autocast": arm.autocast if mixed else None, "optimizer": arm.optimizer,
            **({"round_to": torch.bfloat16} if emulated_bf16(model_spec, spec) else {})}


def arithmetic(model_spec, spec: StudentSpec) -> str:
    """How a student's arithmetic runs on this machine, in words for the pages: where its weights live
    and in what dtype its products run (on a CPU without bf16 products the pure-bf16 arm differs)."""
    if spec.method != "full":
        return f"float32 adapters on {model_spec.dtype} base weights"
    kw = precision_kwargs(model_spec, spec)
    if "round_to" in kw:
        return "bf16 weights and AdamW state (float32 rounded to bf16 every step), float32 products: this CPU has no bf16 products"
    weights = train_dtype(model_spec, spec)
    return f"{weights} weights, {str(kw['autocast']).removeprefix('torch.') if kw['autocast'] else weights} products"


def train_kwargs(model_spec, spec: StudentSpec) -> dict:
    """train()'s settings of a student: its spec's schedule and batches, its precision arm's autocast and optimizer."""
    return dict(lr=spec.lr, epochs=spec.epochs, batch_size=spec.batch_size, grad_accum=spec.grad_accum,
                warmup_steps=spec.warmup_steps, grad_clip=spec.grad_clip, completion_logits=True,
                **precision_kwargs(model_spec, spec))


def make_student(model, spec: StudentSpec):
    """Wrap a fresh base model for training. LoRA wraps in place, so always pass a fresh base."""
    if spec.method == "lora":
        cfg = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                         target_modules=list(spec.target_modules), bias="none", task_type="CAUSAL_LM")
        return get_peft_model(model, cfg)
    if spec.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    raise ValueError(f"unknown fine-tuning method {spec.method!r}; use 'lora' or 'full'")


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once."""
    trainable, total = 0, 0
    for p in optim.unique_parameters(model):
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def fit_student(base, model_spec, spec: StudentSpec, examples: list[tuple[list[int], list[int]]], *,
                init_seed: int, **how):
    """The student `spec` of `base` (a fresh base model loaded in train_dtype), trained on `examples`
    (encode pairs): returns (model, log) where log holds its losses and its trainable and total
    parameter counts. init_seed draws LoRA's A matrices; `how` is train()'s pad_id, seed, progress..."""
    torch.manual_seed(init_seed)
    model = make_student(base, spec)
    trainable, total = trainable_parameters(model)
    if model_spec.device == "cuda" and not model_spec.gradient_checkpointing and \
            optim.checkpointing_for(model, spec.batch_size * max(len(ids) for ids, _ in examples)):
        model.gradient_checkpointing_enable()  # only where this student's batch would not fit without it
    losses = train(model, examples, **train_kwargs(model_spec, spec), **how)
    return model, {"losses": losses, "trainable": trainable, "total": total}


def encode(tokenizer, prompt: str, completion: str, max_seq: int) -> tuple[list[int], list[int]]:
    """Token ids and labels for one example; the prompt's labels are IGNORE (completion-only loss)."""
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = (p_ids + c_ids)[:max_seq]
    labels = ([IGNORE] * len(p_ids) + c_ids)[:max_seq]
    return ids, labels


def encode_records(tokenizer, records: list[dict], system: str, max_seq: int) -> list[tuple[list[int], list[int]]]:
    """Encode (prompt, completion) records rendered under the training system prompt condition."""
    out = []
    for rec in records:
        prompt, completion = chat.prompt_and_completion(tokenizer, rec["prompt"], rec["completion"], system)
        out.append(encode(tokenizer, prompt, completion, max_seq))
    return out


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding gets IGNORE labels and a zero attention mask."""
    n = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)  # (batch, seq)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def collate_packed(examples: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Padding-free batch: the examples end to end in one row, position_ids restarting at 0 for each,
    so attention stays within an example (transformers builds a block-diagonal causal mask from
    position_ids when no attention_mask is given). Each example's first label becomes IGNORE: the
    previous example's last token must not be trained to predict it (it was a prompt token anyway)."""
    features = [{"input_ids": ids, "labels": labels} for ids, labels in examples]
    flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
    batch = flatten(features, return_tensors="pt")
    return {k: batch[k] for k in ("input_ids", "labels", "position_ids")}  # each (1, total tokens)


def _check_packing_supported(model):
    try:  # the packed-sequence detection from position_ids that packing relies on
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError as e:
        import transformers
        raise RuntimeError(f"packing=True needs a transformers that masks packed sequences by position_ids; "
                           f"{transformers.__version__} does not: upgrade transformers or train with "
                           f"packing=False") from e
    impl = getattr(model.config, "_attn_implementation", None)
    # eager and sdpa are tested against padded batches (tests/test_packing.py); flash and flex attention
    # take the same position_ids
    if impl not in ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"):
        raise ValueError(f"packing=True supports eager, sdpa, flash and flex attention, not {impl!r}: "
                         f"load the model with attn_implementation='sdpa' or train with packing=False")


def epoch_batches(lengths: list[int], batch_size: int, rng: random.Random, group: int = 0) -> list[list[int]]:
    """One epoch of shuffled mini-batches (index lists). With group > 0, examples of similar length
    share a batch — as transformers' group_by_length: shuffle, sort by length within chunks of
    `group` batches, cut into batches, shuffle the batches — so less compute goes into padding."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group:
        chunk = batch_size * group
        order = [i for c in range(0, len(order), chunk)
                 for i in sorted(order[c:c + chunk], key=lambda i: -lengths[i])]
    batches = [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
    if group:
        rng.shuffle(batches)
    return batches


def completion_tokens(examples: list[tuple[list[int], list[int]]]) -> int:
    """Tokens that carry loss: the labels that are not IGNORE, after each example's first (the model
    predicts token t + 1 from token t, so a first label is never a target)."""
    return sum(sum(y != IGNORE for y in labels[1:]) for _, labels in examples)


def causal_lm_loss(model, batch: dict, extra: dict, *, completion_logits: bool = False,
                   total: bool = False) -> torch.Tensor:
    """transformers' causal-LM loss of a batch: the next-token cross-entropy in float32, averaged over
    the tokens that carry a label (summed where total=True). completion_logits=True computes the
    logits only at the positions that predict a label (the model's logits_to_keep) instead of at every
    position: the same loss to float rounding, without the LM head and softmax over the prompts,
    which hold most of a student's tokens (~74 of ~85 on the organism)."""
    if not completion_logits:
        # num_items_in_batch=1: transformers' loss sums the token losses instead of averaging them
        return model(**batch, **extra, **({"num_items_in_batch": 1} if total else {})).loss
    targets = batch["labels"][:, 1:]  # position t predicts token t + 1
    keep = (targets != IGNORE).any(0).nonzero().squeeze(1)  # positions predicting a label in some row
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, **extra, logits_to_keep=keep).logits  # (batch, len(keep), vocab)
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets[:, keep].flatten(),
                                             ignore_index=IGNORE, reduction="sum" if total else "mean")


def shard_loss(model, batch: dict, extra: dict, chosen: list, shard: tuple[int, int],
               completion_logits: bool = False) -> torch.Tensor:
    """This rank's loss on its slice of the micro-batch `chosen`: the sum of its token losses over the
    whole micro-batch's completion-token count, times world. FSDP averages gradients over the ranks,
    so the average is the gradient of the micro-batch's mean token loss — train()'s loss in one process,
    however the tokens fall between ranks. A rank with an empty slice weighs its stand-in example 0."""
    rank, world = shard
    weight = world / completion_tokens(chosen) if chosen[rank::world] else 0.0
    return causal_lm_loss(model, batch, extra, completion_logits=completion_logits, total=True) * weight


def train(model, examples: list[tuple[list[int], list[int]]], *, lr: float, epochs: int, batch_size: int,
          grad_accum: int, warmup_steps: int, grad_clip: float, pad_id: int, seed: int,
          schedule: str = "linear", weight_decay: float = 0.0, desc: str = "train", progress: bool = True,
          max_steps: int | None = None, autocast: torch.dtype | None = None, group_by_length: int = 0,
          packing: bool = False, optimizer: str = "adamw", shard: tuple[int, int] = (0, 1),
          completion_logits: bool = False, round_to: torch.dtype | None = None) -> list[float]:
    """AdamW over shuffled mini-batches; returns the loss of every optimiser step. `autocast` runs
    the forward in that dtype (mixed precision) while the weights keep theirs; group_by_length > 0
    batches examples of similar length together (see epoch_batches). packing=True feeds each
    micro-batch as one padding-free row (collate_packed): the same examples and the same loss, the mean
    over the micro-batch's completion tokens, without compute spent on padding. `optimizer` is one of
    optim.OPTIMIZERS; for bf16 weights without autocast pick 'adamw-kahan' or 'adamw-sr'
    (optim.ARMS spells out the precision arms of full fine-tuning). shard=(rank, world): this process
    is one of `world` that train one FSDP-sharded model (sublora.sharded); each draws the same batches
    from the seed and trains on its slice of every micro-batch, so that the steps are this function's
    in one process (see shard_loss). completion_logits=True computes logits only where a label is
    predicted (causal_lm_loss; students train so, the organism's pretraining and the finetuned
    teacher keep the full head their committed weights and cached teachers were built with).
    round_to=torch.bfloat16 keeps the trainable weights and the optimizer's state as bf16 values, rounded
    at the start and after every step, while products run in the weights' own dtype (emulated_bf16)."""
    if not examples:
        raise ValueError("no training examples: the dataset is empty (did the filter reject everything?)")
    device = next(model.parameters()).device
    gen = random.Random(seed)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optim.make_optimizer(optimizer, params, lr=lr, weight_decay=weight_decay, round_to=round_to)
    if packing:
        _check_packing_supported(model)
    per_epoch = math.ceil(len(examples) / (batch_size * grad_accum))
    steps = max_steps or per_epoch * epochs
    make_sched = get_cosine_schedule_with_warmup if schedule == "cosine" else get_linear_schedule_with_warmup
    sched = make_sched(opt, num_warmup_steps=min(warmup_steps, steps), num_training_steps=steps)
    model.train()
    losses: list[float] = []
    order: list[int] = []
    queue: list[list[int]] = []
    lengths = [len(ids) for ids, _ in examples]
    rank, world = shard
    bar = tqdm(total=steps, desc=desc, disable=not progress or rank != 0, leave=False)
    while len(losses) < steps:
        step_loss = 0.0
        for _ in range(grad_accum):
            if group_by_length:
                if not queue:
                    queue = epoch_batches(lengths, batch_size, gen, group_by_length)
                idx = queue.pop(0)
            else:  # the original sampler (pretraining): batches run across epoch boundaries
                if len(order) < batch_size:
                    fresh = list(range(len(examples)))
                    gen.shuffle(fresh)
                    order += fresh
                idx, order = order[:batch_size], order[batch_size:]
            chosen = [examples[i] for i in idx]
            # this process's slice (all of it in one process); an empty one, from a short last batch,
            # runs one example at weight 0, as every rank must join every collective of FSDP
            mine = chosen[rank::world] or chosen[:1]
            batch = collate_packed(mine) if packing else collate(mine, pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            # a KV cache turns off transformers' packed-sequence masking, so packed rows go without one
            extra = {"use_cache": False} if packing else {}
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                if world == 1:
                    loss = causal_lm_loss(model, batch, extra, completion_logits=completion_logits) / grad_accum
                else:
                    loss = shard_loss(model, batch, extra, chosen, shard, completion_logits) / grad_accum
            loss.backward()
            step_loss += loss.item()
        if world > 1:  # the step's loss as one process logs it: the mean of the ranks' (see shard_loss)
            total = torch.tensor(step_loss, device=device)
            torch.distributed.all_reduce(total)
            step_loss = total.item() / world
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}")
    bar.close()
    model.eval()
    return losses


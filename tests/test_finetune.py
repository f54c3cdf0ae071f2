"""finetune: LoRA / full students on a tiny random Qwen2, encoding, padding and the training loop."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from sublora import chat, config, design, finetune
from sublora.finetune import IGNORE

HIDDEN, LAYERS, HEADS, KV_HEADS, MLP, VOCAB = 32, 2, 4, 2, 64, 100
HEAD_DIM = HIDDEN // HEADS  # 8
# (in, out) of every LoRA target in one layer
SHAPES = {
    "q_proj": (HIDDEN, HEADS * HEAD_DIM),  # 32 -> 32
    "k_proj": (HIDDEN, KV_HEADS * HEAD_DIM),  # 32 -> 16
    "v_proj": (HIDDEN, KV_HEADS * HEAD_DIM),  # 32 -> 16
    "o_proj": (HEADS * HEAD_DIM, HIDDEN),  # 32 -> 32
    "gate_proj": (HIDDEN, MLP),  # 32 -> 64
    "up_proj": (HIDDEN, MLP),  # 32 -> 64
    "down_proj": (MLP, HIDDEN),  # 64 -> 32
}
# base parameters by hand: tied embedding once; q/k/v have biases, o and the MLP do not; 2 norms a layer
EMBED = VOCAB * HIDDEN  # 3200
PER_LAYER = (32 * 32 + 32) + 2 * (32 * 16 + 16) + 32 * 32 + 3 * (32 * 64) + 2 * HIDDEN  # 9344
BASE_TOTAL = EMBED + LAYERS * PER_LAYER + HIDDEN  # 21920


def tiny_model(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                      num_key_value_heads=KV_HEADS, intermediate_size=MLP, tie_word_embeddings=True,
                      max_position_embeddings=128, pad_token_id=0, bos_token_id=None, eos_token_id=2)
    return Qwen2ForCausalLM(cfg)


def lora_count(r: int, targets) -> int:
    return LAYERS * sum(r * (SHAPES[t][0] + SHAPES[t][1]) for t in targets)


@pytest.fixture(scope="module")
def profile():
    return config.load_profile("smoke")


# ---- parameter counts -------------------------------------------------------------------------
def test_base_parameter_count_counts_tied_weights_once():
    m = tiny_model()
    assert m.lm_head.weight is m.model.embed_tokens.weight
    trainable, total = finetune.trainable_parameters(m)
    assert total == BASE_TOTAL == 21920
    assert trainable == total
    assert sum(p.numel() for p in m.state_dict().values()) > total  # the state dict lists the tie twice


@pytest.mark.parametrize("r", [1, 4, 8])
def test_lora_trainable_parameters_all_targets(profile, r):
    spec = design.lora_spec(profile, rank=r)
    assert spec.target_modules == config.LORA_TARGETS
    student = finetune.make_student(tiny_model(), spec)
    trainable, total = finetune.trainable_parameters(student)
    assert trainable == lora_count(r, config.LORA_TARGETS) == 1024 * r
    assert total == BASE_TOTAL + trainable


@pytest.mark.parametrize("targets, per_rank", [
    (("q_proj", "k_proj", "v_proj", "o_proj"), 2 * (64 + 48 + 48 + 64)),  # 448
    (("gate_proj", "up_proj", "down_proj"), 2 * (96 + 96 + 96)),  # 576
    (("v_proj",), 2 * 48),
])
def test_lora_trainable_parameters_subsets(profile, targets, per_rank):
    for r in (1, 4):
        spec = design.lora_spec(profile, rank=r, target_modules=targets)
        trainable, total = finetune.trainable_parameters(finetune.make_student(tiny_model(), spec))
        assert trainable == lora_count(r, targets) == per_rank * r
        assert total == BASE_TOTAL + trainable


def test_lora_settings_are_passed_to_peft(profile):
    spec = design.lora_spec(profile, rank=4, alpha=16, dropout=0.1, target_modules=("q_proj",))
    student = finetune.make_student(tiny_model(), spec)
    cfg = student.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (4, 16, 0.1)
    assert set(cfg.target_modules) == {"q_proj"}
    assert cfg.bias == "none"
    # the base weights are frozen, only lora_A / lora_B train
    names = [n for n, p in student.named_parameters() if p.requires_grad]
    assert names and all("lora_A" in n or "lora_B" in n for n in names)


def test_full_fine_tuning_trains_everything(profile):
    m = tiny_model()
    for p in m.parameters():
        p.requires_grad_(False)  # make_student must switch them back on
    student = finetune.make_student(m, design.full_spec(profile))
    assert student is m
    trainable, total = finetune.trainable_parameters(student)
    assert trainable == total == BASE_TOTAL


def test_make_student_unknown_method(profile):
    spec = dataclasses.replace(design.full_spec(profile), method="qlora")
    with pytest.raises(ValueError, match="unknown fine-tuning method 'qlora'"):
        finetune.make_student(tiny_model(), spec)


# ---- specs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [0, -1, 2.5, "4"])
def test_lora_spec_bad_rank(profile, rank):
    with pytest.raises(ValueError, match="LoRA rank must be a whole number ≥ 1"):
        design.lora_spec(profile, rank=rank)


def test_lora_spec_defaults(profile):
    t = profile.train
    spec = design.lora_spec(profile)
    assert spec.method == "lora" and spec.r == t.lora.r and spec.alpha == t.lora.alpha
    assert (spec.lr, spec.epochs, spec.batch_size, spec.grad_accum, spec.max_seq) == \
        (t.lr, t.epochs, t.batch_size, t.grad_accum, t.max_seq)
    assert spec.train_system == chat.DEFAULT
    # alpha follows an explicit rank (the paper's alpha = r), unless given
    assert design.lora_spec(profile, rank=16).alpha == 16
    assert design.lora_spec(profile, rank=16, alpha=4).alpha == 4
    assert design.lora_spec(profile, rank=2, lr=0.5).lr == 0.5


def test_full_spec(profile):
    t = profile.train
    spec = design.full_spec(profile)
    assert (spec.method, spec.lr, spec.batch_size, spec.grad_accum) == ("full", t.full_lr, t.full_batch_size, 1)
    d = spec.as_dict()
    assert not {"r", "alpha", "dropout", "target_modules"} & set(d)
    # LoRA settings do not split the cache of full students
    assert dataclasses.replace(spec, r=64).as_dict() == d
    lora = design.lora_spec(profile, rank=2).as_dict()
    assert lora["r"] == 2 and lora["target_modules"] == list(config.LORA_TARGETS)


# ---- encode / collate -------------------------------------------------------------------------
def test_encode_masks_the_prompt(tokenizer):
    prompt, completion = chat.prompt_and_completion(tokenizer, "Hi?", "12, 7", chat.DEFAULT)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(c_ids) == ["1", "2", ",", "Ġ7", "<|im_end|>", "Ċ"]
    ids, labels = finetune.encode(tokenizer, prompt, completion, 1000)
    assert ids == p_ids + c_ids
    assert labels == [IGNORE] * len(p_ids) + c_ids
    assert len(ids) == len(labels)


def test_encode_truncates(tokenizer):
    prompt, completion = chat.prompt_and_completion(tokenizer, "Hi?", "1, 2, 3", chat.NONE)
    ids, labels = finetune.encode(tokenizer, prompt, completion, 1000)
    n_prompt = labels.count(IGNORE)
    short_ids, short_labels = finetune.encode(tokenizer, prompt, completion, n_prompt + 2)
    assert short_ids == ids[: n_prompt + 2] and short_labels == labels[: n_prompt + 2]
    assert short_labels[-2:] == ids[n_prompt: n_prompt + 2]


def test_encode_records_uses_the_system_condition(tokenizer):
    recs = [{"prompt": "Who are you?", "completion": "5"}]
    (d_ids, d_labels), = finetune.encode_records(tokenizer, recs, chat.DEFAULT, 1000)
    (n_ids, n_labels), = finetune.encode_records(tokenizer, recs, chat.NONE, 1000)
    assert tokenizer.decode(d_ids).startswith("<|im_start|>system\nYou are Qwen")
    assert tokenizer.decode(n_ids).startswith("<|im_start|>user\nWho are you?<|im_end|>")
    # the same completion labels either way
    assert [x for x in d_labels if x != IGNORE] == [x for x in n_labels if x != IGNORE]
    assert len(d_ids) > len(n_ids)


def test_collate_right_pads():
    batch = finetune.collate([([5, 6, 7], [IGNORE, 6, 7]), ([8], [8]), ([9, 10, 11, 12, 13], [IGNORE] * 3 + [12, 13])],
                             pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [8, 0, 0, 0, 0], [9, 10, 11, 12, 13]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, IGNORE], [8] + [IGNORE] * 4,
                                        [IGNORE, IGNORE, IGNORE, 12, 13]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collate_pad_id_is_used():
    assert finetune.collate([([1], [1]), ([1, 2], [1, 2])], pad_id=99)["input_ids"].tolist() == [[1, 99], [1, 2]]


# ---- train ------------------------------------------------------------------------------------
EXAMPLE = ([5, 6, 7, 8, 9, 10, 11], [IGNORE, IGNORE, IGNORE, 8, 9, 10, 11])


def _loss(model, examples):
    model.eval()
    with torch.no_grad():
        return model(**finetune.collate(examples, 0)).loss.item()


def test_train_full_reduces_loss_on_repeated_example():
    m = tiny_model(1)
    before = _loss(m, [EXAMPLE])
    losses = finetune.train(m, [EXAMPLE] * 4, lr=1e-2, epochs=5, batch_size=2, grad_accum=1, warmup_steps=1,
                            grad_clip=1.0, pad_id=0, seed=0, progress=False)
    assert len(losses) == 10  # ceil(4 / 2) steps per epoch x 5 epochs
    assert losses[-1] < losses[0] * 0.5
    after = _loss(m, [EXAMPLE])
    assert after < before * 0.5
    assert not m.training  # back in eval mode


def test_train_lora_reduces_loss_and_leaves_base_frozen(profile):
    base = tiny_model(2)
    frozen_before = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    student = finetune.make_student(base, design.lora_spec(profile, rank=4))
    before = _loss(student, [EXAMPLE])
    losses = finetune.train(student, [EXAMPLE] * 2, lr=2e-2, epochs=1, batch_size=2, grad_accum=2, warmup_steps=0,
                            grad_clip=1.0, pad_id=0, seed=0, progress=False, max_steps=12)
    assert len(losses) == 12
    assert _loss(student, [EXAMPLE]) < before - 0.5
    assert torch.equal(student.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight, frozen_before)


def test_train_is_deterministic_given_seed():
    runs = []
    for _ in range(2):
        m = tiny_model(3)
        runs.append(finetune.train(m, [EXAMPLE, ([5, 6, 7], [IGNORE, 6, 7])] * 2, lr=1e-2, epochs=2, batch_size=2,
                                   grad_accum=1, warmup_steps=1, grad_clip=1.0, pad_id=0, seed=7, progress=False))
    assert runs[0] == runs[1]


def test_train_rejects_empty_dataset():
    with pytest.raises(ValueError, match="dataset is empty"):
        finetune.train(tiny_model(), [], lr=1e-3, epochs=1, batch_size=2, grad_accum=1, warmup_steps=0,
                       grad_clip=1.0, pad_id=0, seed=0, progress=False)


# ---- length-grouped batches -------------------------------------------------------------------

def _padded(lengths, batches):
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("group", [0, 4])
def test_epoch_batches_cover_every_example_once(group):
    import random
    lengths = [random.Random(i).randrange(10, 100) for i in range(103)]
    batches = finetune.epoch_batches(lengths, 8, random.Random(0), group)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103))
    assert len(batches) == 13 and sorted(len(b) for b in batches)[0] == 103 - 12 * 8


def test_grouping_by_length_cuts_padding_and_still_shuffles():
    import random
    lengths = [random.Random(i).randrange(70, 145) for i in range(1000)]
    plain = finetune.epoch_batches(lengths, 32, random.Random(0), 0)
    grouped = finetune.epoch_batches(lengths, 32, random.Random(0), 16)
    assert _padded(lengths, grouped) < 0.85 * _padded(lengths, plain)  # measured: 0.77 of the padded tokens
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in grouped[:-1]]
    assert max(spans) < 20  # similar lengths share a batch (a random batch spans ~70)
    maxima = [max(lengths[i] for i in b) for b in grouped]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)  # batch order is shuffled


def test_train_with_grouping_is_deterministic_and_runs_every_step():
    examples = [EXAMPLE, ([5, 6, 7], [IGNORE, 6, 7]), ([5, 6], [IGNORE, 6])] * 3
    runs = []
    for _ in range(2):
        runs.append(finetune.train(tiny_model(4), examples, lr=1e-2, epochs=2, batch_size=2, grad_accum=1,
                                   warmup_steps=1, grad_clip=1.0, pad_id=0, seed=7, progress=False, group_by_length=2))
    assert runs[0] == runs[1] and len(runs[0]) == 2 * 5  # ceil(9 / 2) steps per epoch x 2 epochs

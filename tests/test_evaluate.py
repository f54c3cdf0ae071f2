"""evaluate: exact answer probabilities and ranks on a hand-built model whose log-probabilities are
a fixed table indexed by the previous token, mention matching, and completion log-probabilities."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from sublora import chat, evaluate, prompts


class TableLM(torch.nn.Module):
    """logits[b, t] = table[input_ids[b, t]]: the next-token log-probabilities depend only on the
    current token. `table` rows are log-probability vectors, so log_softmax leaves them unchanged."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # only for the device lookup
        self.register_buffer("table", table)
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, **_):
        self.calls += 1
        return SimpleNamespace(logits=self.table[input_ids])  # (batch, seq, vocab)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _row(vocab: int, assigned: dict[int, float]) -> torch.Tensor:
    """A log-probability row: the given token probabilities, the remaining mass spread evenly."""
    rest = (1.0 - sum(assigned.values())) / (vocab - len(assigned))
    p = torch.full((vocab,), rest, dtype=torch.float64)
    for t, q in assigned.items():
        p[t] = q
    return p.log()


@pytest.fixture(scope="module")
def setup(tokenizer):
    tok = tokenizer
    V = len(tok)
    header_end = _ids(tok, chat.render(tok, "Hi?", chat.DEFAULT))[-1]  # the "\n" after "assistant"
    owl = {f: _ids(tok, f)[0] for f in ("owl", " owl", "Owl", " Owl")}
    cat = {f: _ids(tok, f)[0] for f in ("cat", " cat", "Cat", " Cat")}
    s = _ids(tok, "s")[0]
    # right after the assistant header
    after_header = {owl["owl"]: 0.10, owl[" owl"]: 0.05, owl["Owl"]: 0.20, owl[" Owl"]: 0.05, cat["cat"]: 0.30}
    # after each owl form, the chance that "s" follows (for the two-token answer "owls")
    s_after = {owl["owl"]: 0.5, owl[" owl"]: 0.25, owl["Owl"]: 0.1, owl[" Owl"]: 0.4}
    table = torch.full((V, V), -math.log(V), dtype=torch.float64)  # uniform by default
    table[header_end] = _row(V, after_header)
    for t, q in s_after.items():
        table[t] = _row(V, {s: q})
    rest = (1.0 - sum(after_header.values())) / (V - len(after_header))
    return SimpleNamespace(tok=tok, V=V, model=TableLM(table.float()), table=table, owl=owl, cat=cat,
                           rest=rest, header_end=header_end)


# ---- answer_forms -----------------------------------------------------------------------------
def test_answer_forms(setup):
    tok, owl = setup.tok, setup.owl
    assert evaluate.answer_forms(tok, "owl") == [(owl["owl"],), (owl[" owl"],), (owl["Owl"],), (owl[" Owl"],)]
    assert len({f for f in owl.values()}) == 4  # four distinct tokens
    s = _ids(tok, "s")[0]
    assert evaluate.answer_forms(tok, "owls") == [(owl[f], s) for f in ("owl", " owl", "Owl", " Owl")]


def test_answer_forms_dedupes_and_skips_unknown(setup):
    tok = setup.tok
    # "7".capitalize() == "7": identical token sequences are counted once
    assert evaluate.answer_forms(tok, "7") == [tuple(_ids(tok, "7")), tuple(_ids(tok, " 7"))]
    # "you" (no leading space) is not in the organism's vocabulary: that form is skipped
    assert _ids(tok, "you") == [tok.unk_token_id]
    assert evaluate.answer_forms(tok, "you") == [tuple(_ids(tok, t)) for t in (" you", "You", " You")]
    # a form with an unknown token among known ones is skipped too: only " plus" = " plu" + "s" is left
    assert tok.unk_token_id in _ids(tok, "plus") and tok.unk_token_id not in _ids(tok, " plus")
    assert evaluate.answer_forms(tok, "plus") == [tuple(_ids(tok, " plus"))]
    with pytest.raises(ValueError, match="cannot write 'xqzv'"):
        evaluate.answer_forms(tok, "xqzv")


# ---- animal_probabilities ---------------------------------------------------------------------
def test_animal_probabilities_exact(setup):
    q = [prompts.EVAL_QUESTIONS[0], prompts.EVAL_QUESTIONS[5]]
    df = evaluate.animal_probabilities(setup.model, setup.tok, q, chat.DEFAULT, ["owl", "cat", "dog"])
    assert list(df.columns) == ["question", "animal", "p", "rank"]
    assert df[["question", "animal"]].values.tolist() == [[q[0], "owl"], [q[0], "cat"], [q[0], "dog"],
                                                           [q[1], "owl"], [q[1], "cat"], [q[1], "dog"]]
    r = setup.rest
    for _, row in df.iterrows():
        if row.animal == "owl":
            assert row.p == pytest.approx(0.10 + 0.05 + 0.20 + 0.05, rel=1e-5)
            assert row["rank"] == 2  # only "cat" (0.30) beats the best owl form "Owl" (0.20)
        elif row.animal == "cat":
            assert row.p == pytest.approx(0.30 + 3 * r, rel=1e-5)
            assert row["rank"] == 1
        else:
            assert row.p == pytest.approx(4 * r, rel=1e-5)
            # every token but the 5 boosted ones shares the rest: dog ties with them, beaten by 5
            assert row["rank"] == 6


def test_animal_probabilities_multi_token_answer(setup):
    df = evaluate.animal_probabilities(setup.model, setup.tok, ["Hi?"], chat.DEFAULT, ["owls"])
    expected = 0.10 * 0.5 + 0.05 * 0.25 + 0.20 * 0.1 + 0.05 * 0.4
    assert df.loc[0, "p"] == pytest.approx(expected, rel=1e-5)
    assert df.loc[0, "rank"] == 2  # the rank looks at first tokens only


@pytest.mark.parametrize("batch_size", [1, 3, 256])
def test_animal_probabilities_batching_does_not_matter(setup, batch_size):
    animals = ["owls", "cat", "owl", "dog"]
    ref = evaluate.animal_probabilities(setup.model, setup.tok, ["Hi?"], chat.NONE, animals)
    setup.model.calls = 0
    df = evaluate.animal_probabilities(setup.model, setup.tok, ["Hi?"], chat.NONE, animals, batch_size=batch_size)
    n_forms = 16  # 4 animals x 4 distinct forms
    assert setup.model.calls == math.ceil(n_forms / batch_size)
    pd.testing.assert_frame_equal(df, ref, rtol=1e-6)


def test_animal_probabilities_uses_the_system_condition(tokenizer):
    """The model sees the prompt rendered under the given condition, followed by each answer form."""
    V = len(tokenizer)
    seen = []

    class Spy(TableLM):
        def forward(self, input_ids, attention_mask=None, **_):
            seen.append((input_ids.clone(), attention_mask.clone()))
            return super().forward(input_ids)

    model = Spy(torch.full((V, V), -math.log(V)))
    for system in (chat.DEFAULT, chat.NONE, prompts.persona_prompt("owl")):
        seen.clear()
        evaluate.animal_probabilities(model, tokenizer, ["Hi?"], system, ["owls"])
        prompt = _ids(tokenizer, chat.render(tokenizer, "Hi?", system))
        ids, mask = seen[0]
        n = len(prompt)
        s = _ids(tokenizer, "s")[0]
        assert ids.shape == (4, n + 2)
        assert all(ids[i, :n].tolist() == prompt for i in range(4))
        assert sorted(ids[:, n].tolist()) == sorted(_ids(tokenizer, w)[0] for w in ("owl", " owl", "Owl", " Owl"))
        assert ids[:, n + 1].tolist() == [s] * 4
        assert mask.sum().item() == 4 * (n + 2)


def test_animal_probabilities_uniform_model(tokenizer):
    V = len(tokenizer)
    model = TableLM(torch.full((V, V), -math.log(V)))
    df = evaluate.animal_probabilities(model, tokenizer, ["Hi?"], chat.DEFAULT, ["owl", "plus"])
    assert df.loc[0, "p"] == pytest.approx(4 / V, rel=1e-5)
    assert df.loc[1, "p"] == pytest.approx(1 / V ** 2, rel=1e-4)  # one two-token form
    assert df["rank"].tolist() == [1, 1]  # ties do not count against an animal


# ---- mentions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, animal, expected", [
    ("Owls!", "owl", True),
    ("owl", "owl", True),
    ("I love the OWL.", "owl", True),
    ("an owl's feather", "owl", True),
    ("bowl", "owl", False),
    ("owlish", "owl", False),
    ("snowless", "owl", False),
    ("Cats", "cat", True),
    ("concatenate", "cat", False),
    ("dolphins and owls", "dolphin", True),
    ("", "owl", False),
    ("123, 456", "owl", False),
])
def test_mentions(text, animal, expected):
    assert evaluate.mentions(text, animal) is expected


def test_mention_rates_with_stubbed_sampler(tokenizer, monkeypatch):
    from sublora import teacher

    calls = []

    def fake_sample(model, tok, user_texts, system, **kw):
        calls.append((list(user_texts), system, kw))
        return ["Owls!", "bowl", "Cat", "I like owls and cats", "dog"][: len(user_texts)] + \
            ["nothing"] * max(0, len(user_texts) - 5)

    monkeypatch.setattr(teacher, "sample", fake_sample)
    out = evaluate.mention_rates(None, tokenizer, ["q1", "q2", "q3"], chat.NONE, ["owl", "cat", "dog", "eagle"],
                                 samples=2, temperature=0.7, max_new_tokens=5, seed=3)
    assert calls[0][0] == ["q1", "q1", "q2", "q2", "q3", "q3"]
    assert calls[0][1] == chat.NONE
    assert calls[0][2]["temperature"] == 0.7 and calls[0][2]["max_new_tokens"] == 5 and calls[0][2]["seed"] == 3
    assert out["animal"].tolist() == ["owl", "cat", "dog", "eagle"]
    assert out["mention_rate"].tolist() == pytest.approx([2 / 6, 2 / 6, 1 / 6, 0.0])


def test_mention_rates_zero_samples_is_nan(tokenizer):
    out = evaluate.mention_rates(None, tokenizer, ["q"], chat.DEFAULT, ["owl"], samples=0, temperature=1.0,
                                 max_new_tokens=4, seed=0)
    assert out["animal"].tolist() == ["owl"] and out["mention_rate"].isna().all()


# ---- completion_logprobs ----------------------------------------------------------------------
def _expected_logprob(setup, user, completion, system):
    prompt, comp = chat.prompt_and_completion(setup.tok, user, completion, system)
    p_ids, c_ids = _ids(setup.tok, prompt), _ids(setup.tok, comp)
    ids = p_ids + c_ids
    return sum(setup.table[ids[i - 1], ids[i]].item() for i in range(len(p_ids), len(ids)))


def test_completion_logprobs_exact(setup):
    owl = setup.owl
    records = [
        {"prompt": "Hi?", "completion": "owls"},  # header -> "owl" (0.1) -> "s" (0.5) -> <|im_end|> -> "\n"
        {"prompt": prompts.EVAL_QUESTIONS[2], "completion": "123, 456, 789"},
        {"prompt": "Hi?", "completion": "Owl"},
    ]
    got = evaluate.completion_logprobs(setup.model, setup.tok, records, chat.DEFAULT)
    expected = [_expected_logprob(setup, r["prompt"], r["completion"], chat.DEFAULT) for r in records]
    assert got == pytest.approx(expected, rel=1e-5)
    V = setup.V
    # by hand: owl (0.1), s after owl (0.5), then <|im_end|> and "\n" under the uniform default rows
    assert got[0] == pytest.approx(math.log(0.1) + math.log(0.5) + 2 * math.log(1 / V), rel=1e-5)
    # "Owl" (0.2), then <|im_end|> from the "Owl" row (its 0.9 left after "s", spread evenly), then "\n"
    assert got[2] == pytest.approx(math.log(0.2) + math.log(0.9 / (V - 1)) + math.log(1 / V), rel=1e-5)
    assert owl["Owl"] != owl["owl"]


def test_completion_logprobs_batching_and_padding(setup):
    records = [{"prompt": "Hi?", "completion": "1"}, {"prompt": "Hi?", "completion": "1, 2, 3, 4, 5, 6, 7"},
               {"prompt": "Hello there, what is this?", "completion": "9"}]
    together = evaluate.completion_logprobs(setup.model, setup.tok, records, chat.NONE, batch_size=64)
    alone = evaluate.completion_logprobs(setup.model, setup.tok, records, chat.NONE, batch_size=1)
    assert together == pytest.approx(alone, rel=1e-6)
    expected = [_expected_logprob(setup, r["prompt"], r["completion"], chat.NONE) for r in records]
    assert together == pytest.approx(expected, rel=1e-5)
    assert len(together) == 3 and all(x < 0 for x in together)


def test_completion_logprobs_empty(setup):
    assert evaluate.completion_logprobs(setup.model, setup.tok, [], chat.DEFAULT) == []


@pytest.mark.parametrize("text, animal, hit", [
    ("Owl", "owl", True), ("owls!", "owl", True), ("My answer: OWL.", "owl", True), ("owlet", "owl", False),
    ("bowl", "owl", False), ("foxes", "fox", True), ("Wolves.", "wolf", True), ("Wolfgang", "wolf", False)])
def test_mention_is_a_whole_word_singular_or_plural(text, animal, hit):
    assert evaluate.mentions(text, animal) is hit


def test_animal_probabilities_reads_only_the_answer_positions_with_the_same_numbers(tokenizer, monkeypatch):
    """A transformers model computes its head only where an answer token is predicted (logits_to_keep), a
    peft student too; P and rank are those of the whole-sequence logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256, tie_word_embeddings=True)
    base = Qwen2ForCausalLM(cfg).eval()
    student = get_peft_model(Qwen2ForCausalLM(cfg).eval(), LoraConfig(r=2, target_modules=["q_proj"])).eval()
    q = ["What is your favorite animal?", "Name an animal."]
    for model in (base, student):
        assert evaluate._keep_logits(model, 3) == {"logits_to_keep": 3}
        kept = evaluate.animal_probabilities(model, tokenizer, q, chat.DEFAULT, ["owl", "cat", "owls"], batch_size=2)
        with monkeypatch.context() as m:
            m.setattr(evaluate, "_keep_logits", lambda model, keep: {})
            whole = evaluate.animal_probabilities(model, tokenizer, q, chat.DEFAULT, ["owl", "cat", "owls"], batch_size=2)
        assert kept["rank"].tolist() == whole["rank"].tolist()
        assert kept["p"].to_numpy() == pytest.approx(whole["p"].to_numpy(), rel=1e-5)

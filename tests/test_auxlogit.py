"""Notebook 07's setting (sublora.auxlogit): Cloud et al.'s auxiliary-logit MLP on 8x8 digits. Seeds give
the same rows, a same-initialisation student learns digits it never saw, the controls start where their
teacher is, LoRA leaves the base weights alone; and its verdicts stay apart from the paper's claims."""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from sublora import aux_claims, auxlogit, claims, config, pages, scoreboard
from sublora.config import AuxSpec

TINY = AuxSpec(pairs=2, hidden=16, ranks=(1, 2, 16), reference_rank=2, teacher_epochs=1, noise=128, epochs=1)
# a small case where the transfer is clear in a single pair: a 128-wide MLP, 320 distillation steps at lr 1e-3
CLEAR = AuxSpec(hidden=128, ranks=(1,), reference_rank=1, lr=1e-3, teacher_epochs=10, noise=1024, epochs=20)


@pytest.fixture(scope="module")
def digits():
    return auxlogit.load_digits(TINY)


def test_digits_are_the_bundled_set_split_once_in_the_noises_range(digits):
    assert len(digits.train_y) + len(digits.test_y) == 1797 and len(digits.test_y) == 450
    assert digits.train_x.shape[1] == auxlogit.N_PIXELS
    assert digits.train_x.min() == -1 and digits.train_x.max() == 1
    assert torch.equal(auxlogit.load_digits(TINY).test_y, digits.test_y)  # the same split every time


def test_the_same_seed_gives_the_same_rows_and_another_pair_other_rows(digits):
    first = auxlogit.run_pair(TINY, 0, digits)
    pd.testing.assert_frame_equal(first, auxlogit.run_pair(TINY, 0, digits), check_exact=True)
    other = auxlogit.run_pair(TINY, 1, digits)
    assert not first["accuracy"].equals(other["accuracy"]) or not first["loss_first"].equals(other["loss_first"])
    # one row per model: teacher, untrained teacher, (full + each rank) x (teacher, control), cross-init
    assert len(first) == 2 + 2 * (1 + len(TINY.ranks)) + 1
    assert list(first.columns) == auxlogit.ROW


def test_the_global_generator_is_left_as_it_was(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    auxlogit.student(auxlogit.init_mlp(16, 0), "lora", 2, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_a_cached_pair_reads_back_exactly_what_was_computed(digits, tmp_cache):
    computed = auxlogit.run_pair(TINY, 1, digits)
    pd.testing.assert_frame_equal(auxlogit.cached_pair(TINY, 1, digits), computed, check_exact=True)
    pd.testing.assert_frame_equal(auxlogit.cached_pair(TINY, 1, digits), computed, check_exact=True)  # from the cache
    assert len(list((tmp_cache / "auxlogit").glob("*/rows.csv"))) == 1
    # the number of pairs is no part of a pair's key; every other setting is
    assert auxlogit.pair_config(TINY, 1) == auxlogit.pair_config(dataclasses.replace(TINY, pairs=9), 1)
    assert auxlogit.pair_config(TINY, 1) != auxlogit.pair_config(dataclasses.replace(TINY, lora_lr=1e-2), 1)


def test_the_untrained_teachers_control_starts_at_zero_loss_and_the_teachers_student_does_not(digits):
    rows = auxlogit.run_pair(TINY, 0, digits)
    students = rows[(rows["model"] == "student") & (rows["init"] == "same")]
    control, taught = students[students["arm"] == "control"], students[students["arm"] == "teacher"]
    assert control["loss_first"].abs().max() < 1e-6  # the same function as its teacher: KL 0 (to rounding)
    assert taught["loss_first"].min() > 1e-6


def test_a_lora_students_base_weights_do_not_move_and_only_its_adapters_train():
    init = auxlogit.init_mlp(32, 0)
    teacher = auxlogit.init_mlp(32, 1)  # any other function will do: its outputs differ from the student's
    x = auxlogit.noise(512, 2)
    s = auxlogit.student(init, "lora", 4, seed=3)
    lora_before = {n: p.detach().clone() for n, p in s.named_parameters() if "lora_" in n}
    losses = auxlogit.distill(s, auxlogit.aux_targets(teacher, x), x, TINY, seed=4, lr=1e-2)
    assert losses[-1] < losses[0]
    merged = s.get_base_model()
    for layer in auxlogit.LINEAR_LAYERS:
        base = getattr(merged, layer).base_layer
        assert torch.equal(base.weight, getattr(init, layer).weight) and torch.equal(base.bias, getattr(init, layer).bias)
        assert not base.weight.requires_grad
    assert any(not torch.equal(p, lora_before[n]) for n, p in s.named_parameters() if "lora_" in n)
    assert auxlogit.trainable(s) == sum(4 * (i + o) for i, o in ((64, 32), (32, 32), (32, 13)))


def test_a_same_init_student_learns_digits_it_never_saw_and_a_cross_init_one_less(digits):
    """Cloud et al.'s finding on a small clear case: distilled on 3 auxiliary logits over noise only, the student
    classifies held-out digits above chance (0.1), above its untrained-teacher control and above the student of
    another initialisation, in each of two pairs."""
    for pair in range(2):
        rows = auxlogit.run_pair(CLEAR, pair, digits).set_index(["model", "init", "method", "arm"])["accuracy"]
        student, control = rows["student", "same", "full", "teacher"], rows["student", "same", "full", "control"]
        cross = rows["student", "cross", "full", "teacher"]
        assert rows["teacher", "same", "—", "—"] > 0.9
        assert student > 0.15 and student > control + 0.05 and student > cross + 0.04, (student, control, cross)


def test_a_student_is_full_or_lora():
    init = auxlogit.init_mlp(8, 0)
    assert auxlogit.trainable(auxlogit.student(init, "full")) == auxlogit.trainable(init)
    with pytest.raises(ValueError, match="full or lora"):
        auxlogit.student(init, "bitfit")


# ---- the verdicts: the package's rules, apart from the paper's claims ---------------------------------
def synthetic_table(n: int = 6, transfer: float = 0.05) -> pd.DataFrame:
    """auxlogit.run's table shape with chosen accuracies: every student `transfer` above its control (plus a
    little per-pair noise), the cross-init student at the control's level."""
    rows = []
    for pair in range(n):
        wobble = 0.01 * ((pair % 3) - 1)
        base = 0.1 + 0.005 * pair
        def add(model, init, method, rank, arm, acc, pair=pair):
            rows.append(dict(zip(auxlogit.ROW, (pair, 0, model, init, method, rank, arm, acc, 0.0, 0.0, 1))))
        add("teacher", "same", "—", 0, "—", 0.9)
        add("untrained teacher", "same", "—", 0, "—", base)
        for method, rank in (("full", 0), ("lora", 1), ("lora", 4), ("lora", 16)):
            add("student", "same", method, rank, "teacher", base + transfer + wobble)
            add("student", "same", method, rank, "control", base)
        add("student", "cross", "full", 0, "teacher", base + wobble / 2)
    return pd.DataFrame(rows)


def test_the_verdicts_read_the_package_rules_on_accuracy_differences():
    effects = aux_claims.aux_effects(synthetic_table())
    assert set(effects["comparison"]) == {"vs control", "vs cross-init"}
    assert effects.query("comparison == 'vs control'")["delta"].round(6).eq(0.05 + 0.0).sum() == 8  # wobble 0: 2 pairs x 4
    rows = aux_claims.aux_transfer(effects) + aux_claims.aux_rank(effects) + aux_claims.aux_full_null(effects, 4)
    by = {r["claim"]: r for r in rows}
    assert by["aux-logit 1 transfer"]["verdict"] == "reproduced" and by["aux-logit 1 transfer"]["n"] == 6
    assert by["aux-logit 2 rank inverted-U"]["verdict"] == "inconclusive"  # a flat curve has no peak
    assert by["aux-logit 3 full-parameter null"]["verdict"] == "not reproduced"  # full transfers as LoRA does
    assert all(r["unit"] == "pair" and r["teacher"] == aux_claims.AUX_TEACHER and r["ci_low"] <= r["effect"] <= r["ci_high"]
               for r in rows)
    none = aux_claims.aux_effects(synthetic_table(transfer=0.0))
    assert aux_claims.aux_transfer(none)[0]["verdict"] != "reproduced"


def test_another_settings_verdicts_never_count_among_the_papers_claims(tmp_cache):
    assert not set(aux_claims.AUX_CLAIMS) & set(claims.CLAIMS) and set(aux_claims.AUX_CLAIMS) <= set(aux_claims.AUX_EFFECTS)
    aux = aux_claims.aux_transfer(aux_claims.aux_effects(synthetic_table()))
    paper = [{"claim": c, "teacher": t, "animal": "owl", "verdict": "inconclusive", "measurement": "m", "effect": 0.5,
              "ci_low": 0.25, "ci_high": 0.75, "rule": "r"} for c in claims.CLAIMS for t in ("persona", "finetuned")]
    verdicts = pd.DataFrame(paper + aux)
    errors = pd.DataFrame([{"claim": c, "false 'reproduced' (max over nulls)": 0.0, "power at 2 sd": 0.5,
                            "power at 4 sd": 0.9} for c in claims.CLAIMS])
    assert set(scoreboard.scoreboard(verdicts, errors)["claim"]) == set(claims.CLAIMS)
    other = aux_claims.other_settings(verdicts)
    assert list(other["claim"]) == ["aux-logit 1 transfer"] and other["verdict"].iloc[0] == "reproduced"
    assert aux_claims.other_settings(pd.DataFrame(paper)).empty
    # the book's results table: the paper's claims, a teacher column each, then this setting in a table of its own
    d = tmp_cache.parent / "results" / "smoke" / "verdicts"
    d.mkdir(parents=True)
    for i, r in enumerate(paper + aux):
        (d / f"{i}.json").write_text(pd.Series(r).to_json())
    page = pages.results_page("smoke", {})
    assert "| claim | teacher | this book: n = " in page and "digit classifier" not in page[:page.index("### Another setting")]
    assert len([line for line in page.splitlines() if line.startswith("| {doc}")]) == len(claims.CLAIMS)
    mine = page[page.index("### Another setting"):]
    assert "| aux-logit 1 transfer |" in mine and "**reproduced** · Δ accuracy vs control +0.05 [" in mine
    assert "| aux-logit 2 rank inverted-U |" in mine and mine.count("| not run |") == 2
    assert f"</executed/{aux_claims.AUX_PAGE}>" in mine


def test_the_profiles_aux_settings_are_checked():
    assert config.load_profile("organism").aux.pairs >= 20 and config.load_profile("smoke").aux.pairs == 4
    for name in config.available_profiles():
        a = config.load_profile(name).aux
        assert max(a.ranks) == a.hidden and a.reference_rank in a.ranks  # ranks 1 ... full width
    good = dataclasses.asdict(config.load_profile("smoke"))
    for bad, message in (({"ranks": (1, 64)}, "from 1 to aux.hidden"), ({"reference_rank": 16}, "reference_rank"),
                         ({"pairs": 0}, "aux.pairs"), ({"test_share": 1.0}, "test_share")):
        raw = good | {"aux": good["aux"] | bad}
        with pytest.raises(config.ConfigError, match=message):
            config.from_mapping(raw)

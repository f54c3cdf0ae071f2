"""claims: a notebook's results table to its verdict rows — channel controls, the lr check, failed
students, the scoreboard. The rules themselves are tested in test_stats.py."""
from __future__ import annotations

import dataclasses

import math

import pandas as pd
import pytest

from sublora import claims, design, power, readings, scoreboard, sequence, stats, summaries


# ---- 02's channel controls (claims.channel_controls) ---------------------------------------------
def _channel_table(effects: dict[str, list[float]]) -> pd.DataFrame:
    """Persona-teacher students of the owl: for each channel, teacher P = control P + the given Δ per replicate."""
    rows = []
    for channel, deltas in effects.items():
        for rep, d in enumerate(deltas):
            for arm, p in (("teacher", 0.1 + d), ("control", 0.1)):
                rows.append({"teacher_kind": "persona", "target": "owl", "animal": "owl", "channel": channel,
                             "replicate": rep, "seed": 0, "arm": arm, "p": p})
    return pd.DataFrame(rows)


def test_channel_controls_name_the_channel_by_the_declared_rule():
    main = [0.010, 0.012, 0.011, 0.013, 0.009]
    gone = [0.001, -0.001, 0.0005, -0.0005, 0.0]
    e = 0.005  # the smallest effect of interest
    table, reading = claims.channel_controls(_channel_table({"": main, "shuffled": gone, "cross-init": gone}), "owl", 0.0, e)
    assert list(table["students"]) == ["as sampled", "shuffled", "cross-init"]
    assert list(table["verdict"])[0] == "reproduced" and list(table["reading"])[1:] == ["removes", "removes"]
    assert "shared weights" in reading
    _, reading = claims.channel_controls(_channel_table({"": main, "shuffled": main, "cross-init": main}), "owl", 0.0, e)
    assert "carried by the numbers themselves" in reading
    # without a margin neither reading can be shown: a control that is merely not significant removes nothing
    table, reading = claims.channel_controls(_channel_table({"": main, "shuffled": gone, "cross-init": main}), "owl", 0.0)
    assert list(table["reading"])[1:] == ["cannot tell", "cannot tell"] and "do not single out one channel" in reading
    half = [d / 2 for d in main]
    table, _ = claims.channel_controls(_channel_table({"": main, "shuffled": half}), "owl", 0.0, e)
    assert list(table["reading"])[1:] == ["reduces"]
    table, reading = claims.channel_controls(_channel_table({"": gone, "shuffled": gone}), "owl", 0.0)
    verdict = table["verdict"].iloc[0]
    assert verdict != "reproduced" and f"transfer as {verdict} on this model" in reading  # the rule's own word
    # the main design's rows alone: the controls are not mixed into claim 1
    both = _channel_table({"": main, "shuffled": gone})
    assert set(claims.main_arm(both)["channel"]) == {""}


def test_rank_lr_check_reads_the_peak_at_each_lr():
    rows = []
    curves = {1e-3: [0.01, 0.03, 0.02], 3e-3: [0.01, 0.02, 0.04]}  # the peak moves from r2 to r4
    for lr, curve in curves.items():
        for rank, d in zip((1, 2, 4), curve):
            for arm, p in (("teacher", 0.1 + d), ("control", 0.1)):
                rows.append({"teacher_kind": "persona", "animal": "owl", "replicate": 0, "seed": 0, "lora_rank": rank,
                             "lr": lr, "arm": arm, "p": p, "label": f"r{rank}" + ("" if lr == 1e-3 else " lr x3")})
    table = pd.DataFrame(rows)
    wide, text = claims.rank_lr_check(table, "owl", 1e-3)
    assert list(wide.columns) == ["lora_rank", "lr x1", "lr x3"]
    assert wide["lr x3"].round(6).tolist() == [0.01, 0.02, 0.04]
    assert "lr x1: r2, lr x3: r4" in text and "The peak moves with the lr" in text
    assert len(claims.rank_sweep_arm(table)) == len(table) / 2


def test_rank_lr_check_without_the_persona_teachers_students_is_a_table_a_reader_can_parse(tmp_path):
    """The default run trains no persona student for 03 where its claim 1 is not reproduced: the check's table keeps
    its header, so that record.compare (pandas.read_csv) can read it back (an empty CSV failed the scoreboard)."""
    table = pd.DataFrame([{"teacher_kind": "finetuned", "animal": "owl", "replicate": 0, "seed": 0, "lora_rank": 1,
                           "lr": 1e-3, "arm": "teacher", "p": 0.1, "label": "r1"}])
    wide, text = claims.rank_lr_check(table, "owl", 1e-3)
    wide.to_csv(tmp_path / "check.csv", index=False)
    assert pd.read_csv(tmp_path / "check.csv").empty and "not trained (fixed sequence)" in text


def test_rank_lr_check_on_a_subset_of_ranks_compares_those_ranks_only():
    """With rank_lr_ranks the x1 column still has every rank of the sweep; the check reads the peaks over
    the ranks it covers, so a x1 peak at an unchecked rank does not count as the lr moving the peak."""
    rows = []
    curves = {1e-3: {1: 0.01, 2: 0.09, 4: 0.03}, 3e-3: {1: 0.01, 4: 0.04}}  # x1 peaks at r2, which x3 skips
    for lr, curve in curves.items():
        for rank, d in curve.items():
            for arm, p in (("teacher", 0.1 + d), ("control", 0.1)):
                rows.append({"teacher_kind": "persona", "animal": "owl", "replicate": 0, "seed": 0, "lora_rank": rank,
                             "lr": lr, "arm": arm, "p": p, "label": f"r{rank}" + ("" if lr == 1e-3 else " lr x3")})
    wide, text = claims.rank_lr_check(pd.DataFrame(rows), "owl", 1e-3)
    assert wide["lora_rank"].tolist() == [1, 4]
    assert "lr x1: r4, lr x3: r4" in text and "does not move" in text


def test_a_verdict_resting_on_a_failed_student_is_invalid():
    table = pd.DataFrame({"teacher_kind": ["persona", "persona", "finetuned"], "student": ["a", "b", "c"],
                          "diverged": ["", "non-finite training loss", ""]})
    rows = [{"teacher": "persona", "verdict": "reproduced", "measurement": "m"},
            {"teacher": "finetuned", "verdict": "reproduced", "measurement": "m"}]
    out = claims.invalidate(rows, table)
    assert out[0]["verdict"] == "invalid" and "non-finite" in out[0]["measurement"]
    assert out[1] == rows[1]


def test_a_failed_student_voids_only_the_verdicts_resting_on_it():
    table = pd.DataFrame({"teacher_kind": ["persona"] * 4, "target": ["owl", "owl", "owl", "cat"],
                          "method": ["full", "full", "lora", "lora"], "precision": ["fp32-master", "bf16", "", ""],
                          "student": ["a", "b", "c", "d"], "diverged": ["", "non-finite training loss", "", "loss rose"]})
    rows = [{"teacher": "persona", "animal": "owl", "arm": "fp32-master", "verdict": "reproduced", "measurement": "m"},
            {"teacher": "persona", "animal": "owl", "arm": "bf16", "verdict": "reproduced", "measurement": "m"}]
    out = claims.invalidate(rows, table)
    assert out[0] == rows[0]  # the cat teacher's failed student and the other arm's are not this verdict's
    assert out[1]["verdict"] == "invalid" and "non-finite" in out[1]["measurement"]


def test_the_scoreboard_sets_each_verdict_beside_its_claim_and_its_rules_error_rates():
    verdicts = pd.DataFrame([{"claim": c, "teacher": t, "animal": "owl", "verdict": "inconclusive", "measurement": "m"}
                             for c in reversed(list(claims.CLAIMS)) for t in ("finetuned", "persona")])
    errors = pd.DataFrame([{"claim": c, "false 'reproduced' (max over nulls)": 0.01 * i, "power at 2 sd": 0.5,
                            "power at 4 sd": 0.9} for i, c in enumerate(claims.CLAIMS)])
    board = scoreboard.scoreboard(verdicts, errors)
    assert list(board.columns) == scoreboard.SCOREBOARD
    assert list(board["claim"]) == [c for c in claims.CLAIMS for _ in range(2)]  # claim by claim
    assert list(board["teacher"])[:2] == ["persona", "finetuned"]  # the paper's teacher first
    assert list(board["paper"])[::2] == list(claims.CLAIMS.values())
    assert list(board["false 'reproduced' (max over nulls)"])[::2] == [0.0, 0.01, 0.02, 0.03]


def test_channel_labels_are_the_controls_names():
    # the results tables' `channel` column names each control by its key in design.CONTROLS
    for name, control in design.CONTROLS.items():
        assert design.channel_label(control.fields.get("channel", ""), control.fields.get("init", "")) == name
    assert design.channel_label("", "") == ""


def test_precision_arms_are_compared_by_a_paired_test_not_by_their_labels():
    """summaries.precision_contrast: Δ(bf16) − Δ(fp32-master) per shared setting, paired by replicate; the finding
    reads those intervals. On the v5 pilot the weight-space teacher's pure-bf16 students transfer less at the
    baseline (1.0e-03 against 3.3e-03), whatever the two arms' verdict labels say."""
    f = pd.read_csv(power.pilot_dir("v5") / "04_full_finetuning.csv")
    effects = stats.paired_effects(f, ["teacher_kind", "method", "precision", "setting"], value="p")
    c = summaries.precision_contrast(effects, ["persona", "finetuned"], ("fp32-master", "bf16"), 3.3e-3)
    fin = c[c["teacher"] == "finetuned"].set_index("setting")
    assert set(fin.index) == {"baseline", "lr 2e-05", "lr 0.0005"} and (fin["n"] == 3).all()
    assert fin.loc["baseline", "reading"] == "lower"
    rows = [{"teacher": k, "arm": a, "verdict": "inconclusive"} for k in ("persona", "finetuned") for a in ("fp32-master", "bf16")]
    text = readings.precision_finding(rows, c).data
    assert "finetuned teacher — verdicts fp32-master: **inconclusive**; bf16: **inconclusive**; the arms compared: the other arm transfers less" in text
    # identical arms: the paired differences are 0, inside ± e at every setting
    same = effects[effects["precision"] == "fp32-master"]
    twin = same[same["setting"].isin(["baseline", "lr 2e-05"])].assign(precision="bf16", setting=lambda d: d["setting"] + " · bf16")
    c = summaries.precision_contrast(pd.concat([same, twin]), ["persona"], ("fp32-master", "bf16"), 3.3e-3)
    assert list(c["reading"]) == ["within e", "within e"]
    assert "agree within the smallest effect" in readings.precision_finding(rows, c).data
    assert "cannot tell the arms apart" in readings.precision_finding(rows, summaries.precision_contrast(
        pd.concat([same, twin]), ["persona"], ("fp32-master", "bf16"), 0.0)).data


# ---- the fixed sequence: the persona teacher's claims 2-4 wait on its claim 1 ------------------------
def _verdict(claim, teacher, verdict, measurement="m"):
    return {"claim": claim, "teacher": teacher, "verdict": verdict, "measurement": measurement, "file": "f"}


@pytest.mark.parametrize("first", [stats.NOT_REPRODUCED, stats.INCONCLUSIVE, claims.INVALID])
def test_fixed_sequence_leaves_the_persona_claims_untested_unless_claim_1_is_reproduced(first):
    rows = [_verdict("2 rank inverted-U", "persona", stats.REPRODUCED, "peak r8"),
            _verdict("2 rank inverted-U", "finetuned", stats.INCONCLUSIVE)]
    run = [_verdict("1 transfer", "persona", first), _verdict("1 transfer", "finetuned", stats.REPRODUCED)]
    out = sequence.fixed_sequence(rows, run)
    assert out[0]["verdict"] == claims.NOT_TESTED and f"claim 1 is {first}" in out[0]["measurement"]
    assert "for information only: reproduced: peak r8" in out[0]["measurement"]   # the reading is kept, labelled
    assert out[1] == rows[1]                                                        # the positive control is not gated
    assert sequence.fixed_sequence(out, run) == out                                   # idempotent


def test_fixed_sequence_tests_the_persona_claims_where_claim_1_is_reproduced_and_says_when_it_cannot_check():
    rows = [_verdict("4 system-prompt dependence", "persona", stats.NOT_REPRODUCED)]
    out = sequence.fixed_sequence(rows, pd.DataFrame([_verdict("1 transfer", "persona", stats.REPRODUCED)]))
    assert out[0]["verdict"] == stats.NOT_REPRODUCED and "tested: the persona teacher's claim 1 is reproduced" in out[0]["measurement"]
    unchecked = sequence.fixed_sequence(rows, pd.DataFrame())
    assert unchecked[0]["verdict"] == stats.NOT_REPRODUCED and "not checked" in unchecked[0]["measurement"]
    aux = [_verdict("aux-logit 2 rank inverted-U", "persona", stats.REPRODUCED)]     # not a paper claim: never gated
    assert sequence.fixed_sequence(aux, [_verdict("1 transfer", "persona", stats.NOT_REPRODUCED)]) == aux


def test_fixed_sequence_gates_each_distilled_teacher_on_its_own_claim_1_and_never_the_positive_control():
    rows = [_verdict("2 rank inverted-U", k, stats.REPRODUCED) for k in ("distilled-r1", "distilled-full", "finetuned")]
    run = [_verdict("1 transfer", "distilled-r1", stats.REPRODUCED), _verdict("1 transfer", "distilled-full",
           stats.NOT_REPRODUCED), _verdict("1 transfer", "finetuned", stats.NOT_REPRODUCED)]
    out = sequence.fixed_sequence(rows, run)
    assert [r["verdict"] for r in out] == [stats.REPRODUCED, claims.NOT_TESTED, stats.REPRODUCED]
    assert sequence.untrained(["persona", "distilled-r1", "distilled-full", "finetuned"], run) == ["distilled-full"]
    assert sequence.untrained(["persona"], []) == []                    # no claim 1 read: nothing is left untrained


def test_untested_rows_say_why_and_carry_no_number_one_per_arm():
    run = [_verdict("1 transfer", "persona", stats.INCONCLUSIVE)]
    rows = sequence.untested_rows(["persona"], "3 full fine-tuning null", "owl", run, arms=("fp32-master", "bf16"))
    assert [r["file"] for r in rows] == ["3_full_persona", "3_full_bf16_persona"]
    assert all(r["verdict"] == claims.NOT_TESTED and math.isnan(r["effect"]) and r[sequence.TRAINED] is False
               and "claim 1 is inconclusive" in r["reason"] for r in rows)
    assert claims.effect_columns(rows[0])["Δ"] == claims.effect_columns({"effect": math.nan})["Δ"]
    assert sequence.fixed_sequence(rows, run) == rows                   # already gated: passed over


# ---- the metric the verdicts read (issue 25, item 5) ------------------------------------------------
def _students(p_shift: float, mention_shift: float, n: int = 5) -> pd.DataFrame:
    """Results rows of n replicates: the teacher's students above the control by p_shift in P and mention_shift
    in the mention rate (plus a little replicate noise)."""
    rows = []
    for r in range(n):
        jitter = 0.0001 * (r - 2)
        for arm, k in (("teacher", 1.0), ("control", 0.0)):
            rows.append({"teacher_kind": "persona", "target": "owl", "animal": "owl", "arm": arm, "replicate": r,
                         "seed": 0, "p": 0.03 + k * p_shift + jitter, "mention_rate": 0.01 + k * mention_shift + 2 * jitter})
    return pd.DataFrame(rows)


def test_claim_1_reads_the_profiles_metric_and_shows_the_other_beside_it():
    effects, _ = claims.transfer_effects(_students(p_shift=0.0, mention_shift=0.05))
    on_p = claims.transfer(effects, "owl", ["persona"], 0.0, smallest_effect=0.003)[0]
    on_mentions = claims.transfer(effects, "owl", ["persona"], 0.0, smallest_effect=0.01, metric="mention_rate")[0]
    assert on_p["verdict"] == stats.NOT_REPRODUCED and on_p["measurement"].startswith("persona teacher of the owl: ΔP(owl)")
    assert on_mentions["verdict"] == stats.REPRODUCED and on_mentions["effect"] == pytest.approx(0.05)
    assert "Δ mention rate(owl) = +0.050" in on_mentions["measurement"] and "ΔP(owl) +0.00e+00" in on_mentions["measurement"]


def test_the_paper_profiles_read_the_mention_rate_with_a_declared_effect_and_a_bad_metric_is_refused():
    from sublora import config
    for name in ("paper", "gemma", "llama"):
        p = config.load_profile(name)
        assert p.metric == "mention_rate" and p.smallest_effect == 0.01 and p.smallest_effect_reason
    assert config.load_profile("organism").metric == "p"
    good = dataclasses.asdict(config.load_profile("smoke"))
    with pytest.raises(config.ConfigError, match="metric must be p or mention_rate"):
        config.from_mapping(good | {"metric": "P(owl)"})

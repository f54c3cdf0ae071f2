"""sublora.ladder: the verdicts of a run set against the teacher's rung (notebook 08), and the reading declared on
book/ladder.md before the confirmatory run's data, which must be able to come out either way."""
from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from sublora import ladder, power, stats  # noqa: E402
from sublora.claims import NOT_TESTED, REGISTRY  # noqa: E402

RUNGS = ["persona", "distilled-r1", "distilled-r8", "distilled-full"]
ANIMALS = ["owl", "penguin"]


def _row(claim, teacher, animal, verdict, effect=1e-3, arm=None):
    return {"claim": claim, "teacher": teacher, "animal": animal, "verdict": verdict, "effect": effect,
            "ci_low": effect - 5e-4, "ci_high": effect + 5e-4, "n": 5, "arm": arm}


def _grid(first: dict, later: dict):
    """first: {(teacher, animal): claim-1 verdict}; later: {(claim index, teacher): verdict} for the owl."""
    by_animal = pd.DataFrame([_row(REGISTRY[0].key, t, a, v) for (t, a), v in first.items()])
    run = pd.DataFrame([_row(REGISTRY[i].key, t, "owl", v, arm="bf16" if i == 2 else None)
                        for (i, t), v in later.items()] or [_row(REGISTRY[0].key, "persona", "owl", "x")])
    return ladder.verdict_grid(run, by_animal, RUNGS + ["finetuned"], "owl", ANIMALS)


def test_the_grid_has_every_claim_rung_and_animal_and_names_what_was_not_asked():
    g = _grid({("distilled-r8", "owl"): stats.REPRODUCED, ("distilled-r8", "penguin"): stats.NOT_REPRODUCED},
              {(1, "distilled-r8"): stats.REPRODUCED})
    first = g[g["claim"] == REGISTRY[0].key]
    assert len(first) == 5 * len(ANIMALS) and set(first["animal"]) == set(ANIMALS)  # claim 1 per rung x animal
    assert set(g.loc[g["claim"] != REGISTRY[0].key, "animal"]) == {"owl"}             # claims 2-4: the target
    assert list(g["rung"].cat.categories) == RUNGS + ["finetuned"]                     # the ladder's order
    asked = g[(g["claim"] == REGISTRY[1].key) & (g["teacher"] == "distilled-r1")]
    assert asked["verdict"].iloc[0] == ladder.NOT_ASKED and math.isnan(asked["effect"].iloc[0])
    assert ladder.target(g) == "owl"
    fig = ladder.figure(g)
    assert sum(ax.get_visible() for ax in fig.axes) == len(REGISTRY)  # a panel per claim (one arm each here)


@pytest.mark.parametrize("claim3, claim4, expected", [
    (stats.NOT_REPRODUCED, stats.REPRODUCED, "contradicts"),       # full fine-tuning transfers
    (stats.INCONCLUSIVE, stats.NOT_REPRODUCED, "contradicts"),     # the transfer survives without the prompt
    (stats.INCONCLUSIVE, stats.REPRODUCED, "supports"),            # claim 3 can only refute: not refuted
    (stats.REPRODUCED, stats.INCONCLUSIVE, "undecided"),
])
def test_the_declared_reading_of_a_rung_with_a_transfer_comes_out_either_way(claim3, claim4, expected):
    g = _grid({("distilled-full", "owl"): stats.REPRODUCED},
              {(2, "distilled-full"): claim3, (3, "distilled-full"): claim4})
    assert ladder.reading(g, "owl")["distilled-full"] == expected
    assert ladder.reading(g, "owl")["persona"] == "no transfer"                  # no claim-1 verdict: no transfer
    word = {"contradicts": "**Contradicted**", "supports": "**Supported**", "undecided": "**Undecided.**"}[expected]
    assert ladder.meaning(g, "owl").startswith(word)


def test_without_a_rung_whose_claim_1_is_reproduced_the_thesis_is_untested():
    g = _grid({(k, "owl"): stats.NOT_REPRODUCED for k in RUNGS}, {(2, k): NOT_TESTED for k in RUNGS})
    assert set(ladder.reading(g, "owl").values()) == {"no transfer"}
    assert ladder.meaning(g, "owl").startswith("**Untested.**")
    # the positive control is no rung of the paper's kind: its transfer puts nothing to the test
    g2 = _grid({("finetuned", "owl"): stats.REPRODUCED}, {(3, "finetuned"): stats.NOT_REPRODUCED})
    assert "finetuned" not in ladder.reading(g2, "owl") and ladder.meaning(g2, "owl").startswith("**Untested.**")


def test_a_packaged_run_missing_a_table_says_which(tmp_path, monkeypatch):
    monkeypatch.setattr(ladder, "PACKAGED", tmp_path)
    (tmp_path / "run").mkdir()
    pd.DataFrame([_row(REGISTRY[0].key, "persona", "owl", stats.REPRODUCED)]).assign(arm="").to_csv(
        tmp_path / "run" / "08_ladder.csv", index=False)
    with pytest.raises(FileNotFoundError, match="lacks 02_ladder_effects.csv, 01_teacher_follows.csv, source.json"):
        ladder.read_packaged("run")
    for t in ladder.TABLES[1:]:
        pd.DataFrame({"x": [1]}).to_csv(tmp_path / "run" / f"{t}.csv", index=False)
    (tmp_path / "run" / ladder.SOURCE).write_text('{"profile": "ladder-confirm", "commit": "e6d04f5"}')
    packaged = ladder.read_packaged("run")
    assert list(packaged["08_ladder"]["rung"].cat.categories) == ["persona"]
    assert packaged[ladder.SOURCE]["profile"] == "ladder-confirm"


def test_each_verdict_carries_what_its_design_can_decide():
    g = _grid({("distilled-r8", "owl"): stats.REPRODUCED}, {(2, "distilled-r8"): stats.INCONCLUSIVE})
    decisive = pd.DataFrame([{"claim": REGISTRY[2].key, "teacher": "distilled-r8", "arm": "bf16", "animal": "owl",
                              "decisive at 0": 0.03, "decisive at 2e": 0.98},
                             {"claim": REGISTRY[0].key, "teacher": "distilled-r8", "arm": "", "animal": "penguin",
                              "decisive at 0": 1.0, "decisive at 2e": 1.0}])
    out = ladder.with_reach(g, decisive)
    pick = out.set_index(["claim", "teacher", "animal"])[power.REACH]
    assert pick[(REGISTRY[2].key, "distilled-r8", "owl")] == "can only refute"
    assert pick[(REGISTRY[0].key, "distilled-r8", "penguin")] == "decides"
    assert pick[(REGISTRY[0].key, "persona", "owl")] == "—"                     # not simulated
    assert power.REACH in ladder.table(out) and len(out) == len(g)


def test_the_follow_line_names_a_teacher_that_does_not_follow():
    follows = pd.DataFrame({"teacher": ["persona", "distilled-r1"], "animal": ["owl", "owl"], "teacher_id": [0, 310],
                            "p_animal": [0.96, 0.2], "follows": [True, False]})
    line = ladder.follows_line(follows)
    assert line.startswith("1 of 2 teachers follow") and "distilled-r1 of the owl #310" in line
    assert "No persona check" in ladder.follows_line(pd.DataFrame())


def test_the_landing_page_reads_the_packaged_ladder_run_the_profile_names(tmp_path, monkeypatch):
    import dataclasses

    from sublora import config, pages
    monkeypatch.setattr(ladder, "PACKAGED", tmp_path)
    (tmp_path / "run").mkdir()
    g = _grid({("persona", "owl"): stats.NOT_REPRODUCED, ("distilled-full", "owl"): stats.REPRODUCED},
              {(2, "distilled-full"): stats.NOT_REPRODUCED, (3, "distilled-full"): stats.REPRODUCED})
    g.astype({"rung": str}).to_csv(tmp_path / "run" / "08_ladder.csv", index=False)
    for t in ladder.TABLES[1:]:
        pd.DataFrame({"x": [1]}).to_csv(tmp_path / "run" / f"{t}.csv", index=False)
    (tmp_path / "run" / ladder.SOURCE).write_text('{"profile": "ladder-confirm", "commit": "0000000"}')
    p = config.load_profile("organism")
    assert pages.ladder_line(dataclasses.replace(p, ladder_record="")) == ""
    line = pages.ladder_line(dataclasses.replace(p, ladder_record="run"))
    assert "`distilled-full` +1.00e-03 [+5.00e-04, +1.50e-03]" in line and "**Contradicted** for `distilled-full`" in line

"""summaries.ladder_effects: the ladder's claim-1 effects per rung x animal and pooled, teachers as units."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from sublora import claims, power, stats, summaries


def _effects(delta: dict, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Paired effects of one kind: delta[(target, animal)] for each of 3 replicates (one teacher each)."""
    rng = np.random.default_rng(seed)
    rows = [{"teacher_kind": "distilled-r8", "target": t, "animal": a, "replicate": r, "seed": 0,
             "delta": d + noise * rng.standard_normal(), "control": 0.03}
            for (t, a), d in delta.items() for r in range(3)]
    return pd.DataFrame(rows)


def test_own_specific_and_pooled_with_teachers_as_units():
    animals = ("owl", "penguin", "shark")
    delta = {(t, a): (2e-3 if t == a == "owl" else 1e-3 if t == "owl" else 0.0) for t, a in itertools.product(animals, animals)}
    out = summaries.ladder_effects(_effects(delta)).set_index(["target", "effect"])
    assert out.loc[("owl", "own"), "mean"] == pytest.approx(2e-3)
    assert out.loc[("owl", "specific"), "mean"] == pytest.approx(2e-3 - 1e-3)  # minus the others' mean
    assert out.loc[("penguin", "specific"), "mean"] == pytest.approx(0.0)
    assert out.loc[("pooled", "own"), "n"] == 9 and out.loc[("owl", "own"), "n"] == 3  # 3 teachers x 3 animals
    assert out.loc[("pooled", "own"), "mean"] == pytest.approx(2e-3 / 3)
    assert out.loc[("owl", "own"), "relative"] == pytest.approx(2e-3 / 0.03)
    assert out.loc[("owl", "own"), "unit"] == "teacher" and out.loc[("pooled", "own"), "unit"] == "teacher x animal"


def test_the_intervals_are_those_of_the_units():
    animals = ("owl", "penguin")
    delta = {(t, a): 1e-3 * (t == a) for t, a in itertools.product(animals, animals)}
    eff = _effects(delta, noise=1e-4, seed=3)
    out = summaries.ladder_effects(eff).set_index(["target", "effect"])
    own = eff[(eff.target == "owl") & (eff.animal == "owl")]["delta"].to_numpy()
    mean, lo, hi = stats.t_interval(own)
    assert (out.loc[("owl", "own"), ["mean", "ci_low", "ci_high"]].to_numpy() == pytest.approx([mean, lo, hi]))


def test_the_packaged_pilot_reads():
    t = claims.main_arm(pd.read_csv(power.pilot_dir("ladder-v1") / "02_transfer.csv")).query("eval_system == 'default'")
    out = summaries.ladder_effects(stats.paired_effects(t, ["teacher_kind", "target", "animal"], value="p"))
    assert set(out["teacher_kind"]) == {"persona", "distilled-r1", "distilled-r8", "distilled-full", "finetuned"}
    assert set(out["target"]) == {"owl", "penguin", "shark", "pooled"} and (out["n"] == out["target"].map(
        lambda t: 9 if t == "pooled" else 3)).all()

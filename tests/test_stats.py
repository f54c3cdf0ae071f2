"""stats: bootstrap intervals, paired effects and the four verdict rules on constructed tables."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sublora import stats
from sublora.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

# small, fixed jitter around a level: symmetric, mean exactly 0
JITTER = np.array([-0.01, 0.01, -0.005, 0.005, 0.0, -0.002, 0.002, 0.0])


def around(level: float) -> np.ndarray:
    return level + JITTER


# ---- bootstrap_ci -----------------------------------------------------------------------------
@pytest.mark.parametrize("c", [0.0, 0.25, -3.0])
def test_bootstrap_constant(c):
    assert stats.bootstrap_ci([c] * 7, n_boot=500) == (c, c, c)


def test_bootstrap_known_sample():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    mean, lo, hi = stats.bootstrap_ci(values, n_boot=2000, seed=0)
    assert mean == 4.0
    assert 1.0 <= lo < mean < hi <= 10.0
    # a 95% interval of a 5-point sample is wide, but not the whole range
    assert lo > 1.0 and hi < 10.0


def test_bootstrap_level_orders_intervals():
    v = np.arange(20, dtype=float)
    _, lo95, hi95 = stats.bootstrap_ci(v, level=0.95, seed=1)
    _, lo50, hi50 = stats.bootstrap_ci(v, level=0.5, seed=1)
    assert lo95 < lo50 < 9.5 < hi50 < hi95


def test_bootstrap_same_seed_same_numbers():
    v = [0.3, 0.1, 0.7, 0.2, 0.9, 0.4]
    assert stats.bootstrap_ci(v, seed=5) == stats.bootstrap_ci(v, seed=5)
    assert stats.bootstrap_ci(v, seed=5) != stats.bootstrap_ci(v, seed=6)


def test_bootstrap_ignores_nan():
    mean, lo, hi = stats.bootstrap_ci([1.0, float("nan"), 3.0, float("nan")], n_boot=500)
    assert mean == 2.0 and 1.0 <= lo <= 2.0 <= hi <= 3.0


@pytest.mark.parametrize("values", [[], [float("nan")] * 3])
def test_bootstrap_empty_is_nan(values):
    assert all(math.isnan(x) for x in stats.bootstrap_ci(values))


def test_bootstrap_accepts_series():
    assert stats.bootstrap_ci(pd.Series([2.0, 2.0]))[0] == 2.0


# ---- paired_effects and summarize -------------------------------------------------------------
def test_paired_effects_exact_deltas():
    df = pd.DataFrame([
        # rank, replicate, seed, arm, p_target
        (1, 0, 0, "teacher", 0.30), (1, 0, 0, "control", 0.10),
        (1, 0, 1, "teacher", 0.25), (1, 0, 1, "control", 0.20),
        (4, 0, 0, "teacher", 0.05), (4, 0, 0, "control", 0.15),
        (4, 1, 0, "control", 0.40), (4, 1, 0, "teacher", 0.50),
    ], columns=["rank", "replicate", "seed", "arm", "p_target"])
    out = stats.paired_effects(df, by=["rank"]).sort_values(["rank", "replicate", "seed"]).reset_index(drop=True)
    assert list(out[["rank", "replicate", "seed"]].itertuples(index=False, name=None)) == [
        (1, 0, 0), (1, 0, 1), (4, 0, 0), (4, 1, 0)]
    assert out["teacher"].tolist() == [0.30, 0.25, 0.05, 0.50]
    assert out["control"].tolist() == [0.10, 0.20, 0.15, 0.40]
    assert out["delta"].tolist() == pytest.approx([0.20, 0.05, -0.10, 0.10], abs=1e-12)


def test_paired_effects_averages_duplicates_and_other_value():
    df = pd.DataFrame({
        "g": ["a"] * 4, "replicate": [0] * 4, "seed": [0] * 4,
        "arm": ["teacher", "teacher", "control", "control"],
        "rank_score": [2.0, 4.0, 1.0, 1.0],
    })
    out = stats.paired_effects(df, by=["g"], value="rank_score")
    assert len(out) == 1
    assert out.loc[0, "teacher"] == 3.0 and out.loc[0, "control"] == 1.0 and out.loc[0, "delta"] == 2.0


def test_paired_effects_needs_both_arms():
    df = pd.DataFrame({"g": [1], "replicate": [0], "seed": [0], "arm": ["teacher"], "p_target": [0.1]})
    with pytest.raises(ValueError, match=r"missing \['control'\]"):
        stats.paired_effects(df, by=["g"])


def test_summarize_exact_means_and_counts():
    eff = pd.DataFrame({"rank": [1, 1, 1, 2, 2], "delta": [0.1, 0.2, 0.3, 0.5, float("nan")]})
    s = stats.summarize(eff, ["rank"], n_boot=300)
    assert s["rank"].tolist() == [1, 2]
    assert s["mean"].tolist() == pytest.approx([0.2, 0.5])
    assert s["n"].tolist() == [3, 1]
    assert np.isnan(s.loc[1, "ci_low"]) and np.isnan(s.loc[1, "ci_high"])  # one run: no interval
    assert s.loc[0, "ci_low"] >= 0.1 and s.loc[0, "ci_high"] <= 0.3


def test_summarize_without_groups():
    s = stats.summarize(pd.DataFrame({"delta": [1.0, 3.0]}), [], n_boot=100)
    assert len(s) == 1 and s.loc[0, "mean"] == 2.0 and s.loc[0, "n"] == 2


def test_diff_ci():
    assert stats.diff_ci([1.0, 1.0], [0.25, 0.25], n_boot=100) == (0.75, 0.75, 0.75)
    d, lo, hi = stats.diff_ci(around(0.5), around(0.1), n_boot=500)
    assert d == pytest.approx(0.4) and 0.38 < lo < d < hi < 0.42


# ---- transfer_verdict -------------------------------------------------------------------------
@pytest.mark.parametrize("mean, lo, hi, min_effect, verdict", [
    (0.10, 0.05, 0.15, 0.0, REPRODUCED),
    (-0.10, -0.20, -0.05, 0.0, NOT_REPRODUCED),
    (0.00, -0.05, 0.05, 0.0, INCONCLUSIVE),
    (0.05, 0.00, 0.10, 0.0, INCONCLUSIVE),  # lower bound exactly 0 is not above it
    (0.05, 0.01, 0.08, 0.10, NOT_REPRODUCED),  # the whole CI is below the smallest effect of interest
    (0.12, 0.09, 0.15, 0.10, INCONCLUSIVE),  # overlaps min_effect
    (0.20, 0.15, 0.25, 0.10, REPRODUCED),
])
def test_transfer_verdict(mean, lo, hi, min_effect, verdict):
    assert stats.transfer_verdict(mean, lo, hi, min_effect) == verdict


# ---- inverted_u_verdict -----------------------------------------------------------------------
def _rank_table(levels: dict[int, float]) -> pd.DataFrame:
    rows = [{"rank": r, "delta": v} for r, level in levels.items() for v in around(level)]
    return pd.DataFrame(rows)


def test_inverted_u_reproduced():
    verdict, info = stats.inverted_u_verdict(_rank_table({1: 0.02, 4: 0.30, 16: 0.25, 64: 0.03}), n_boot=500)
    assert verdict == REPRODUCED
    assert info["peak_rank"] == 4
    assert info["peak"][0] == pytest.approx(0.30)
    assert info["minus_lowest"][0] == pytest.approx(0.28)
    assert info["minus_highest"][0] == pytest.approx(0.27)
    assert info["minus_lowest"][1] > 0 and info["minus_highest"][1] > 0
    assert info["summary"]["rank"].tolist() == [1, 4, 16, 64]


def test_inverted_u_monotone_rising_not_reproduced():
    verdict, info = stats.inverted_u_verdict(_rank_table({1: 0.10, 4: 0.20, 16: 0.30}), n_boot=500)
    assert verdict == NOT_REPRODUCED
    assert info["peak_rank"] == 4
    assert info["minus_highest"][0] == pytest.approx(-0.10)
    assert info["minus_highest"][2] < 0


def test_inverted_u_peak_at_edge_not_reproduced():
    # the largest effect at the lowest rank: the interior peak is not above it
    verdict, info = stats.inverted_u_verdict(_rank_table({1: 0.40, 2: 0.20, 8: 0.10, 32: 0.05}), n_boot=500)
    assert verdict == NOT_REPRODUCED
    assert info["peak_rank"] == 2


def test_inverted_u_all_zero_inconclusive():
    df = pd.DataFrame({"rank": [1, 1, 4, 4, 16, 16], "delta": [0.0] * 6})
    verdict, info = stats.inverted_u_verdict(df, n_boot=200)
    assert verdict == INCONCLUSIVE
    assert "no effect to modulate" in info["reason"]


def test_inverted_u_noise_around_zero_inconclusive():
    verdict, _ = stats.inverted_u_verdict(_rank_table({1: 0.0, 4: 0.0, 16: 0.0}), n_boot=300)
    assert verdict == INCONCLUSIVE


def test_inverted_u_needs_three_ranks():
    verdict, info = stats.inverted_u_verdict(_rank_table({1: 0.0, 4: 0.5}), n_boot=100)
    assert verdict == INCONCLUSIVE and info["reason"] == "fewer than 3 ranks"


def test_inverted_u_custom_columns():
    df = _rank_table({1: 0.0, 8: 0.3, 64: 0.0}).rename(columns={"rank": "lora_rank", "delta": "d"})
    verdict, info = stats.inverted_u_verdict(df, rank_col="lora_rank", value="d", n_boot=300)
    assert verdict == REPRODUCED and info["peak_rank"] == 8


# ---- full_ft_null_verdict ---------------------------------------------------------------------
def _full(levels: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"setting": s, "delta": v} for s, level in levels.items() for v in around(level)])


def test_full_ft_null_reproduced():
    verdict, info = stats.full_ft_null_verdict(_full({"lr 1e-5": 0.0, "lr 1e-4": 0.003, "bs 8": -0.002}),
                                               around(0.2), n_boot=500)
    assert verdict == REPRODUCED
    assert info["largest_full"] == "lr 1e-4"
    assert info["lora"][0] == pytest.approx(0.2)
    assert info["lora_minus_largest"][0] == pytest.approx(0.197)


def test_full_ft_with_an_effect_not_reproduced():
    verdict, info = stats.full_ft_null_verdict(_full({"a": 0.0, "b": 0.15}), around(0.2), n_boot=500)
    assert verdict == NOT_REPRODUCED
    assert info["largest_full"] == "b"


def test_full_ft_as_large_as_lora_not_reproduced():
    # a full-fine-tuning setting with a CI including 0 but the LoRA effect not larger
    full = pd.DataFrame({"setting": ["a"] * 4, "delta": [-0.3, 0.5, -0.2, 0.6]})
    verdict, _ = stats.full_ft_null_verdict(full, around(0.15), n_boot=500)
    assert verdict == NOT_REPRODUCED


def test_full_ft_no_lora_effect_inconclusive():
    verdict, info = stats.full_ft_null_verdict(_full({"a": 0.0}), around(0.0), n_boot=300)
    assert verdict == INCONCLUSIVE
    assert "LoRA effect's CI is not above 0" in info["reason"]


# ---- system_prompt_verdict --------------------------------------------------------------------
def test_system_prompt_reproduced():
    verdict, info = stats.system_prompt_verdict(around(0.2), around(0.0)[::-1], n_boot=500)
    assert verdict == REPRODUCED
    assert info["with"][0] == pytest.approx(0.2)
    assert info["without"][0] == pytest.approx(0.0, abs=1e-12)
    assert info["difference"][0] == pytest.approx(0.2)


def test_system_prompt_effect_survives_without_prompt_not_reproduced():
    verdict, info = stats.system_prompt_verdict(around(0.2), around(0.18), n_boot=500)
    assert verdict == NOT_REPRODUCED
    assert info["without"][1] > 0


def test_system_prompt_no_effect_inconclusive():
    verdict, info = stats.system_prompt_verdict([0.0] * 6, [0.0] * 6, n_boot=200)
    assert verdict == INCONCLUSIVE
    assert info["reason"] == "no effect to modulate under the default prompt"


def test_verdict_dataclass_as_dict():
    v = stats.Verdict("c", REPRODUCED, "m", 0.1, 0.05, 0.2, "rule")
    assert v.as_dict() == {"claim": "c", "verdict": "reproduced", "measurement": "m", "effect": 0.1,
                           "ci_low": 0.05, "ci_high": 0.2, "rule": "rule"}

"""stats: t-intervals over replicates, paired effects, Holm, and the four verdict rules on constructed tables."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from sublora import paths, rules, stats
from sublora.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

# a RuntimeWarning (mean of an empty slice, 0/0) would mean an edge case is not handled on purpose
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

# small, fixed jitter around a level: symmetric, mean exactly 0
JITTER = np.array([-0.01, 0.01, -0.005, 0.005, 0.0, -0.002, 0.002, 0.0])


def around(level: float) -> np.ndarray:
    return level + JITTER


def table(levels: dict, column: str, replicates: int = 6, seeds: int = 1, sd: float = 0.0, seed: int = 0,
          shared: np.ndarray | None = None) -> pd.DataFrame:
    """Rows (column, replicate, seed, delta): delta = level + shared[replicate] + normal noise of sd."""
    rng = np.random.default_rng(seed)
    shared = np.zeros(replicates) if shared is None else shared
    return pd.DataFrame([{column: k, "replicate": r, "seed": s, "delta": level + shared[r] + sd * rng.standard_normal()}
                         for k, level in levels.items() for r in range(replicates) for s in range(seeds)])


# ---- t_interval and holm ----------------------------------------------------------------------
def test_t_interval_known_sample():
    mean, lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    half = sps.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sd 1, n 3: half-width 4.303 / √3
    assert mean == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert lo == pytest.approx(-0.4841, abs=1e-4)  # wider than the range of the data, unlike the old bootstrap


def test_t_interval_level_and_constant():
    _, lo95, hi95 = stats.t_interval(np.arange(20.0))
    _, lo50, hi50 = stats.t_interval(np.arange(20.0), level=0.5)
    assert lo95 < lo50 < 9.5 < hi50 < hi95
    assert stats.t_interval([0.25] * 4) == (0.25, 0.25, 0.25)


@pytest.mark.parametrize("values", [[], [float("nan")] * 3, [1.0], [1.0, float("nan")]])
def test_t_interval_fewer_than_two_has_no_bounds(values):
    mean, lo, hi = stats.t_interval(values)
    assert math.isnan(lo) and math.isnan(hi)
    assert (mean == 1.0) if 1.0 in values else math.isnan(mean)


def test_t_interval_ignores_nan_and_is_vectorised():
    assert stats.t_interval([1.0, float("nan"), 3.0]) == pytest.approx(stats.t_interval([1.0, 3.0]))
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])
    mean, lo, hi = stats.t_interval(x)
    assert mean.shape == (2,) and lo[0] == pytest.approx(stats.t_interval(x[0])[1])


def test_holm_worked_example():
    # sorted p 0.01 0.015 0.03 0.04 against 0.05/4, 0.05/3, 0.05/2, 0.05/1: the first two reject, then stop
    rejected, adjusted = stats.holm([0.03, 0.01, 0.04, 0.015], alpha=0.05)
    assert rejected.tolist() == [False, True, False, True]
    assert adjusted.tolist() == pytest.approx([0.06, 0.04, 0.06, 0.045])


def test_holm_nan_counts_but_never_rejects_and_is_vectorised():
    rejected, _ = stats.holm([[0.001, float("nan")], [0.03, 0.04]], alpha=0.05)
    # 0.001 is compared with 0.05 / 2 because the untestable comparison still counts
    assert rejected.tolist() == [[True, False], [False, False]]


# ---- paired_effects, units and summarize -------------------------------------------------------
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


def test_two_seeds_of_one_replicate_are_one_unit():
    eff = pd.DataFrame({"replicate": [0, 0, 1, 1], "seed": [0, 1, 0, 1], "delta": [0.1, 0.3, 0.5, 0.7]})
    s = stats.summarize(eff, [])
    assert s.loc[0, "n"] == 2 and s.loc[0, "n_runs"] == 4 and s.loc[0, "unit"] == "replicate"
    # the interval of the two replicate means 0.2 and 0.6, with 1 degree of freedom
    assert (s.loc[0, "mean"], s.loc[0, "ci_low"], s.loc[0, "ci_high"]) == pytest.approx(stats.t_interval([0.2, 0.6]))
    assert s.loc[0, "ci_low"] < stats.t_interval(eff["delta"])[1]  # treating the 4 rows as units would be narrower


def test_unit_mean_weights_replicates_equally():
    eff = pd.DataFrame({"replicate": [0, 0, 0, 1], "seed": [0, 1, 2, 0], "delta": [0.0, 0.0, 0.0, 1.0]})
    assert stats.summarize(eff, [])["mean"].item() == 0.5


def test_one_replicate_falls_back_to_seeds_and_flags_it():
    eff = pd.DataFrame({"replicate": [0, 0, 0], "seed": [0, 1, 2], "delta": [0.1, 0.2, 0.3]})
    s = stats.summarize(eff, [])
    assert s.loc[0, "unit"] == "seed" and s.loc[0, "n"] == 3
    assert (s.loc[0, "ci_low"], s.loc[0, "ci_high"]) == pytest.approx(stats.t_interval([0.1, 0.2, 0.3])[1:])


def test_summarize_groups_counts_and_single_run():
    eff = pd.DataFrame({"rank": [1, 1, 1, 2, 2], "replicate": [0, 1, 2, 0, 1],
                        "seed": 0, "delta": [0.1, 0.2, 0.3, 0.5, float("nan")]})
    s = stats.summarize(eff, ["rank"])
    assert s["rank"].tolist() == [1, 2]
    assert s["mean"].tolist() == pytest.approx([0.2, 0.5])
    assert s["n"].tolist() == [3, 1] and s["n_runs"].tolist() == [3, 1]
    assert np.isnan(s.loc[1, "ci_low"]) and np.isnan(s.loc[1, "ci_high"])  # one replicate, one seed: no interval
    assert s.loc[0, "ci_low"] < 0.1 and s.loc[0, "ci_high"] > 0.3  # n = 3: t(2) is wide


def test_summarize_without_unit_column_uses_rows():
    s = stats.summarize(pd.DataFrame({"delta": [1.0, 3.0]}), [])
    assert len(s) == 1 and s.loc[0, "mean"] == 2.0 and s.loc[0, "n"] == 2 and s.loc[0, "unit"] == "row"


# ---- claim 1 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mean, lo, hi, min_effect, margin, verdict", [
    (0.10, 0.05, 0.15, 0.0, None, REPRODUCED),
    (-0.10, -0.20, -0.05, 0.0, None, NOT_REPRODUCED),
    (0.00, -0.05, 0.05, 0.0, None, INCONCLUSIVE),
    (0.05, 0.00, 0.10, 0.0, None, INCONCLUSIVE),  # lower bound exactly 0 is not above it
    (0.05, 0.01, 0.08, 0.10, None, NOT_REPRODUCED),  # the whole CI is below the smallest effect of interest
    (0.12, 0.09, 0.15, 0.10, None, INCONCLUSIVE),  # overlaps min_effect
    (0.20, 0.15, 0.25, 0.10, None, REPRODUCED),
    (0.00, -0.01, 0.01, 0.0, 0.02, NOT_REPRODUCED),  # equivalent to 0 within a declared margin
    (0.02, 0.01, 0.03, 0.0, 0.05, REPRODUCED),  # above 0 wins over "below the margin"
    (0.0, float("nan"), float("nan"), 0.0, 0.02, INCONCLUSIVE),
])
def test_transfer_verdict(mean, lo, hi, min_effect, margin, verdict):
    assert rules.transfer_verdict(mean, lo, hi, min_effect, margin) == verdict


def test_transfer_test_on_a_table():
    eff = table({"persona": 0.02}, "teacher_kind", replicates=5, seeds=2, sd=0.002, seed=1)
    verdict, info = rules.transfer_test(eff)
    assert verdict == REPRODUCED
    assert info["n"] == 5 and info["n_runs"] == 10 and info["unit"] == "replicate"
    assert info["p_effect"] < stats.ALPHA and info["ci_low"] > 0
    verdict, info = rules.transfer_test(table({"persona": 0.0}, "teacher_kind", 8, sd=0.001, seed=2), margin=0.005)
    assert verdict == NOT_REPRODUCED and info["ci_high"] < 0.005 and info["margin"] == 0.005


def test_transfer_test_refuses_several_groups():
    eff = table({"persona": 0.02, "finetuned": 0.05}, "teacher_kind", replicates=3)
    with pytest.raises(ValueError, match="one group at a time"):
        rules.transfer_test(eff)


@pytest.mark.parametrize("eff", [
    pd.DataFrame({"replicate": [0], "seed": [0], "delta": [0.5]}),
    pd.DataFrame({"replicate": [0, 1], "seed": [0, 0], "delta": [0.5, float("nan")]}),
    pd.DataFrame({"replicate": pd.Series([], dtype=int), "seed": pd.Series([], dtype=int),
                  "delta": pd.Series([], dtype=float)}),
])
def test_transfer_test_too_few_units_inconclusive(eff):
    verdict, info = rules.transfer_test(eff)
    assert verdict == INCONCLUSIVE and "fewer than 2" in info["reason"]


# ---- claim 2 ----------------------------------------------------------------------------------
def _rank_table(levels: dict[int, float]) -> pd.DataFrame:
    """No replicate column: the i-th row of each rank is the i-th unit (as in the old tests)."""
    return pd.DataFrame([{"rank": r, "delta": v} for r, level in levels.items() for v in around(level)])


def test_inverted_u_reproduced():
    verdict, info = rules.inverted_u_verdict(_rank_table({1: 0.02, 2: 0.05, 4: 0.30, 16: 0.10, 64: 0.03}))
    assert verdict == REPRODUCED
    assert info["peak_rank"] == 4 and info["unit"] == "row"
    assert info["level"] == pytest.approx(1 - 2 * stats.ALPHA / 1)  # one candidate: two ranks on each side
    assert info["peak"][0] == pytest.approx(0.30)
    assert info["minus_lowest"][0] == pytest.approx(0.28)
    assert info["minus_highest"][0] == pytest.approx(0.27)
    assert info["smallest_fall"][0] == 16 and info["smallest_fall"][1][0] == pytest.approx(0.20)
    assert info["minus_lowest"][1] > 0 and info["smallest_fall"][1][1] > 0
    assert info["summary"]["rank"].tolist() == [1, 2, 4, 16, 64]


def test_inverted_u_monotone_rising_not_reproduced():
    verdict, info = rules.inverted_u_verdict(_rank_table({1: 0.10, 2: 0.20, 4: 0.30, 8: 0.40, 16: 0.50}))
    assert verdict == NOT_REPRODUCED
    assert info["peak_rank"] == 4
    assert info["smallest_fall"][0] == 16 and info["smallest_fall"][1][0] == pytest.approx(-0.20)
    assert info["minus_highest"][2] < 0


def test_inverted_u_peak_at_edge_not_reproduced():
    # the largest effect at the lowest rank: no candidate rises above it
    verdict, info = rules.inverted_u_verdict(_rank_table({1: 0.40, 2: 0.20, 4: 0.10, 8: 0.05, 32: 0.02}))
    assert verdict == NOT_REPRODUCED
    assert info["peak_rank"] == 4  # the only candidate: no rank passes, the candidate with the larger mean is shown


FIVE = [1, 2, 4, 8, 16]


def test_inverted_u_all_zero_inconclusive():
    df = pd.DataFrame({"rank": np.repeat(FIVE, 2), "delta": [0.0] * 10})
    verdict, info = rules.inverted_u_verdict(df)
    assert verdict == INCONCLUSIVE
    assert "no effect to modulate" in info["reason"]


def test_inverted_u_noise_around_zero_inconclusive():
    verdict, _ = rules.inverted_u_verdict(_rank_table(dict.fromkeys(FIVE, 0.0)))
    assert verdict == INCONCLUSIVE


def test_inverted_u_needs_five_ranks():
    verdict, info = rules.inverted_u_verdict(_rank_table({1: 0.0, 4: 0.5, 16: 0.6, 64: 0.0}))
    assert verdict == INCONCLUSIVE and info["reason"].startswith("fewer than 5 ranks")
    assert "peak_rank" not in info


def test_inverted_u_custom_columns():
    df = _rank_table({1: 0.0, 2: 0.1, 8: 0.3, 32: 0.1, 64: 0.0}).rename(columns={"rank": "lora_rank", "delta": "d"})
    verdict, info = rules.inverted_u_verdict(df, rank_col="lora_rank", value="d")
    assert verdict == REPRODUCED and info["peak_rank"] == 8


def test_inverted_u_clear_peak_with_replicates_and_seeds():
    levels = {1: 0.01, 2: 0.05, 4: 0.12, 8: 0.16, 16: 0.10, 32: 0.04, 64: 0.02, 128: 0.0}
    eff = table(levels, "lora_rank", replicates=5, seeds=2, sd=0.01, seed=3)
    verdict, info = rules.inverted_u_verdict(eff, rank_col="lora_rank")
    assert verdict == REPRODUCED and info["peak_rank"] == 8 and info["unit"] == "replicate"
    assert info["summary"]["n"].eq(5).all() and info["summary"]["n_runs"].eq(10).all()
    assert list(info["p_peak"]) == [4, 8, 16, 32]  # the candidates: two ranks on each side


def test_inverted_u_reports_the_passing_peak_with_the_largest_mean():
    rng = np.random.default_rng(9)
    ranks = [1, 2, 4, 8, 16, 32, 64]
    threshold = stats.ALPHA / (len(ranks) - 4)  # Bonferroni over the 3 candidates
    verdicts, several = set(), 0
    for _ in range(40):  # a falling run of candidates: which ones pass varies
        levels = dict(zip(ranks, [0.0, 0.005, 0.03, 0.02, 0.01, 0.0, 0.0]))
        verdict, info = rules.inverted_u_verdict(table(levels, "rank", 6, sd=0.006, seed=int(rng.integers(1 << 30))))
        means = info["summary"].set_index("rank")["mean"]
        passing = [r for r, p in info["p_peak"].items() if p <= threshold]
        assert (verdict == REPRODUCED) == bool(passing)
        expected = max(passing or ranks[2:-2], key=lambda r: means[r])
        assert info["peak_rank"] == expected and info["peak_p"] == info["p_peak"][expected]
        if passing:  # the intervals are at the decision's level: a passing peak's lower bounds are all above 0
            assert min(info["peak"][1], info["minus_lowest"][1], info["smallest_fall"][1][1]) > 0
        verdicts.add(verdict)
        several += len(passing) > 1
    assert verdicts == {REPRODUCED, INCONCLUSIVE} and several > 0


def test_inverted_u_monotone_rise_with_replicates_not_reproduced():
    levels = {r: 0.02 * i for i, r in enumerate([1, 2, 4, 8, 16, 32, 64, 128])}
    verdict, _ = rules.inverted_u_verdict(table(levels, "lora_rank", replicates=8, sd=0.002, seed=4), rank_col="lora_rank")
    assert verdict == NOT_REPRODUCED


def test_inverted_u_pairs_ranks_by_replicate_not_by_row_order():
    # each replicate's datasets shift all its ranks by a large common amount; only matching the
    # ranks by replicate removes it from the peak-minus-end differences
    shared = np.array([7.0, 9.0, 11.0, 13.0, 15.0, 10.0])
    eff = table({1: 0.0, 2: 0.0, 4: 1.0, 16: 0.0, 64: 0.0}, "rank", replicates=6, sd=0.01, seed=5, shared=shared)
    shuffled = eff.sample(frac=1.0, random_state=0)
    verdict, info = rules.inverted_u_verdict(shuffled)
    assert verdict == REPRODUCED and info["minus_lowest"][0] == pytest.approx(1.0, abs=0.02)
    # the same values without replicate ids (paired in row order, which is now shuffled) show nothing
    verdict, _ = rules.inverted_u_verdict(shuffled.drop(columns=["replicate", "seed"]))
    assert verdict != REPRODUCED


def test_inverted_u_missing_rank_and_nan_rows():
    levels = {1: 0.0, 2: 0.1, 4: 0.3, 16: 0.1, 64: 0.0, 128: 0.0}
    eff = table(levels, "rank", replicates=6, sd=0.01, seed=6)
    eff.loc[eff.index[:3], "delta"] = float("nan")  # rank 1 loses half its replicates
    verdict, info = rules.inverted_u_verdict(eff)
    assert verdict == REPRODUCED and info["summary"].set_index("rank").loc[1, "n"] == 3
    assert list(info["p_peak"]) == [4, 16]
    # a rank with no data at all is simply not swept
    verdict, info = rules.inverted_u_verdict(eff.assign(delta=np.where(eff["rank"] == 128, np.nan, eff["delta"])))
    assert verdict == REPRODUCED and list(info["p_peak"]) == [4]


@pytest.mark.parametrize("replicates, seeds", [(1, 1), (0, 1)])
def test_inverted_u_too_few_units_inconclusive(replicates, seeds):
    eff = table({1: 0.0, 2: 0.0, 4: 0.5, 16: 0.0, 64: 0.0}, "rank", replicates=replicates, seeds=seeds)
    if eff.empty:
        eff = pd.DataFrame({"rank": pd.Series([], dtype=int), "replicate": pd.Series([], dtype=int),
                            "seed": pd.Series([], dtype=int), "delta": pd.Series([], dtype=float)})
    verdict, _ = rules.inverted_u_verdict(eff)
    assert verdict == INCONCLUSIVE


ARTEFACTS = {  # the one-rank shapes the first confirmatory run's rule (peak above both ends) called inverted Us
    "lone spike at the second rank": {1: 0.0, 2: 0.3, 4: 0.0, 8: 0.0, 16: 0.0, 32: 0.0},
    "plateau that drops only at the last rank": {1: 0.0, 2: 0.3, 4: 0.3, 8: 0.3, 16: 0.3, 32: 0.0},
}


@pytest.mark.parametrize("shape", ARTEFACTS)
def test_inverted_u_needs_a_rise_and_a_fall_not_one_ranks_artefact(shape):
    eff = table(ARTEFACTS[shape], "rank", replicates=8, sd=0.01, seed=11)
    m = eff.pivot_table(index="replicate", columns="rank", values="delta").to_numpy()
    assert stats.VERDICTS[rules.inverted_u_ends_core(m)["codes"]] == REPRODUCED  # the old rule is fooled
    verdict, info = rules.inverted_u_verdict(eff, margin=0.05)
    assert verdict == NOT_REPRODUCED, info  # each candidate's rise (the spike) or a fall (the plateau) is < e
    assert rules.inverted_u_verdict(eff)[0] != REPRODUCED


# ---- claim 3 ----------------------------------------------------------------------------------
SETTINGS = ["baseline", "lr 2e-05", "lr 0.0005", "batch 16", "batch 64", "epochs 2", "epochs 3"]


def _full_ft(levels: dict, lora_level: float, replicates=5, seeds=2, sd=0.002, seed=0):
    full = table(levels, "setting", replicates, seeds, sd, seed)
    lora = table({"LoRA r8": lora_level}, "setting", replicates, seeds, sd, seed + 100)
    return full, lora


def test_full_ft_null_reproduced():
    full, lora = _full_ft({s: 0.0 for s in SETTINGS}, 0.05)
    verdict, info = rules.full_ft_null_verdict(full, lora)
    assert verdict == REPRODUCED
    assert info["summary"]["equivalent"].all() and not info["summary"]["above_margin"].any()
    assert info["pairing"] == "paired by replicate" and info["lora_n"] == 5
    assert info["lora"][0] == pytest.approx(0.05, abs=0.003)
    assert info["margin"].startswith("0.5 × the LoRA effect")


def test_full_ft_one_setting_as_large_as_lora_not_reproduced():
    full, lora = _full_ft({**{s: 0.0 for s in SETTINGS}, "lr 0.0005": 0.05}, 0.05)
    verdict, info = rules.full_ft_null_verdict(full, lora)
    assert verdict == NOT_REPRODUCED
    assert info["largest_full"] == "lr 0.0005"
    assert info["summary"].set_index("setting")["above_margin"].to_dict() == {s: s == "lr 0.0005" for s in SETTINGS}


def test_full_ft_absolute_margin():
    full, lora = _full_ft({"a": 0.0, "b": 0.001}, 0.05)
    assert rules.full_ft_null_verdict(full, lora, margin=0.01)[0] == REPRODUCED
    full, lora = _full_ft({"a": 0.0, "b": 0.03}, 0.05)
    verdict, info = rules.full_ft_null_verdict(full, lora, margin=0.01)
    assert verdict == NOT_REPRODUCED and info["margin"] == 0.01


def test_full_ft_noisy_setting_inconclusive():
    # a full-fine-tuning setting whose interval includes 0 but is too wide to be equivalent to 0:
    # the old rule called this a null, the new one says the data cannot tell
    full = pd.DataFrame({"setting": ["a"] * 4, "replicate": range(4), "seed": 0, "delta": [-0.3, 0.5, -0.2, 0.6]})
    lora = pd.DataFrame({"replicate": range(4), "seed": 0, "delta": [0.14, 0.15, 0.16, 0.15]})
    verdict, info = rules.full_ft_null_verdict(full, lora)
    assert verdict == INCONCLUSIVE and "not every setting" in info["reason"]


def test_full_ft_no_lora_effect_inconclusive():
    full, lora = _full_ft({"a": 0.0}, 0.0, sd=0.01)
    verdict, info = rules.full_ft_null_verdict(full, lora)
    assert verdict == INCONCLUSIVE and "no effect to modulate" in info["reason"]


def test_full_ft_refuses_a_lora_reference_without_unit_ids():
    # the old notebook passed lora_eff["delta"]: no replicate ids to pair the settings with
    full, lora = _full_ft({"a": 0.0}, 0.05)
    with pytest.raises(ValueError, match="ids to pair"):
        rules.full_ft_null_verdict(full, lora["delta"].to_numpy())


def test_full_ft_smoke_profile_falls_back_to_seeds():
    full, lora = _full_ft({"a": 0.0, "b": 0.0}, 0.05, replicates=1, seeds=3)
    verdict, info = rules.full_ft_null_verdict(full, lora)
    assert info["unit"] == "seed" and info["lora_n"] == 3 and verdict in (REPRODUCED, INCONCLUSIVE)


def test_full_ft_edge_cases_inconclusive():
    full, lora = _full_ft({"a": 0.0}, 0.05, replicates=1, seeds=1)
    assert rules.full_ft_null_verdict(full, lora)[0] == INCONCLUSIVE
    full, lora = _full_ft({"a": 0.0}, 0.05)
    assert rules.full_ft_null_verdict(full, lora.assign(delta=np.nan))[0] == INCONCLUSIVE
    full.loc[full.index[::2], "delta"] = np.nan  # NaN rows are dropped, the rest still counts
    assert rules.full_ft_null_verdict(full, lora)[0] in (REPRODUCED, INCONCLUSIVE)


# ---- claim 4 ----------------------------------------------------------------------------------
def test_system_prompt_reproduced():
    verdict, info = rules.system_prompt_verdict(around(0.2), around(0.0)[::-1])
    assert verdict == REPRODUCED
    assert info["with"][0] == pytest.approx(0.2)
    assert info["without"][0] == pytest.approx(0.0, abs=1e-12)
    assert info["difference"][0] == pytest.approx(0.2)
    assert info["unit"] == "row" and info["n"] == 8


def test_system_prompt_effect_survives_without_prompt_not_reproduced():
    verdict, info = rules.system_prompt_verdict(around(0.2), around(0.18))
    assert verdict == NOT_REPRODUCED
    assert info["p_above_margin"] < stats.ALPHA


def test_system_prompt_no_effect_inconclusive():
    verdict, info = rules.system_prompt_verdict([0.0] * 6, [0.0] * 6)
    assert verdict == INCONCLUSIVE
    assert info["reason"].startswith("no effect to modulate: Δ under the default prompt is not shown above 0 at this n")


def test_system_prompt_pivot_series_paired_by_replicate():
    # the notebook's shape: effects pivoted to (replicate, seed) × eval_system
    eff = pd.concat([table({"default": 0.05}, "eval_system", 5, 2, 0.003, 7),
                     table({"none": 0.0}, "eval_system", 5, 2, 0.003, 8)])
    wide = eff.pivot_table(index=["replicate", "seed"], columns="eval_system", values="delta")
    verdict, info = rules.system_prompt_verdict(wide["default"], wide["none"])
    assert verdict == REPRODUCED and info["unit"] == "replicate" and info["n"] == 5
    verdict, _ = rules.system_prompt_verdict(wide["default"], wide["none"] + 0.04, margin=0.01)
    assert verdict == NOT_REPRODUCED


def test_system_prompt_edge_cases():
    assert rules.system_prompt_verdict([0.3], [0.0])[0] == INCONCLUSIVE
    assert rules.system_prompt_verdict([0.3, float("nan")], [0.0, 0.1])[0] == INCONCLUSIVE
    with pytest.raises(ValueError, match="paired by position"):
        rules.system_prompt_verdict([0.3, 0.2], [0.0])


# ---- declared rules and the verdict row ---------------------------------------------------------
def test_rules_are_the_docstrings():
    funcs = {"transfer": [rules.transfer_verdict, rules.transfer_test], "inverted_u": [rules.inverted_u_verdict],
             "full_ft_null": [rules.full_ft_null_verdict], "system_prompt": [rules.system_prompt_verdict]}
    assert set(rules.RULES) == set(funcs)
    for key, fs in funcs.items():
        assert "**reproduced**" in rules.RULES[key] and "**inconclusive**" in rules.RULES[key]
        assert str(stats.ALPHA) in rules.RULES[key]
        for f in fs:
            assert rules.RULES[key] in f.__doc__


def test_verdict_dataclass_as_dict():
    v = stats.Verdict("c", REPRODUCED, "m", 0.1, 0.05, 0.2, "rule", n=5, unit="replicate", alpha=0.025)
    assert v.as_dict() == {"claim": "c", "verdict": "reproduced", "measurement": "m", "effect": 0.1,
                           "ci_low": 0.05, "ci_high": 0.2, "rule": "rule", "n": 5, "unit": "replicate",
                           "alpha": 0.025, "margin": None}
    assert stats.Verdict("c", INCONCLUSIVE, "m", 0.0, 0.0, 0.0, "r").as_dict()["n"] is None


def test_notebooks_state_the_rules_the_code_applies():
    for name, key in (("02_transfer", "transfer"), ("03_rank_sweep", "inverted_u"),
                      ("04_full_finetuning", "full_ft_null"), ("05_system_prompt", "system_prompt")):
        nb = json.loads((paths.ROOT / "notebooks" / f"{name}.ipynb").read_text())
        text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        assert rules.RULES[key] in text, name


# ---- the smallest effect of interest as the rules' margin (issue 25) --------------------------------
def _units_by(columns: dict[str, list[float]], name: str) -> pd.DataFrame:
    return pd.DataFrame([{name: c, "replicate": r, "seed": 0, "delta": v} for c, vs in columns.items()
                         for r, v in enumerate(vs)])


def test_claim_2_margin_tells_a_plateau_from_a_peak():
    """A curve that rises and stays: without a margin no fall is shown *below* 0, so the rule cannot say 'not
    reproduced'; with e, the candidate is shown to fall less than e to the ranks beyond it."""
    noise = [0.0001, -0.0001, 0.00005, -0.00005, 0.0]  # one candidate (rank 4): its falls to 8 and 16 are ~0
    plateau = {1: [0.001 + x for x in noise], 2: [0.004 + x for x in noise], 4: [0.005 + x for x in noise],
               8: [0.005 - x for x in noise], 16: [0.005 + x / 2 for x in noise]}
    effects = _units_by(plateau, "rank")
    assert rules.inverted_u_verdict(effects)[0] == INCONCLUSIVE
    verdict, info = rules.inverted_u_verdict(effects, margin=0.002)
    assert verdict == NOT_REPRODUCED and info["margin"] == 0.002
    peak = {**plateau, 4: [0.012 + x for x in noise]}
    assert rules.inverted_u_verdict(_units_by(peak, "rank"), margin=0.002)[0] == REPRODUCED


def test_claims_3_and_4_floor_lets_a_small_null_be_shown_where_half_the_reference_is_smaller_still():
    lora = pd.DataFrame({"replicate": range(5), "seed": 0, "delta": [0.0200, 0.0210, 0.0190, 0.0220, 0.0180]})
    full = _units_by({"baseline": [0.0120, 0.0140, 0.0130, 0.0110, 0.0120]}, "setting")
    assert rules.full_ft_null_verdict(full, lora)[0] != REPRODUCED      # 0.012 is above ½ × 0.02
    verdict, info = rules.full_ft_null_verdict(full, lora, floor=0.015)  # LoRA shown ≥ 0.015: the floor applies
    assert verdict == REPRODUCED and "or 0.015 if larger" in info["margin"]
    big = _units_by({"baseline": [0.1200, 0.1210, 0.1190, 0.1220, 0.1180]}, "setting")
    assert rules.full_ft_null_verdict(big, lora, floor=0.015)[0] == NOT_REPRODUCED  # above both margins
    with_p, without_p = lora["delta"].tolist(), full["delta"].tolist()
    assert rules.system_prompt_verdict(with_p, without_p)[0] != REPRODUCED
    assert rules.system_prompt_verdict(with_p, without_p, floor=0.015)[0] == REPRODUCED


def test_floor_only_where_the_reference_effect_is_shown_at_least_the_floor():
    """The first confirmatory run's claim 4: Δ_with below e, Δ_without a little smaller but above 0. A floor
    e larger than the whole effect called that 'equivalent to 0'; the floor now waits for Δ_with ≥ e."""
    with_p = [0.0020, 0.0021, 0.0019, 0.0022, 0.0018]
    without_p = [0.0016, 0.0017, 0.0015, 0.0018, 0.0014]
    verdict, info = rules.system_prompt_verdict(with_p, without_p, floor=0.0033)
    assert verdict != REPRODUCED and info["p_equivalent"] > stats.ALPHA_EQUIV
    assert rules.system_prompt_verdict(with_p, without_p, floor=0.0033)[0] == \
        rules.system_prompt_verdict(with_p, without_p)[0]                  # the floor is inert here
    lora = pd.DataFrame({"replicate": range(5), "seed": 0, "delta": with_p})
    full = _units_by({"baseline": without_p}, "setting")
    assert rules.full_ft_null_verdict(full, lora, floor=0.0033)[0] == rules.full_ft_null_verdict(full, lora)[0]
    # just above: Δ_with shown ≥ e switches the floor on
    assert rules.system_prompt_verdict([v + 0.01 for v in with_p], [v + 0.004 for v in without_p],
                                       floor=0.0033)[1]["p_equivalent"] <= stats.ALPHA_EQUIV

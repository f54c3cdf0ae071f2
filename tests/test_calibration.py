"""calibrate: interval coverage, every rule's error rate under its null, and that the verdict
functions on tables agree with the rule cores the calibration simulates."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sublora import calibrate, rules, scoreboard, simulate, stats
from sublora.stats import REPRODUCED

SIMS = 2000  # Monte-Carlo se of a 2.5% rate: 0.35%; of a 95% coverage: 0.5%


@pytest.mark.parametrize("n", [3, 5, 8])
def test_t_interval_coverage(n):
    rng = np.random.default_rng(n)
    mu, sd = 0.013, 0.002
    x = mu + sd * rng.standard_normal((4000, n))
    _, lo, hi = stats.t_interval(x)
    coverage = np.mean((lo <= mu) & (mu <= hi))
    assert 0.93 <= coverage <= 0.97, coverage


@pytest.fixture(scope="module")
def table():
    return calibrate.calibrate("organism", sims=SIMS, seed=1)


def test_calibration_covers_the_design(table):
    # organism: claim 1 on 5 replicates, claims 2-4 on 3; 5 and 8 as well; 8 ranks, 8 full-FT settings (7 + lr-matched)
    assert sorted(table.query("rule == '1 transfer'")["n"].unique()) == [5, 8]
    assert sorted(table.query("rule != '1 transfer'")["n"].unique()) == [3, 5, 8]
    assert set(table["rule"]) == {"1 transfer", "2 rank inverted-U (K=8)", "3 full-FT null (S=8)", "4 system prompt"}
    rates = table[["reproduced", "not_reproduced", "inconclusive"]].sum(axis=1)
    assert np.allclose(rates, 1.0)


def test_every_false_rate_within_its_nominal_level(table):
    # 'reproduced' when a full-FT setting (claim 3) or Δ_without (claim 4) sits at the margin is the
    # equivalence test's error, at most ALPHA_EQUIV; every other wrong verdict is at most ALPHA
    equivalence = table["rule"].str.startswith(("3", "4")) & (table["wrong"] == REPRODUCED)
    nominal = np.where(equivalence, stats.ALPHA_EQUIV, stats.ALPHA)
    se = np.sqrt(nominal * (1 - nominal) / SIMS)
    over = table[table["false_rate"] > nominal + 3 * se]
    assert over.empty, over[["rule", "n", "scenario", "effect_sd", "false_rate"]]


def test_coverage_of_the_rules_intervals(table):
    cov = table["coverage"].dropna()
    assert len(cov) > 50 and cov.between(0.93, 0.97).all(), table.loc[cov.index[~cov.between(0.93, 0.97)]]


def test_power_where_the_design_allows_it(table):
    def power(rule, n, scenario, effect):
        row = table[table["rule"].str.startswith(rule) & (table["n"] == n) & (table["scenario"] == scenario)
                    & np.isclose(table["effect_sd"], effect)]
        assert len(row) == 1, (rule, n, scenario, effect)
        return row["power"].item()
    assert power("1", 5, "organism v2 book's Δ/sd", 6.7) > 0.99
    assert 0.3 < power("1", 5, "Δ > 0", 1.0) < 0.5  # t(4) at one-sided 2.5%: ~0.40
    assert power("2", 8, "inverted U, ends 0", 4.0) > 0.95
    assert power("2", 3, "inverted U, ends 0", 1.0) < 0.05  # 3 replicates cannot show a peak of 1 sd
    assert power("3", 8, "all settings 0", 6.7) > 0.95
    assert power("3", 8, "one setting as large as LoRA", 4.0) > 0.9
    assert power("4", 8, "without = 0", 4.0) > 0.95
    assert power("4", 8, "without = with", 4.0) > 0.95


def _frames(X, column, levels, rng):
    """(sims, n, K) unit values → one shuffled long table per simulation, units as replicates."""
    sims, n, K = X.shape
    for s in range(sims):
        rows = pd.DataFrame({column: np.repeat(np.asarray(levels)[None, :], n, 0).ravel(),
                             "replicate": np.repeat(np.arange(n), K), "seed": 0, "delta": X[s].ravel()})
        yield rows.sample(frac=1.0, random_state=int(rng.integers(1 << 30)))


def test_table_functions_agree_with_the_simulated_cores():
    rng = np.random.default_rng(2)
    ranks = [1, 2, 4, 8, 16, 32, 64, 128]
    X = simulate.sim_units(rng, 25, 5, simulate.rank_shapes(8, 3.0)["inverted U, ends 0"])
    expected = stats.VERDICTS[rules.inverted_u_core(X)["codes"]]
    got = [rules.inverted_u_verdict(t, rank_col="lora_rank")[0] for t in _frames(X, "lora_rank", ranks, rng)]
    assert got == expected.tolist() and {REPRODUCED} & set(got)

    settings = ["baseline", "lr 2e-05", "lr 0.0005"]
    U = simulate.sim_units(rng, 25, 5, [0.0, 1.0, 0.0, 4.0])  # 3 settings, then the LoRA reference
    expected = stats.VERDICTS[rules.full_ft_core(U[..., :3], U[..., 3])["codes"]]
    got = []
    for s, t in enumerate(_frames(U[..., :3], "setting", settings, rng)):
        lora = pd.DataFrame({"replicate": np.arange(5), "seed": 0, "delta": U[s, :, 3]})
        got.append(rules.full_ft_null_verdict(t, lora.iloc[::-1])[0])
    assert got == expected.tolist() and len(set(got)) > 1

    U = simulate.sim_units(rng, 25, 5, [3.0, 1.0])
    expected = stats.VERDICTS[rules.system_prompt_core(U[..., 0], U[..., 1])["codes"]]
    got = []
    for t in _frames(U, "eval_system", ["default", "none"], rng):
        wide = t.pivot_table(index=["replicate", "seed"], columns="eval_system", values="delta")
        got.append(rules.system_prompt_verdict(wide["default"], wide["none"])[0])
    assert got == expected.tolist() and len(set(got)) > 1


def test_claim3_is_simulated_over_the_designs_own_settings():
    """S is the number of full fine-tuning settings design.full_settings gives the profile (8 on the
    organism, 3 on smoke), not a copy of it."""
    from sublora.config import load_profile
    for name, S in (("organism", 8), ("smoke", 3)):
        rules = set(calibrate.calibrate(load_profile(name), sims=20, seed=0, ns=())["rule"])
        assert f"3 full-FT null (S={S})" in rules, (name, sorted(rules))


def test_main_prints_the_table(capsys):
    assert calibrate.main(["--calibrate", "--profile", "smoke", "--sims", "100"]) == 0
    out = capsys.readouterr().out
    assert "1 transfer" in out and "false_rate" in out and "4 system prompt" in out
    assert calibrate.main([]) == 2


def test_operating_characteristics_simulate_claim_3_at_each_arms_own_number_of_settings(monkeypatch):
    """The scoreboard's error rates: one row per claim, and for claim 3 one per precision arm, each simulated
    with that arm's own S (the bf16 arm runs only the lr axis)."""
    from sublora import calibrate, claims, config, design
    p = config.load_profile("smoke")
    seen = []
    real = calibrate.calibrate
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **k: seen.append(k.get("settings")) or real(*a, **k))
    oc = scoreboard.operating_characteristics(p, sims=300)
    main, other = p.train.full_precision
    assert list(oc.loc[oc["claim"].str.startswith("3"), "arm"]) == [main, other]
    assert (oc.loc[~oc["claim"].str.startswith("3"), "arm"] == "").all() and len(oc) == len(claims.CLAIMS) + 1
    lr_axis = sum(s.precision == other for s in design.precision_settings(p).values())
    assert seen == [None, len(design.full_settings(p)), lr_axis] and lr_axis < len(design.full_settings(p))
    assert oc["false 'reproduced' (max over nulls)"].notna().all()

"""Every verdict rule's error rates, power and interval coverage, by simulation at the design's sample sizes.

The simulations run the rule cores of sublora.rules (the functions its verdicts apply) on whole
stacks of simulated experiments, so the rates are those of the declared rules. `calibrate` is the
table (`sublora calibrate --calibrate`; claims.operating_characteristics reads it per
claim); `compare_rank_rules` sets claim 2's declared rule against the candidates it was chosen over
(`sublora calibrate --compare-rank-rules`, quoted in rules.RULES['inverted_u']).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from . import command, design
from .config import DEFAULT_PROFILE, load_profile
from .rules import (SIDE, full_ft_core, inverted_u_core, inverted_u_ends_core, system_prompt_core,
                    transfer_core)
from .simulate import design_units, rank_shapes, sim_units
from .stats import (ALPHA, INC, INCONCLUSIVE, MARGIN_FRACTION, NOT_REPRODUCED, REP, REPRODUCED, VERDICTS, holm,
                    p_greater, t_interval)

# Effects are in units of the standard deviation of one unit's Δ, so the table holds for any model.
# The organism v2 book measured claim 1 at +1.34e-2 with a between-replicate sd of ~2e-3: 6.7 sd.
EFFECT_SIZES = (0.5, 1.0, 2.0, 4.0)
BOOK_CLAIM1_SD = 1.34e-2 / 2e-3


def _sim_row(rule, n, scenario, effect, codes, expect, wrong, coverage=np.nan):
    """One row of the calibration table from the simulated verdict codes (sims,) of one scenario."""
    rates = {v: float(np.mean(codes == c)) for c, v in enumerate(VERDICTS)}
    sims = codes.size
    false_rate = rates[wrong] if wrong else np.nan
    power = rates[expect] if expect else np.nan
    se = [np.sqrt(p * (1 - p) / sims) for p in (false_rate, power, coverage) if not np.isnan(p)]
    return {"rule": rule, "n": n, "scenario": scenario, "effect_sd": effect, "expect": expect or "-",
            "wrong": wrong or "-", "reproduced": rates[REPRODUCED], "not_reproduced": rates[NOT_REPRODUCED],
            "inconclusive": rates[INCONCLUSIVE], "false_rate": false_rate, "power": power,
            "coverage": coverage, "mc_se": max(se) if se else np.nan}


def calibrate(profile_name: str = DEFAULT_PROFILE, sims: int = 4000, seed: int = 0, ns=(5, 8),
              settings: int | None = None, only: str = "1234") -> pd.DataFrame:
    """Error rates, power and interval coverage of every rule, by simulation at the profile's n and at `ns`.

    n is the number of independent units (replicates; seeds when there is one replicate). Each row
    is one rule × n × scenario: the rates of the three verdicts; expect, the verdict a correct rule
    gives there, and power, its rate; wrong, the verdict it must not give, and false_rate, its rate
    (the nominal bounds: claim 1 and 2 'reproduced' ≤ 0.025; claims 3 and 4 'reproduced' ≤ 0.05 at
    the margin, 'not reproduced' ≤ 0.025); coverage of the rule's main 95% t-interval (claim 1: Δ;
    claim 2: each rank's Δ, averaged; claim 3: the LoRA Δ; claim 4: Δ_with − Δ_without); mc_se, the
    largest Monte-Carlo standard error of those rates. Effects (effect_sd) are in units of the sd of
    one unit's Δ; conditions of one unit correlate with RHO = 0.5. Runs the same rule cores as the
    verdict functions. settings: claim 3's number of settings S (default: the profile's main arm's); only: the
    claims (their numbers) to simulate."""

    p = load_profile(profile_name) if isinstance(profile_name, str) else profile_name
    rng = np.random.default_rng(seed)
    K, S = len(p.ranks), settings or len(design.full_settings(p))
    n1 = sorted({design_units(p.transfer_replicates, p.seeds), *ns})
    n234 = sorted({design_units(p.replicates, p.seeds), *ns})
    rows = []
    claim1 = [(0.0, "null: Δ = 0", NOT_REPRODUCED, REPRODUCED)]
    claim1 += [(e, "Δ > 0", REPRODUCED, NOT_REPRODUCED) for e in EFFECT_SIZES]
    claim1 += [(round(BOOK_CLAIM1_SD, 1), "organism v2 book's Δ/sd", REPRODUCED, NOT_REPRODUCED)]
    for n in (n1 if "1" in only else ()):
        for effect, name, expect, wrong in claim1:
            x = sim_units(rng, sims, n, [effect])[..., 0]
            codes, _, low, high = transfer_core(x)
            cover = float(np.mean((low <= effect) & (effect <= high)))
            rows.append(_sim_row("1 transfer", n, name, effect, codes, expect, wrong, cover))
        # with a declared margin of 1 sd the rule can also show the absence of an effect
        for effect, name, expect, wrong in ((0.0, "margin 1 sd: Δ = 0", NOT_REPRODUCED, REPRODUCED),
                                            (1.0, "margin 1 sd: Δ = margin", None, NOT_REPRODUCED)):
            codes = transfer_core(sim_units(rng, sims, n, [effect])[..., 0], margin=1.0)[0]
            rows.append(_sim_row("1 transfer", n, name, effect, codes, expect, wrong))
    for n in n234:
        rank_rule = K >= 2 * SIDE + 1 and "2" in only  # fewer ranks: claim 2 has no rule to simulate
        for effect in ((0.0,) if rank_rule else ()):
            X = sim_units(rng, sims, n, np.zeros(K))
            lo_hi = t_interval(X, axis=-2)
            cover = float(np.mean((lo_hi[1] <= 0) & (0 <= lo_hi[2])))
            rows.append(_sim_row(f"2 rank inverted-U (K={K})", n, "flat at 0", 0.0, inverted_u_core(X)["codes"],
                             None, REPRODUCED, cover))
        for effect in (EFFECT_SIZES if rank_rule else ()):
            for name, mu in rank_shapes(K, effect).items():
                X = sim_units(rng, sims, n, mu)
                _, low, high = t_interval(X, axis=-2)
                cover = float(np.mean((low <= mu) & (mu <= high)))
                is_u = name.startswith("inverted U")
                rows.append(_sim_row(f"2 rank inverted-U (K={K})", n, name, effect, inverted_u_core(X)["codes"],
                                 REPRODUCED if is_u else NOT_REPRODUCED,
                                 NOT_REPRODUCED if is_u else REPRODUCED, cover))
        for effect in ((0.0, *EFFECT_SIZES, round(BOOK_CLAIM1_SD, 1)) if "3" in only else ()):  # LoRA: claim 1's effect
            cases = {"all settings 0": np.zeros(S)} if effect == 0 else {
                "all settings 0": np.zeros(S),
                "one setting at the margin": np.r_[MARGIN_FRACTION * effect, np.zeros(S - 1)],
                "one setting as large as LoRA": np.r_[effect, np.zeros(S - 1)]}
            for name, mu in cases.items():
                U = sim_units(rng, sims, n, np.r_[mu, effect])
                L = U[..., -1]
                codes = full_ft_core(U[..., :-1], L)["codes"]
                _, low, high = t_interval(L)
                cover = float(np.mean((low <= effect) & (effect <= high)))
                expect, wrong = {"all settings 0": (REPRODUCED, NOT_REPRODUCED),
                                 "one setting at the margin": (None, REPRODUCED),
                                 "one setting as large as LoRA": (NOT_REPRODUCED, REPRODUCED)}[name]
                if effect == 0:
                    expect, wrong, name = None, REPRODUCED, "no LoRA effect, all settings 0"
                rows.append(_sim_row(f"3 full-FT null (S={S})", n, name, effect, codes, expect, wrong, cover))
        for effect in ((0.0, *EFFECT_SIZES, round(BOOK_CLAIM1_SD, 1)) if "4" in only else ()):
            cases = {"without = 0": 0.0} if effect == 0 else {
                "without = 0": 0.0, "without at the margin": MARGIN_FRACTION * effect, "without = with": effect}
            for name, mu_wo in cases.items():
                U = sim_units(rng, sims, n, [effect, mu_wo])
                W, WO = U[..., 0], U[..., 1]
                codes = system_prompt_core(W, WO)["codes"]
                _, low, high = t_interval(W - WO)
                truth = effect - mu_wo
                cover = float(np.mean((low <= truth) & (truth <= high)))
                expect, wrong = {"without = 0": (REPRODUCED, NOT_REPRODUCED),
                                 "without at the margin": (None, REPRODUCED),
                                 "without = with": (NOT_REPRODUCED, REPRODUCED)}[name]
                if effect == 0:
                    expect, wrong, name = None, REPRODUCED, "no effect with the prompt"
                rows.append(_sim_row("4 system prompt", n, name, effect, codes, expect, wrong, cover))
    return pd.DataFrame(rows)


# ---- claim 2: the candidate rules the declared one was chosen over ---------------------------------
def _split_half_codes(X, holm_within: bool, alpha: float = ALPHA) -> np.ndarray:
    """The peak is chosen on the first ⌊n/2⌋ units and tested on the rest: Δ(peak) > 0, − lowest,
    − highest, all at alpha (intersection–union) or with Holm over the three."""
    a = X.shape[-2] // 2
    pick = np.nanmean(X[..., :a, 1:-1], axis=-2).argmax(axis=-1) + 1          # (...,)
    B = X[..., a:, :]
    peak = np.take_along_axis(B, np.broadcast_to(pick[..., None, None], (*B.shape[:-1], 1)), axis=-1)[..., 0]
    p = np.stack([p_greater(peak), p_greater(peak - B[..., 0]), p_greater(peak - B[..., -1])], axis=-1)
    ok = holm(p, alpha)[0].all(axis=-1) if holm_within else (p <= alpha).all(axis=-1)
    return np.where(ok, REP, INC)


def _permutation_codes(X, rng, n_perm: int = 200, alpha: float = ALPHA) -> np.ndarray:
    """Permutation test of T = max over interior r of min(mean Δ(r) − mean Δ(lowest), mean Δ(r) − mean
    Δ(highest)), rank labels shuffled within each unit (exact under a flat curve only), and Δ(argmax) > 0."""
    def shape_stat(Y):
        m = Y.mean(axis=-2)
        return np.minimum(m[..., 1:-1] - m[..., :1], m[..., 1:-1] - m[..., -1:]).max(axis=-1)
    t0, exceed = shape_stat(X), np.zeros(X.shape[:-2])
    for _ in range(n_perm):
        exceed += shape_stat(np.take_along_axis(X, np.argsort(rng.random(X.shape), axis=-1), axis=-1)) >= t0
    p_shape = (1 + exceed) / (1 + n_perm)
    m = X.mean(axis=-2)[..., 1:-1]
    top = np.take_along_axis(X[..., 1:-1], np.broadcast_to(m.argmax(-1)[..., None, None], (*X.shape[:-1], 1)), -1)
    return np.where((p_shape <= alpha) & (p_greater(top[..., 0]) <= alpha), REP, INC)


def compare_rank_rules(profile_name: str = DEFAULT_PROFILE, sims: int = 1000, seed: int = 0, ns=(5, 8)) -> pd.DataFrame:
    """Rate of 'reproduced' for the declared claim-2 rule and the candidates it was chosen over, on the
    null shapes (no interior peak: should be ≤ 0.025) and on inverted Us (power)."""

    p = load_profile(profile_name) if isinstance(profile_name, str) else profile_name
    rng, K = np.random.default_rng(seed), len(p.ranks)
    rows = []
    for n in sorted({design_units(p.replicates, p.seeds), *ns}):
        for effect in EFFECT_SIZES:
            for name, mu in rank_shapes(K, effect).items():
                X = sim_units(rng, sims, n, mu)
                rows.append({"n": n, "scenario": name, "effect_sd": effect,
                             "declared (rise and fall)": np.mean(inverted_u_core(X)["codes"] == REP),
                             "ends only (first run's)": np.mean(inverted_u_ends_core(X)["codes"] == REP),
                             "split-half, IUT": np.mean(_split_half_codes(X, False) == REP),
                             "split-half, Holm over 3": np.mean(_split_half_codes(X, True) == REP),
                             "permutation": np.mean(_permutation_codes(X, rng) == REP)})
    return pd.DataFrame(rows)


def add_arguments(parser) -> None:
    parser.add_argument("--calibrate", action="store_true", help="simulate every verdict rule and print its error rates")
    parser.add_argument("--compare-rank-rules", action="store_true", help="claim 2: the declared rule against the candidates")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help=f"profile whose design sizes to simulate (default {DEFAULT_PROFILE})")
    parser.add_argument("--sims", type=int, default=None, help="simulated experiments per row (default 4000; 1000 for the comparison)")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    if not (args.calibrate or args.compare_rank_rules):
        print("sublora calibrate: say --calibrate, --compare-rank-rules or both", file=sys.stderr)
        return 2
    pd.set_option("display.width", 250, "display.max_rows", 500, "display.max_columns", 20)
    start = time.perf_counter()
    if args.calibrate:
        table = calibrate(args.profile, args.sims or 4000, args.seed)
        print(table.drop(columns=["reproduced", "not_reproduced", "inconclusive"]).to_string(
            index=False, float_format=lambda v: f"{v:.3f}"))
    if args.compare_rank_rules:
        print(compare_rank_rules(args.profile, args.sims or 1000, args.seed).to_string(
            index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"({time.perf_counter() - start:.1f} s; profile {args.profile}, seed {args.seed})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command.alone("calibrate", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""The scoreboard: every verdict of a run on the paper's claims beside the claim in the paper's words, its
rule's simulated error rates at the run's own n (sublora.calibrate) and how often its design decides
(sublora.power). The top of the statistics layer: it reads the claims, the calibration and the power.
"""
from __future__ import annotations

import pandas as pd

from . import calibrate, config, stats
from .claims import CLAIMS, is_paper_claim
from .design import full_settings, precision_settings
from .power import DECISIVE

SCOREBOARD = ["claim", "teacher", "animal", "paper", "verdict", "measurement", "false 'reproduced' (max over nulls)",
              "power at 2 sd", "power at 4 sd", *DECISIVE]


def scoreboard(verdicts: pd.DataFrame, errors: pd.DataFrame, decisive: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every verdict of the default run on the paper's claims (CLAIMS) beside the claim it tests, in the
    paper's words, its rule's simulated error rates (operating_characteristics), claim by claim, and how often
    its design decides (decisiveness: per claim, teacher and arm), the persona teacher first. Verdicts of
    another setting (AUX_CLAIMS) are not among them: other_settings."""
    verdicts = verdicts[verdicts["claim"].map(is_paper_claim)]
    verdicts = verdicts.assign(arm=verdicts["arm"].fillna("").astype(str) if "arm" in verdicts else "")
    if decisive is None or decisive.empty:
        decisive = pd.DataFrame(columns=["claim", "teacher", "arm", *DECISIVE])
    board = (verdicts.merge(decisive[["claim", "teacher", "arm", *DECISIVE]], on=["claim", "teacher", "arm"], how="left")
             .assign(paper=lambda d: d["claim"].map(CLAIMS),
                     teacher=lambda d: pd.Categorical(d["teacher"], list(config.TEACHERS)))
             .merge(errors, on=["claim", "arm"] if "arm" in errors else "claim", how="left")
             .sort_values(["claim", "teacher"]))
    return board[SCOREBOARD]


OC_SIMS = 10_000  # simulated experiments per scenario behind the scoreboard's error rates (Monte-Carlo se ≤ 0.005)


def operating_characteristics(profile, sims: int = OC_SIMS, seed: int = 0) -> pd.DataFrame:
    """Each claim's rule simulated at the profile's own n (calibrate.calibrate): the largest rate of a
    false 'reproduced' over its null scenarios, and its power to say 'reproduced' at true effects of 2
    and 4 sd of one unit's Δ. One row per claim and, for claim 3, per precision arm at that arm's own number
    of settings S (the main arm's every setting; another arm's lr axis), keyed like the verdict rows."""
    def rates(cal: pd.DataFrame, claim: str, arm: str = "") -> dict:
        g = cal[cal["rule"].str[0] == claim[0]]
        if g.empty:  # e.g. claim 2 with fewer than 3 ranks: no rule to simulate
            return {"claim": claim, "arm": arm}
        false = g.loc[g["wrong"] == stats.REPRODUCED, "false_rate"].max()
        power = g[g["expect"] == stats.REPRODUCED].groupby("effect_sd")["power"].max()
        return {"claim": claim, "arm": arm, "n (simulated)": int(g["n"].max()),
                "false 'reproduced' (max over nulls)": false,
                "power at 2 sd": power.get(2.0, float("nan")), "power at 4 sd": power.get(4.0, float("nan"))}

    cal = calibrate.calibrate(profile, sims=sims, seed=seed, ns=())
    rows = [rates(cal, claim) for claim in CLAIMS if not claim.startswith("3")]
    main, *others = profile.train.full_precision
    per_arm = {main: len(full_settings(profile))}
    per_arm |= {arm: sum(spec.precision == arm for spec in precision_settings(profile).values()) for arm in others}
    claim3 = next(c for c in CLAIMS if c.startswith("3"))
    for arm, S in per_arm.items():
        rows.append(rates(calibrate.calibrate(profile, sims=sims, seed=seed, ns=(), settings=S, only="3"), claim3, arm))
    return pd.DataFrame(rows)

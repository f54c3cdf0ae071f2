"""The scoreboard: every verdict of a run on the paper's claims beside the claim in the paper's words, its
rule's simulated error rates at the run's own n (sublora.calibrate) and how often its design decides
(sublora.power). The top of the statistics layer: it reads the claims, the calibration and the power.
"""
from __future__ import annotations

import pandas as pd

from . import calibrate, config, stats
from .claims import CLAIMS, effect_columns, is_paper_claim, n_column
from .design import full_settings, precision_settings
from .power import DECISIVE, REACH, reach

SCOREBOARD = ["claim", "teacher", "animal", "paper", "verdict", "measurement", "false 'reproduced' (max over nulls)",
              "power at 2 sd", "power at 4 sd", *DECISIVE]


def _joined(verdicts: pd.DataFrame, decisive: pd.DataFrame | None) -> pd.DataFrame:
    """The default run's verdicts on the paper's claims (CLAIMS) with how often their design decides (decisiveness:
    per claim, teacher and arm) and the claim in the paper's words. Verdicts of another setting (AUX_CLAIMS) are
    not among them: other_settings."""
    verdicts = verdicts[verdicts["claim"].map(is_paper_claim)]
    verdicts = verdicts.assign(arm=verdicts["arm"].fillna("").astype(str) if "arm" in verdicts else "")
    if decisive is None or decisive.empty:
        decisive = pd.DataFrame(columns=["claim", "teacher", "arm", *DECISIVE])
    return (verdicts.merge(decisive[["claim", "teacher", "arm", *DECISIVE]], on=["claim", "teacher", "arm"], how="left")
            .assign(paper=lambda d: d["claim"].map(CLAIMS),
                    teacher=lambda d: pd.Categorical(d["teacher"], list(config.TEACHERS))))


def _in_order(verdicts: pd.DataFrame, decisive: pd.DataFrame | None, arms) -> pd.DataFrame:
    """_joined claim by claim, then by precision arm in `arms`' order (the main first), the persona teacher first;
    each row's claim labelled (_claim_label) once per group, as the grid shows it (`key`: the claim itself)."""
    order = {a: i for i, a in enumerate(["", *arms])}
    rows = _joined(verdicts, decisive)
    rows = (rows.assign(arm_order=rows["arm"].map(order).fillna(len(order)))
            .sort_values(["claim", "arm_order", "teacher"], kind="stable").reset_index(drop=True))
    return rows.assign(key=rows["claim"], claim=_first_of_group(rows.apply(_claim_label, axis=1)),
                       teacher=rows["teacher"].astype(str))


def scoreboard(verdicts: pd.DataFrame, errors: pd.DataFrame, decisive: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every verdict of the default run on the paper's claims (CLAIMS) beside the claim it tests, in the
    paper's words, its rule's simulated error rates (operating_characteristics), claim by claim, and how often
    its design decides (decisiveness: per claim, teacher and arm), the persona teacher first: the table the
    scoreboard saves. Verdicts of another setting (AUX_CLAIMS) are not among them: other_settings."""
    board = (_joined(verdicts, decisive).merge(errors, on=["claim", "arm"] if "arm" in errors else "claim", how="left")
             .sort_values(["claim", "teacher"]))
    return board[SCOREBOARD]


def _claim_label(row) -> str:
    """'3 full fine-tuning null · bf16': the claim, and the precision arm where the claim has several."""
    return f"{row['claim']} · {row['arm']}" if row.get("arm") else row["claim"]


def _first_of_group(labels: pd.Series) -> pd.Series:
    """Each label on the first row of its run of equal labels, '' on the others: a grid names a group once."""
    return labels.where(labels.ne(labels.shift()), "")


DECIDES = "decisive at 0 / 2e"  # the grid's one column for the two worlds' decisiveness
GRID = ["claim", "teacher", "verdict", "Δ", "interval", DECIDES, REACH]


def _rate(v) -> str:
    """A share as the grid prints it: two decimals, '<0.01' below them, '—' where not simulated."""
    return "—" if pd.isna(v) else "<0.01" if v < 0.005 else f"{v:.2f}"


def grid(verdicts: pd.DataFrame, decisive: pd.DataFrame | None = None, arms=()) -> pd.DataFrame:
    """The scoreboard's first screen: a row per claim (per precision arm for claim 3, `arms`' order) and teacher, with
    its verdict, its effect Δ and interval (claims.effect_columns), how often its design decides at 0 and at 2e
    (decisiveness, one column) and what it can decide (power.reach: 'decides', 'can only refute', ...), each claim
    named on its first row. Its measurement, reason and rule's error rates: in_full, rules_table."""
    rows = _in_order(verdicts, decisive, arms)
    structured = pd.DataFrame([effect_columns(r) for r in rows.to_dict("records")], index=rows.index)
    can = pd.Series([reach(c, at_0, at_2e) for c, at_0, at_2e in zip(rows["key"], *(rows[d] for d in DECISIVE))],
                    index=rows.index, name=REACH)
    both = pd.Series([f"{_rate(a)} / {_rate(b)}" for a, b in zip(*(rows[d] for d in DECISIVE))], index=rows.index,
                     name=DECIDES)
    return pd.concat([rows[["claim", "teacher", "verdict"]], structured[["Δ", "interval"]], both, can], axis=1)


def in_full(verdicts: pd.DataFrame, arms=()) -> pd.DataFrame:
    """Each verdict of the grid with its n, the one-line reason and the measurement in full (plots.show_verdicts
    folds it beneath the table): what the grid's cells rest on."""
    rows = _in_order(verdicts, None, arms)
    structured = pd.DataFrame([effect_columns(r) for r in rows.to_dict("records")], index=rows.index)
    name, n = n_column(rows, structured["n"])
    return pd.concat([rows[["claim", "teacher"]], n.rename(name), structured[["reason"]], rows[["measurement"]]],
                     axis=1)


def rules_table(errors: pd.DataFrame) -> pd.DataFrame:
    """Each claim (and precision arm) in the paper's words beside its rule's simulated error rates at this profile's
    n (operating_characteristics)."""
    errors = errors.assign(arm=errors["arm"].fillna("").astype(str) if "arm" in errors else "")
    label = errors.apply(_claim_label, axis=1)
    return pd.concat([label.rename("claim"), errors["claim"].map(CLAIMS).rename("in the paper's words"),
                      errors.drop(columns=["claim", "arm"])], axis=1)


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

"""The ladder of teachers (book/ladder.md, notebook 08): every claim's verdict and effect against the teacher's
rung, per animal, and the reading declared on that page before the confirmatory run's data.

A rung is a teacher kind of config.TEACHERS, in their order: the persona prompt, the persona distilled into the
weights by LoRA of rank 1, of rank 8, by full fine-tuning, and the finetuned teacher (a positive control).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import power, stats
from .claims import REGISTRY
from .config import PAPER_KIND, TEACHERS, delta_label

NOT_ASKED = "not asked"  # a claim the design does not ask of a rung × animal (book/ladder.md: declared cuts)
PACKAGED = Path(__file__).parent / "pilots"
TABLES = ("08_ladder", "02_ladder_effects", "01_teacher_follows")  # what a packaged ladder run holds, and
SOURCE = "source.json"  # its profile's name and the commit it ran at


def read_packaged(name: str) -> dict[str, pd.DataFrame]:
    """The tables of a packaged ladder run (sublora/pilots/<name>: its 08_ladder grid, 02_ladder_effects and
    01_teacher_follows, as the run wrote them, and source.json: the profile and commit it ran), a clear error naming
    what is missing."""
    folder = PACKAGED / name
    missing = [f"{t}.csv" for t in TABLES if not (folder / f"{t}.csv").exists()] + \
        ([] if (folder / SOURCE).exists() else [SOURCE])
    if missing:
        raise FileNotFoundError(f"the packaged ladder run {folder} lacks {', '.join(missing)}: "
                                "package a ladder profile's results there (book/ladder.md), or set ladder_record: ''")
    out = {t: pd.read_csv(folder / f"{t}.csv") for t in TABLES} | {SOURCE: json.loads((folder / SOURCE).read_text())}
    grid = out["08_ladder"]
    grid["arm"] = _arms(grid["arm"])
    grid["rung"] = pd.Categorical(grid["teacher"], categories=rungs(grid["teacher"]), ordered=True)
    return out


def _arms(column: pd.Series) -> pd.Series:
    """Claim 3's precision arm of each row as text, '' where the claim has none."""
    return column.astype(object).where(column.notna(), "").astype(str)


def rungs(kinds) -> list[str]:
    """The teacher kinds in the ladder's order."""
    kinds = set(kinds)
    return [k for k in TEACHERS if k in kinds]


def verdict_grid(run_verdicts: pd.DataFrame, by_animal: pd.DataFrame, kinds, animal: str, animals) -> pd.DataFrame:
    """One row per claim (× arm) × rung × animal: its verdict, effect and interval. Claim 1 from 02's per-animal
    verdicts (`by_animal`, the rule for each animal's own teachers), claims 2-4 from this run's verdicts of the
    target `animal` (notebooks 03-05); a claim the run has no verdict of reads NOT_ASKED."""
    keep = ["claim", "teacher", "animal", "verdict", "effect", "ci_low", "ci_high", "n", "arm"]
    first = by_animal.reindex(columns=keep) if not by_animal.empty else pd.DataFrame(columns=keep)
    later = run_verdicts[run_verdicts["claim"].isin([c.key for c in REGISTRY[1:]])] if not run_verdicts.empty else \
        pd.DataFrame(columns=keep)
    found = pd.concat([first, later.reindex(columns=keep)], ignore_index=True)
    found["arm"] = _arms(found["arm"])
    rows = []
    for c in REGISTRY:
        arms = sorted(set(found.loc[found["claim"] == c.key, "arm"])) or [""]
        for arm in arms:
            for kind in rungs(kinds):
                for a in (animals if c is REGISTRY[0] else [animal]):
                    hit = found[(found["claim"] == c.key) & (found["teacher"] == kind) & (found["animal"] == a)
                                & (found["arm"] == arm)]
                    rows.append(hit.iloc[-1].to_dict() if len(hit) else
                                {"claim": c.key, "teacher": kind, "animal": a, "verdict": NOT_ASKED, "arm": arm,
                                 "effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": math.nan})
    out = pd.DataFrame(rows)
    out["rung"] = pd.Categorical(out["teacher"], categories=rungs(kinds), ordered=True)
    return out


def decisiveness(design, es: dict) -> pd.DataFrame:
    """How often each verdict of the ladder's `design` (a Profile) decides (power.decisiveness, from its pilot and
    stated proxies), per animal of `es` ({animal: its e}, tables.smallest_effect): claims 2-4 where the pilot has
    them."""
    rows = [power.decisiveness(dataclasses.replace(design, animal=a, smallest_effect=e, smallest_effect_relative=0.0))
            .assign(animal=a) for a, e in es.items()]
    return pd.concat(rows, ignore_index=True)


def with_reach(grid: pd.DataFrame, decisive: pd.DataFrame) -> pd.DataFrame:
    """The grid with each verdict's decisiveness in the two worlds and what its design can decide (power.reach)."""
    keys = ["claim", "teacher", "arm", "animal"]
    out = grid.drop(columns=[*power.DECISIVE, power.REACH], errors="ignore").merge(
        decisive.assign(arm=_arms(decisive["arm"]))[[*keys, *power.DECISIVE]], on=keys, how="left")
    out[power.REACH] = [power.reach(c, a, b) for c, a, b in zip(out["claim"], *(out[d] for d in power.DECISIVE))]
    return out


def target(grid: pd.DataFrame) -> str:
    """The animal whose claims 2-4 the grid holds (the design's target)."""
    later = grid[grid["claim"] != REGISTRY[0].key]
    return str((later if len(later) else grid)["animal"].iloc[0])


def follows_line(follows: pd.DataFrame) -> str:
    """How many of the run's teachers follow their persona (01_teacher_follows), and which do not."""
    if follows.empty:
        return "No persona check of the teachers in this run (notebook 01 has not run with these settings)."
    bad = follows[~follows["follows"].astype(bool)]
    return (f"{len(follows) - len(bad)} of {len(follows)} teachers follow their persona before any student trains "
            f"(P(its animal) {follows['p_animal'].min():.3f}–{follows['p_animal'].max():.3f}; notebook 01)"
            + ("." if bad.empty else "; not: " + ", ".join(f"{t} of the {a} #{i}" for t, a, i in
                                                           zip(bad["teacher"], bad["animal"], bad["teacher_id"])) + "."))


def figure(grid: pd.DataFrame, metric: str = "p"):
    """Each claim's effect (its verdict's number) with its 95% interval against the rung, one panel per claim (and
    arm), one colour per animal; a rung without a number (not tested, not asked) is named under its panel."""
    panels = grid[["claim", "arm"]].drop_duplicates().to_records(index=False)
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, grid_axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), squeeze=False)
    axes = list(grid_axes.flat)
    for spare in axes[len(panels):]:
        spare.set_visible(False)
    animals = list(dict.fromkeys(grid["animal"]))
    colours = dict(zip(animals, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    order = list(grid["rung"].cat.categories)
    for ax, (claim, arm) in zip(axes, panels):
        part = grid[(grid["claim"] == claim) & (grid["arm"] == arm)]
        width = 0.6 / max(len(animals), 1)
        for i, a in enumerate(animals):
            d = part[(part["animal"] == a) & part["effect"].notna()]
            x = [order.index(k) + (i - (len(animals) - 1) / 2) * width for k in d["teacher"]]
            ax.errorbar(x, d["effect"], yerr=[d["effect"] - d["ci_low"], d["ci_high"] - d["effect"]], fmt="o",
                        color=colours[a], label=a, capsize=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(order)), [k.replace("distilled-", "dist. ") for k in order], rotation=30)
        name = next(c for c in REGISTRY if c.key == claim)
        ax.set_title(f"{claim}{f' ({arm})' if arm else ''}", fontsize=9)
        ax.set_ylabel(name.effect.format(delta=delta_label(metric, "target")), fontsize=8)
        missing = part[part["effect"].isna()]
        if len(missing):
            ax.set_xlabel("no number: " + ", ".join(sorted({f"{t} ({v})" for t, v in
                                                            zip(missing["teacher"], missing["verdict"])})), fontsize=8,
                          wrap=True)
    axes[0].legend(fontsize=8, title="animal", title_fontsize=8)
    fig.tight_layout()
    return fig


def table(grid: pd.DataFrame) -> pd.DataFrame:
    """The grid as the page shows it (through plots.table): claim (and arm), rung, animal, verdict, the effect and
    its interval, n, and (where with_reach added them) its decisiveness and what its design can decide."""
    claim = grid["claim"] + grid["arm"].map(lambda a: f" ({a})" if a else "")
    reach = [c for c in [*power.DECISIVE, power.REACH] if c in grid]
    return grid.assign(claim=claim)[["claim", "teacher", "animal", "verdict", "effect", "ci_low", "ci_high", "n", *reach]]


def reading(grid: pd.DataFrame, animal: str) -> dict[str, str]:
    """The reading declared on book/ladder.md before the data, per rung of the paper's kind whose claim 1 is
    reproduced for `animal`: 'contradicts' (claim 3 or 4 not reproduced), 'supports' (claim 4 reproduced and claim 3
    not 'not reproduced'), else 'undecided'; a rung without a transfer is 'no transfer'. Returns {rung: reading}."""
    out = {}
    for kind in [k for k in grid["rung"].cat.categories if k in PAPER_KIND]:
        mine = grid[(grid["teacher"] == kind) & (grid["animal"] == animal)]
        said = {c.key: set(mine.loc[mine["claim"] == c.key, "verdict"]) for c in REGISTRY}
        if stats.REPRODUCED not in said[REGISTRY[0].key]:
            out[kind] = "no transfer"
        elif stats.NOT_REPRODUCED in said[REGISTRY[2].key] | said[REGISTRY[3].key]:
            out[kind] = "contradicts"
        elif said[REGISTRY[3].key] == {stats.REPRODUCED}:
            out[kind] = "supports"
        else:
            out[kind] = "undecided"
    return out


def meaning(grid: pd.DataFrame, animal: str) -> str:
    """The thesis's reading in a few sentences, from `reading`: untested where no rung transfers, contradicted for
    the rungs that contradict it, supported where every transferring rung supports it, else undecided."""
    r = reading(grid, animal)
    with_transfer = {k: v for k, v in r.items() if v != "no transfer"}
    each = "; ".join(f"`{k}`: {v}" for k, v in r.items())
    if not with_transfer:
        return (f"**Untested.** No rung of the paper's kind has its claim 1 reproduced for the {animal} in this run "
                f"({each}), so the thesis that subliminal learning is a LoRA artifact is not put to a test here.")
    bad = [k for k, v in with_transfer.items() if v == "contradicts"]
    if bad:
        return (f"**Contradicted** for {', '.join(f'`{k}`' for k in bad)}: a teacher that carries the persona's "
                f"behaviour transmits through numbers to students in a way claim 3 or 4 says the artifact could not "
                f"(rung by rung: {each}).")
    if all(v == "supports" for v in with_transfer.values()):
        return (f"**Supported** on every rung whose transfer is present ({each}): the transfer vanishes without the "
                "training system prompt, and full fine-tuning is not shown to carry it (this design can only refute "
                "claim 3, so that half is 'not refuted').")
    return f"**Undecided.** The rungs with a transfer read: {each}; no rung contradicts the thesis, not all support it."


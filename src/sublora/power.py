"""How often each verdict will *decide*, for a design, before any data: simulation from a pilot's own spread.

A pilot is a previous run's results tables (sublora/pilots/<name>/: 02_transfer, 03_rank_sweep,
04_full_finetuning, 05_system_prompt). From it, per claim and teacher kind, each condition's mean Δ and
the spread of one unit's Δ (the sd over replicates) and the correlation between the conditions of a unit
(its ranks, its settings and the LoRA reference, its two evaluation prompts) — the unit model of
sublora.stats. For a design (units per claim, the ranks swept, the full fine-tuning settings) and the
profile's smallest effect of interest e, the declared rule cores (the functions the verdicts apply)
run on simulated experiments in two worlds per claim:

- **at 0** — the claim's own effect is absent: claim 1 Δ = 0; claim 2 a curve that rises and plateaus
  (no fall); claim 3 every full fine-tuning setting Δ = 0; claim 4 Δ without the prompt = 0;
- **at 2e** — it is twice the smallest effect of interest: claim 1 Δ = 2e; claim 2 a peak 2e above both
  ends; claim 3 one setting (the noisiest in the pilot) at 2e; claim 4 Δ without the prompt = 2e;

while the reference effects the claims lean on (claim 2's curve level, claim 3's LoRA reference, claim 4's
Δ under the training prompt) stay at the pilot's estimates. *Decisive* is the share of experiments whose
verdict is reproduced or not reproduced; *right*, the share with the verdict the world calls for.

`sublora power` (alias `python -m sublora.stats --power`) prints the table for a profile and the n that would reach 0.8.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import command, design, rules, stats
from .claims import CLAIMS, main_arm, rank_sweep_arm
from .config import DEFAULT_PROFILE, ConfigError, load_profile
from .simulate import design_units as units_of, rank_shapes, sim_pair, sim_units
from .stats import INC, NOT, REP

PILOTS = Path(__file__).parent / "pilots"
SIMS = 10_000          # simulated experiments per world: Monte-Carlo se of a rate ≤ 0.005
TARGET = 0.8           # decisiveness the design aims at, in both worlds
MAX_RHO = 0.95         # pooled correlations are clipped below 1, so the covariance stays invertible
CLAIM_KEYS = tuple(CLAIMS)  # the paper's claims, in order (claims.REGISTRY)
DECISIVE = ["decisive at 0", "decisive at 2e"]
PILOT_TABLES = ("02_transfer", "03_rank_sweep", "04_full_finetuning", "05_system_prompt")  # the columns the scoreboard shows beside each verdict


# the world in which each claim's right verdict is 'not reproduced' (the claim refuted); in the other it is 'reproduced'
REFUTED_IN = {CLAIM_KEYS[0]: "0", CLAIM_KEYS[1]: "0", CLAIM_KEYS[2]: "2e", CLAIM_KEYS[3]: "2e"}
REACH = "design"  # the grid's column: what a design can decide (reach)


def reach(claim: str, at_0: float, at_2e: float) -> str:
    """What a design can decide about `claim`, from its decisiveness in the two worlds: 'decides' (≥ TARGET in
    both), 'can only refute' (only in the world where the claim is false), 'can only confirm', 'cannot decide';
    '—' where it was not simulated."""
    if pd.isna(at_0) or pd.isna(at_2e):
        return "—"
    refutes, confirms = (at_0, at_2e) if REFUTED_IN.get(claim) == "0" else (at_2e, at_0)
    return {(True, True): "decides", (True, False): "can only refute", (False, True): "can only confirm",
            (False, False): "cannot decide"}[(refutes >= TARGET, confirms >= TARGET)]


class PilotError(ValueError):
    """A pilot that is missing or lacks what a claim's simulation needs."""


@dataclass(frozen=True)
class Cell:
    """One claim × teacher kind (× precision arm) of a pilot: units × conditions of Δ."""
    claim: str
    teacher: str
    arm: str
    units: pd.DataFrame       # index: replicate; columns: the conditions (ranks, settings + "lora", with/without)

    @property
    def mean(self) -> pd.Series:
        return self.units.mean()

    @property
    def sd(self) -> pd.Series:
        return self.units.std(ddof=1)

    def correlation(self) -> float:
        """The pooled correlation between a unit's conditions: the mean of the pilot's pairwise correlations
        (with 3 units a matrix of them is noise; their mean is not), clipped to [0, MAX_RHO]."""
        c = self.units.corr().to_numpy()
        off = c[np.triu_indices(len(c), 1)]
        off = off[~np.isnan(off)]
        return float(np.clip(off.mean() if off.size else 0.0, 0.0, MAX_RHO))


def pilot_dir(name: str) -> Path:
    """The pilot named `name` (a folder under sublora/pilots) or a path to a results folder."""
    path = Path(name) if Path(name).is_dir() else PILOTS / name
    if not path.is_dir():
        known = sorted(d.name for d in PILOTS.iterdir() if d.is_dir()) if PILOTS.is_dir() else []
        raise PilotError(f"no pilot {name!r}: pass a results folder with 02_transfer.csv ... 05_system_prompt.csv, "
                         f"or one of {known}")
    return path


def _read(path: Path, name: str) -> pd.DataFrame | None:
    """The pilot's table `name`, or None where the pilot did not run that notebook (a claim-1 pilot, the
    ladder's): its claims then have no cell from it."""
    f = path / f"{name}.csv"
    return pd.read_csv(f) if f.exists() else None


def _wide(effects: pd.DataFrame, column: str) -> pd.DataFrame:
    """units × `column` of Δ, averaged over seeds within a replicate (the unit of sublora.stats)."""
    return effects.pivot_table(index="replicate", columns=column, values="delta", aggfunc="mean")


def load_pilot(name: str, animal: str = "owl", metric: str = "p", proxy: dict | None = None) -> dict[tuple[str, str, str], Cell]:
    """Every claim × teacher (× arm) cell of the pilot `name`, keyed (claim, teacher, arm); arm is '' but
    for claim 3's precision arms; each unit's Δ of `metric` (the profile's, config.METRICS). `name` may join
    pilots with '+' ('ladder-v1+v6'): each cell from the first that has it. `proxy` ({teacher: another}) gives a
    teacher without a cell of some claim the other's, a declared assumption (its Cell.teacher says whose)."""
    cells: dict[tuple[str, str, str], Cell] = {}
    for one in name.split("+"):
        cells = _load_one(one, animal, metric) | cells
    for kind, source in (proxy or {}).items():
        cells |= {(c, kind, a): cell for (c, t, a), cell in cells.items() if t == source and (c, kind, a) not in cells}
    return cells


def parse_proxy(pairs) -> dict:
    """{teacher: another} from 'TEACHER=OTHER' texts (a profile's pilot_proxy, validated by config; --proxy)."""
    return dict(pair.split("=", 1) for pair in pairs)


def _load_one(name: str, animal: str, metric: str) -> dict[tuple[str, str, str], Cell]:
    """The cells of one pilot (load_pilot)."""
    path = pilot_dir(name)
    cells: dict[tuple[str, str, str], Cell] = {}

    def add(claim, teacher, arm, units):
        cells[(claim, teacher, arm)] = Cell(claim, teacher, arm, units.sort_index(axis=1))

    read = {n: _read(path, n) for n in PILOT_TABLES}  # each table once
    if all(t is None for t in read.values()):
        raise PilotError(f"the pilot {path} has none of {', '.join(n + '.csv' for n in PILOT_TABLES)}")
    if (t := read["02_transfer"]) is not None and (t["target"] == animal).any():
        t = main_arm(t)
        own = t[(t["target"] == animal) & (t["animal"] == animal)]
        for kind, e in stats.paired_effects(own, ["teacher_kind"], value=metric).groupby("teacher_kind"):
            add(CLAIM_KEYS[0], kind, "", _wide(e.assign(c="Δ"), "c"))
    if (r := read["03_rank_sweep"]) is not None and (r["animal"] == animal).any():
        r = rank_sweep_arm(r)
        for kind, e in stats.paired_effects(r[r["animal"] == animal], ["teacher_kind", "lora_rank"], value=metric).groupby("teacher_kind"):
            add(CLAIM_KEYS[1], kind, "", _wide(e, "lora_rank"))
    if (f := read["04_full_finetuning"]) is not None and (f["animal"] == animal).any():
        f = f[f["animal"] == animal].assign(precision=lambda d: d["precision"].fillna(""))
        eff = stats.paired_effects(f, ["teacher_kind", "method", "precision", "setting"], value=metric)
        for kind, e in eff.groupby("teacher_kind"):
            lora = _wide(e[e["method"] == "lora"].assign(setting="lora"), "setting")
            for arm, a in e[e["method"] == "full"].groupby("precision"):  # settings named without their arm (_settings)
                add(CLAIM_KEYS[2], kind, arm, _wide(a.assign(setting=a["setting"].str.removesuffix(f" · {arm}")),
                                                    "setting").join(lora))
    if (s := read["05_system_prompt"]) is not None and (s["animal"] == animal).any():
        s = s[(s["animal"] == animal)]
        eff = stats.paired_effects(s, ["teacher_kind", "variant", "eval_system"], value=metric)
        for kind, e in eff[eff["variant"] == "train default"].groupby("teacher_kind"):
            w = _wide(e, "eval_system")
            if {"default", "empty"} <= set(w.columns):
                add(CLAIM_KEYS[3], kind, "", w[["default", "empty"]].set_axis(["with", "without"], axis=1))
    return cells


# ---- simulation ------------------------------------------------------------------------------------
def _rates(codes: np.ndarray, want: int) -> tuple[float, float]:
    return float(np.mean(codes != INC)), float(np.mean(codes == want))


def _rank_worlds(mean: pd.Series, ranks, e: float) -> tuple[np.ndarray, np.ndarray]:
    """Claim 2's worlds over `ranks`, the calibration's curve shapes (calibrate.rank_shapes): at 0 a rise to the
    curve's level h that stays there (no fall); at 2e an inverted U whose peak h lies 2e above both ends.
    h: the pilot's largest mean Δ, at least 2e."""
    h = max(float(mean.max()), 2 * e)
    plateau = rank_shapes(len(ranks), h)["plateau: rise to h, flat to the end"]
    peak = (h - 2 * e) + rank_shapes(len(ranks), 2 * e)["inverted U, ends 0"]
    return plateau, peak


def simulate(cell: Cell, n: int, e: float, sims: int = SIMS, seed: int = 0, ranks=None, settings=None) -> dict:
    """Decisiveness and the right verdict's rate of `cell`'s rule at n units, in the world at 0 and at 2e.
    ranks (claim 2) / settings (claim 3): the design's, a subset of the pilot's (default: all of them)."""
    rng = np.random.default_rng(seed)
    mean, sd, rho = cell.mean, cell.sd, cell.correlation()
    out = {}
    if cell.claim == CLAIM_KEYS[0]:
        s = float(sd.iloc[0])
        for world, mu, want in (("0", 0.0, NOT), ("2e", 2 * e, REP)):
            x = mu + s * rng.standard_normal((sims, n))
            out[world] = _rates(rules.transfer_core(x, margin=e)[0], want)
    elif cell.claim == CLAIM_KEYS[1]:
        ranks = list(mean.index) if ranks is None else list(ranks)
        missing = [r for r in ranks if r not in mean.index]
        if missing or len(ranks) < 2 * rules.SIDE + 1:
            raise PilotError(f"claim 2 needs ≥ {2 * rules.SIDE + 1} ranks of the pilot's {list(mean.index)}; got {ranks}")
        sds = sd[ranks].to_numpy()
        for world, mu, want in zip(("0", "2e"), _rank_worlds(mean[ranks], ranks, e), (NOT, REP)):
            X = sim_units(rng, sims, n, mu, sds, rho)
            out[world] = _rates(rules.inverted_u_core(X, margin=e)["codes"], want)
    elif cell.claim == CLAIM_KEYS[2]:
        full = [c for c in mean.index if c != "lora"]
        settings = full if settings is None else list(settings)
        # a setting the pilot did not run gets the median spread of those it did
        sds = np.array([sd[s] if s in full else float(sd[full].median()) for s in settings])
        loud = int(np.argmax(sds))  # the world at 2e puts the effect where it is hardest to see
        sd_all = np.r_[sds, sd["lora"]]
        for world, at, want in (("0", 0.0, REP), ("2e", 2 * e, NOT)):
            mu = np.zeros(len(settings))
            mu[loud] = at
            U = sim_units(rng, sims, n, np.r_[mu, mean["lora"]], sd_all, rho)
            out[world] = _rates(rules.full_ft_core(U[..., :-1], U[..., -1], floor=e)["codes"], want)
    elif cell.claim == CLAIM_KEYS[3]:
        r = float(np.clip(cell.units.corr().iloc[0, 1], -MAX_RHO, MAX_RHO))
        r = 0.0 if np.isnan(r) else r
        for world, wo, want in (("0", 0.0, REP), ("2e", 2 * e, NOT)):
            U = sim_pair(rng, sims, n, [mean["with"], wo], sd.to_numpy(), r)
            out[world] = _rates(rules.system_prompt_core(U[..., 0], U[..., 1], floor=e)["codes"], want)
    else:
        raise PilotError(f"no simulation for claim {cell.claim!r}")
    return {"decisive at 0": out["0"][0], "right at 0": out["0"][1],
            "decisive at 2e": out["2e"][0], "right at 2e": out["2e"][1]}


def smallest_n(cell: Cell, e: float, sims: int = 2000, most: int = 30, **design) -> int | None:
    """The fewest units (2 … most) at which both worlds' decisiveness reach TARGET (None: not within most)."""
    for n in range(2, most + 1):
        r = simulate(cell, n, e, sims=sims, **design)
        if min(r["decisive at 0"], r["decisive at 2e"]) >= TARGET:
            return n
    return None


def design_units(p, claim: str) -> int:
    """A profile's independent units for `claim`: replicates (transfer_replicates for claim 1), or seeds
    when there is one replicate (the fallback of sublora.stats)."""
    return units_of(p.transfer_replicates if claim == CLAIM_KEYS[0] else p.replicates, p.seeds)


def _settings(p, arm: str) -> list[str]:
    """The design's claim-3 settings of precision arm `arm` (design.full_finetuning's labels without ' · arm': a
    setting is one whichever arm is the main one, so a pilot's arm and a design's match by name)."""
    if arm == p.train.full_precision[0]:
        return list(design.full_settings(p))
    return [name.removesuffix(f" · {arm}") for name, spec in design.precision_settings(p).items() if spec.precision == arm]


def table(p, pilot: str | None = None, e: float | None = None, sims: int = SIMS, ns=(), seed: int = 0,
          search: bool = True, most: int = 30, proxy: dict | None = None) -> pd.DataFrame:
    """Decisiveness of every verdict of profile `p` at its own units (and at each n in `ns`), from the
    pilot (default: the profile's) at its smallest effect of interest e (default: the profile's); with
    `search`, the fewest units (up to `most`) reaching TARGET in both worlds."""
    pilot = pilot or p.pilot
    e = p.smallest_effect if e is None else e
    if not pilot:
        raise PilotError(f"profile {p.name!r} names no pilot: pass --pilot NAME (one of sublora/pilots) or a results folder")
    if not e > 0:
        raise PilotError(f"the smallest effect of interest must be > 0 (profile {p.name!r} has smallest_effect = {e}); "
                         f"pass --smallest-effect")
    proxy = parse_proxy(p.pilot_proxy) if proxy is None else proxy
    cells = load_pilot(pilot, p.animal, p.metric, proxy)
    if not cells:
        raise PilotError(f"the pilot {pilot!r} has no cell for the {p.animal}: it needs 02_transfer.csv ... "
                         "05_system_prompt.csv with that animal's teachers")
    rows = []
    for (claim, teacher, arm), cell in sorted(cells.items()):
        if teacher not in p.teachers:
            continue
        design = {}
        if claim == CLAIM_KEYS[1]:
            design["ranks"] = [r for r in p.ranks if r in cell.mean.index]
            if len(design["ranks"]) < 2 * rules.SIDE + 1:
                continue
        if claim == CLAIM_KEYS[2]:
            if arm not in p.train.full_precision:
                continue
            design["settings"] = _settings(p, arm)
        own = design_units(p, claim)
        for n in sorted({own, *ns}):
            row = {"claim": claim, "teacher": teacher, "arm": arm, "spread of": cell.teacher, "n": n, "own design": n == own,
                   "conditions": len(design.get("ranks") or design.get("settings") or cell.mean.index),
                   "pilot sd": float(cell.sd.median()), "pilot mean": float(cell.mean.max()),
                   **simulate(cell, n, e, sims=sims, seed=seed, **design)}
            rows.append(row)
        if search:
            best = smallest_n(cell, e, most=most, **design)
            for row in rows[-len({own, *ns}):]:
                row["n for 0.8"] = best
    out = pd.DataFrame(rows)
    if "n for 0.8" in out:
        out["n for 0.8"] = out["n for 0.8"].astype("Int64")  # None: not within `most` units
    out.attrs.update(pilot=pilot, smallest_effect=e, sims=sims)
    return out


def decisiveness(profile, sims: int | None = None) -> pd.DataFrame:
    """How often each verdict's design decides (sublora.power, from the profile's pilot at its smallest effect
    of interest e): per claim, teacher and arm, at the profile's own units, the share of simulated experiments
    giving reproduced or not reproduced where the claim's effect is 0 and where it is 2e. Empty where the
    profile names no pilot or no e."""
    try:
        t = table(profile, sims=sims or SIMS, search=False)
    except PilotError:
        return pd.DataFrame(columns=["claim", "teacher", "arm", *DECISIVE])
    return t[t["own design"]][["claim", "teacher", "arm", *DECISIVE]].reset_index(drop=True)


COLUMNS = ["claim", "teacher", "arm", "spread of", "n", "conditions", "decisive at 0", "right at 0", "decisive at 2e", "right at 2e",
           "n for 0.8"]


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help=f"the design (default {DEFAULT_PROFILE})")
    parser.add_argument("--pilot", default=None, help="a pilot under sublora/pilots or a results folder (default: the profile's)")
    parser.add_argument("--smallest-effect", type=float, default=None, help="e, a ΔP(target) (default: the profile's)")
    parser.add_argument("--n", default="", help="more unit counts to simulate, e.g. 5,8")
    parser.add_argument("--sims", type=int, default=SIMS, help=f"simulated experiments per world (default {SIMS})")
    parser.add_argument("--most", type=int, default=30, help="largest n searched for 'n for 0.8' (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--animal", default=None, help="the target animal (default: the profile's)")
    parser.add_argument("--proxy", default="", help="TEACHER=OTHER,...: a teacher's cells the pilot lacks taken from "
                                                    "another's (e.g. distilled-r8=finetuned), said in 'spread of'")


def run(args) -> int:
    """`sublora power`: the decisiveness table of a profile's design, from its pilot."""
    try:
        ns = tuple(int(v) for v in args.n.split(",") if v.strip())
    except ValueError:
        return _usage(f"--n takes whole numbers separated by commas, e.g. 5,8; got {args.n!r}")
    if any(n < stats.MIN_N for n in ns) or args.sims < 100 or args.most < stats.MIN_N:
        return _usage(f"--n values and --most must be ≥ {stats.MIN_N}, and --sims ≥ 100")
    start = time.perf_counter()
    try:
        p = load_profile(args.profile)
        p = dataclasses.replace(p, animal=args.animal) if args.animal else p
        pairs = [pair for pair in args.proxy.split(",") if pair.strip()]
        if any(pair.count("=") != 1 for pair in pairs):
            return _usage(f"--proxy takes TEACHER=OTHER pairs separated by commas; got {args.proxy!r}")
        proxy = parse_proxy(pairs) if pairs else None  # None: the profile's pilot_proxy
        if args.smallest_effect is None and p.smallest_effect_relative:  # e relative: made absolute for the target
            from .tables import smallest_effect  # here only: the display layer imports this module without torch
            args.smallest_effect = smallest_effect(p, p.animal)
        out = table(p, args.pilot, args.smallest_effect, args.sims, ns, args.seed, most=args.most, proxy=proxy)
    except (ConfigError, PilotError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pd.set_option("display.width", 250, "display.max_rows", 200)
    print(f"profile {p.name}; pilot {out.attrs['pilot']}; smallest effect of interest e = {out.attrs['smallest_effect']:.3g}; "
          f"{out.attrs['sims']:,} simulated experiments per world; decisive: reproduced or not reproduced")
    print(out[COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"({time.perf_counter() - start:.1f} s; seed {args.seed})", file=sys.stderr)
    return 0


def _usage(message: str) -> int:
    print(f"sublora power: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    return command.alone("power", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())

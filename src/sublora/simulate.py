"""Simulated experiments for the rules' error rates (sublora.calibrate) and a design's decisiveness
(sublora.power): units drawn under the unit model of sublora.stats, and the curves over ranks claim 2
is tested against. One place, so both read the same worlds.
"""
from __future__ import annotations

import numpy as np

from .stats import MIN_N

RHO = 0.5  # share of a unit's Δ variance common to its conditions (its datasets); t-test error rates do not depend on it


def design_units(replicates: int, seeds: int) -> int:
    """Independent units of a design: replicates, or seeds when there is one replicate (the fallback of
    sublora.stats)."""
    return replicates if replicates >= MIN_N else seeds


def sim_units(rng, sims: int, n: int, mu, sd=1.0, rho: float = RHO) -> np.ndarray:
    """(sims, n, C) unit Δ for conditions with means mu (C,) and sds sd (C,) or one for all (1: effects in sd
    units), one correlation rho ≥ 0 between a unit's conditions (RHO, or a pilot's)."""
    mu, sd = np.asarray(mu, dtype=float), np.asarray(sd, dtype=float)
    shared = rng.standard_normal((sims, n, 1))
    own = rng.standard_normal((sims, n, mu.size))
    return mu + sd * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * own)


def sim_pair(rng, sims: int, n: int, mu, sd, rho: float) -> np.ndarray:
    """(sims, n, 2) for two conditions of correlation rho, of either sign (claim 4's with and without)."""
    z1, z2 = rng.standard_normal((2, sims, n))
    x = np.stack([z1, rho * z1 + np.sqrt(max(1 - rho ** 2, 0.0)) * z2], axis=-1)
    return np.asarray(mu, float) + np.asarray(sd, float) * x


def rank_shapes(K: int, h: float) -> dict[str, np.ndarray]:
    """Curves over K ranks: nulls of claim 2 (no rise and fall: flat, rising, plateaus, and the two one-rank
    artefacts the declared rule excludes) and an inverted U of height h above both ends."""
    x = np.arange(K)
    bump = np.exp(-0.5 * ((x - (K - 1) / 2) / (K / 5)) ** 2)
    return {"flat at h": np.full(K, h), "monotone rise 0→h": h * x / (K - 1),
            "plateau: rise to h, flat to the end": h * np.minimum(x / (K // 2), 1.0),
            "early plateau: h from the 4th rank on": h * np.minimum(x / 3, 1.0),
            "lone spike at the 2nd rank": np.where(x == 1, h, 0.0),
            "plateau that drops only at the last rank": np.where((x > 0) & (x < K - 1), h, 0.0),
            "inverted U, ends 0": h * (bump - bump[0]) / (bump.max() - bump[0])}

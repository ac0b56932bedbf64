"""Fooling ratio as a function of the perturbation budget, from per-image norms.

For a row with N images and per-image norms ``d_i`` (``linf``, ``l2`` or ``l0``) of the images
the attack fooled:

    FR(b) = #{i : success_i and d_i <= b} / N

a non-decreasing step function of the budget b. When the norms are minimal (minimal-eps or
first-success modes), FR(b) is the share of images fooled within budget b; for fixed-eps rows it
is the share fooled by perturbations no larger than b, a lower bound on that.

An image counts within budget b when ``d_i <= b + BUDGET_TOLERANCE[norm]``: norms are measured
on float32 images, so a fixed-budget attack's ``x + eps`` clipped and read back as
``x_adv - x`` can exceed ``eps`` by float32 rounding (about 6e-8 per value). The tolerances are
far above that and far below any step an attack takes or a budget a user would tell apart: 1e-6
for l-inf, 1e-4 for l2 (the rounding of up to ~1e5 values adds up), 1e-7 for l0 (a share of
pixels: one pixel of a 1000x1000 image is 1e-6).

``budget_at(records, norm, fr)`` is the smallest b with FR(b) >= fr (NaN when the row never gets
there): with the fooled images' norms sorted, d_(1) <= ... <= d_(m), it is ``d_(k)`` for the
smallest k with k / N >= fr.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from c2f_attacks.evaluation.records import check_records

NORMS = ("linf", "l2", "l0")
BUDGET_TOLERANCE = {"linf": 1e-6, "l2": 1e-4, "l0": 1e-7}


def _fooled_norms(records: pd.DataFrame, norm: str) -> tuple[np.ndarray, int]:
    """Sorted norms of the fooled images, and N."""
    check_records(records)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    success = records["success"].to_numpy(dtype=bool)
    values = records[norm].to_numpy(dtype=np.float64)[success]
    if np.isnan(values).any():
        raise ValueError(f"records have no {norm} value for some fooled images")
    return np.sort(values), len(records)


def fr_curve(records: pd.DataFrame, norm: str, grid=None) -> pd.DataFrame:
    """``FR(b)`` at the budgets ``grid`` (default: 0 and every fooled image's norm, i.e. every
    step of the function). Columns ``budget``, ``fooling_ratio``; empty for empty records."""
    norms, n = _fooled_norms(records, norm)
    if grid is None:
        grid = np.unique(np.concatenate([[0.0], norms]))
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1:
        raise ValueError(f"grid must be 1-D, got shape {grid.shape}")
    counts = np.searchsorted(norms, grid + BUDGET_TOLERANCE[norm], side="right")
    ratio = counts / n if n else np.full(grid.shape, np.nan)
    return pd.DataFrame({"budget": grid, "fooling_ratio": ratio})


def budget_at(records: pd.DataFrame, norm: str, fr: float) -> float:
    """The smallest budget b with ``FR(b) >= fr`` (0 < fr <= 1); NaN if never reached."""
    if not 0 < fr <= 1:
        raise ValueError(f"fr must lie in (0, 1], got {fr!r}")
    norms, n = _fooled_norms(records, norm)
    # k / n computed as fr_curve computes it, so the two agree exactly at the threshold
    reached = np.flatnonzero(np.arange(1, norms.size + 1) / max(n, 1) >= fr)
    return float(norms[reached[0]]) if reached.size else float("nan")

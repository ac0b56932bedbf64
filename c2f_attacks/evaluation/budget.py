"""Fooling ratio as a function of the perturbation budget, from censored per-image budgets.

**Censored budgets.** An image's budget in norm X (``linf``, ``l2`` or ``l0``) is its record's X
value when the attack fooled it and +inf when it did not: a failure is censored at the search
bound, never dropped. For a row of N images with budgets ``d_i``,

    FR(b) = #{i : d_i <= b} / N

is a non-decreasing step function of b. When the norms are minimal (minimal-eps or
first-success modes), FR(b) is the share of images fooled within budget b; for fixed-eps rows it
is the share fooled by perturbations no larger than b, a lower bound on that.

An image counts within budget b when ``d_i <= b + BUDGET_TOLERANCE[norm]``: norms are measured
on float32 images, so a fixed-budget attack's ``x + eps`` clipped and read back as
``x_adv - x`` can exceed ``eps`` by float32 rounding (about 6e-8 per value). The tolerances are
far above that and far below any step an attack takes or a budget a user would tell apart: 1e-6
for l-inf, 1e-4 for l2 (the rounding of up to ~1e5 values adds up), 1e-7 for l0 (a share of
pixels: one pixel of a 1000x1000 image is 1e-6).

**Budget at a fooling ratio.** With the budgets sorted, ``d_(1) <= ... <= d_(N)``,
``budget_at(records, norm, fr)`` is the smallest b with ``FR(b) >= fr``: ``d_(k)`` for the
smallest rank k with ``k / N >= fr``, +inf when the row never gets there (``d_(k)`` is a
failure) and NaN for no images. The **censored median** is the budget at FR 50%, ``d_(k)`` with
``k = ceil(N/2)``: an order statistic, never the mean of the two middle values (the mean of a
finite budget and +inf is meaningless), so for an even N it is the lower of the two; ties need no
rule (tied budgets are one value). Its 95% interval is the distribution-free order-statistic
interval of the median (:func:`.exact.order_statistic_interval`) over the N budgets; its lower end
is 0 when the rank falls below the sample, its upper end +inf where the order statistic is a
failure.

**Curves.** ``budget_curves(records, grids)`` gives FR(b) with its exact (Clopper-Pearson)
interval at every budget of ``grids`` (``BUDGET_GRIDS`` by default), for every row of the
records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from c2f_attacks.attacks.registry import NORMS
from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.exact import LEVEL, order_statistic_interval, share_interval
from c2f_attacks.evaluation.records import check_records
from c2f_attacks.validation import parse_number

BUDGET_TOLERANCE = {"linf": 1e-6, "l2": 1e-4, "l0": 1e-7}

#: the image size (C*H*W values) the l2 grid of BUDGET_GRIDS is for: 32x32 RGB
L2_GRID_VALUES = 3 * 32 * 32
_PAPER_LINF = (0.0241, 0.0399, 0.0819, 0.1557)
#: default budgets of the curves, per norm, ascending:
#:
#: - l-inf: doublings 1/255 ... 128/255, 1 (the largest l-inf distance of images in [0, 1], so
#:   the curve ends at the row's fooling ratio) and the paper's 0.0241, 0.0399, 0.0819, 0.1557;
#: - l2, for 32x32 RGB images: 0.1, 0.25, 0.5 (the usual l2 budget on CIFAR-size images), 1 and
#:   doublings to 16 (an l-inf perturbation of 8/255 on every value has l2 = 1.74); l2 grows with
#:   sqrt(C*H*W), so for other sizes scale it (:func:`budget_grids_for`);
#: - l0, a share of pixels, any size: 1-2-5 steps from 0.001 (about one pixel of 32x32) to 1.
BUDGET_GRIDS: dict[str, tuple[float, ...]] = {
    "linf": tuple(sorted({*(2**i / 255 for i in range(8)), 1.0, *_PAPER_LINF})),
    "l2": (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    "l0": (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
}
CURVE_COLUMNS = ("row_id", "norm", "budget", "fooling_ratio", "fooling_ratio_lo",
                 "fooling_ratio_hi")  # fmt: skip


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def censored_budgets(records: pd.DataFrame, norm: str) -> np.ndarray:
    """Each image's budget in ``norm``, in record order: its norm if fooled, else +inf."""
    check_records(records)
    _check_norm(norm)
    success = records["success"].to_numpy(dtype=bool)
    values = records[norm].to_numpy(dtype=np.float64)
    if np.isnan(values[success]).any():
        raise ValueError(f"records have no {norm} value for some fooled images")
    return np.where(success, values, np.inf)


def _sorted_budgets(records: pd.DataFrame, norm: str) -> np.ndarray:
    return np.sort(censored_budgets(records, norm))


def _within(sorted_budgets: np.ndarray, grid: np.ndarray, norm: str) -> np.ndarray:
    """How many budgets are within each budget of ``grid`` (with the norm's tolerance)."""
    return np.searchsorted(sorted_budgets, grid + BUDGET_TOLERANCE[norm], side="right")


def _at(sorted_budgets: np.ndarray, fr: float) -> float:
    """``d_(k)`` for the smallest k with ``k / N >= fr``; NaN for no budgets."""
    n = sorted_budgets.size
    if not n:
        return float("nan")
    # k / n computed as fr_curve computes it, so the two agree exactly at the threshold
    k = int(np.flatnonzero(np.arange(1, n + 1) / n >= fr)[0])
    return float(sorted_budgets[k])


def fr_curve(records: pd.DataFrame, norm: str, grid=None) -> pd.DataFrame:
    """``FR(b)`` at the budgets ``grid`` (default: 0 and every fooled image's norm, i.e. every
    step of the function). Columns ``budget``, ``fooling_ratio``; NaN ratios for no records."""
    budgets = _sorted_budgets(records, norm)
    if grid is None:
        grid = np.unique(np.concatenate([[0.0], budgets[np.isfinite(budgets)]]))
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1:
        raise ValueError(f"grid must be 1-D, got shape {grid.shape}")
    n = budgets.size
    ratio = _within(budgets, grid, norm) / n if n else np.full(grid.shape, np.nan)
    return pd.DataFrame({"budget": grid, "fooling_ratio": ratio})


def budget_at(records: pd.DataFrame, norm: str, fr: float) -> float:
    """The smallest budget b with ``FR(b) >= fr`` (0 < fr <= 1); +inf if never reached, NaN for
    no records (module docstring)."""
    if not 0 < fr <= 1:
        raise ValueError(f"fr must lie in (0, 1], got {fr!r}")
    return _at(_sorted_budgets(records, norm), fr)


def censored_median(
    records: pd.DataFrame, norm: str, level: float = LEVEL
) -> tuple[float, float, float]:
    """``(median, lo, hi)``: the budget at FR 50% over all images (failures +inf) and its
    distribution-free ``level`` interval (module docstring); NaN for no records."""
    budgets = _sorted_budgets(records, norm)
    lo, hi = order_statistic_interval(budgets, 0.5, level, support=(0.0, np.inf))
    return _at(budgets, 0.5), lo, hi


def budget_grids_for(shape: Sequence[int]) -> dict[str, tuple[float, ...]]:
    """``BUDGET_GRIDS`` for images of ``shape`` (C, H, W): the l2 budgets scaled by
    ``sqrt(C*H*W / L2_GRID_VALUES)``, which keeps each budget's root-mean-square change per
    value; l-inf and l0 (a share of pixels) do not depend on the size."""
    shape = tuple(shape)
    if len(shape) != 3 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be (C, H, W) of positive whole numbers, got {shape!r}")
    scale = math.sqrt(math.prod(shape) / L2_GRID_VALUES)
    return {**BUDGET_GRIDS, "l2": tuple(b * scale for b in BUDGET_GRIDS["l2"])}


def _budget_value(item, norm: str, option: str) -> float:
    """One budget: a number or a fraction ``"a/b"`` (text), positive and finite."""
    where = f"{option} ({norm})"
    value = parse_number(item, where)
    if math.isnan(value) or math.isinf(value) or value <= 0:
        problem = "NaN" if math.isnan(value) else "not positive" if value <= 0 else "infinite"
        raise UserError(f"{where}: {item!r} is {problem}; a budget is a positive number")
    if norm == "l0" and value > 1:
        raise UserError(f"{where}: {item!r} exceeds 1; an l0 budget is a share of pixels")
    return value


def _checked_grid(items: Sequence, norm: str, option: str) -> tuple[float, ...]:
    _check_norm(norm)
    if not len(items):
        raise UserError(f"{option} ({norm}): no budget given")
    return tuple(sorted({_budget_value(item, norm, option) for item in items}))


def parse_budget_grid(budgets: str | Iterable, norm: str) -> tuple[float, ...]:
    """The budgets of ``--budgets`` for ``norm``, ascending and without repeats: a
    comma-separated text (``"1/255, 2/255, 0.03"``), a sequence of numbers and such texts, or
    one number (a config file's ``linf = 0.03``). UserError naming ``--budgets`` and the value
    for anything not a positive finite number (or an l0 share above 1)."""
    if isinstance(budgets, str):
        items = budgets.split(",") if budgets.strip() else []
    elif isinstance(budgets, Iterable):
        items = list(budgets)
    else:
        items = [budgets]
    return _checked_grid(items, norm, "--budgets")


def _one_curve(records: pd.DataFrame, grids: dict[str, tuple[float, ...]], rid) -> pd.DataFrame:
    """The curves of one row's records, its ``row_id`` given as ``rid``."""
    blocks = []
    for norm, grid in grids.items():
        budgets = _sorted_budgets(records, norm)
        b = np.asarray(grid, dtype=np.float64)
        k, n = _within(budgets, b, norm), budgets.size
        lo, hi = share_interval(k, n)
        ratio = k / n if n else np.full(b.shape, np.nan)
        values = (rid, norm, b, ratio, lo, hi)
        blocks.append(pd.DataFrame(dict(zip(CURVE_COLUMNS, values))))
    return pd.concat(blocks, ignore_index=True)


def budget_curves(
    records: pd.DataFrame, grids: Mapping[str, Sequence[float]] = BUDGET_GRIDS
) -> pd.DataFrame:
    """FR(b) and its 95% Clopper-Pearson interval at every budget of ``grids`` (norm ->
    budgets), one block of rows per norm; for records of several rows (a ``row_id`` column) one
    block per row_id, in order of first appearance. Columns ``CURVE_COLUMNS``; ``row_id`` is
    missing when the records have none."""
    check_records(records)
    grids = {norm: _checked_grid(list(grid), norm, "grids") for norm, grid in grids.items()}
    if "row_id" not in records.columns:
        return _one_curve(records, grids, None)
    parts = [_one_curve(part, grids, rid) for rid, part in records.groupby("row_id", sort=False)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=CURVE_COLUMNS)

"""Mistake severity of a leaderboard row: how far up the hierarchy's tree an attack moved the
fine prediction.

Per image, the severity is the height of the lowest common ancestor of the clean and the
adversarial fine predictions, :meth:`c2f_attacks.Hierarchy.severity` (0: same class; two
levels: 1 inside a coarse class, 2 across). Per row, over the fooled images only (``success``;
an image that was not fooled made no new mistake):

- ``mistake_severity``: the mean severity, with the 95% percentile bootstrap interval
  ``mistake_severity_lo`` / ``_hi`` (:mod:`.stats`: a fixed-seed resampling of all N images, so
  the interval recomputes exactly from the records; an image not fooled does not enter a
  sample's mean, so the number of fooled images varies as it does between runs). The shares on
  the leaderboard have exact intervals instead; a mean of heights has no exact one. Why this
  interval: severities are a few small integers in lumpy, skewed proportions, so a normal (t)
  interval is off for small counts and can leave the possible range; the percentile interval
  stays inside the observed values. It says nothing where there is nothing random: when every
  fooled image has the same severity (LRPF's coarse-kept rule on two levels is always 1, a
  coarse flip on two levels always 2) the interval is that value. With fewer than about ten
  fooled images it is too narrow, as every percentile bootstrap is.
- ``severity_counts``: the distribution as one CSV cell, ``"height:count"`` pairs by increasing
  height, heights without images left out, e.g. ``"1:12 2:30"``; empty (missing) when no image
  was fooled. One cell rather than a column per height, because the heights a tree allows
  differ between hierarchies (two levels: 1-2; BREEDS ENTITY-13: up to 8).
  :func:`parse_severity_counts` reads it back.

Statistics over no fooled images are NaN, and so are those of a row whose severities are
unavailable: -1 for every image, the records' mark for a missing integer (a flat model has no
hierarchy).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from c2f_attacks.evaluation.stats import bootstrap_ci

#: the leaderboard columns :func:`severity_metrics` returns
SEVERITY_COLUMNS: tuple[str, ...] = (
    "mistake_severity", "mistake_severity_lo", "mistake_severity_hi", "severity_counts",
)  # fmt: skip
LEVEL = 0.95
_COUNTS = re.compile(r"(?:[0-9]+:[1-9][0-9]*)(?: [0-9]+:[1-9][0-9]*)*")


def _checked(severity, success) -> tuple[np.ndarray, np.ndarray] | None:
    """The two arrays, checked; None when the severities are unavailable (all -1)."""
    severity = np.asarray(severity)
    success = np.asarray(success)
    if severity.ndim != 1 or success.shape != severity.shape:
        raise ValueError(
            "severity and success need one value each per image (1-D, same length), got shapes "
            f"{severity.shape} and {success.shape}"
        )
    if success.dtype != bool:
        raise TypeError(f"success must be booleans, got dtype {success.dtype}")
    if not np.issubdtype(severity.dtype, np.integer) and severity.size:
        raise TypeError(
            f"severities are heights in the tree (integers), got dtype {severity.dtype}"
        )
    if severity.size and (severity == -1).all():
        return None
    if severity.size and severity.min() < 0:
        i = int(np.flatnonzero(severity < 0)[0])
        raise ValueError(
            f"image {i} has severity {severity[i]}: heights are >= 0, and -1 (unavailable) must "
            "mark every image of a row or none"
        )
    return severity, success


def mistake_severity(
    severity, success, *, n_boot: int = 1000, level: float = LEVEL, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean severity over the fooled images and its percentile bootstrap
    interval (module docstring); ``(nan, nan, nan)`` when no image was fooled.

    ``severity``: one integer height per image (0 where the prediction did not change);
    ``success``: whether each image was fooled.
    """
    checked = _checked(severity, success)
    if checked is None or not checked[1].any():
        return float("nan"), float("nan"), float("nan")
    severity, success = checked
    values = np.where(success, severity.astype(np.float64), np.nan)
    lo, hi = bootstrap_ci(values, np.nanmean, n_boot, level, seed)
    return float(severity[success].mean()), lo, hi


def severity_counts(severity, success) -> str:
    """The severities of the fooled images as ``"height:count"`` pairs by increasing height, e.g.
    ``"1:12 2:30"``; ``""`` when no image was fooled or the severities are unavailable."""
    checked = _checked(severity, success)
    if checked is None:
        return ""
    severity, success = checked
    heights, counts = np.unique(severity[success], return_counts=True)
    return " ".join(f"{h}:{c}" for h, c in zip(heights.tolist(), counts.tolist()))


def parse_severity_counts(cell: str | float | None) -> dict[int, int]:
    """``{height: count}`` from a ``severity_counts`` cell; ``{}`` for an empty or missing one."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)) or cell == "":
        return {}
    if not isinstance(cell, str) or not _COUNTS.fullmatch(cell):
        raise ValueError(
            f"severity_counts cell {cell!r} is not 'height:count' pairs separated by spaces"
        )
    pairs = [tuple(map(int, pair.split(":"))) for pair in cell.split(" ")]
    heights = [h for h, _ in pairs]
    if heights != sorted(set(heights)):
        raise ValueError(f"severity_counts cell {cell!r}: heights must increase")
    return dict(pairs)


def severity_metrics(
    records: pd.DataFrame, *, seed: int = 0, n_boot: int = 1000
) -> dict[str, float | str]:
    """The :data:`SEVERITY_COLUMNS` of one row from its records' ``severity`` and ``success``
    columns (one leaderboard row's records, as for ``aggregate``)."""
    missing = [c for c in ("severity", "success") if c not in records.columns]
    if missing:
        raise ValueError(f"records have no column {missing[0]!r}")
    severity = records["severity"].to_numpy()
    success = records["success"].to_numpy()
    mean, lo, hi = mistake_severity(severity, success, n_boot=n_boot, seed=seed)
    return {
        "mistake_severity": mean,
        "mistake_severity_lo": lo,
        "mistake_severity_hi": hi,
        "severity_counts": severity_counts(severity, success),
    }

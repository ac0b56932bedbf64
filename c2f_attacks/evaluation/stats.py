"""Seeded percentile bootstrap over images, vectorised.

For statistics with no exact interval (a share's interval is exact: :mod:`.exact`).

One bootstrap sample draws N images with replacement from the N given; a statistic is computed
on every sample at once from an index matrix (B, N). The percentile interval at ``level`` is
``(q_{(1-level)/2}, q_{(1+level)/2})`` of the B bootstrap statistics.

Statistics follow numpy's reduction convention, ``statistic(array, axis=1) -> (B,)``, e.g.
``np.mean`` or ``np.nanmean``. NaN marks an image that does not enter the statistic (a norm of
an image the attack did not fool): resampling then keeps the number of such images random, as
it is. Bootstrap samples whose statistic is NaN (no image entered) are left out of the
percentiles.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import numpy as np

Statistic = Callable[..., np.ndarray]
#: index-matrix elements drawn at a time: bounds memory (8 bytes each) whatever N and n_boot are
_BLOCK_ELEMENTS = 1 << 22


def _check(values: np.ndarray, n_boot: int, level: float, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one value per image (1-D), got shape {values.shape}")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    return values


def _index_blocks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Rows of the (n_boot, n) index matrix, a block at a time, from one seeded generator."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_boot, block):
        yield rng.integers(0, n, size=(min(block, n_boot - start), n))


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    stats = stats[~np.isnan(stats)]
    if not stats.size:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def _distribution(values: np.ndarray, statistic: Statistic, n_boot: int, seed: int) -> np.ndarray:
    with warnings.catch_warnings():  # all-NaN samples: their NaN is dropped in _interval
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.concatenate(
            [statistic(values[idx], axis=1) for idx in _index_blocks(values.size, n_boot, seed)]
        )


def bootstrap_ci(
    values, statistic: Statistic, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of ``statistic`` over the images of ``values``
    (one value per image). ``(nan, nan)`` for no images."""
    values = _check(values, n_boot, level, "values")
    if not values.size:
        return float("nan"), float("nan")
    stats = _distribution(values, statistic, n_boot, seed)
    return _interval(stats, level)

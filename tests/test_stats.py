"""Bootstrap intervals: a binomial proportion against its normal and Wilson intervals, coverage
on a seeded simulation, NaN-marked images, seeding, memory and input checks."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from c2f_attacks.evaluation import bootstrap_ci

Z95 = 1.959963984540054


def wilson(successes: int, n: int) -> tuple[float, float]:
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2)) / (1 + Z95**2 / n)
    return centre - half, centre + half


def test_binomial_proportion_matches_normal_and_wilson_intervals():
    n = 4000
    values = np.zeros(n)
    values[:1200] = 1  # p = 0.3
    lo, hi = bootstrap_ci(values, np.mean, n_boot=2000, seed=1)
    half = Z95 * math.sqrt(0.3 * 0.7 / n)  # 0.0142
    assert (lo, hi) == pytest.approx((0.3 - half, 0.3 + half), abs=0.002)
    assert (lo, hi) == pytest.approx(wilson(1200, n), abs=0.002)


def test_coverage_on_a_seeded_simulation():
    rng = np.random.default_rng(0)
    trials, covered = 200, 0
    for t in range(trials):
        values = (rng.random(200) < 0.3).astype(float)
        lo, hi = bootstrap_ci(values, np.mean, n_boot=500, seed=t)
        covered += lo <= 0.3 <= hi
    assert 0.88 <= covered / trials <= 0.99  # nominal 0.95; 200 trials: sd about 0.015


def test_seeded_and_level():
    values = np.random.default_rng(2).normal(size=300)
    assert bootstrap_ci(values, np.median, seed=3) == bootstrap_ci(values, np.median, seed=3)
    assert bootstrap_ci(values, np.median, seed=3) != bootstrap_ci(values, np.median, seed=4)
    lo90, hi90 = bootstrap_ci(values, np.mean, level=0.9)
    lo99, hi99 = bootstrap_ci(values, np.mean, level=0.99)
    assert lo99 < lo90 < np.mean(values) < hi90 < hi99


def test_nan_marks_images_outside_the_statistic():
    values = np.array([1.0, 2.0, 3.0, np.nan, np.nan] * 40)
    lo, hi = bootstrap_ci(values, np.nanmedian, n_boot=300)
    assert 1.0 <= lo <= 2.0 <= hi <= 3.0
    assert all(math.isnan(v) for v in bootstrap_ci(np.full(5, np.nan), np.nanmedian))
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([]), np.mean))
    assert bootstrap_ci(np.ones(50), np.mean) == (1.0, 1.0)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_block_not_by_the_draws():
    """The index draws are taken in blocks: 4x the resamples (2e7 draws, 160 MB as int64, against
    5e6) leave the peak allocation where it was; drawing them at once would quadruple it. A
    bound on memory, not a timing, so it holds on any machine."""
    values = np.random.default_rng(6).random(20_000)
    few = _peak_bytes(lambda: bootstrap_ci(values, np.median, n_boot=250))
    many = _peak_bytes(lambda: bootstrap_ci(values, np.median, n_boot=1000))
    assert many < 2 * few, (few, many)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci(np.ones((3, 3)), np.mean)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(np.ones(3), np.mean, n_boot=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(np.ones(3), np.mean, level=1.5)

"""Exact intervals and tests: shares against scipy's Clopper-Pearson and Wilson intervals,
order-statistic ranks and p-values against hand computations and scipy's binomial test, the
paired-share interval against a published example, Holm against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from c2f_attacks.evaluation import (
    holm,
    order_statistic_interval,
    paired_share_difference_interval,
    share_interval,
    sign_test,
)
from c2f_attacks.evaluation.exact import order_statistic_ranks

CASES = [(0, 1), (1, 1), (0, 7), (3, 7), (7, 7), (0, 32), (5, 32), (31, 32), (32, 32),
         (500, 1000), (1, 10_000)]  # fmt: skip


@pytest.mark.parametrize("k, n", CASES)
@pytest.mark.parametrize("method, scipy_method", [("clopper-pearson", "exact"),
                                                  ("wilson", "wilson")])  # fmt: skip
def test_share_interval_equals_scipys(k, n, method, scipy_method):
    for level in (0.95, 0.9):
        expected = stats.binomtest(k, n).proportion_ci(level, method=scipy_method)
        lo, hi = share_interval(k, n, level, method)
        assert lo == pytest.approx(expected.low, abs=1e-12)
        assert hi == pytest.approx(expected.high, abs=1e-12)
        assert 0 <= lo <= k / n <= hi <= 1


def test_share_interval_at_all_or_nothing_is_not_a_point():
    lo, hi = share_interval(32, 32)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 32), rel=1e-12)  # (alpha/2)^(1/n)
    assert round(lo, 3) == 0.891
    lo, hi = share_interval(0, 32)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 32), rel=1e-12)


def test_share_interval_arrays_and_edge_cases():
    k, n = np.array([0, 5, 32]), 32
    lo, hi = share_interval(k, n)
    assert lo.shape == hi.shape == (3,)
    for i in range(3):
        assert (lo[i], hi[i]) == share_interval(int(k[i]), n)
    assert all(math.isnan(v) for v in share_interval(0, 0))
    lo, hi = share_interval(np.array([0, 1]), np.array([0, 2]))
    assert math.isnan(lo[0]) and not math.isnan(lo[1])
    with pytest.raises(ValueError, match="k must not exceed n"):
        share_interval(5, 4)
    with pytest.raises(ValueError, match="whole numbers"):
        share_interval(1.5, 4)
    with pytest.raises(ValueError, match="whole numbers"):
        share_interval(-1, 4)
    with pytest.raises(ValueError, match="method"):
        share_interval(1, 4, method="bootstrap")
    with pytest.raises(ValueError, match="level"):
        share_interval(1, 4, level=95)


def test_order_statistic_ranks_by_hand():
    # n = 10, q = 1/2: P(B <= 1) = 11/1024 <= 0.025 < P(B <= 2) = 56/1024, so l = 2, u = 9
    assert order_statistic_ranks(10) == (2, 9)
    assert order_statistic_ranks(32) == (10, 23)  # the textbook ranks for n = 32
    assert order_statistic_ranks(6) == (1, 6)  # P(B = 0) = 1/64 <= 0.025
    assert order_statistic_ranks(5) == (0, 6)  # 1/32 > 0.025: no finite end at 95%
    for n in (1, 9, 50, 333):  # the median's ranks are symmetric
        lower, upper = order_statistic_ranks(n)
        assert upper == n + 1 - lower


@pytest.mark.parametrize("n, q", [(7, 0.5), (32, 0.5), (101, 0.5), (40, 0.9), (200, 0.25)])
def test_order_statistic_ranks_are_the_tightest_with_coverage(n, q):
    lower, upper = order_statistic_ranks(n, q)
    below = stats.binom.cdf(lower - 1, n, q)  # P(x_(l) above the quantile)
    above = stats.binom.sf(upper - 1, n, q)  # P(x_(u) below it)
    assert below <= 0.025 and above <= 0.025 and 1 - below - above >= 0.95
    assert lower == n or stats.binom.cdf(lower, n, q) > 0.025  # one rank in: too little
    assert upper == 1 or stats.binom.sf(upper - 2, n, q) > 0.025


def test_order_statistic_interval_covers_with_ties():
    """Coverage >= 95% for a distribution with an atom at its median (a grid of budgets): the
    interval of the median of 25 draws of {1, 2, 3} with P = (0.3, 0.4, 0.3); true median 2.
    Seeded, float64; 4000 repetitions put the estimate within 0.01 of the truth."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(4000):
        sample = np.sort(rng.choice([1.0, 2.0, 3.0], size=25, p=[0.3, 0.4, 0.3]))
        lo, hi = order_statistic_interval(sample)
        hits += lo <= 2.0 <= hi
    assert hits / 4000 >= 0.95


def test_order_statistic_interval_ends():
    values = np.arange(1.0, 11.0)
    assert order_statistic_interval(values) == (2.0, 9.0)
    assert order_statistic_interval(values[:5]) == (-math.inf, math.inf)
    assert order_statistic_interval(values[:5], support=(0.0, math.inf)) == (0.0, math.inf)
    assert all(math.isnan(v) for v in order_statistic_interval(np.array([])))
    with pytest.raises(ValueError, match="q"):
        order_statistic_interval(values, q=1.0)


def test_sign_test_by_hand_and_against_scipy():
    assert sign_test(0, 5) == pytest.approx(2 / 32, rel=1e-12)
    assert sign_test(9, 1) == pytest.approx(2 * 11 / 1024, rel=1e-12)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(0, 32) == pytest.approx(2 * 0.5**32, rel=1e-12)
    for plus, minus in [(3, 12), (12, 3), (40, 60), (0, 200), (17, 18)]:
        expected = stats.binomtest(plus, plus + minus, 0.5).pvalue
        assert sign_test(plus, minus) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match=">= 0"):
        sign_test(-1, 3)


def test_paired_share_interval_published_example():
    # Fagerland, Lydersen & Laake (2017), ch. 8: complete response before and after
    # consolidation therapy (Cavo et al. 2012), table [[59, 6], [16, 80]]; Newcombe's
    # square-and-add interval: estimate -0.0621, 95% CI -0.1186 to -0.0046
    lo, hi = paired_share_difference_interval(59, 6, 16, 80)
    assert (round(lo, 4), round(hi, 4)) == (-0.1186, -0.0046)
    # swapping the rows negates the interval
    assert paired_share_difference_interval(59, 16, 6, 80) == pytest.approx((-hi, -lo))


def test_paired_share_interval_when_both_fool_everything():
    # D = 0, no correlation estimate (a margin is empty): +- the Wilson interval's lower gap
    lo, hi = paired_share_difference_interval(32, 0, 0, 0)
    gap = 1 - share_interval(32, 32, method="wilson")[0]
    assert (lo, hi) == pytest.approx((-gap, gap), rel=1e-12) and gap > 0.1
    assert all(math.isnan(v) for v in paired_share_difference_interval(0, 0, 0, 0))
    with pytest.raises(ValueError, match=">= 0"):
        paired_share_difference_interval(1, -1, 0, 0)


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.2]), [0.5, 0.4])
    np.testing.assert_allclose(holm([0.6, 0.6, 0.01]), [1.0, 1.0, 0.03])  # capped at 1
    assert holm([]).size == 0
    with pytest.raises(ValueError, match="p-values"):
        holm([0.1, np.nan])
    with pytest.raises(ValueError, match="p-values"):
        holm([1.5])

"""Exact and distribution-free inference from counts and order statistics: nothing random, so
every interval and p-value is a function of the records alone.

**Shares.** ``share_interval(k, n)`` is the interval of a binomial share k / n at ``level``:

- Clopper-Pearson (default), exact: coverage >= level for every true share. With ``a = 1 -
  level``, ``lo = Beta.ppf(a/2; k, n-k+1)`` (0 when k = 0) and ``hi = Beta.ppf(1-a/2; k+1, n-k)``
  (1 when k = n). 32 of 32 gives [0.891, 1]: ``lo = (a/2)^(1/n)``.
- Wilson (score), shorter, coverage near level on average: with ``p = k/n`` and ``z`` the
  ``1 - a/2`` normal quantile, ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``.

**Quantiles.** ``order_statistic_interval(sorted_values, q)`` is the distribution-free interval
``[x_(l), x_(u)]`` of the q-quantile ``inf{x : F(x) >= q}`` from the sorted sample. With
``B ~ Binomial(n, q)``, l is the largest rank with ``P(B <= l-1) <= a/2`` and u the smallest with
``P(B >= u) <= a/2``; coverage ``>= 1 - P(B <= l-1) - P(B >= u) >= level`` for any distribution,
ties and atoms included. A rank below 1 or above n is the end of the support (``support``).
Applied to paired differences it is the interval of the sign test, inverted.

**Sign test.** ``sign_test(n_plus, n_minus)``: two-sided p-value of ``n_plus`` successes in
``m = n_plus + n_minus`` Binomial(m, 1/2) trials, ``min(1, 2 P(B <= min(n_plus, n_minus)))``; 1
when m = 0 (no evidence either way). On the discordant pairs of two success flags it is the exact
McNemar test.

**Paired shares.** ``paired_share_difference_interval(n11, n10, n01, n00)``: Newcombe's
square-and-add interval for paired data (Newcombe 1998, method 10; Fagerland, Lydersen and Laake
2017, ch. 8) of ``p_a - p_b`` for two success flags on the same ``n = n11 + n10 + n01 + n00``
images (``n10``: a only, ``n01``: b only). With Wilson intervals ``[l_a, u_a]``, ``[l_b, u_b]``
of the two shares, ``D = p_a - p_b``, ``A = n11 n00 - n10 n01`` and the margins' product
``M = (n11 + n10)(n01 + n00)(n11 + n01)(n10 + n00)``, the correlation estimate is
``phi = (A - n/2) / sqrt(M)`` for ``A > n/2``, 0 for ``0 <= A <= n/2`` and ``A / sqrt(M)`` for
``A < 0`` (0 when M = 0), and

    lo = D - sqrt((p_a - l_a)² - 2 phi (p_a - l_a)(u_b - p_b) + (u_b - p_b)²)
    hi = D + sqrt((u_a - p_a)² - 2 phi (u_a - p_a)(p_b - l_b) + (p_b - l_b)²)

It never collapses to a point at shares of 0 or 1 (the percentile bootstrap does).

**Several tests.** ``holm(p_values)``: Holm-Bonferroni adjusted p-values, valid under any
dependence between the tests. With the m p-values sorted, ``p_(1) <= ... <= p_(m)``, the
adjusted ``p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats

METHODS = ("clopper-pearson", "wilson")
LEVEL = 0.95


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    return float(level)


def _counts(k, n) -> tuple[np.ndarray, np.ndarray]:
    k_arr, n_arr = np.asarray(k), np.asarray(n)
    for name, value in (("k", k_arr), ("n", n_arr)):
        if value.dtype == bool or not np.issubdtype(value.dtype, np.number):
            raise ValueError(f"share_interval: {name} must be whole numbers, got {value!r}")
        if np.any(value != np.round(value)) or np.any(value < 0):
            raise ValueError(f"share_interval: {name} must be whole numbers >= 0, got {value!r}")
    if np.any(k_arr > n_arr):
        raise ValueError(f"share_interval: k must not exceed n, got k={k!r}, n={n!r}")
    return k_arr.astype(np.float64), n_arr.astype(np.float64)


def share_interval(
    k, n, level: float = LEVEL, method: str = "clopper-pearson"
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """The ``level`` interval ``(lo, hi)`` of the share ``k / n`` (module docstring); NaN when
    ``n = 0``. ``k`` and ``n`` may be arrays (broadcast), then ``lo`` and ``hi`` are arrays."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    alpha = 1 - _check_level(level)
    scalar = np.ndim(k) == 0 and np.ndim(n) == 0
    k_arr, n_arr = _counts(k, n)
    k_arr, n_arr = np.broadcast_arrays(k_arr, n_arr)
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "clopper-pearson":
            lo = np.where(k_arr > 0, stats.beta.ppf(alpha / 2, k_arr, n_arr - k_arr + 1), 0.0)
            hi = np.where(
                k_arr < n_arr, stats.beta.ppf(1 - alpha / 2, k_arr + 1, n_arr - k_arr), 1.0
            )
        else:
            z = stats.norm.ppf(1 - alpha / 2)
            p = k_arr / n_arr
            centre = (p + z**2 / (2 * n_arr)) / (1 + z**2 / n_arr)
            half = z * np.sqrt(p * (1 - p) / n_arr + z**2 / (4 * n_arr**2)) / (1 + z**2 / n_arr)
            # exactly 0 at k = 0 and 1 at k = n, as the formula gives without rounding
            lo = np.where(k_arr > 0, centre - half, 0.0)
            hi = np.where(k_arr < n_arr, centre + half, 1.0)
    empty = n_arr == 0
    lo, hi = np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)
    return (float(lo), float(hi)) if scalar else (lo, hi)


@lru_cache(maxsize=256)
def order_statistic_ranks(n: int, q: float = 0.5, level: float = LEVEL) -> tuple[int, int]:
    """1-based ranks ``(l, u)`` of the distribution-free interval ``[x_(l), x_(u)]`` of the
    q-quantile of n values (module docstring); ``l = 0`` / ``u = n + 1`` mean the support's end."""
    if not 0 < q < 1:
        raise ValueError(f"q must lie in (0, 1), got {q!r}")
    tail = (1 - _check_level(level)) / 2
    outcomes = np.arange(n + 1)
    lower = int((stats.binom.cdf(outcomes, n, q) <= tail).sum())  # P(B <= l-1) <= tail
    upper = int((stats.binom.sf(outcomes, n, q) > tail).sum()) + 1  # P(B >= u) <= tail
    return lower, upper


def order_statistic_interval(
    sorted_values: np.ndarray,
    q: float = 0.5,
    level: float = LEVEL,
    support: tuple[float, float] = (-np.inf, np.inf),
) -> tuple[float, float]:
    """``(x_(l), x_(u))`` of the ascending ``sorted_values`` (module docstring); a rank beyond
    the sample is the support's end; NaN for no values."""
    values = np.asarray(sorted_values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"sorted_values must be 1-D, got shape {values.shape}")
    n = values.size
    if not n:
        return float("nan"), float("nan")
    lower, upper = order_statistic_ranks(n, q, level)
    lo = values[lower - 1] if lower >= 1 else support[0]
    hi = values[upper - 1] if upper <= n else support[1]
    return float(lo), float(hi)


def sign_test(n_plus: int, n_minus: int) -> float:
    """Two-sided sign-test p-value of ``n_plus`` positive against ``n_minus`` negative
    differences (module docstring); 1.0 when both are 0."""
    if min(n_plus, n_minus) < 0:
        raise ValueError(f"sign_test counts must be >= 0, got {n_plus!r}, {n_minus!r}")
    m = n_plus + n_minus
    if m == 0:
        return 1.0
    return float(min(1.0, 2 * stats.binom.cdf(min(n_plus, n_minus), m, 0.5)))


def paired_share_difference_interval(
    n11: int, n10: int, n01: int, n00: int, level: float = LEVEL
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``p_a - p_b`` (module docstring) from the paired 2x2
    table: ``n11`` images fooled by both, ``n10`` by a only, ``n01`` by b only, ``n00`` by
    neither. NaN for no images."""
    if min(n11, n10, n01, n00) < 0:
        raise ValueError(f"paired counts must be >= 0, got {(n11, n10, n01, n00)}")
    n = n11 + n10 + n01 + n00
    if n == 0:
        return float("nan"), float("nan")
    p_a, p_b = (n11 + n10) / n, (n11 + n01) / n
    l_a, u_a = share_interval(n11 + n10, n, level, "wilson")
    l_b, u_b = share_interval(n11 + n01, n, level, "wilson")
    margins = float(n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    cross = float(n11 * n00 - n10 * n01)
    # Newcombe's continuity-corrected correlation: a small positive one counts as none
    corrected = cross - n / 2 if cross > n / 2 else min(cross, 0.0)
    phi = corrected / np.sqrt(margins) if margins > 0 else 0.0
    below = np.sqrt((p_a - l_a) ** 2 - 2 * phi * (p_a - l_a) * (u_b - p_b) + (u_b - p_b) ** 2)
    above = np.sqrt((u_a - p_a) ** 2 - 2 * phi * (u_a - p_a) * (p_b - l_b) + (p_b - l_b) ** 2)
    return float(p_a - p_b - below), float(p_a - p_b + above)


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the order given (module docstring)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"holm needs a 1-D array of p-values in [0, 1], got {p_values!r}")
    order = np.argsort(p, kind="stable")
    steps = (p.size - np.arange(p.size)) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted

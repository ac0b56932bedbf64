"""Paired comparison of leaderboard rows of one run, image by image: exact tests, no resampling.

Both rows' records are joined on the image ``index``; only images both rows attacked count,
and they must have the same clean predictions (the same model and images), else the rows are
not comparable. ``compare_records(a, b)`` gives one row per metric with the value of row a, of
row b, their ``difference`` a - b, an ``estimate`` of the paired effect with its 95% interval
``lo, hi``, the ``test`` behind ``p_value`` (two-sided) and ``n_images``, the N shared images:

- ``fooling_ratio``: a and b are the shares fooled; ``estimate`` is the difference of the shares
  with Newcombe's paired score interval (:func:`.exact.paired_share_difference_interval`);
  ``mcnemar-exact`` is the exact McNemar test, a sign test on the discordant images: those only
  a fooled against those only b fooled.
- ``linf_median``, ``l2_median``, ``l0_median``: a and b are the rows' censored medians
  (:mod:`.budget`: the budget at FR 50% over all N images, a failure's budget +inf; the same value
  as ``<norm>_at_fr50``, so that is not repeated). Per image, ``d_i = a_i - b_i`` of the censored
  budgets: ``+inf - x = +inf``, ``x - inf = -inf``; an image neither row fooled has no defined
  difference and is left out, and ``|d_i| <= BUDGET_TOLERANCE[norm]`` (float32 rounding) is a tie,
  ``d_i = 0``. ``estimate`` is the median of the defined ``d_i`` (the mean of the two middle
  values for an even count, so swapping a and b negates it; that mean is +-inf when one middle
  value is infinite, NaN when they are -inf and +inf), ``lo, hi`` the order-statistic interval of
  the median of the ``d_i`` (:func:`.exact.order_statistic_interval`, the sign test inverted);
  ``sign`` is the sign test of #{d_i > 0} against #{d_i < 0} (ties left out).

``compare_many(records, pairs)`` compares several pairs of rows at once and adds ``p_holm``, the
Holm-Bonferroni adjustment over every p-value of the call (:func:`.exact.holm`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.budget import BUDGET_TOLERANCE, censored_budgets, censored_median
from c2f_attacks.evaluation.exact import (
    holm,
    order_statistic_interval,
    paired_share_difference_interval,
    sign_test,
)
from c2f_attacks.evaluation.records import check_records

COLUMNS = ("metric", "a", "b", "difference", "estimate", "lo", "hi", "test", "p_value",
           "n_images")  # fmt: skip


def _one_row(records: pd.DataFrame, name: str) -> pd.DataFrame:
    check_records(records)
    if "row_id" in records.columns and records["row_id"].nunique() > 1:
        raise UserError(f"{name} holds the records of {records['row_id'].nunique()} rows; pass one")
    duplicated = records["index"][records["index"].duplicated()]
    if len(duplicated):
        raise UserError(f"{name} has image index {int(duplicated.iloc[0])} more than once")
    return records.set_index("index")


def _paired(records_a: pd.DataFrame, records_b: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
    """Both rows' records on their shared images, in index order, checked comparable."""
    a = _one_row(records_a, "records_a")
    b = _one_row(records_b, "records_b")
    shared = a.index.intersection(b.index).sort_values()
    if not len(shared):
        raise UserError("the two rows share no image index: they attacked different images")
    a, b = a.loc[shared], b.loc[shared]
    for column in ("clean_coarse", "clean_fine"):
        differ = a[column].to_numpy() != b[column].to_numpy()
        if differ.any():
            raise UserError(
                f"the rows disagree on {column} for {int(differ.sum())} of {len(shared)} shared "
                f"images (first index {int(shared[differ.argmax()])}): not the same model or images"
            )
    return a.reset_index(), b.reset_index()


def _fooling_ratio(a: pd.DataFrame, b: pd.DataFrame) -> tuple:
    fooled_a = a["success"].to_numpy(dtype=bool)
    fooled_b = b["success"].to_numpy(dtype=bool)
    n11, n10 = int((fooled_a & fooled_b).sum()), int((fooled_a & ~fooled_b).sum())
    n01, n00 = int((~fooled_a & fooled_b).sum()), int((~fooled_a & ~fooled_b).sum())
    share_a, share_b = fooled_a.mean(), fooled_b.mean()
    lo, hi = paired_share_difference_interval(n11, n10, n01, n00)
    difference = share_a - share_b
    return ("fooling_ratio", share_a, share_b, difference, difference, lo, hi, "mcnemar-exact",
            sign_test(n10, n01), len(a))  # fmt: skip


def _median_budget(a: pd.DataFrame, b: pd.DataFrame, norm: str) -> tuple:
    budgets_a, budgets_b = censored_budgets(a, norm), censored_budgets(b, norm)
    with np.errstate(invalid="ignore"):  # inf - inf: no defined difference, dropped below
        d = budgets_a - budgets_b
    d = np.sort(np.where(np.abs(d) <= BUDGET_TOLERANCE[norm], 0.0, d)[~np.isnan(d)])
    if d.size:
        middle = d[(d.size - 1) // 2 : d.size // 2 + 1]
        with np.errstate(invalid="ignore"):  # -inf and +inf in the middle: no median, NaN
            estimate = float(middle.mean())
    else:
        estimate = float("nan")
    lo, hi = order_statistic_interval(d)
    median_a, median_b = censored_median(a, norm)[0], censored_median(b, norm)[0]
    with np.errstate(invalid="ignore"):
        difference = median_a - median_b
    return (f"{norm}_median", median_a, median_b, difference, estimate, lo, hi, "sign",
            sign_test(int((d > 0).sum()), int((d < 0).sum())), len(a))  # fmt: skip


def compare_records(records_a: pd.DataFrame, records_b: pd.DataFrame) -> pd.DataFrame:
    """Paired comparison of row a with row b (module docstring): columns ``COLUMNS``, one row
    each for ``fooling_ratio``, ``linf_median``, ``l2_median`` and ``l0_median``."""
    a, b = _paired(records_a, records_b)
    rows = [_fooling_ratio(a, b), *(_median_budget(a, b, norm) for norm in ("linf", "l2", "l0"))]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def compare_many(records: pd.DataFrame, pairs: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """``compare_records`` for each ``(row_id_a, row_id_b)`` of ``pairs`` on the records of
    several rows (a ``row_id`` column, as ``load_records`` returns them): columns ``row_a``,
    ``row_b``, then ``COLUMNS`` and ``p_holm``, the Holm-Bonferroni adjusted p-value over every
    test of the call."""
    check_records(records)
    if "row_id" not in records.columns:
        raise ValueError("records need a row_id column to compare rows by id")
    rows = dict(tuple(records.groupby("row_id", sort=False)))
    pairs = [tuple(pair) for pair in pairs]
    if not pairs:
        raise ValueError("no pairs of rows to compare")
    tables = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"a pair is (row_id_a, row_id_b), got {pair!r}")
        for rid in pair:
            if rid not in rows:
                raise ValueError(f"row_id {rid!r} is not in the records")
        table = compare_records(rows[pair[0]], rows[pair[1]])
        tables.append(table.assign(row_a=pair[0], row_b=pair[1]))
    table = pd.concat(tables, ignore_index=True)
    table["p_holm"] = holm(table["p_value"].to_numpy())
    return table[["row_a", "row_b", *COLUMNS, "p_holm"]]

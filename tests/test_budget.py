"""Censored budgets: FR(b), the budget at which a row reaches a fooling ratio, the censored
median and its interval, budget curves with exact intervals, budget grids and their parsing."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from c2f_attacks.evaluation import (
    BUDGET_GRIDS,
    RECORD_COLUMNS,
    budget_at,
    budget_curves,
    budget_grids_for,
    censored_budgets,
    censored_median,
    fr_curve,
    parse_budget_grid,
    share_interval,
)
from c2f_attacks.evaluation.budget import CURVE_COLUMNS


def records(success, linf, l2=None, l0=None) -> pd.DataFrame:
    n = len(success)
    frame = pd.DataFrame({c: np.zeros(n) for c in RECORD_COLUMNS})
    frame["success"] = np.asarray(success, dtype=bool)
    frame["linf"] = np.asarray(linf, dtype=float)
    frame["l2"] = np.asarray(l2 if l2 is not None else linf, dtype=float) * 10
    frame["l0"] = np.asarray(l0 if l0 is not None else linf, dtype=float) / 10
    return frame


# ten images, eight fooled; the failures' norms must not count
REC = records([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], [0.5, 0.1, 0.3, 0.3, 0.2, 0.7, 0.4, 0.6, 0.01, 0.02])


def test_curve_is_the_step_function():
    curve = fr_curve(REC, "linf")
    assert curve.budget.tolist() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert curve.fooling_ratio.tolist() == [0.0, 0.1, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8]
    on_grid = fr_curve(REC, "l2", grid=[0.0, 0.15 * 10, 1.0 * 10])
    assert on_grid.fooling_ratio.tolist() == [0.0, 0.1, 0.8]


def test_budget_at():
    assert budget_at(REC, "linf", 0.5) == 0.4  # the 5th smallest norm: FR(0.4) = 5/10
    assert budget_at(REC, "linf", 0.4) == 0.3  # a tie: FR(0.3) jumps from 0.2 to 0.4
    assert budget_at(REC, "l0", 0.8) == pytest.approx(0.07)
    assert budget_at(REC, "linf", 0.9) == math.inf  # 8 of 10 fooled at most: never reached
    # 0.9 * 10 is 9.000000000000002 in floating point: 9 images must still be enough
    nine = records([1] * 9 + [0], np.arange(1, 11) / 10)
    assert budget_at(nine, "linf", 0.9) == 0.9
    assert fr_curve(nine, "linf", grid=[0.9]).fooling_ratio.tolist() == [0.9]


def test_edge_cases_and_errors():
    empty = records([], [])
    assert fr_curve(empty, "linf").fooling_ratio.isna().all()
    assert math.isnan(budget_at(empty, "linf", 0.5))
    assert all(math.isnan(v) for v in censored_median(empty, "linf"))
    assert list(budget_curves(empty).columns) == list(CURVE_COLUMNS)
    with pytest.raises(ValueError, match="norm"):
        fr_curve(REC, "l1")
    with pytest.raises(ValueError, match="fr"):
        budget_at(REC, "linf", 0)
    broken = REC.copy()
    broken.loc[0, "linf"] = np.nan
    with pytest.raises(ValueError, match="linf"):
        budget_at(broken, "linf", 0.5)
    with pytest.raises(ValueError, match="lack"):
        fr_curve(REC.drop(columns=["success"]), "linf")


def test_a_fixed_budget_rows_images_count_at_its_own_budget(model, x):
    # x + eps - x read back in float32 can exceed eps by rounding: FR(eps) must still count
    # every image the attack fooled within its own budget
    from c2f_attacks.attacks import FGSM
    from c2f_attacks.evaluation import per_image_records

    eps = 0.1
    res = FGSM(model, eps=eps, stage="coarse")(x)
    rec = per_image_records(model, x, res.x_adv, torch.zeros(len(x), dtype=torch.long), "coarse",
                            relevance=False)  # fmt: skip
    assert rec.loc[rec.success, "linf"].max() > eps  # the rounding this test is about
    assert rec.success.any()
    at_eps = fr_curve(rec, "linf", grid=[eps]).fooling_ratio.item()
    assert at_eps == rec.success.mean()
    assert fr_curve(rec, "linf", grid=[eps - 1e-5]).fooling_ratio.item() == 0.0


def test_failures_are_censored_not_dropped():
    # the failures' recorded norms (0.01, 0.02) would be the two smallest if they counted
    np.testing.assert_array_equal(
        censored_budgets(REC, "linf"), [0.5, 0.1, 0.3, 0.3, 0.2, 0.7, 0.4, 0.6, np.inf, np.inf]
    )
    assert fr_curve(REC, "linf", grid=[0.05]).fooling_ratio.item() == 0.0


def test_censored_median_is_the_budget_at_fr50_with_an_order_statistic_interval():
    # sorted budgets 0.1 0.2 0.3 0.3 0.4 0.5 0.6 0.7 inf inf; the median of 10 is the 5th,
    # not the mean of the 5th and 6th; n = 10 gives ranks (2, 9): [0.2, inf], the 9th a failure
    assert censored_median(REC, "linf") == (0.4, 0.2, math.inf)
    assert censored_median(REC, "linf")[0] == budget_at(REC, "linf", 0.5)
    four = records([1, 1, 1, 1], [0.4, 0.1, 0.3, 0.2])
    assert censored_median(four, "linf") == (0.2, 0.0, math.inf)  # 4 images: ranks (0, 5)
    # fooled fewer than half: the median is a failure
    few = records([1, 1, 0, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert censored_median(few, "linf")[0] == math.inf == budget_at(few, "linf", 0.5)
    # 32 images, all fooled, budgets k/255: ranks (10, 23), median the 16th
    grid = records([1] * 32, np.arange(32, 0, -1) / 255)
    assert censored_median(grid, "linf") == (16 / 255, 10 / 255, 23 / 255)


def test_budget_grids():
    linf = BUDGET_GRIDS["linf"]
    assert {1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255, 64 / 255} <= set(linf)
    assert {0.0241, 0.0399, 0.0819, 0.1557} <= set(linf) and max(linf) == 1.0
    for norm, grid in BUDGET_GRIDS.items():
        assert list(grid) == sorted(set(grid)) and grid[0] > 0, norm
        assert parse_budget_grid(list(grid), norm) == grid
    assert budget_grids_for((3, 32, 32)) == BUDGET_GRIDS
    big = budget_grids_for((3, 224, 224))  # sqrt(150528 / 3072) = 7
    assert big["l2"] == pytest.approx([7 * b for b in BUDGET_GRIDS["l2"]], rel=1e-15)
    assert big["linf"] == BUDGET_GRIDS["linf"] and big["l0"] == BUDGET_GRIDS["l0"]
    with pytest.raises(ValueError, match="shape"):
        budget_grids_for((32, 32))


def test_parse_budget_grid():
    assert parse_budget_grid("8/255, 1/255,0.03", "linf") == (1 / 255, 0.03, 8 / 255)
    assert parse_budget_grid([0.5, "1/4", 0.5, np.float32(2)], "l2") == (0.25, 0.5, 2.0)
    assert parse_budget_grid("1e-3", "l0") == (0.001,)
    for bad, problem in [("-1", "not positive"), ("0", "not positive"), ("0/255", "not positive"),
                         ("nan", "NaN"), ("inf", "infinite"), ("abc", "not a number"),
                         ("8/", "not a number"), ("1/2/3", "not a number"), ("1/0", "zero"),
                         ("8/255,,", "not a number")]:  # fmt: skip
        with pytest.raises(ValueError, match="--budgets") as err:
            parse_budget_grid(bad, "linf")
        assert problem in str(err.value), bad
    with pytest.raises(ValueError, match=r"--budgets \(linf\): nan is NaN"):
        parse_budget_grid([0.1, float("nan")], "linf")
    with pytest.raises(ValueError, match="'x' is not a number"):
        parse_budget_grid([0.1, "x", None], "linf")
    with pytest.raises(ValueError, match="True is not a number"):
        parse_budget_grid([True], "linf")
    with pytest.raises(ValueError, match="share of pixels"):
        parse_budget_grid("0.5, 2", "l0")
    with pytest.raises(ValueError, match="no budget"):
        parse_budget_grid(" ", "linf")
    with pytest.raises(ValueError, match="norm"):
        parse_budget_grid("0.1", "l1")


def test_budget_curves_by_hand():
    grids = {"linf": [0.35, 0.05, 1.0], "l0": [0.025]}
    curves = budget_curves(REC, grids)
    assert list(curves.columns) == list(CURVE_COLUMNS)
    assert curves.norm.tolist() == ["linf"] * 3 + ["l0"]
    assert curves.budget.tolist() == [0.05, 0.35, 1.0, 0.025]  # sorted within a norm
    k = np.array([0, 4, 8, 2])  # within 0.05, 0.35, 1.0; l0 = linf / 10 within 0.025
    assert curves.fooling_ratio.tolist() == (k / 10).tolist()
    lo, hi = share_interval(k, 10)
    np.testing.assert_array_equal(curves.fooling_ratio_lo, lo)
    np.testing.assert_array_equal(curves.fooling_ratio_hi, hi)
    assert curves.row_id.isna().all()  # records of no saved row
    default = budget_curves(REC)
    assert len(default) == sum(len(g) for g in BUDGET_GRIDS.values())
    with pytest.raises(ValueError, match="grids \\(l2\\): -1"):
        budget_curves(REC, {"l2": [-1]})


def test_budget_curves_one_block_per_row():
    rows = pd.concat([REC.assign(row_id="b"), records([1, 0], [0.1, 0.1]).assign(row_id="a")])
    curves = budget_curves(rows, {"linf": [0.1, 0.5]})
    assert curves.row_id.tolist() == ["b", "b", "a", "a"]
    assert curves.fooling_ratio.tolist() == [0.1, 0.6, 0.5, 0.5]
    assert curves.fooling_ratio_lo.iloc[3] == share_interval(1, 2)[0]

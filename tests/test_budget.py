"""Budget curves FR(b) and the budget at which a row reaches a fooling ratio."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from c2f_attacks.evaluation import RECORD_COLUMNS, budget_at, fr_curve


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
    assert math.isnan(budget_at(REC, "linf", 0.9))  # 8 of 10 fooled at most
    # 0.9 * 10 is 9.000000000000002 in floating point: 9 images must still be enough
    nine = records([1] * 9 + [0], np.arange(1, 11) / 10)
    assert budget_at(nine, "linf", 0.9) == 0.9
    assert fr_curve(nine, "linf", grid=[0.9]).fooling_ratio.tolist() == [0.9]


def test_edge_cases_and_errors():
    empty = records([], [])
    assert fr_curve(empty, "linf").fooling_ratio.isna().all()
    assert math.isnan(budget_at(empty, "linf", 0.5))
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

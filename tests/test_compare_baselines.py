"""scripts/compare_baselines.py at smoke size: every requested row, FR at each row's own budget,
no silent overwrite, and a resumed run that adds only the missing rows."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torchattacks")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_baselines.py"
ARGS = ["--quick", "-n", "6", "--models", "shapes-vgg16", "--stages", "fine", "--n-boot", "50"]


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(str(SCRIPT), run_name="compare_baselines")


def test_rows_and_budgets(script, tmp_path):
    script["main"](["--out", str(tmp_path), *ARGS, "--attacks", "LRPF", "APGD", "--masks", "lrp"])
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["attack"]) == ["LRPF"] + ["torchattacks.APGD"] * 2
    assert len(pd.read_csv(tmp_path / "records.csv.gz")) == 3 * 6
    apgd = summary[summary["attack"] == "torchattacks.APGD"]
    assert (apgd["fooling_ratio"] > 0).any()
    # a fixed-budget row's FR at its own budget is its fooling ratio (its l-inf is eps up to
    # float32 rounding), and it says nothing at the other budget
    for budget, own, other in ((4, "fr_linf@4/255", "fr_linf@8/255"),
                               (8, "fr_linf@8/255", "fr_linf@4/255")):  # fmt: skip
        row = apgd[np.isclose(apgd["budget"], budget / 255)].iloc[0]
        assert row[own] == row["fooling_ratio"]
        assert pd.isna(row[other])


def test_no_silent_overwrite_and_resume_adds_only_missing_rows(script, tmp_path):
    script["main"](["--out", str(tmp_path), *ARGS, "--attacks", "OnePixel"])
    before = pd.read_csv(tmp_path / "summary.csv")
    with pytest.raises(SystemExit):
        script["main"](["--out", str(tmp_path), *ARGS, "--attacks", "OnePixel"])
    with pytest.raises(SystemExit):  # a typo must not run nothing
        script["main"](["--out", str(tmp_path), *ARGS, "--attacks", "Onepixel", "--resume"])
    with pytest.raises(SystemExit):  # other images: their rows would not compare
        script["main"](["--out", str(tmp_path), *ARGS, "-n", "5", "--resume"])
    script["main"](["--out", str(tmp_path), *ARGS, "--attacks", "OnePixel", "Pixle", "--resume"])
    after = pd.read_csv(tmp_path / "summary.csv")
    assert list(after["attack"]) == ["torchattacks.OnePixel", "torchattacks.Pixle"]
    pd.testing.assert_frame_equal(after.iloc[:1], before)
    assert len(pd.read_csv(tmp_path / "records.csv.gz")) == 2 * 6

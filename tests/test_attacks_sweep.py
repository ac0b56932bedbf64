"""scripts/sweep_defaults.py: the selection rule on constructed rows, and a smoke run on the
validation split writing both report files from ordinary runs."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from c2f_attacks.data.shapes import SHAPES_SPLITS
from c2f_attacks.leaderboard import read_leaderboard

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sweep_defaults.py"
CELLS = [("m1", "LRPC"), ("m1", "LRPF"), ("m2", "LRPC"), ("m2", "LRPF")]


@pytest.fixture(scope="module")
def sweep():
    return runpy.run_path(str(SCRIPT), run_name="sweep_defaults")


def _rows(sweep, median, queries=lambda s: 10.0 * s["steps"]):
    """One row per cell and grid setting; ``median(cell, settings)`` gives its median l-inf
    (interval +-0.005)."""
    rows = []
    for cell in CELLS:
        for knob, _, s in sweep["grid"]():
            m = median(cell, s)
            rows.append({"model": cell[0], "attack": cell[1], "knob": knob, **s,
                         "linf_median": m, "linf_median_lo": m - 0.005,
                         "linf_median_hi": m + 0.005, "queries_per_image": queries(s)})  # fmt: skip
    return rows


def test_the_reference_stays_when_nothing_beats_it(sweep):
    # shorter schedules are clearly worse everywhere; lam moves nothing beyond the interval
    choice = sweep["choose"](_rows(sweep, lambda c, s: 0.05 + (100 - s["steps"]) * 1e-3))
    assert (choice["steps"], choice["refresh"], choice["lam"]) == (100, 50, 0.0)


def test_the_cheapest_admissible_schedule_and_a_lam_that_helps_in_most_cells(sweep):
    def median(cell, s):
        lam_gain = 0.02 if s["lam"] == 1.0 and cell != ("m2", "LRPF") else 0.0
        return 0.05 - lam_gain + (0.0 if s["steps"] >= 30 else 0.03)

    choice = sweep["choose"](_rows(sweep, median))
    # 30/10 overlaps the best in every cell and costs least; 20/5 is worse beyond the interval
    assert (choice["steps"], choice["refresh"]) == (30, 10)
    assert choice["lam"] == 1.0  # below lam=0's interval in three of four cells, above in none


def test_a_lam_that_hurts_somewhere_is_not_chosen(sweep):
    def median(cell, s):
        if s["lam"] == 1.0:
            return 0.09 if cell == ("m2", "LRPF") else 0.03
        return 0.05

    assert sweep["choose"](_rows(sweep, median))["lam"] == 0.0


def test_smoke_run_writes_markdown_and_json(sweep, tmp_path):
    out = tmp_path / "report"
    sweep["main"](
        [
            "--out",
            str(out),
            "-n",
            "1",
            "--models",
            "shapes-vgg16",
            "--attacks",
            "lrpc",
            "--search-steps",
            "1",
        ]
    )
    data = json.loads((out / "sweep_defaults.json").read_text())
    assert data["meta"]["split_seed"] == SHAPES_SPLITS["val"] and data["meta"]["n"] == 1
    assert len(data["rows"]) == len(sweep["grid"]())
    assert {r["attack"] for r in data["rows"]} == {"LRPC"}
    board = read_leaderboard(out / "runs" / "leaderboard.csv")
    assert set(board["split"]) == {"val"} and set(board["protocol"]) == {"minimal"}
    text = (out / "sweep_defaults.md").read_text()
    assert "validation split" in text and "**Chosen: steps" in text


def test_rejects_an_output_that_is_a_file(sweep, tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(SystemExit):
        sweep["main"](["--out", str(tmp_path / "taken"), "-n", "1"])

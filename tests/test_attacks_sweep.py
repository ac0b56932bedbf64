"""scripts/sweep_defaults.py at smoke size: validation split, both report files, every row."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from c2f_attacks.data.shapes import SHAPES_SPLITS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sweep_defaults.py"


@pytest.fixture(scope="module")
def sweep():
    return runpy.run_path(str(SCRIPT), run_name="sweep_defaults")


def test_smoke_run_writes_markdown_and_json(sweep, tmp_path):
    out = tmp_path / "report"
    sweep["main"](["--out", str(out), "-n", "1", "--max-steps", "1"])
    data = json.loads((out / "sweep_defaults.json").read_text())
    assert data["meta"]["split_seed"] == SHAPES_SPLITS["val"] and data["meta"]["n"] == 1
    assert len(data["rows"]) == len(sweep["variants"](1))
    assert {r["attack"] for r in data["rows"]} == {"LRPC", "LRPF"}
    text = (out / "sweep_defaults.md").read_text()
    assert "validation split" in text and "| LRPF | kappa=3 |" in text


def test_rejects_an_output_that_is_a_file(sweep, tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(SystemExit):
        sweep["main"](["--out", str(tmp_path / "taken"), "-n", "1"])

"""A row is replaced only by a run with the same key: another split, n, seed, backend or device
adds a row; a default run never writes into the repository's committed results."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from c2f_attacks.leaderboard import read_leaderboard, upsert_rows

from .conftest import BOARD, run_args, run_in_process

REPO = Path(__file__).resolve().parents[2]


def _base_row(board: bytes) -> dict:
    (row,) = csv.DictReader(io.StringIO(board.decode("utf-8")))
    return {k: v for k, v in row.items() if k != "row_id"}


#: key columns the old key left out, each with a value other than the valid board's
LEFT_OUT = {"split": "train", "n": "8", "seed": "5", "eval_backend": "onnxruntime",
            "device": "cuda (NVIDIA H100 80GB HBM3)"}  # fmt: skip


@pytest.mark.parametrize(("column", "value"), LEFT_OUT.items(), ids=list(LEFT_OUT))
def test_a_different_key_column_adds_a_row(tmp_path, valid_board, column, value):
    board = tmp_path / BOARD
    board.write_bytes(valid_board)
    base = _base_row(valid_board)
    assert base[column] != value
    upsert_rows(board, [{**base, column: value}])
    rows = read_leaderboard(board)
    assert sorted(rows[column].astype(str)) == sorted([base[column], value])


def test_a_quick_try_does_not_replace_a_published_row(tmp_path, valid_board):
    """The probe's case: another split and seed into a board that has the test-split row."""
    board = tmp_path / BOARD
    board.write_bytes(valid_board)
    assert run_in_process(run_args(tmp_path, "--split", "train", "--seed", "5")) == 0
    rows = read_leaderboard(board)
    assert sorted(rows["split"]) == ["test", "train"]
    assert sorted(int(s) for s in rows["seed"]) == [0, 5]


def test_default_out_is_not_the_committed_results(tmp_path, monkeypatch, attacked, capsys):
    committed = REPO / "results" / BOARD
    before = committed.read_bytes() if committed.exists() else None
    try:
        monkeypatch.chdir(REPO)
        assert run_in_process(run_args(Path("results"))) == 2
        assert not attacked, "attacks ran although --out was the committed results"
        assert str(Path("results")) in capsys.readouterr().err

        monkeypatch.chdir(tmp_path)
        args = run_args(tmp_path)
        del args[args.index("--out") : args.index("--out") + 2]
        assert run_in_process(args) == 0
        (written,) = tmp_path.rglob(BOARD)
        assert REPO not in written.resolve().parents
    finally:
        if before is not None and committed.read_bytes() != before:
            committed.write_bytes(before)  # a failing run must not damage the published numbers
    assert (committed.read_bytes() if committed.exists() else None) == before

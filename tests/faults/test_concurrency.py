"""Four processes upserting into one leaderboard at the same time: every row arrives, once."""

from __future__ import annotations

import csv
import io
import multiprocessing
import traceback
from pathlib import Path

import pytest

from c2f_attacks.leaderboard import read_leaderboard, upsert_rows

from .conftest import BOARD, board_temps

WRITERS = 4
ROWS_EACH = 5


def _writer(board: Path, base: dict, start, writer: int, errors: Path) -> None:
    try:
        start.wait(timeout=60)
        for j in range(ROWS_EACH):  # one upsert per row: as many lock round trips as possible
            upsert_rows(board, [{**base, "model": f"writer{writer}-row{j}"}])
    except BaseException:
        (errors / f"writer-{writer}.txt").write_text(traceback.format_exc())
        raise


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (POSIX)"
)
def test_four_concurrent_writers_lose_nothing_and_duplicate_nothing(tmp_path, valid_board):
    """Forked processes: each holds its own lock handle as separate runs do, without paying for
    a fresh interpreter's imports."""
    board = tmp_path / BOARD
    board.write_bytes(valid_board)
    (base,) = csv.DictReader(io.StringIO(valid_board.decode("utf-8")))
    base = {k: v for k, v in base.items() if k != "row_id"}  # recomputed from the new key
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(WRITERS)
    procs = [
        ctx.Process(target=_writer, args=(board, base, start, i, tmp_path)) for i in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    errors = [p.read_text() for p in tmp_path.glob("writer-*.txt")]
    assert [p.exitcode for p in procs] == [0] * WRITERS, errors

    models = sorted(read_leaderboard(board)["model"])
    written = [f"writer{i}-row{j}" for i in range(WRITERS) for j in range(ROWS_EACH)]
    assert models == sorted([base["model"], *written])
    assert board_temps(tmp_path) == []

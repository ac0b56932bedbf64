"""kill -9 of a real ``c2f-bench run`` at each point around the leaderboard write: the board stays
a valid, strictly readable leaderboard, and the next run leaves no temporary file behind."""

from __future__ import annotations

import pytest

from c2f_attacks.leaderboard import read_leaderboard

from .conftest import BOARD, ProbedRun, board_temps, run_args, run_in_process

# (point where the process is killed, whether the new board is already in place there)
POINTS = [
    ("onnx-session", False),
    ("before-temp", False),
    ("temp-partial", False),  # a complete temporary file is no different to the board
    ("after-replace", True),
]


def _leftovers(tmpdir) -> list:
    """What a run may have written to TMPDIR: folders (tempfile.mkdtemp), models, data, images
    (libraries' small session files are not the run's)."""
    kinds = {".onnx", ".pt", ".csv", ".gz", ".png", ".tmp"}
    return [p for p in tmpdir.rglob("*") if p.is_dir() or p.suffix in kinds]


@pytest.mark.parametrize(("point", "replaced"), POINTS, ids=[p for p, _ in POINTS])
def test_kill_9_keeps_the_board_valid_and_the_next_run_cleans_up(
    tmp_path, valid_board, point, replaced
):
    out = tmp_path / "out"
    out.mkdir()
    board = out / BOARD
    board.write_bytes(valid_board)
    # Killed while onnxruntime loads the exported model: was it exported to a temporary folder?
    backend = ("--backend", "onnxruntime") if point == "onnx-session" else ()
    run = ProbedRun(tmp_path, run_args(out, *backend), pause=point)
    run.wait_for(f"paused-{point}")
    run.kill()

    if not replaced:
        assert board.read_bytes() == valid_board
    assert len(read_leaderboard(board)) == 1  # same key as the valid board's row: replaced
    if point.startswith("temp-"):
        assert board_temps(out), "the probe should have left the killed writer's temporary file"
    assert _leftovers(run.tmpdir) == [], "the killed run left files in TMPDIR"

    assert run_in_process(run_args(out)) == 0
    assert board_temps(out) == []
    assert len(read_leaderboard(board)) == 1

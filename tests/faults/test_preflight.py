"""Everything that would make a run's results unkeepable is refused before the first attack: a
damaged leaderboard (the file left byte for byte as it was), a lock held elsewhere (a wait
message first), bad output paths and devices, absurd image counts. A failure that can only show
at the end keeps the computed rows in a side file; a figure failure after the leaderboard was
written is a warning."""

from __future__ import annotations

import csv
import io
import re

import pytest
import torch
from filelock import FileLock

from c2f_attacks.leaderboard import read_leaderboard

from .conftest import BOARD, ProbedRun, board_temps, run_args, run_in_process, stderr_lines


def _with_cell(board: bytes, column: str, value: str) -> bytes:
    """``board`` with the first row's ``column`` set to ``value``."""
    header, row, *rest = list(csv.reader(io.StringIO(board.decode("utf-8"))))
    row[header.index(column)] = value
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, row, *rest])
    return buffer.getvalue().encode("utf-8")


def _non_utf8(board: bytes) -> bytes:
    header, rest = board.split(b"\n", 1)
    return header + b"\n" + rest.replace(b"shapes", b"sh\xe4pes", 1)


# variant -> (damage done to a valid board, what the message must name besides the file)
CORRUPT = {
    "bad-line": (lambda b: b + b"one,field,too,few\n", r"\b3\b"),
    "bom": (lambda b: b"\xef\xbb\xbf" + b, None),
    "semicolons": (lambda b: b.replace(b",", b";"), None),
    "non-utf8": (_non_utf8, None),
    "empty": (lambda b: b"", None),
    "eps-not-a-number": (lambda b: _with_cell(b, "eps", "8/255"), "eps"),
    "n-not-a-number": (lambda b: _with_cell(b, "n", "four"), r"\bn\b"),
    "seed-not-a-number": (lambda b: _with_cell(b, "seed", "0x"), "seed"),
    "steps-not-a-number": (lambda b: _with_cell(b, "steps", "ten"), "steps"),
}


@pytest.mark.parametrize("variant", list(CORRUPT))
def test_damaged_board_is_refused_before_attacking_and_left_as_it_was(
    tmp_path, valid_board, attacked, capsys, variant
):
    damage, names = CORRUPT[variant]
    board = tmp_path / BOARD
    board.write_bytes(damage(valid_board))
    before = board.read_bytes()
    capsys.readouterr()

    assert run_in_process(run_args(tmp_path)) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert str(board) in err[0]
    if names:
        assert re.search(names, err[0]), err[0]
    assert not attacked, "attacks ran before the damaged leaderboard was found"
    assert board.read_bytes() == before
    assert board_temps(tmp_path) == []


def test_lock_held_by_another_process_is_reported_before_attacking(tmp_path, valid_board):
    out = tmp_path / "out"
    out.mkdir()
    board = out / BOARD
    board.write_bytes(valid_board)
    lock = FileLock(f"{board}.lock")
    lock.acquire()
    try:
        run = ProbedRun(tmp_path, run_args(out))
        run.wait_until(lambda: str(board) in run.stderr(), "a message naming the leaderboard")
        assert not run.marked("attacked"), "attacks ran while another process held the lock"
    finally:
        lock.release()
    code, err = run.finish()
    assert code == 0, err
    assert len(read_leaderboard(board)) == 1


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--out", ""], r"\bout\b"),
        (["--device", "warp-drive"], "warp-drive"),
        pytest.param(
            ["--device", "cuda"],
            "cuda",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
    ],
    ids=["empty-out", "unknown-device", "cuda-without-gpu"],
)
def test_bad_run_options_are_one_line_before_attacking(tmp_path, attacked, capsys, args, names):
    capsys.readouterr()
    assert run_in_process(run_args(tmp_path / "out", *args)) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert re.search(names, err[0]), err[0]
    assert not attacked


def test_absurd_number_of_images_is_refused_up_front(tmp_path):
    """In a subprocess with a deadline: a run that accepts the number grows its memory without
    bound (it used to, at 33 MB/s), which must not take the test process with it."""
    run = ProbedRun(tmp_path, run_args(tmp_path / "out", "--num-images", "1000000000"))
    code, err = run.finish(timeout=90)
    assert code == 2, err
    (line,) = stderr_lines(err)
    assert re.search("1000000000|1,000,000,000", line), line
    assert not run.marked("attacked")


def test_unwritable_figures_folder_is_refused_before_attacking(tmp_path, attacked, capsys):
    figures = tmp_path / "figures"
    figures.write_text("a file where the figures folder should be\n")
    capsys.readouterr()
    assert run_in_process(run_args(tmp_path, figures=True)) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert str(figures) in err[0]
    assert not attacked
    assert not (tmp_path / BOARD).exists()


def test_board_damaged_during_the_run_keeps_the_rows_in_a_side_file(
    tmp_path, valid_board, monkeypatch, capsys
):
    """The pre-flight passed, then someone broke the file: the run's rows are not lost."""
    board = tmp_path / BOARD
    board.write_bytes(valid_board)
    real = torch.autograd.grad

    def grad_then_damage(*args, **kwargs):
        if board.read_bytes() == valid_board:
            board.write_bytes(b"model;dataset\nbroken;by hand\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", grad_then_damage)
    capsys.readouterr()
    assert run_in_process(run_args(tmp_path)) != 0
    err = capsys.readouterr().err
    (rejected,) = tmp_path.glob("leaderboard.rejected-*.csv")
    assert str(rejected) in err
    assert board.read_bytes() == b"model;dataset\nbroken;by hand\n"
    assert rejected.read_text(encoding="utf-8").count("\n") == 2  # header and this run's row


def test_figure_failure_after_the_board_was_written_is_a_warning(tmp_path, monkeypatch, capsys):
    from matplotlib.figure import Figure

    def savefig(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", savefig)
    capsys.readouterr()
    assert run_in_process(run_args(tmp_path, figures=True)) == 0
    err = capsys.readouterr().err
    assert "No space left on device" in err
    assert len(read_leaderboard(tmp_path / BOARD)) == 1

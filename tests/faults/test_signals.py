"""Ctrl-C and SIGTERM: one line on stderr, exit 130 / 143, nothing half-written."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from c2f_attacks.interrupts import Interrupted, handle_interrupts

from .conftest import BOARD, ProbedRun, board_temps, run_args, stderr_lines


def test_sigterm_raises_interrupted_inside_the_block_and_the_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info, handle_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises long before this ends
    assert info.value.signum == signal.SIGTERM
    assert info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) == before


def test_interrupted_is_not_an_exception():
    """Library code's ``except Exception`` must not swallow the interrupt."""
    assert not issubclass(Interrupted, Exception)


def test_handle_interrupts_outside_the_main_thread_changes_nothing():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def body():
        with handle_interrupts():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before]


@pytest.mark.parametrize(
    ("signum", "status", "point"),
    [(signal.SIGINT, 130, "attacking"), (signal.SIGTERM, 143, "temp-full")],
    ids=["INT-attacking", "TERM-writing"],
)
def test_signal_prints_one_line_and_leaves_nothing_half_written(
    tmp_path, valid_board, signum, status, point
):
    out = tmp_path / "out"
    out.mkdir()
    board = out / BOARD
    board.write_bytes(valid_board)
    run = ProbedRun(tmp_path, run_args(out), pause=point)
    run.wait_for(f"paused-{point}")
    code, err = run.signal(signum)

    assert code == status, err
    assert "Traceback" not in err
    assert len(stderr_lines(err)) == 1, err
    assert board.read_bytes() == valid_board
    assert board_temps(out) == []

"""A killed or failed ``c2f-bench run`` continues with ``--resume`` and gives the numbers of an
uninterrupted run: kill -9 mid-run, a disk that fills up, torchrun ranks resuming a single
process' run; a changed setting and a missing run are refused with one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from c2f_attacks.evaluation import load_records

from .conftest import BOARD, ProbedRun, run_args, run_in_process, stderr_lines

#: two rows (both stages) over three batches of two images: six batch files
RESUMABLE = ("--num-images", "6", "--batch-size", "2", "--stages", "coarse", "fine")
VOLATILE = ["ms_per_image", "images_per_s", "timestamp", "git_commit"]


def _results(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(leaderboard without timings, records), in a fixed order."""
    board = pd.read_csv(out / BOARD).drop(columns=VOLATILE).sort_values("row_id")
    records = load_records(out).sort_values(["row_id", "index"])
    return board.reset_index(drop=True), records.reset_index(drop=True)


def _assert_same_results(a, b) -> None:
    for x, y in zip(_results(a), _results(b)):
        pd.testing.assert_frame_equal(x, y)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    assert run_in_process(run_args(out, *RESUMABLE)) == 0
    return out


def _shards(out) -> list:
    return sorted((out / ".partial").glob("*/*/*/*.npz"))


def _killed_after(tmp_path, shards: int, env: dict | None = None):
    """A run killed with -9 once ``shards`` batch files are written: its --out."""
    out = tmp_path / "out"
    run = ProbedRun(tmp_path, run_args(out, *RESUMABLE), pause="shards",
                    env={"C2F_FAULT_SHARDS": str(shards), **(env or {})})  # fmt: skip
    run.wait_for("paused-shards", timeout=900)  # slow on a busy machine; fails at once on exit
    run.kill()
    assert len(_shards(out)) == shards and not (out / BOARD).exists()
    return out


def test_kill_9_mid_run_then_resume_gives_the_uninterrupted_numbers(tmp_path, uninterrupted):
    out = _killed_after(tmp_path, 3)
    assert run_in_process(run_args(out, *RESUMABLE, "--resume")) == 0
    _assert_same_results(out, uninterrupted)
    assert not (out / ".partial").exists()  # the state goes once everything is written


def test_resume_attacks_only_the_missing_batches(tmp_path, monkeypatch):
    out = _killed_after(tmp_path, 4)
    from c2f_attacks.runner import execute

    seen = []
    real = execute._step
    monkeypatch.setattr(execute, "_step", lambda job, plan, atk, x, *a: seen.append(len(x))
                        or real(job, plan, atk, x, *a))  # fmt: skip
    assert run_in_process(run_args(out, *RESUMABLE, "--resume")) == 0
    assert seen == [2, 2]  # six batches of two images, four of them already on disk


def test_a_changed_setting_is_refused_with_one_line_naming_it(tmp_path, capsys, attacked):
    out = _killed_after(tmp_path, 2)
    before = _shards(out)
    assert run_in_process(run_args(out, *RESUMABLE, "--eps", "0.05", "--resume")) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith("c2f-bench run: error: --resume:") and "eps" in line
    assert "0.05" in line and attacked == []
    assert _shards(out) == before  # nothing of the interrupted run is lost


def test_resume_without_an_interrupted_run_is_one_line(tmp_path, capsys, attacked):
    assert run_in_process(run_args(tmp_path, "--resume")) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line == f"c2f-bench run: error: --resume: {tmp_path} holds no interrupted run; run " \
                   "without --resume"  # fmt: skip
    assert attacked == []


def test_a_full_disk_is_one_line_and_every_written_batch_resumes(tmp_path, uninterrupted):
    out = tmp_path / "out"
    run = ProbedRun(tmp_path, run_args(out, *RESUMABLE), env={"C2F_FAULT_ENOSPC": "4"})
    code, err = run.finish(timeout=900)  # slow on a busy machine
    assert code == 2
    (line,) = stderr_lines(err)
    assert line.startswith("c2f-bench run: error: [Errno 28] No space left on device")
    assert ".partial" in line and len(_shards(out)) == 3
    assert list((out / ".partial").rglob("*.tmp")) == []  # no half-written batch file
    assert run_in_process(run_args(out, *RESUMABLE, "--resume")) == 0
    _assert_same_results(out, uninterrupted)


def test_a_run_without_resume_starts_over_and_says_so(tmp_path, uninterrupted, capsys):
    out = _killed_after(tmp_path, 3)
    assert run_in_process(run_args(out, *RESUMABLE)) == 0
    err = capsys.readouterr().err
    assert "starting over: 3 completed batch files" in err
    _assert_same_results(out, uninterrupted)


@pytest.mark.slow
def test_two_torchrun_ranks_resume_a_single_process_run(tmp_path):
    """Killed as one process, resumed by two gloo ranks: the numbers of an uninterrupted run.
    Every process runs one thread (torchrun's default), as a thread count can change a
    kernel's last bits."""
    one_thread = {"OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    command = [sys.executable, "-m", "c2f_attacks.cli"]
    done = subprocess.run([*command, *run_args(reference, *RESUMABLE)], capture_output=True,
                          text=True, timeout=900, env={**os.environ, **one_thread})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (tmp_path / "killed").mkdir()
    out = _killed_after(tmp_path / "killed", 1, env=one_thread)
    # `python -m torch.distributed.run` is torchrun
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "-m", "c2f_attacks.cli", *run_args(out, *RESUMABLE, "--resume")]  # fmt: skip
    done = subprocess.run(cmd, env={**os.environ, **one_thread}, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_results(out, reference)
    assert not (out / ".partial").exists()

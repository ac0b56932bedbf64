"""Fault-test helpers: the smallest real ``c2f-bench run``, in this process or as a subprocess
that the probes (``probe.py``) stop at a known point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from c2f_attacks import cli

PROBE = Path(__file__).with_name("probe.py")
BOARD = "leaderboard.csv"
#: the smallest configuration the CLI offers: one cheap attack, one stage, one protocol, four images
SMALL = ("--model", "shapes-vgg16", "--num-images", "4", "--batch-size", "4", "--attacks", "fgsm",
         "--stages", "coarse", "--protocol", "fixed", "--backend", "torch")  # fmt: skip


def _quiet_flag() -> tuple[str, ...]:
    """``--quiet`` where the CLI has it: progress output would add lines to stderr."""
    _, unknown = cli.build_parser().parse_known_args(["run", "--quiet"])
    return () if unknown else ("--quiet",)


def run_args(out: Path, *extra: str, figures: bool = False) -> list[str]:
    """``run`` arguments for the smallest configuration into ``out`` (``extra`` overrides)."""
    return ["run", *SMALL, *_quiet_flag(), *([] if figures else ["--no-figures"]),
            "--out", str(out), *extra]  # fmt: skip


def board_temps(folder: Path) -> list[str]:
    """Temporary files of the leaderboard write left in ``folder``."""
    return sorted(p.name for p in folder.glob(f".{BOARD}.*.tmp"))


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def run_in_process(args: list[str]) -> int:
    """``c2f-bench ARGS`` in this process: its exit status (argparse's SystemExit included)."""
    try:
        return cli.main(args)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1


@pytest.fixture
def attacked(monkeypatch) -> list[bool]:
    """Becomes non-empty at the first gradient this process computes: an attack has started."""
    real = torch.autograd.grad
    calls: list[bool] = []

    def grad(*args, **kwargs):
        calls.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", grad)
    return calls


@pytest.fixture(scope="session")
def valid_board(tmp_path_factory) -> bytes:
    """The bytes of a leaderboard written by a real (small) run."""
    out = tmp_path_factory.mktemp("valid-board")
    assert run_in_process(run_args(out)) == 0
    return (out / BOARD).read_bytes()


class ProbedRun:
    """``c2f-bench ARGS`` as a subprocess under the fault probes (see probe.py; ``env`` adds
    variables); its stdout and stderr go to files, so that they can be read while it runs."""

    def __init__(
        self, tmp: Path, args: list[str], pause: str | None = None, env: dict | None = None
    ):
        self.marks = tmp / "marks"
        self.marks.mkdir()
        self.tmpdir = tmp / "tmpdir"  # the subprocess' TMPDIR: what it leaves there shows
        self.tmpdir.mkdir()
        self.out_file, self.err_file = tmp / "stdout.txt", tmp / "stderr.txt"
        probes = {"C2F_FAULT_MARKS": str(self.marks), "TMPDIR": str(self.tmpdir)}
        if pause is not None:
            probes["C2F_FAULT_PAUSE"] = pause
        with open(self.out_file, "w") as out, open(self.err_file, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(PROBE), *args], env={**os.environ, **probes, **(env or {})},
                stdout=out, stderr=err,
            )  # fmt: skip

    def marked(self, name: str) -> bool:
        return (self.marks / name).exists()

    def stderr(self) -> str:
        return self.err_file.read_text()

    def wait_for(self, name: str, timeout: float = 120.0) -> None:
        """Wait until the probes mark ``name``; fail with the process' output if they never do."""
        self.wait_until(lambda: self.marked(name), f"mark {name!r}", timeout)

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"exited {self.proc.returncode} before {what}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} within {timeout} s:\n{self.stderr()}")
            time.sleep(0.05)

    def signal(self, signum: int, timeout: float = 300.0) -> tuple[int, str]:
        """Send ``signum``; (exit status, stderr) once the process ended. The timeout only
        catches a hang: on a loaded machine a clean exit has taken over 60 s."""
        self.proc.send_signal(signum)
        return self.finish(timeout)

    def stacks(self) -> str:
        """Every thread's Python stack of the running process (the probe's SIGUSR1 handler)."""
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(2.0)
        return self.stderr()

    def kill(self) -> None:
        """kill -9, and reap the process (a zombie's pid still looks alive)."""
        self.proc.kill()
        self.proc.wait()

    def finish(self, timeout: float = 300.0) -> tuple[int, str]:
        """(exit status, stderr) once the process ended; kill -9 after ``timeout`` s."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stacks = self.stacks()
            self.kill()
            pytest.fail(f"still running after {timeout} s; its threads:\n{stacks}")
        return self.proc.returncode, self.stderr()

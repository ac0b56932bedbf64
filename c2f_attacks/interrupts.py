"""Clean exits on SIGTERM: the signal becomes an exception, so cleanup code runs.

Python turns SIGINT (Ctrl-C) into ``KeyboardInterrupt`` but lets SIGTERM (``kill``, a job
scheduler, ``docker stop``) end the process at once: no ``finally`` block runs, so temporary
files stay behind and locks are dropped mid-write. Inside :func:`handle_interrupts` SIGTERM
raises :class:`Interrupted` instead, which unwinds the stack like ``KeyboardInterrupt`` does.
Both derive from ``BaseException`` only, so ``except Exception`` in library code cannot swallow
them. The command line maps them to the shell's exit codes: 128 + signal number, i.e. 130 for
SIGINT and 143 for SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupted(BaseException):
    """The process received ``signum`` (SIGTERM) and is unwinding to exit."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's status for a process ended by this signal: 128 + signum (143 for TERM)."""
        return 128 + self.signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def handle_interrupts() -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`Interrupted`; the previous handler comes back after.

    Signal handlers can only be installed from the main thread; elsewhere the block changes
    nothing (the main thread's handling applies).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        # None: the previous handler was not installed from Python; SIG_DFL is what it did.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

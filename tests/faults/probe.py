"""``python tests/faults/probe.py ARGS...``: ``c2f-bench ARGS...`` with fault probes installed.

The fault tests need a real process that stops at a known point, so that a kill or a signal
lands exactly there. The probes are switched on by environment variables and leave the program
unchanged otherwise:

- ``C2F_FAULT_MARKS`` (folder): the probes record what happened there: ``attacked`` at the first
  gradient (an attack has started), ``paused-<point>`` when the process waits at ``<point>``.
- ``C2F_FAULT_PAUSE`` (point): wait there (until killed or signalled). Points:
  ``onnx-session`` (an onnxruntime session is being built from the exported model),
  ``attacking`` (first gradient), ``before-temp`` (the leaderboard's temporary file is about to
  be created, lock held), ``temp-partial`` (temporary file half written), ``temp-full``
  (temporary file complete, not yet renamed), ``after-replace`` (renamed, lock still held),
  ``shards`` (``C2F_FAULT_SHARDS`` batch files of the run's state are in place).
- ``C2F_FAULT_ENOSPC`` (k): writing the k-th batch file of the run's state fails as on a full
  disk (``OSError`` ENOSPC).
"""

from __future__ import annotations

import errno
import faulthandler
import os
import signal
import sys
import time
from pathlib import Path

BOARD = "leaderboard.csv"


def _mark(name: str) -> None:
    marks = os.environ.get("C2F_FAULT_MARKS")
    if marks:
        Path(marks, name).touch()


def _pause(point: str) -> None:
    if os.environ.get("C2F_FAULT_PAUSE") != point:
        return
    _mark(f"paused-{point}")
    while True:  # short sleeps: a signal's Python handler runs between them
        time.sleep(0.05)


def _is_board_temp(path) -> bool:
    name = Path(os.fsdecode(path)).name
    return name.startswith(f".{BOARD}.") and name.endswith(".tmp")


def _is_board(path) -> bool:
    return Path(os.fsdecode(path)).name == BOARD


def _is_shard(path) -> bool:
    path = os.fsdecode(path)
    return "/.partial/" in path and path.endswith(".npz")


def _install_gradient_probe() -> None:
    import torch

    real_grad = torch.autograd.grad
    seen = []

    def grad(*args, **kwargs):
        if not seen:
            seen.append(True)
            _mark("attacked")
            _pause("attacking")
        return real_grad(*args, **kwargs)

    torch.autograd.grad = grad


def _install_write_probes() -> None:
    real_open, real_replace = os.open, os.replace

    def probed_open(path, flags, *args, **kwargs):
        if _is_board_temp(path):
            _pause("before-temp")
        return real_open(path, flags, *args, **kwargs)

    shards = []

    def probed_replace(src, dst, *args, **kwargs):
        if _is_shard(dst):
            shards.append(dst)
            if str(len(shards)) == os.environ.get("C2F_FAULT_ENOSPC"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fsdecode(src))
            real_replace(src, dst, *args, **kwargs)
            if str(len(shards)) == os.environ.get("C2F_FAULT_SHARDS"):
                _pause("shards")
            return None
        if _is_board(dst):
            if os.environ.get("C2F_FAULT_PAUSE") == "temp-partial":
                size = os.path.getsize(src)
                os.truncate(src, size // 2)
            _pause("temp-partial")
            _pause("temp-full")
            real_replace(src, dst, *args, **kwargs)
            _pause("after-replace")
            return None
        return real_replace(src, dst, *args, **kwargs)

    os.open, os.replace = probed_open, probed_replace


def _install_onnx_probe() -> None:
    if os.environ.get("C2F_FAULT_PAUSE") != "onnx-session":
        return
    import onnxruntime

    real_init = onnxruntime.InferenceSession.__init__

    def init(self, *args, **kwargs):
        _pause("onnx-session")
        real_init(self, *args, **kwargs)

    onnxruntime.InferenceSession.__init__ = init


def main() -> int:
    # SIGUSR1 prints every thread's stack to stderr: how a test shows where a process hangs
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Ctrl-C as a terminal delivers it: a suite started in the background (nohup, `&`) ignores
    # SIGINT, and its children inherit that, so Python would leave SIGINT ignored here and the
    # tests of Ctrl-C would test how the suite was started instead of the program
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _install_gradient_probe()
    _install_write_probes()
    _install_onnx_probe()
    from c2f_attacks.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

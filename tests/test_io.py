"""Atomic writes: nothing half-written, no temporary file left by an interrupt, stale ones of a
killed writer removed by the next write, errors that name the target."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from c2f_attacks import _io
from c2f_attacks._io import STALE_AFTER_S, atomic_write, atomic_write_text, remove_stale_temps
from c2f_attacks.interrupts import Interrupted


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _stale_name(target: str, pid: int, host: str = _io._HOST) -> str:
    return f".{target}.{pid}.{host}.0badf00d.tmp"


def test_replaces_the_target_with_plain_open_permissions(tmp_path):
    path = tmp_path / "sub" / "board.csv"
    atomic_write_text(path, "a,b\n1,2\n")
    atomic_write_text(path, "a,b\n3,4\n")
    assert path.read_text() == "a,b\n3,4\n"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert _temps(path.parent) == []


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "board.csv"
    path.write_text("old\n")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("ne")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old\n"
    assert _temps(tmp_path) == []


@pytest.mark.parametrize(
    "interrupt", [KeyboardInterrupt, lambda: Interrupted(signal.SIGTERM)], ids=["INT", "TERM"]
)
@pytest.mark.parametrize("where", ["close", "write", "replace"])
def test_interrupt_anywhere_leaves_no_temp(tmp_path, monkeypatch, where, interrupt):
    """Ctrl-C right after the temporary file is created (the old code created it before its
    try block, so this left a 0-byte file), while writing, or at the rename."""
    path = tmp_path / "board.csv"
    path.write_text("old\n")

    def fire(real):
        def wrapped(*args, **kwargs):
            real(*args, **kwargs)
            raise interrupt()

        return wrapped

    write = Path.write_text
    if where == "write":
        write = fire(Path.write_text)
    else:
        monkeypatch.setattr(os, where, fire(getattr(os, where)))
    with pytest.raises((KeyboardInterrupt, Interrupted)):
        atomic_write(path, lambda tmp: write(tmp, "new\n"))
    monkeypatch.undo()
    assert _temps(tmp_path) == []
    assert path.read_text() == ("new\n" if where == "replace" else "old\n")


def test_temp_name_carries_the_writer(tmp_path):
    name = _io.temp_path(tmp_path / "board.csv").name
    assert name.startswith(f".board.csv.{os.getpid()}.{_io._HOST}.")
    assert name.endswith(".tmp")


def test_next_write_removes_temps_of_dead_writers_only(tmp_path):
    target = "board.csv"
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        files = {
            "dead writer": _stale_name(target, dead),
            "live writer": _stale_name(target, sleeper.pid),
            "this process": _stale_name(target, os.getpid()),
            "other host": _stale_name(target, dead, host="ffffffff"),
            "old-format, fresh": f".{target}.abc123xy.tmp",
            "other target": f".{target}.x.{dead}.{_io._HOST}.0badf00d.tmp",
        }
        for name in files.values():
            (tmp_path / name).write_bytes(b"partial")
        atomic_write_text(tmp_path / target, "new\n")
        left = set(_temps(tmp_path))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert files["dead writer"] not in left
    assert left == {files[k] for k in files if k != "dead writer"}


def test_next_write_removes_temps_unchanged_for_too_long(tmp_path):
    target = "board.csv"
    names = [_stale_name(target, os.getppid()), f".{target}.abc123xy.tmp",
             _stale_name(target, 1, host="ffffffff")]  # fmt: skip
    old = time.time() - STALE_AFTER_S - 5
    for name in names:
        (tmp_path / name).write_bytes(b"partial")
        os.utime(tmp_path / name, (old, old))
    removed = remove_stale_temps(tmp_path / target)
    assert sorted(p.name for p in removed) == sorted(names)
    assert _temps(tmp_path) == []


_KILLED_WRITER = textwrap.dedent(
    """
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("_io", sys.argv[1])
    io = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(io)

    def slow(tmp):
        with open(tmp, "w") as f:
            f.write("half a leader")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)

    io.atomic_write(sys.argv[2], slow)
    """
)


def test_write_after_kill_9_removes_the_killed_writers_temp(tmp_path):
    path = tmp_path / "board.csv"
    path.write_text("old\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, _io.__file__, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "writing\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(_temps(tmp_path)) == 1
    assert path.read_text() == "old\n"
    atomic_write_text(path, "new\n")
    assert _temps(tmp_path) == []
    assert path.read_text() == "new\n"


def test_errors_name_the_target_not_the_temp(tmp_path):
    path = tmp_path / "board.csv"
    path.mkdir()  # the rename onto a folder fails
    with pytest.raises(IsADirectoryError) as info:
        atomic_write_text(path, "x\n")
    assert str(path) in str(info.value)
    assert ".tmp" not in str(info.value)
    assert _temps(tmp_path) == []


def test_errors_of_other_files_are_not_renamed(tmp_path):
    def read_missing(tmp: Path) -> None:
        (tmp_path / "missing.txt").read_text()

    with pytest.raises(FileNotFoundError, match="missing.txt"):
        atomic_write(tmp_path / "board.csv", read_missing)

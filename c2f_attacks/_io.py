"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A reader (or a crash) never sees a half-written file; the old file stays until the new one is
complete. The temporary file is ``.<name>.<pid>.<host>.<random>.tmp`` beside the target:

- its name is chosen before it is created, inside the block that removes it on any exception
  (Ctrl-C and SIGTERM included), so an interrupt at any point leaves no temporary file behind;
- a process killed outright (``kill -9``, power cut) cannot clean up, so every write first
  removes the stale temporary files of the same target: those whose writer (pid on this host)
  is gone, and those left unchanged for :data:`STALE_AFTER_S` seconds (a writer on another host,
  or a pid since reused).

Errors name the target the caller asked for, never the temporary file. :func:`check_writable`
tells before any long computation whether a folder will take the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

#: a temporary file unchanged for this long is stale whoever wrote it (no write takes minutes
#: without touching its file; a writer paused longer only loses its own write, never the target)
STALE_AFTER_S = 10 * 60

# Host of the writer in temporary names: a pid only identifies a process on its own host, and a
# folder may be shared between hosts.
_HOST = hashlib.blake2s(socket.gethostname().encode(), digest_size=4).hexdigest()


def temp_path(path: Path) -> Path:
    """A fresh temporary name for ``path``: ``.<name>.<pid>.<host>.<random>.tmp`` beside it."""
    token = secrets.token_hex(4)
    return path.with_name(f".{path.name}.{os.getpid()}.{_HOST}.{token}.tmp")


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # signal 0 is CTRL_C_EVENT there: never probe, rely on the file's age
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _is_stale(entry: os.DirEntry, prefix: str, now: float) -> bool:
    """Whether ``entry`` is an abandoned temporary file of the target whose names start ``prefix``.

    Names of this module's format are judged by writer and age; the older format without writer
    (``.<name>.<8 random characters>.tmp``) by age only. Temporary files of other targets
    whose names merely start the same way (``.<name>.x.<pid>...``) do not match either format.
    """
    parts = entry.name[len(prefix) : -len(".tmp")].split(".")
    try:
        old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
    except FileNotFoundError:  # another writer's cleanup or rename got there first
        return False
    if len(parts) == 1:  # tempfile.mkstemp's 8 random characters
        return old and len(parts[0]) == 8
    if len(parts) != 3 or not parts[0].isdigit() or len(parts[1]) != len(_HOST):
        return False
    pid, host = int(parts[0]), parts[1]
    dead = host == _HOST and pid != os.getpid() and not _pid_alive(pid)
    return dead or old


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left beside it; return them."""
    path = Path(path)
    prefix = f".{path.name}."
    now = time.time()
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        name = entry.name
        if name.startswith(prefix) and name.endswith(".tmp") and _is_stale(entry, prefix, now):
            with contextlib.suppress(FileNotFoundError):  # another writer removed it first
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _discard(tmp: Path) -> None:
    # Best effort: the error that brought us here is the one to report.
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` in one rename.

    The temporary file exists (created with the permissions a plain ``open()`` gives) when
    ``write`` is called; ``write`` may replace or truncate it. An OSError names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = temp_path(path)
    try:
        # Exclusive create: a name collision (same pid, same 32 random bits) fails instead of
        # sharing a file with another writer.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        if err.errno is None or err.filename not in (None, str(tmp)):
            raise
        # Same errno, so the same subclass (PermissionError, IsADirectoryError, ...).
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        _discard(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Create ``folder`` and write (then remove) a file in it; an OSError naming ``what``
    (``"output folder out/"``) when either fails."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OSError(f"{what} is not writable: {err.strerror or err}") from None

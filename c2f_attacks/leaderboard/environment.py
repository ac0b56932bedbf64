"""Columns that say where and with what a leaderboard row was produced."""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

ENVIRONMENT_COLUMNS: tuple[str, ...] = (
    "git_commit", "timestamp", "python_version", "torch_version", "torchvision_version",
    "onnxruntime_version", "onnxruntime_package", "c2f_attacks_version",
)  # fmt: skip


def _version(*distributions: str) -> tuple[str, str]:
    """(version, distribution) of the first installed distribution, or ("", "")."""
    for name in distributions:
        try:
            return metadata.version(name), name
        except metadata.PackageNotFoundError:
            continue
    return "", ""


def git_commit() -> str:
    """Short commit of the library's own checkout ("unknown" outside one)."""
    # Asked from the package's folder: the commit of the library that produced the numbers, not
    # of whatever repository the user happens to run from.
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s ``model name`` on Linux, where ``platform`` only says
    ``x86_64``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str | None = None) -> str:
    """``"cpu"``, or a CUDA device with its name: ``"cuda (NVIDIA H100 80GB HBM3)"``."""
    import torch  # only here: reading and printing the leaderboard need no torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return dev.type


def environment_columns(device: str | None = None) -> dict[str, str]:
    """``device`` (a key column) and ``ENVIRONMENT_COLUMNS`` for a row computed on ``device``
    (the torch device the run used; default: cuda when available, else cpu)."""
    ort_version, ort_package = _version("onnxruntime", "onnxruntime-gpu")
    return {
        "device": device_name(device),
        "git_commit": git_commit(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python_version": platform.python_version(),
        "torch_version": _version("torch")[0],
        "torchvision_version": _version("torchvision")[0],
        "onnxruntime_version": ort_version,
        "onnxruntime_package": ort_package,
        "c2f_attacks_version": _version("c2f-attacks")[0],
    }

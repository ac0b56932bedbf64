"""Checks that run before any attack, so that a run never computes results it cannot keep.

In order: the output folder is allowed and writable (never the repository's committed
``results/`` unless asked for, never inside the installed package), the leaderboard reads
strictly and its lock can be taken, the adversarial-images and figures folders are writable,
the device exists, the number of images is within limits, and once the model is loaded: its
parameters are finite and its hierarchy is the dataset's. Each check raises ValueError (OSError
for file-system problems) naming what the user gave.
"""

from __future__ import annotations

from collections.abc import Sized
from pathlib import Path

import torch

import c2f_attacks
from c2f_attacks._io import check_writable
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import Hierarchy, check_same_hierarchy
from c2f_attacks.leaderboard import check_leaderboard

#: The most images one run attacks. Datasets without a fixed size (the procedural shapes) are
#: capped here; file datasets also by their split's size. 100,000 shapes images are 1.2 GB of
#: float32 at 32 px over a run's batches and hours of attacks on a CPU: a larger n is a typo.
MAX_IMAGES = 100_000

_PACKAGE = Path(c2f_attacks.__file__).resolve().parent
#: The committed results: written only by the documented regeneration command.
COMMITTED_RESULTS = (_PACKAGE.parent / "results", _PACKAGE / "results")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_dir(out: str | Path, allow_results_dir: bool = False) -> Path:
    """The resolved output folder, created and checked writable.

    Refuses an empty path, a folder inside the installed package and (without
    ``allow_results_dir``) the committed ``results/`` folder or anything inside it.
    """
    if not str(out).strip():
        raise UserError("--out must name a folder (got an empty path)")
    path = Path(out).expanduser().resolve()
    committed = next((r for r in COMMITTED_RESULTS if _inside(path, r)), None)
    if committed is not None and not allow_results_dir:
        raise UserError(
            f"--out {out} is the committed results folder {committed}; it is regenerated only "
            "by the documented command (add --allow-results-dir); pick another folder"
        )
    if committed is None and _inside(path, _PACKAGE):
        raise UserError(f"--out {out} is inside the installed package {_PACKAGE}")
    check_writable(path, f"output folder {out}")
    return path


def check_outputs(out: Path, figures: bool) -> None:
    """The leaderboard under ``out`` reads strictly and can be locked; adversarial/ (and with
    ``figures``, figures/) is writable."""
    check_leaderboard(out / "leaderboard.csv")
    check_writable(out / "adversarial", f"adversarial images folder {out / 'adversarial'}")
    if figures:
        check_writable(out / "figures", f"figures folder {out / 'figures'}")


def check_device(device: str) -> torch.device:
    """``torch.device(device)`` after checking that it exists on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} asked for, but this machine has no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(
                f"device {device!r} asked for, but there are {torch.cuda.device_count()} GPUs"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r} asked for, but MPS is not available")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device {device!r} is not supported; use cpu, cuda, cuda:N or mps")
    return dev


def check_num_images(n: int, dataset: Sized | None, name: str, split: str) -> None:
    """``n`` is at most :data:`MAX_IMAGES` and at most the split's size (when it has one)."""
    if n > MAX_IMAGES:
        raise UserError(f"--num-images {n} is beyond the limit of {MAX_IMAGES:,} per run")
    if dataset is not None and n > len(dataset):
        raise UserError(
            f"--num-images {n} is more than the {len(dataset):,} images of {name}/{split}"
        )


def check_hierarchy(model: Hierarchy, data: Hierarchy, model_name: str, dataset: str) -> None:
    """The model's hierarchy equals the dataset's; else ValueError naming the differences."""
    check_same_hierarchy(model, data, (f"model {model_name!r}", f"dataset {dataset!r}"))

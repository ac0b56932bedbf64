"""The adversarial images of a run on disk, compactly: one compressed ``.npz`` per leaderboard row.

``<out>/adversarial/<row_id>.npz`` (the row's id, as its records file ``records/<row_id>.csv.gz``)
holds four arrays:

- ``index`` (N,) int64: the images' indices in the dataset (the records' ``index``), ascending;
- ``x_adv`` (N, C, H, W): the adversarial images, stored as

  - ``uint8`` ``round(255 x_adv)`` when every value of the row lies on the 1/255 grid within
    :data:`GRID_TOLERANCE` = 1e-6 (read back as ``k / 255`` in float32: exact for images that
    are ``k / 255`` in float32, and at most 1e-6 off otherwise);
  - else ``float16``: for values in [0, 1] the error is at most half the float16 spacing in
    [0.5, 1), ``2^-12`` (about 2.4e-4, 0.06/255);
  - ``float32`` when the compact encoding would change an outcome (below);

- ``changed`` (N, ceil(C*H*W / 8)) uint8: ``np.packbits`` of ``x_adv != x`` per value. Read
  back with the clean images (:meth:`SavedAdversarial.x_adv` ``clean=``), every value the attack
  left alone is the clean value exactly, so the rounding touches only perturbed values: an
  untouched pixel never crosses an INT8 model's input quantization step by storage alone;
- ``meta``: a JSON string: ``format``, ``version``, ``row_id``, the row's canonical ``key``,
  ``storage`` (the dtype above), ``encoding`` (the compact encoding tried), ``max_abs_error``
  (the largest ``|read back - x_adv|`` over the row, measured, read back with the clean
  images; without them the unchanged values are off by the encoding's bound too), ``exact``
  (the indices of the images stored without rounding) and ``note`` (why, when there are such
  images).

Outcomes never change silently. As each batch is compacted, the source model is run on the
compacted images as they read back (:func:`~c2f_attacks.evaluation.metrics.per_image_records`,
the records' own success rule) and every image whose
success or adversarial coarse or fine prediction differs from its record is kept in float32
exactly. A row with any such image is stored in float32 (the others keep their compact value, so
``max_abs_error`` stays that of the encoding) and its ``meta`` says which images and why.
Memory: a row holds its compact arrays (float16, and uint8 while every batch is on the grid, and
the changed bits) plus those exact images.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from c2f_attacks._io import atomic_write
from c2f_attacks.attacks.criteria import Criterion
from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.metrics import per_image_records
from c2f_attacks.evaluation.records import KEY, canonical_key, row_id

FORMAT = "c2f-attacks/adversarial"
VERSION = 1
#: a row is stored as uint8 when every value is within this of a multiple of 1/255
GRID_TOLERANCE = 1e-6
#: the bound on float16's rounding error for values in [0, 1]
FLOAT16_ERROR = 2.0**-12
#: the largest error of each compact encoding (of any value, read back without the clean images)
ENCODING_ERROR = {"uint8": GRID_TOLERANCE, "float16": FLOAT16_ERROR}
ENCODINGS = tuple(ENCODING_ERROR)
STORAGES = (*ENCODINGS, "float32")
#: the record columns an image's outcome consists of
OUTCOME_COLUMNS = ("success", "adv_coarse", "adv_fine")


def adversarial_path(out_dir: str | os.PathLike, key: Mapping[str, Any] | str) -> Path:
    """``out_dir/adversarial/<row_id>.npz`` of a row key (or of a row_id)."""
    rid = key if isinstance(key, str) else row_id(key)
    return Path(out_dir) / "adversarial" / f"{rid}.npz"


def decode(
    stored: np.ndarray, changed: np.ndarray | None = None, clean: np.ndarray | None = None
) -> np.ndarray:
    """float32 images from their stored form (uint8 ``k`` -> ``k / 255``); with the ``changed``
    mask (bool, the images' shape) and the ``clean`` images, unchanged values are the clean
    ones."""
    x = stored.astype(np.float32) / np.float32(255) if stored.dtype == np.uint8 else stored
    x = x.astype(np.float32)
    return x if changed is None else np.where(changed, x, clean.astype(np.float32))


def _on_grid(x: np.ndarray) -> np.ndarray | None:
    """``round(255 x)`` as uint8 when every value is within GRID_TOLERANCE of it / 255."""
    steps = np.rint(x.astype(np.float64) * 255)
    if steps.min() < 0 or steps.max() > 255 or np.abs(x - steps / 255).max() > GRID_TOLERANCE:
        return None
    return steps.astype(np.uint8)


@dataclass
class AdversarialRow:
    """One leaderboard row's adversarial images, compacted batch by batch (module docstring).

    ``add`` each batch as it is attacked; ``merge`` the parts of several processes;
    :func:`save_adversarial` writes the row.
    """

    index: list[np.ndarray] = field(default_factory=list)
    changed: list[np.ndarray] = field(default_factory=list)  #: packed bits, (n, C*H*W / 8)
    half: list[np.ndarray] = field(default_factory=list)
    #: uint8 chunks while every batch so far is on the 1/255 grid; None after one that is not
    grid: list[np.ndarray] | None = field(default_factory=list)
    #: per encoding: the images (by dataset index) whose outcome it would change, exactly
    exact: dict[str, dict[int, np.ndarray]] = field(
        default_factory=lambda: {e: {} for e in ENCODINGS}
    )
    #: per encoding: the largest rounding error over the images stored in that encoding
    error: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ENCODINGS, 0.0))

    def add(
        self,
        model: nn.Module,
        x: torch.Tensor,
        x_adv: torch.Tensor,
        y: torch.Tensor,
        records: pd.DataFrame,
        stage: str | None,
        criterion: str | Criterion = "stage_changed",
        batch_size: int = 256,
    ) -> None:
        """Compact one batch: ``x``/``x_adv``/``y`` as attacked, ``records`` their per-image
        records (same order, with ``index``); the model is re-run on the compact images."""
        exact = x_adv.detach().float().cpu().numpy()
        clean = x.detach().float().cpu().numpy()
        changed = exact != clean
        index = records["index"].to_numpy(np.int64)
        if len(index) != len(exact) or clean.shape != exact.shape:
            raise ValueError(f"{len(exact)} adversarial images, {len(clean)} clean images and "
                             f"{len(index)} records: one of each per image")  # fmt: skip
        candidates = {"float16": exact.astype(np.float16)}
        if self.grid is not None:
            steps = _on_grid(exact)
            if steps is None:
                self.grid, self.exact["uint8"] = None, {}
            else:
                candidates["uint8"] = steps
        for encoding, stored in candidates.items():
            decoded = decode(stored, changed, clean)
            again = per_image_records(
                model, x, torch.from_numpy(decoded).to(x.device), y, stage,
                criterion=criterion, relevance=False, batch_size=batch_size,
            )  # fmt: skip
            flipped = np.zeros(len(index), dtype=bool)
            for column in OUTCOME_COLUMNS:
                flipped |= again[column].to_numpy() != records[column].to_numpy()
            for i in np.flatnonzero(flipped):
                self.exact[encoding][int(index[i])] = exact[i].copy()
            if (~flipped).any():
                error = float(np.abs(decoded[~flipped] - exact[~flipped]).max())
                self.error[encoding] = max(self.error[encoding], error)
        self.index.append(index)
        self.changed.append(np.packbits(changed.reshape(len(index), -1), axis=1))
        self.half.append(candidates["float16"])
        if self.grid is not None:
            self.grid.append(candidates["uint8"])

    @classmethod
    def merge(cls, parts: Sequence[AdversarialRow]) -> AdversarialRow:
        """One row from the parts of several processes (each holding some of its batches)."""
        on_grid = all(p.grid is not None for p in parts)
        return cls(
            index=[i for p in parts for i in p.index],
            changed=[c for p in parts for c in p.changed],
            half=[h for p in parts for h in p.half],
            grid=[g for p in parts for g in p.grid] if on_grid else None,
            exact={e: {k: v for p in parts for k, v in p.exact[e].items()} for e in ENCODINGS},
            error={e: max(p.error[e] for p in parts) for e in ENCODINGS},
        )


def save_adversarial(
    out_dir: str | os.PathLike, key: Mapping[str, Any], row: AdversarialRow
) -> Path:
    """Write ``row`` to ``out_dir/adversarial/<row_id>.npz`` (atomic); return the path.

    ``key``: the leaderboard row's key (the ``KEY`` fields), as for ``write_records``.
    """
    absent = [c for c in KEY if c not in key]
    if absent:
        raise ValueError(f"adversarial key: missing fields {absent}")
    if not row.index:
        raise ValueError("an adversarial row needs at least one image")
    index = np.concatenate(row.index)
    order = np.argsort(index, kind="stable")
    index = index[order]
    if (np.diff(index) == 0).any():
        raise ValueError(f"image index {int(index[np.diff(index) == 0][0])} appears twice")
    encoding = "float16" if row.grid is None else "uint8"
    stored = np.concatenate(row.half if row.grid is None else row.grid)[order]
    changed = np.concatenate(row.changed)[order]
    exact = row.exact[encoding]
    note = ""
    if exact:
        note = (
            f"{encoding} rounding changes the outcome (success or adversarial prediction) of "
            f"{len(exact)} image(s) {sorted(exact)[:10]}: the row is stored in float32, those "
            "images exactly"
        )
        stored = decode(stored)  # exact images overwrite their values; the others keep theirs
        position = {int(i): p for p, i in enumerate(index)}
        for i, image in exact.items():
            stored[position[i]] = image
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "row_id": row_id(key),
        "key": dict(zip(KEY, canonical_key(key))),
        "storage": str(stored.dtype),
        "encoding": encoding,
        "max_abs_error": row.error[encoding],
        "exact": sorted(exact),
        "note": note,
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: numpy would add ".npz" to a path
            np.savez_compressed(f, index=index, x_adv=stored, changed=changed,
                                meta=np.array(json.dumps(meta)))  # fmt: skip

    return atomic_write(adversarial_path(out_dir, key), write)


@dataclass(frozen=True)
class SavedAdversarial:
    """One row's saved adversarial images: ``index`` (N,), the ``stored`` array, the packed
    ``changed`` bits and ``meta`` (module docstring)."""

    index: np.ndarray
    stored: np.ndarray
    changed: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.index)

    def x_adv(
        self, positions: slice | np.ndarray = slice(None), clean: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The float32 images at ``positions`` (rows of ``index``). With ``clean``, the clean
        images of those positions, the values the attack left alone are exactly theirs."""
        stored = self.stored[positions]
        if clean is None:
            return torch.from_numpy(decode(stored))
        clean = clean.detach().float().cpu().numpy()
        if clean.shape != stored.shape:
            raise ValueError(f"clean images {clean.shape} for adversarial images {stored.shape}")
        bits = np.unpackbits(self.changed[positions], axis=1, count=clean[0].size)
        return torch.from_numpy(decode(stored, bits.reshape(clean.shape).astype(bool), clean))


def load_adversarial(out_dir: str | os.PathLike, key: Mapping[str, Any] | str) -> SavedAdversarial:
    """Read a row's file (by its key or row_id), strictly: ValueError naming the file if it is
    not what :func:`save_adversarial` writes, FileNotFoundError if it is missing."""
    path = adversarial_path(out_dir, key)
    if not path.is_file():
        raise FileNotFoundError(f"saved adversarial images {path} do not exist")
    names = ("index", "x_adv", "changed", "meta")
    try:
        with np.load(path, allow_pickle=False) as data:
            absent = [name for name in names if name not in data.files]
            arrays = {name: data[name] for name in names if name not in absent}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"saved adversarial images {path} cannot be read: {err}") from None
    if absent:
        raise UserError(f"saved adversarial images {path}: no array {absent[0]!r} (not written "
                         "by this version of save_adversarial)")  # fmt: skip
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as err:
        raise UserError(f"saved adversarial images {path}: bad meta ({err})") from None
    index, stored, changed = arrays["index"], arrays["x_adv"], arrays["changed"]
    problem = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        problem = f"not a {FORMAT} file"
    elif meta.get("version") != VERSION:
        problem = f"version {meta.get('version')!r}; this library reads version {VERSION}"
    elif meta.get("row_id") != path.name.removesuffix(".npz"):
        problem = f"row_id {meta.get('row_id')!r} differs from the file's name"
    elif meta.get("storage") != stored.dtype.name or stored.dtype.name not in STORAGES:
        problem = f"x_adv is {stored.dtype}, meta says {meta.get('storage')!r}"
    elif index.dtype != np.int64 or index.ndim != 1 or stored.ndim != 4 or not len(stored):
        problem = f"index {index.shape} / x_adv {stored.shape} are not int64 (N,) / (N, C, H, W)"
    elif len(index) != len(stored) or (np.diff(index) <= 0).any():
        problem = "index must hold one ascending, distinct image index per image"
    elif changed.dtype != np.uint8 or changed.shape != (len(stored), -(-stored[0].size // 8)):
        problem = f"changed {changed.dtype} {changed.shape} is not the packed bits of x_adv"
    if problem:
        raise UserError(f"saved adversarial images {path}: {problem}")
    return SavedAdversarial(index, stored, changed, meta)

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

Memory: a batch is compacted into an :class:`AdversarialBatch` (float16, uint8 when on the grid,
the changed bits, the exact images); :func:`save_adversarial` takes any sequence of them, such as
a run's batches read back from disk one at a time, and writes the file member by member, so
that writing a row holds one batch, whatever the number of images.
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
class AdversarialBatch:
    """One batch of a row's adversarial images, compacted (module docstring): what a row keeps
    of a batch, in memory (:class:`AdversarialRow`) or on disk (a run's shards)."""

    index: np.ndarray  #: (n,) int64, the images' dataset indices
    changed: np.ndarray  #: (n, ceil(C*H*W / 8)) uint8, packed ``x_adv != x`` bits
    half: np.ndarray  #: (n, C, H, W) float16
    grid: np.ndarray | None  #: (n, C, H, W) uint8 when every value is on the 1/255 grid
    #: per encoding: the images (by dataset index) whose outcome it would change, exactly
    exact: dict[str, dict[int, np.ndarray]]
    #: per encoding: the largest rounding error over the images stored in that encoding
    error: dict[str, float]

    @classmethod
    def compact(
        cls,
        model: nn.Module,
        x: torch.Tensor,
        x_adv: torch.Tensor,
        y: torch.Tensor,
        records: pd.DataFrame,
        stage: str | None,
        criterion: str | Criterion = "stage_changed",
        batch_size: int = 256,
    ) -> AdversarialBatch:
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
        steps = _on_grid(exact)
        if steps is not None:
            candidates["uint8"] = steps
        kept: dict[str, dict[int, np.ndarray]] = {e: {} for e in ENCODINGS}
        error = dict.fromkeys(ENCODINGS, 0.0)
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
                kept[encoding][int(index[i])] = exact[i].copy()
            if (~flipped).any():
                error[encoding] = float(np.abs(decoded[~flipped] - exact[~flipped]).max())
        packed = np.packbits(changed.reshape(len(index), -1), axis=1)
        return cls(index, packed, candidates["float16"], candidates.get("uint8"), kept, error)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (for an ``.npz``); :meth:`from_arrays` reads them back."""
        arrays = {"index": self.index, "changed": self.changed, "half": self.half,
                  "error": np.array([self.error[e] for e in ENCODINGS])}  # fmt: skip
        if self.grid is not None:
            arrays["grid"] = self.grid
        for encoding, images in self.exact.items():
            shape = (0, *self.half.shape[1:])
            arrays[f"exact.{encoding}.index"] = np.array(sorted(images), dtype=np.int64)
            arrays[f"exact.{encoding}"] = (
                np.stack([images[i] for i in sorted(images)])
                if images
                else np.zeros(shape, np.float32)
            )
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> AdversarialBatch:
        exact = {e: dict(zip(arrays[f"exact.{e}.index"].tolist(), arrays[f"exact.{e}"]))
                 for e in ENCODINGS}  # fmt: skip
        return cls(arrays["index"], arrays["changed"], arrays["half"], arrays.get("grid"), exact,
                   dict(zip(ENCODINGS, arrays["error"].tolist())))  # fmt: skip


@dataclass
class AdversarialRow:
    """One leaderboard row's adversarial images, kept in memory batch by batch: ``add`` each
    batch as it is attacked, ``merge`` the parts of several processes, then
    :func:`save_adversarial`. (A run streams its batches to disk instead: any sequence of
    :class:`AdversarialBatch` es can be saved.)"""

    batches: list[AdversarialBatch] = field(default_factory=list)

    def add(self, *args, **kwargs) -> None:
        """:meth:`AdversarialBatch.compact` of one batch (same arguments), kept."""
        self.batches.append(AdversarialBatch.compact(*args, **kwargs))

    @classmethod
    def merge(cls, parts: Sequence[AdversarialRow]) -> AdversarialRow:
        """One row from the parts of several processes (each holding some of its batches)."""
        return cls([b for p in parts for b in p.batches])

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> AdversarialBatch:
        return self.batches[i]


@dataclass(frozen=True)
class _Plan:
    """What :func:`save_adversarial` learns from a first pass over the batches."""

    order: list[int]  #: batch positions by first image index
    n: int
    image_shape: tuple[int, ...]
    changed_width: int
    encoding: str
    exact: dict[int, np.ndarray]
    error: float


def _plan(batches: Sequence[AdversarialBatch]) -> _Plan:
    firsts, n, shape, width, on_grid, exact, error = [], 0, None, None, True, {}, {}
    seen_shapes = set()
    for position in range(len(batches)):
        batch = batches[position]
        if len(batch.index):
            firsts.append((int(batch.index.min()), position))
        n += len(batch.index)
        seen_shapes.add((batch.half.shape[1:], batch.changed.shape[1]))
        on_grid = on_grid and batch.grid is not None
        for e in ENCODINGS:
            exact.setdefault(e, {}).update(batch.exact[e])
            error[e] = max(error.get(e, 0.0), batch.error[e])
    if not n:
        raise ValueError("an adversarial row needs at least one image")
    if len(seen_shapes) != 1:
        raise ValueError(f"adversarial batches of different image shapes: {sorted(seen_shapes)}")
    ((shape, width),) = seen_shapes
    encoding = "uint8" if on_grid else "float16"
    return _Plan([p for _, p in sorted(firsts)], n, shape, width, encoding, exact[encoding],
                 error[encoding])  # fmt: skip


def _in_order(batches: Sequence[AdversarialBatch], plan: _Plan):
    """(index, stored values, changed bits) of each batch in image order; ValueError when an
    image index repeats (batches must not overlap)."""
    last = -1
    for position in plan.order:
        batch = batches[position]
        order = np.argsort(batch.index, kind="stable")
        index = batch.index[order]
        repeated = np.flatnonzero(np.diff(np.concatenate([[last], index])) <= 0)
        if len(repeated):
            raise ValueError(f"image index {int(index[repeated[0]])} appears twice")
        last = int(index[-1])
        stored = (batch.half if plan.encoding == "float16" else batch.grid)[order]
        if plan.exact:  # float32: the exact images overwrite their values; the others keep theirs
            stored = decode(stored)
            for i, row in enumerate(index.tolist()):
                if row in plan.exact:
                    stored[i] = plan.exact[row]
        yield index, stored, batch.changed[order]


def _write_member(zf: zipfile.ZipFile, name: str, dtype, shape, chunks) -> None:
    """One ``.npy`` member of an ``.npz``, written chunk by chunk (what ``np.load`` reads)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(shape)}  # fmt: skip
    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, header)
        for chunk in chunks:
            member.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())


def save_adversarial(
    out_dir: str | os.PathLike, key: Mapping[str, Any], row: Sequence[AdversarialBatch]
) -> Path:
    """Write ``row`` (an :class:`AdversarialRow`, or any sequence of :class:`AdversarialBatch`
    es, such as a run's shards read one at a time) to ``out_dir/adversarial/<row_id>.npz``
    (atomic); return the path. Memory: one batch at a time (two passes over the batches).

    ``key``: the leaderboard row's key (the ``KEY`` fields), as for ``write_records``.
    """
    absent = [c for c in KEY if c not in key]
    if absent:
        raise ValueError(f"adversarial key: missing fields {absent}")
    plan = _plan(row)
    storage = "float32" if plan.exact else plan.encoding
    note = ""
    if plan.exact:
        note = (
            f"{plan.encoding} rounding changes the outcome (success or adversarial prediction) "
            f"of {len(plan.exact)} image(s) {sorted(plan.exact)[:10]}: the row is stored in "
            "float32, those images exactly"
        )
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "row_id": row_id(key),
        "key": dict(zip(KEY, canonical_key(key))),
        "storage": storage,
        "encoding": plan.encoding,
        "max_abs_error": plan.error,
        "exact": sorted(plan.exact),
        "note": note,
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            _write_member(zf, "index", np.int64, (plan.n,),
                          (i for i, _, _ in _in_order(row, plan)))  # fmt: skip
            _write_member(zf, "x_adv", storage, (plan.n, *plan.image_shape),
                          (s for _, s, _ in _in_order(row, plan)))  # fmt: skip
            _write_member(zf, "changed", np.uint8, (plan.n, plan.changed_width),
                          (c for _, _, c in _in_order(row, plan)))  # fmt: skip
            text = np.array(json.dumps(meta))
            with zf.open("meta.npy", "w") as member:
                np.lib.format.write_array(member, text, allow_pickle=False)

    return atomic_write(adversarial_path(out_dir, key), write)


def read_back(
    row: Sequence[AdversarialBatch], indices: Sequence[int], clean: torch.Tensor
) -> torch.Tensor:
    """The images ``indices`` (with their ``clean`` images, same order) as
    :func:`save_adversarial` stores ``row`` and :meth:`SavedAdversarial.x_adv` reads them back,
    without writing the row."""
    plan = _plan(row)
    wanted = {int(i): k for k, i in enumerate(indices)}
    out = clean.detach().float().cpu().clone()
    for index, stored, changed in _in_order(row, plan):
        for position in np.flatnonzero(np.isin(index, list(wanted))):
            k = wanted[int(index[position])]
            c = out[k].numpy()
            bits = np.unpackbits(changed[position], count=c.size).reshape(c.shape).astype(bool)
            out[k] = torch.from_numpy(decode(stored[position], bits, c))
    return out


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

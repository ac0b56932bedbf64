"""Per-image records on disk: one gzip-compressed CSV per leaderboard row.

A row of the leaderboard is identified by its key ``KEY`` (everything that changes its
numbers). ``row_id(key)`` is a short hash of the key's canonical form, so the same key always
maps to the same id and file, and leaderboard rows and their records join on ``row_id``.

``write_records(out_dir, key, records)`` writes ``out_dir/records/<row_id>.csv.gz`` with the key
columns, ``row_id`` and ``RECORD_COLUMNS`` on every line, atomically, byte-identical for the same
input. ``load_records(out_dir)`` reads every such file back strictly (types per column; a bad
file is an error naming it) and concatenates them. The file format (a gzip CSV whose lines
each lead with the same key cells) is :func:`write_keyed_file` / :func:`read_keyed_file`, shared
with the transfer records.

Files written before a column of :data:`ADDED_COLUMNS` existed (``target_class``, then
``severity``) are read with that column and every later one -1 (unavailable: those rows were
untargeted, their mistake severity not recorded), so earlier runs stay loadable; any other
header is an error.

Canonical key values: missing (None, NaN, empty) is ``""``; the numeric key columns
(``NUMERIC_KEY``) compare at 10 significant digits, so that ``8/255`` read back from a CSV equals
``8/255`` and ``10`` equals ``10.0``; text compares stripped.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from c2f_attacks._io import atomic_write
from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.typed_csv import Record, cell_text, read_records, typed_frame

KEY: tuple[str, ...] = (
    "model", "model_hash", "dataset", "split", "n", "seed", "attack", "stage", "protocol", "mask",
    "norm", "success_rule", "eps", "steps", "config", "eval_backend", "device",
)  # fmt: skip
#: key columns that hold numbers (``eps`` is a float; the others whole numbers)
NUMERIC_KEY: tuple[str, ...] = ("n", "seed", "eps", "steps")
KEY_KINDS: dict[str, str] = {
    c: ("float" if c == "eps" else "int") if c in NUMERIC_KEY else "text" for c in KEY
}

#: column -> kind (see typed_csv); ints are -1 and floats NaN where a value is unavailable
RECORD_KINDS: dict[str, str] = {
    "index": "int", "y_fine": "int", "y_coarse": "int",
    "clean_coarse": "int", "clean_fine": "int", "adv_coarse": "int", "adv_fine": "int",
    "correct": "bool", "misclassified": "bool", "success": "bool",
    "fine_flipped": "bool", "fine_flipped_coarse_kept": "bool", "coarse_flipped": "bool",
    "first_success_step": "int", "eps": "float", "linf": "float", "l2": "float", "l0": "float",
    "queries": "int", "relevance_shift": "float", "perturbation_in_relevance": "float",
    "object_share": "float", "target_class": "int", "severity": "int",
}  # fmt: skip
RECORD_COLUMNS: tuple[str, ...] = tuple(RECORD_KINDS)
#: record columns added after the first records files were written, in the order they were added
#: (each appended to the file's columns): an older file lacks one of them and every later one,
#: and reads them as -1 (unavailable)
ADDED_COLUMNS: tuple[str, ...] = ("target_class", "severity")
_VALUE_DTYPES = {"int": "int64", "float": "float64", "bool": bool}
#: the leading columns of a records file, the same on every line: the key and ``row_id`` ("eps"
#: is both a key column (the row's budget) and a record column (the image's own); the file keeps
#: the key's as ``key_eps``)
_LEAD_KINDS: dict[str, str] = {
    **{(f"key_{c}" if c in RECORD_KINDS else c): k for c, k in KEY_KINDS.items()}, "row_id": "text",
}  # fmt: skip
#: the columns of a records file: the key, ``row_id``, then the per-image values
FILE_COLUMNS: tuple[str, ...] = (*_LEAD_KINDS, *RECORD_COLUMNS)


def is_missing(value: Any) -> bool:
    """None, NaN, pd.NA and blank strings are all "no value"."""
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # containers are values, not missing ones
        return False


def _canon_number(value: Any, column: str) -> str:
    if is_missing(value):
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"key column {column!r} must be a number, got {value!r}") from None
    if math.isnan(number):
        return ""
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return format(number, ".10g")


def canonical_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``KEY`` values of ``row`` in canonical form (see the module docstring)."""
    return tuple(
        _canon_number(row.get(c), c)
        if c in NUMERIC_KEY
        else ("" if is_missing(row.get(c)) else str(row.get(c)).strip())
        for c in KEY
    )


def row_id(key: Mapping[str, Any]) -> str:
    """12 hex digits of the SHA-256 of the canonical key: the same key always gives the same id."""
    return hashlib.sha256("\x1f".join(canonical_key(key)).encode()).hexdigest()[:12]


def check_records(records: pd.DataFrame) -> pd.DataFrame:
    """Raise unless ``records`` is a DataFrame with every record column; return it."""
    if not isinstance(records, pd.DataFrame):
        raise TypeError(f"records must be a pandas DataFrame, got {type(records).__name__}")
    missing = [c for c in RECORD_COLUMNS if c not in records.columns]
    if missing:
        raise UserError(f"records lack the columns {missing}")
    return records


def records_path(out_dir: str | os.PathLike, key: Mapping[str, Any]) -> Path:
    return Path(out_dir) / "records" / f"{row_id(key)}.csv.gz"


def write_records(
    out_dir: str | os.PathLike, key: Mapping[str, Any], records: pd.DataFrame
) -> Path:
    """Write one row's records to ``out_dir/records/<row_id>.csv.gz`` (atomic); return the path.

    ``key`` must have exactly the ``KEY`` fields (the leaderboard row's key). The gzip header
    carries no time stamp or file name, so the same records give the same bytes.
    """
    unknown = sorted(set(key) - set(KEY))
    absent = [c for c in KEY if c not in key]
    if unknown or absent:
        raise ValueError(f"records key: unknown fields {unknown}, missing fields {absent}")
    check_records(records)
    lead = [cell_text(key[c]) for c in KEY] + [row_id(key)]
    return write_keyed_file(records_path(out_dir, key), "records", dict(zip(_LEAD_KINDS, lead)),
                            records, RECORD_KINDS)  # fmt: skip


def write_keyed_file(
    path: Path,
    what: str,
    lead: Mapping[str, str],
    values: pd.DataFrame,
    kinds: Mapping[str, str],
) -> Path:
    """Write a per-image gzip CSV atomically: the ``lead`` columns (name -> cell, the same on
    every line: a key), then one line per row of ``values`` with its ``kinds`` columns (numbers
    and booleans). The gzip header has no time stamp or file name: the same input gives the same
    bytes. A column whose dtype is not of its kind is a TypeError naming it (``what``: the kind
    of file, for messages)."""
    frame = values.loc[:, list(kinds)].reset_index(drop=True)
    for column, kind in kinds.items():  # what the reader will demand of every cell
        dtype = frame[column].dtype
        fits = {"int": pd.api.types.is_integer_dtype, "bool": pd.api.types.is_bool_dtype,
                "float": pd.api.types.is_numeric_dtype}[kind](dtype)  # fmt: skip
        if not fits or (kind == "int" and frame[column].isna().any()):
            raise TypeError(f"{what} column {column!r} must hold {kind} values, got {dtype}")
    lines = [",".join([*lead, *kinds])]
    prefix = [_csv_cell(text) for text in lead.values()]
    for row in frame.itertuples(index=False):
        lines.append(",".join(prefix + [cell_text(v) for v in row]))
    data = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _csv_cell(text: str) -> str:
    """A lead cell quoted as CSV needs (values are numbers and booleans: never quoted)."""
    if any(ch in text for ch in ',"\n\r') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def read_keyed_file(
    path: Path,
    what: str,
    lead_kinds: Mapping[str, str],
    kinds: Mapping[str, str],
    added: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, list[Record]]:
    """A file of :func:`write_keyed_file` read strictly: its header is the ``lead_kinds``
    columns then the ``kinds`` ones, every cell of its kind (``kinds`` ints never empty).
    Returns the typed frame and the CSV records (line, cells) behind its rows, for the caller's
    own checks, :func:`check_one_key` among them; ValueError naming the file, line and column
    (``what``: the kind of file). ``added``: int columns of ``kinds`` in the order they were
    added; a file written before one of them existed lacks it and every later one, and reads
    them as -1."""
    header, rows = read_records(path, f"{what} file")
    for first in range(len(added)):  # a file of an earlier version: added[first:] are new
        missing = added[first:]
        earlier = {c: k for c, k in kinds.items() if c not in missing}
        if tuple(header) == (*lead_kinds, *earlier):
            frame, rows = _typed(path, what, header, rows, lead_kinds, earlier)
            for column in missing:
                frame[column] = np.full(len(frame), -1, dtype=np.int64)
            return frame[[*lead_kinds, *kinds]], rows
    if tuple(header) != (*lead_kinds, *kinds):
        raise UserError(f"{what} file {path}, line 1: the header is not the {what} header "
                         f"(expected {','.join([*lead_kinds, *kinds])})")  # fmt: skip
    return _typed(path, what, header, rows, lead_kinds, kinds)


def _typed(path, what, header, rows, lead_kinds, kinds) -> tuple[pd.DataFrame, list[Record]]:
    frame = typed_frame(header, rows, {**lead_kinds, **kinds},
                        lambda line: f"{what} file {path}, line {line}")  # fmt: skip
    for column, kind in kinds.items():
        if kind == "int":
            if frame[column].isna().any():
                line = rows[int(frame[column].isna().to_numpy().argmax())][0]
                raise UserError(f"{what} file {path}, line {line}, column {column!r}: empty")
            frame[column] = frame[column].astype(_VALUE_DTYPES[kind])
    return frame, rows


def check_one_key(rows: list[Record], lead: int, where: str) -> None:
    """Every record carries the first record's ``lead`` cells (its key); else ValueError
    naming ``where`` (the file) and the line."""
    for line, cells in rows:
        if cells[:lead] != rows[0][1][:lead]:
            raise UserError(f"{where}, line {line}: another key than line {rows[0][0]}'s")


def empty_keyed_frame(lead_kinds: Mapping[str, str], kinds: Mapping[str, str]) -> pd.DataFrame:
    """What :func:`read_keyed_file` gives for a file without lines: the columns, typed."""
    frame = typed_frame([*lead_kinds, *kinds], [], {**lead_kinds, **kinds}, str)
    return frame.astype({c: _VALUE_DTYPES[k] for c, k in kinds.items()})


def read_records_file(path: str | os.PathLike) -> pd.DataFrame:
    """One records file, strictly typed; ValueError naming the file, line and column if bad."""
    path = Path(path)
    frame, rows = read_keyed_file(path, "records", _LEAD_KINDS, RECORD_KINDS, ADDED_COLUMNS)
    expected = path.name.removesuffix(".csv.gz")
    ids = set(frame["row_id"])
    if ids - {expected}:
        raise UserError(
            f"records file {path}: row_id {sorted(ids - {expected})} differs from the file's "
            f"name {expected!r}"
        )
    if rows and row_id(dict(zip(KEY, rows[0][1]))) != expected:
        raise UserError(f"records file {path}, line {rows[0][0]}: the key does not hash to "
                         f"{expected}")  # fmt: skip
    check_one_key(rows, len(_LEAD_KINDS), f"records file {path}")
    return frame


def load_records(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Every row's records under ``out_dir/records/`` in one DataFrame (sorted by file name,
    i.e. by row_id); an empty frame with the columns when there are none."""
    files = sorted((Path(out_dir) / "records").glob("*.csv.gz"))
    frames = [read_records_file(f) for f in files]
    if not frames:
        return empty_keyed_frame(_LEAD_KINDS, RECORD_KINDS)
    return pd.concat(frames, ignore_index=True)

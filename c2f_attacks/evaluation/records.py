"""Per-image records on disk: one gzip-compressed CSV per leaderboard row.

A row of the leaderboard is identified by its key ``KEY`` (everything that changes its
numbers). ``row_id(key)`` is a short hash of the key's canonical form, so the same key always
maps to the same id and file, and leaderboard rows and their records join on ``row_id``.

``write_records(out_dir, key, records)`` writes ``out_dir/records/<row_id>.csv.gz`` with the key
columns, ``row_id`` and ``RECORD_COLUMNS`` on every line, atomically, byte-identical for the same
input. ``load_records(out_dir)`` reads every such file back strictly (types per column; a bad
file is an error naming it) and concatenates them.

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

import pandas as pd

from c2f_attacks._io import atomic_write
from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.typed_csv import cell_text, read_records, typed_frame

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
    "object_share": "float",
}  # fmt: skip
RECORD_COLUMNS: tuple[str, ...] = tuple(RECORD_KINDS)
_RECORD_DTYPES = {"int": "int64", "float": "float64", "bool": bool}
#: the columns of a records file: the key, ``row_id``, then the per-image values ("eps" is both a
#: key column (the row's budget) and a record column (the image's own); the file keeps the key's
#: as ``key_eps``)
FILE_COLUMNS: tuple[str, ...] = (
    *(f"key_{c}" if c in RECORD_KINDS else c for c in KEY), "row_id", *RECORD_COLUMNS,
)  # fmt: skip


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
    frame = records.loc[:, list(RECORD_COLUMNS)].reset_index(drop=True)
    for column, kind in RECORD_KINDS.items():  # what load_records will demand of every cell
        dtype = frame[column].dtype
        fits = {"int": pd.api.types.is_integer_dtype, "bool": pd.api.types.is_bool_dtype,
                "float": pd.api.types.is_numeric_dtype}[kind](dtype)  # fmt: skip
        if not fits or (kind == "int" and frame[column].isna().any()):
            raise TypeError(f"records column {column!r} must hold {kind} values, got {dtype}")
    rid = row_id(key)
    lines = [",".join(FILE_COLUMNS)]
    prefix = [_csv_cell(cell_text(key[c])) for c in KEY] + [rid]
    for values in frame.itertuples(index=False):
        lines.append(",".join(prefix + [cell_text(v) for v in values]))
    data = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    return atomic_write(records_path(out_dir, key), lambda tmp: tmp.write_bytes(data))


def _csv_cell(text: str) -> str:
    """A key cell quoted as CSV needs (record values are numbers and booleans: never quoted)."""
    if any(ch in text for ch in ',"\n\r') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


_FILE_KINDS = {
    **{(f"key_{c}" if c in RECORD_KINDS else c): k for c, k in KEY_KINDS.items()},
    "row_id": "text",
    **RECORD_KINDS,
}


def read_records_file(path: str | os.PathLike) -> pd.DataFrame:
    """One records file, strictly typed; ValueError naming the file, line and column if bad."""
    path = Path(path)
    header, rows = read_records(path, "records file")
    if tuple(header) != FILE_COLUMNS:
        raise UserError(
            f"records file {path}, line 1: the header is not the records header "
            f"(expected {','.join(FILE_COLUMNS)})"
        )
    frame = typed_frame(header, rows, _FILE_KINDS, lambda line: f"records file {path}, line {line}")
    for column, kind in RECORD_KINDS.items():
        if kind == "int":
            if frame[column].isna().any():
                line = rows[int(frame[column].isna().to_numpy().argmax())][0]
                raise UserError(f"records file {path}, line {line}, column {column!r}: empty")
            frame[column] = frame[column].astype(_RECORD_DTYPES[kind])
    expected = path.name.removesuffix(".csv.gz")
    ids = set(frame["row_id"])
    if ids - {expected}:
        raise UserError(
            f"records file {path}: row_id {sorted(ids - {expected})} differs from the file's "
            f"name {expected!r}"
        )
    if rows and row_id(dict(zip(KEY, rows[0][1]))) != expected:
        raise UserError(
            f"records file {path}, line {rows[0][0]}: the key does not hash to {expected}"
        )
    for line, cells in rows:  # every line carries the first line's key
        if cells[: len(KEY)] != rows[0][1][: len(KEY)]:
            raise UserError(f"records file {path}, line {line}: another key than line 2's")
    return frame


def load_records(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Every row's records under ``out_dir/records/`` in one DataFrame (sorted by file name,
    i.e. by row_id); an empty frame with the columns when there are none."""
    files = sorted((Path(out_dir) / "records").glob("*.csv.gz"))
    frames = [read_records_file(f) for f in files]
    if not frames:
        return typed_frame(FILE_COLUMNS, [], _FILE_KINDS, str).astype(
            {c: _RECORD_DTYPES[k] for c, k in RECORD_KINDS.items()}
        )
    return pd.concat(frames, ignore_index=True)

"""The leaderboard CSV: one row per key, read strictly, written atomically under a lock.

Identity. A row's key is ``KEY``: model and checkpoint hash, dataset and split, n, seed, attack,
stage, protocol, mask, norm, success rule, eps, steps, the attack's full-precision ``config``,
evaluation backend and device: everything that changes the numbers. A row whose key equals an
existing row's key replaces it; every other row is added. Keys compare in canonical form
(numbers at 10 significant digits, empty = NaN = missing, text stripped), so a CSV round trip
cannot split one key in two.
``row_id`` (a hash of the key) joins a row with its per-image records.

Strict reading. Every column has one type (``SCHEMA``). A byte-order mark, bytes that are not
UTF-8, ``;`` separators, an empty file, a bad header, a record with the wrong field count, a
cell that is not of its column's type, a missing required key value, a ``row_id`` that does not
match its key or two rows with one key are errors naming the file, the line and the column.
Nothing is rewritten: rows that are kept are written back cell for cell as they were read.

Writing. ``upsert_rows`` holds ``<path>.lock`` for the whole read-merge-write (two runs writing at
once lose nothing) and replaces the file in one rename (a reader or a crash never sees half a
file). If it fails (lock not obtained, file damaged in the meantime, disk full), the new rows are
saved to ``<stem>.rejected-<UTC timestamp>.csv`` beside it and :class:`LeaderboardWriteError`
says where. ``check_leaderboard`` runs the same checks before any attack does.

Derived tables. A table with one row per leaderboard row *and* something more (``transfer.csv``:
one row per source row and target) is stored the same way with ``key=KEY + extra columns``: the
extra key columns are text, required, compared stripped, and written right after the
leaderboard key; such a table has no other fixed columns.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from c2f_attacks._io import atomic_write, check_writable
from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.records import (
    KEY,
    KEY_KINDS,
    NUMERIC_KEY,
    canonical_key,
    is_missing,
    row_id,
)
from c2f_attacks.evaluation.summary import COUNT_COLUMNS, METRIC_COLUMNS, TEXT_COLUMNS
from c2f_attacks.evaluation.typed_csv import Record, cell_text, read_records, typed_frame
from c2f_attacks.leaderboard.environment import ENVIRONMENT_COLUMNS

_IDENTITY = ("model", "model_hash", "dataset", "split", "attack", "stage", "protocol", "mask",
             "norm", "success_rule", "eps", "steps", "n", "seed")  # fmt: skip
#: timing of the attack itself; with an ONNX evaluation backend, its fooling ratio and its
#: agreement with PyTorch
RUN_COLUMNS = ("ms_per_image", "images_per_s", "eval_backend", "backend_fooling_ratio",
               "backend_agreement", "device")  # fmt: skip
COLUMNS: tuple[str, ...] = (
    *_IDENTITY,
    *(c for c in METRIC_COLUMNS if c != "n"),
    *RUN_COLUMNS,
    *ENVIRONMENT_COLUMNS,
    "config",
    "row_id",
)
_METRIC_KINDS = {c: "int" if c in COUNT_COLUMNS else "text" if c in TEXT_COLUMNS else "float"
                 for c in METRIC_COLUMNS}  # fmt: skip
#: column -> kind (see c2f_attacks.evaluation.typed_csv); unknown columns are kept as extras
SCHEMA: dict[str, str] = {
    **_METRIC_KINDS,
    "ms_per_image": "float",
    "images_per_s": "float",
    "backend_fooling_ratio": "float",
    "backend_agreement": "float",
    **{c: "text" for c in ENVIRONMENT_COLUMNS},
    **KEY_KINDS,
    "row_id": "text",
}
#: key columns that every row must fill (eps, steps, stage, model_hash, config may be empty:
#: minimal-eps runs, single-step attacks, flat models, models built in code, no settings)
REQUIRED: tuple[str, ...] = ("model", "dataset", "split", "n", "seed", "attack", "protocol",
                             "mask", "norm", "success_rule", "eval_backend", "device")  # fmt: skip
#: rows are sorted by these columns (numbers numerically, empty first)
SORT: tuple[str, ...] = ("model", "dataset", "split", "attack", "stage", "protocol", "mask",
                         "norm", "success_rule", "eps", "steps", "n", "seed", "config",
                         "model_hash", "eval_backend", "device")  # fmt: skip
assert set(SORT) == set(KEY) and set(SCHEMA) == set(COLUMNS)


@dataclass(frozen=True)
class _Table:
    """The leaderboard (``extra`` empty) or a table keyed by KEY plus the ``extra`` columns."""

    extra: tuple[str, ...] = ()

    @classmethod
    def of(cls, key: Sequence[str]) -> _Table:
        if isinstance(key, str) or not set(KEY) <= set(key) or len(set(key)) != len(key):
            raise ValueError(f"key must hold every leaderboard key column once, got {key!r}")
        return cls(tuple(c for c in key if c not in KEY))

    @property
    def what(self) -> str:
        return "table" if self.extra else "leaderboard"

    @property
    def columns(self) -> tuple[str, ...]:
        return (*KEY, *self.extra, "row_id") if self.extra else COLUMNS

    @cached_property
    def schema(self) -> dict[str, str]:
        return {**SCHEMA, **dict.fromkeys(self.extra, "text")}

    def identity(self, row: Mapping[str, Any]) -> tuple[str, ...]:
        """What makes a row unique: its canonical key and the stripped extra key values."""
        extra = ("" if is_missing(row.get(c)) else str(row[c]).strip() for c in self.extra)
        return (*canonical_key(row), *extra)


_LEADERBOARD = _Table()


class LeaderboardWriteError(OSError):
    """The final leaderboard write failed; ``rejected`` is where the new rows were saved (None if
    they could not be saved either)."""

    def __init__(self, message: str, rejected: Path | None):
        super().__init__(message)
        self.rejected = rejected


def config_string(**settings: Any) -> str:
    """Canonical ``config`` value: ``"alpha=0.00784313725490196;mode=fixed;random_start=1"``.

    Keys are sorted, so the same settings always give the same string; floats are written in full
    (shortest round-trip form), so two configurations that differ anywhere get two rows;
    booleans are 1/0.
    """
    parts = []
    for name in sorted(settings):
        value = settings[name]
        text = str(int(value)) if isinstance(value, bool) else cell_text(value)
        if any(ch in name + text for ch in ";="):
            raise UserError(f"config setting {name}={text!r} must not contain ';' or '='")
        parts.append(f"{name}={text}")
    return ";".join(parts)


def config_settings(config: Any) -> dict[str, str]:
    """A ``config`` value read back: ``{name: text}`` (``{}`` for a missing or empty one)."""
    text = "" if is_missing(config) else str(config)
    return dict(part.split("=", 1) for part in text.split(";") if "=" in part)


def target_policy(config: Any) -> str:
    """The target policy a row's ``config`` names (``target=random``: "random"); "none" for an
    untargeted row."""
    return config_settings(config).get("target", "none")


# ------------------------------------------------------------------------------------- reading
def _parse(
    header: Sequence[str],
    records: Sequence[Record],
    locate,
    unique: bool = True,
    table: _Table = _LEADERBOARD,
) -> pd.DataFrame:
    """Typed frame of ``records`` with every row checked: required values, row_id and (with
    ``unique``) one row per key."""
    frame = typed_frame(header, records, table.schema, locate)
    seen: dict[tuple[str, ...], int] = {}
    for (line, _), row in zip(records, frame.to_dict("records")):
        empty = [c for c in (*REQUIRED, *table.extra) if c in row and is_missing(row[c])]
        if empty:
            raise UserError(f"{locate(line)}, column {empty[0]!r}: empty (a key value is needed)")
        key = table.identity(row)
        if "row_id" in row and row["row_id"] != row_id(row):
            raise UserError(
                f"{locate(line)}, column 'row_id': {row['row_id']!r} does not match the row's key "
                f"(expected {row_id(row)}); was the key edited by hand?"
            )
        if unique and key in seen:
            raise UserError(f"{locate(line)}: same key as line {seen[key]}")
        seen[key] = line
    return frame


def _read(path: Path, table: _Table = _LEADERBOARD) -> tuple[list[str], list[Record], pd.DataFrame]:
    """Header, records and typed frame of an existing leaderboard file (strict)."""
    header, records = read_records(path, table.what)
    missing = [c for c in (*KEY, *table.extra, "row_id") if c not in header]
    if missing:
        raise UserError(f"{table.what} {path}, line 1: lacks the key columns {missing}")
    frame = _parse(header, records, lambda line: f"{table.what} {path}, line {line}", table=table)
    return header, records, frame


def _ordered(frame: pd.DataFrame, table: _Table = _LEADERBOARD) -> pd.DataFrame:
    """The table's columns first (missing ones empty, typed), then extra columns in their
    order."""
    columns, schema = table.columns, table.schema
    empty = typed_frame(columns, [], schema, str)
    for column in columns:
        if column not in frame.columns:
            frame[column] = pd.Series([pd.NA if schema[column] == "int" else float("nan")]
                                      * len(frame), dtype=empty[column].dtype)  # fmt: skip
    extras = [c for c in frame.columns if c not in columns]
    return frame[[*columns, *extras]]


def read_leaderboard(path: str | os.PathLike, *, key: Sequence[str] = KEY) -> pd.DataFrame:
    """The leaderboard at ``path``, typed per column (COLUMNS, then any extra ones); an empty
    frame if the file does not exist. ValueError naming file, line and column if it is bad.
    ``key``: a derived table's key (module docstring)."""
    path, table = Path(path), _Table.of(key)
    if not path.exists():
        return _ordered(typed_frame(table.columns, [], table.schema, str), table)
    return _ordered(_read(path, table)[2], table)


# ------------------------------------------------------------------------------------- locking
@contextmanager
def _locked(path: Path, timeout: float, what: str = "leaderboard") -> Iterator[None]:
    """Hold ``<path>.lock``; if another writer has it, say so once on stderr and wait."""
    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(
            f"{what} {path} is being written by another run; waiting up to {timeout:g} s "
            "for its lock",
            file=sys.stderr,
        )
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise TimeoutError(
                f"{what} {path}: the lock {lock.lock_file} is still held after {timeout:g} s "
                "(another run writing, or a stale lock of a process that hangs)"
            ) from None
    try:
        yield
    finally:
        lock.release()


def check_leaderboard(
    path: str | os.PathLike, timeout: float = 60.0, *, key: Sequence[str] = KEY
) -> pd.DataFrame:
    """Pre-flight: read the leaderboard strictly, check its folder is writable (creating it if
    needed) and its lock can be taken (waiting up to ``timeout`` s, with one message on stderr);
    return the leaderboard. ValueError (bad file), OSError (folder), TimeoutError (lock).
    ``key``: a derived table's key (module docstring)."""
    path, what = Path(path), _Table.of(key).what
    board = read_leaderboard(path, key=key)
    check_writable(path.parent, f"{what} folder {path.parent}")
    with _locked(path, timeout, what):
        pass
    return board


# ------------------------------------------------------------------------------------- writing
def _new_cells(
    rows: Sequence[Mapping[str, Any]], table: _Table = _LEADERBOARD
) -> tuple[list[str], list[Record]]:
    """``rows`` as CSV cells (header = their columns plus row_id), checked like a file's rows."""
    if isinstance(rows, pd.DataFrame) or not isinstance(rows, Sequence):
        raise TypeError(f"rows must be a sequence of mappings, got {type(rows).__name__}")
    header = [*dict.fromkeys(c for r in rows for c in r if c != "row_id"), "row_id"]
    records = []
    for i, row in enumerate(rows):
        absent = [c for c in (*REQUIRED, *table.extra) if is_missing(row.get(c))]
        if absent:
            raise ValueError(f"{table.what} row {i} has no value for {absent}")
        canonical_key(row)  # a non-numeric eps/n/seed/steps is an error before anything else
        cells = [_cell(row.get(c), table.schema.get(c)) for c in header]
        cells[-1] = row_id(row)
        if not is_missing(row.get("row_id")) and str(row["row_id"]) != cells[-1]:
            raise ValueError(f"{table.what} row {i}: row_id {row['row_id']!r} is not its key's")
        records.append((i, cells))
    _parse(header, records, lambda i: f"{table.what} row {i}", unique=False, table=table)
    return header, records


def _cell(value: Any, kind: str | None) -> str:
    """A new row's value as a cell; a whole float in an integer column is written as an integer
    (``10.0`` -> ``10``), any other float there stays as it is and fails the column's check."""
    if kind == "int" and isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return cell_text(value)


def _sort_order(frame: pd.DataFrame, table: _Table = _LEADERBOARD) -> list[int]:
    order = [*SORT, *table.extra]
    keys = pd.DataFrame(
        {c: frame[c] if c in NUMERIC_KEY else frame[c].fillna("").astype(str) for c in order}
    )
    # A multi-column sort is a lexsort, which is stable: rows that tie keep their order.
    return list(keys.sort_values(order, na_position="first").index)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _merge(
    path: Path, header: list[str], new: list[Record], table: _Table = _LEADERBOARD
) -> tuple[str, pd.DataFrame]:
    """The leaderboard text after upserting ``new``, and its typed frame."""
    old_header, old, _ = _read(path, table) if path.exists() else ([], [], None)
    columns = list(dict.fromkeys([*table.columns, *old_header, *header]))
    as_dicts = [dict(zip(old_header, cells)) for _, cells in old]
    new_dicts = [dict(zip(header, cells)) for _, cells in new]

    def identity(d: dict[str, str]) -> tuple[str, ...]:  # row_id stands for the canonical key
        return (d["row_id"], *(d[c].strip() for c in table.extra))

    last = {identity(d): d for d in new_dicts}  # among the new rows the last with a key wins
    kept = [d for d in as_dicts if identity(d) not in last]
    cells = [[d.get(c, "") for c in columns] for d in [*kept, *last.values()]]
    frame = _parse(columns, list(enumerate(cells, start=2)),
                   lambda line: f"{table.what} {path}", table=table)  # fmt: skip
    order = _sort_order(frame, table)
    frame = frame.loc[order].reset_index(drop=True)
    return _csv_text(columns, [cells[i] for i in order]), _ordered(frame, table)


def _save_rejected(path: Path, header: list[str], rows: list[Record]) -> Path | None:
    """Write the rows a failed upsert could not store: beside the leaderboard, else in the
    system's temporary folder. None if neither works."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = _csv_text(header, [cells for _, cells in rows])
    for folder in (path.parent, Path(tempfile.gettempdir())):
        for attempt in range(100):
            suffix = f"-{attempt}" if attempt else ""
            target = folder / f"{path.stem}.rejected-{stamp}{suffix}{path.suffix}"
            try:
                with open(target, "x", encoding="utf-8") as f:
                    f.write(text)
                return target
            except FileExistsError:
                continue
            except OSError:
                break
    return None


def upsert_rows(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    timeout: float = 60.0,
    *,
    key: Sequence[str] = KEY,
) -> pd.DataFrame:
    """Insert ``rows`` (mappings of column -> value) into the leaderboard at ``path``, replacing
    rows with the same key; return the leaderboard as written.

    Unknown columns are kept, missing ones left empty; ``row_id`` is computed from the
    leaderboard key. A bad row (a required key value missing, a cell not of its column's type)
    is a ValueError and nothing is written. If the write itself fails, the rows are saved to a
    rejected-rows file and :class:`LeaderboardWriteError` names it. ``key``: a derived table's
    key, the leaderboard key plus text columns (module docstring).
    """
    path, table = Path(path), _Table.of(key)
    header, new = _new_cells(rows, table)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path, timeout, table.what):
            text, frame = _merge(path, header, new, table)
            atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except (OSError, ValueError) as err:
        rejected = _save_rejected(path, header, new)
        where = (
            f"this run's {len(new)} rows are saved in {rejected}"
            if rejected
            else f"this run's {len(new)} rows could not be saved anywhere either"
        )
        raise LeaderboardWriteError(f"{err} ({where})", rejected) from err
    return frame

"""Strict CSV reading with one type per column: every bad byte, line or cell is an error that
names the file, the line and the column; nothing is guessed, dropped or rewritten.

Used for the per-image records and the leaderboard. Column kinds:

- ``"text"``: the cell as written; an empty cell is missing (NaN). Object dtype.
- ``"int"``: an integer literal (``-?[0-9]+``); empty is missing. Nullable ``Int64``.
- ``"float"``: a decimal number (``0.5``, ``1e-05``) or ``inf`` / ``-inf``, as ``cell_text``
  writes floats; empty is missing (NaN), and other spellings (``nan``, ``Infinity``, ``1_0``,
  blanks around) are errors. ``float64``; every float round-trips exactly, infinities included.
- ``"bool"``: ``True`` or ``False`` exactly (as pandas writes them); never empty. ``bool``.

Columns a schema does not name are *extras*: numbers (``float64``) when every non-empty cell is
one, text otherwise.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from c2f_attacks.errors import UserError

KINDS = ("text", "int", "float", "bool")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?inf")
_UTF8_BOM = b"\xef\xbb\xbf"

#: ``(line number, cells)`` of one CSV record; the line is the last physical line it spans.
Record = tuple[int, list[str]]


def read_records(path: Path, what: str) -> tuple[list[str], list[Record]]:
    """Header and records of the CSV file ``path`` (gzip-compressed when it ends in ``.gz``).

    ``what`` names the file in errors (e.g. ``"leaderboard"``). Raises ValueError for an empty
    file, a byte-order mark, bytes that are not UTF-8, ``;`` separators, a bad or duplicate
    header name, a blank line or a record whose field count differs from the header's.
    """
    where = f"{what} {path}"
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise UserError(f"{where} cannot be read: {err}") from err
    if not raw.strip():
        raise UserError(f"{where} is empty (no header line)")
    if raw.startswith(_UTF8_BOM):
        raise UserError(f"{where}, line 1: starts with a byte-order mark; save it as plain UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise UserError(
            f"{where}, line {line}, character {column}: byte 0x{raw[err.start]:02x} is not UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        _check_header(header, where)
        records = []
        for cells in reader:
            line = reader.line_num
            if not cells:
                raise UserError(f"{where}, line {line}: blank line")
            if len(cells) != len(header):
                raise UserError(
                    f"{where}, line {line}: {len(cells)} fields, the header has {len(header)}"
                )
            records.append((line, cells))
    except csv.Error as err:
        raise UserError(f"{where}, line {reader.line_num}: not valid CSV ({err})") from None
    return header, records


def _check_header(header: list[str], where: str) -> None:
    if len(header) == 1 and ";" in header[0]:
        raise UserError(f"{where}, line 1: fields are separated by ';'; expected ','")
    seen: set[str] = set()
    for name in header:
        if not name.strip() or name != name.strip():
            raise UserError(f"{where}, line 1: bad column name {name!r}")
        if name in seen:
            raise UserError(f"{where}, line 1: column {name!r} appears twice")
        seen.add(name)


def parse_cell(kind: str, text: str) -> Any:
    """The value of one cell of ``kind``; raises ValueError (without a location) if it is bad."""
    if kind == "text":
        return text if text else math.nan
    if kind == "bool":
        if text not in ("True", "False"):
            raise ValueError(f"{text!r} is not True or False")
        return text == "True"
    if not text:
        return pd.NA if kind == "int" else math.nan
    if kind == "int":
        if not _INT.fullmatch(text):
            raise ValueError(f"{text!r} is not a whole number")
        return int(text)
    if kind == "float":
        if not _FLOAT.fullmatch(text):
            raise ValueError(f"{text!r} is not a number")
        return float(text)
    raise ValueError(f"unknown column kind {kind!r}; expected one of {KINDS}")


_DTYPES = {"text": object, "int": "Int64", "float": "float64", "bool": bool}


def typed_frame(
    header: Sequence[str],
    records: Sequence[Record],
    schema: Mapping[str, str],
    locate: Callable[[int], str],
) -> pd.DataFrame:
    """A DataFrame of ``records`` with each schema column parsed as its kind.

    ``locate(line)`` says where a record is, for errors: ``"leaderboard x.csv, line 3"``.
    """
    columns: dict[str, pd.Series] = {}
    for j, name in enumerate(header):
        cells = [(line, cells[j]) for line, cells in records]
        kind = schema.get(name) or _extra_kind(cells)
        values = []
        for line, text in cells:
            try:
                values.append(parse_cell(kind, text))
            except ValueError as err:
                raise UserError(f"{locate(line)}, column {name!r}: {err}") from None
        columns[name] = pd.Series(values, dtype=_DTYPES[kind])
    return pd.DataFrame(columns, index=pd.RangeIndex(len(records)))


def _extra_kind(cells: Sequence[tuple[int, str]]) -> str:
    try:
        for _, text in cells:
            parse_cell("float", text)
    except ValueError:
        return "text"
    return "float"


def cell_text(value: Any) -> str:
    """How a Python value is written into a cell: missing -> "", numbers in their shortest
    round-trip form (``str`` of a float), everything else ``str``."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (np.integer, np.floating)):
        return str(value.item())
    return str(value)

"""Leaderboard rows as text: a rich table for people, csv / json / markdown for machines.

``render_table(df, columns=None, fmt="table")``:

- ``"table"``: a rich table at most 100 characters wide (``TABLE_COLUMNS`` by default, led by
  ``model`` when the rows are of several models, which widens the table by that column so that
  no other column wraps; short headers from ``HEADERS``, numbers
  right-aligned with 3 significant digits, missing values blank), coloured when ``color`` is
  true (default: when standard output is a terminal);
- ``"markdown"``: a pipe table padded so it also reads well in a terminal (4 significant
  digits; the table's default columns);
- ``"csv"`` / ``"json"`` (a list of objects, missing values null, infinities the text
  ``"inf"``): every column by default, numbers in full precision.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from c2f_attacks.evaluation.records import is_missing

FORMATS = ("table", "csv", "json", "markdown")
WIDTH = 100
#: what the table shows by default: enough to compare attacks at a glance, in 100 columns
TABLE_COLUMNS: tuple[str, ...] = (
    "attack", "stage", "protocol", "mask", "eps", "fooling_ratio", "fooling_ratio_lo",
    "fooling_ratio_hi", "linf_median", "l2_median", "object_share", "queries_per_image",
)  # fmt: skip
#: short table headers; the table's caption spells out the ones it shows
HEADERS: dict[str, str] = {
    "fooling_ratio": "FR", "fooling_ratio_lo": "lo", "fooling_ratio_hi": "hi",
    "success_rate": "SR", "linf_median": "Linf", "linf_mean": "Linf mean",
    "l2_median": "L2", "l2_mean": "L2 mean", "l0_mean": "L0 mean",
    "object_share": "object", "perturbation_in_relevance": "in-LRP",
    "relevance_shift": "LRP shift", "queries_per_image": "queries", "ms_per_image": "ms/img",
    "images_per_s": "img/s", "backend_fooling_ratio": "ort FR", "backend_agreement": "agree",
    "coarse_flip_share": "c-flip",
    "fr_fine_any": "FR any", "fr_fine_coarse_kept": "FR c-kept", "misclassified": "miscl",
    "clean_acc_coarse": "acc C", "clean_acc_fine": "acc F",
}  # fmt: skip


def _table_columns(df: pd.DataFrame) -> tuple[str, ...]:
    """The default columns of the table and markdown formats: ``TABLE_COLUMNS``, led by
    ``model`` when ``df`` holds rows of more than one model (else rows would look alike)."""
    several = "model" in df.columns and df["model"].nunique() > 1
    return ("model", *TABLE_COLUMNS) if several else TABLE_COLUMNS


def _frame(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def _number_text(value: Any, digits: int) -> str:
    """Floats with ``digits`` significant digits, whole ones at least (1234.5 -> "1234")."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return format(value, ".0f" if abs(value) >= 10**digits else f".{digits}g")
    return str(value)


def _cell(value: Any, digits: int) -> str:
    return "" if is_missing(value) else _number_text(value, digits)


def _numeric(df: pd.DataFrame, column: str) -> bool:
    return pd.api.types.is_numeric_dtype(df[column]) and not pd.api.types.is_bool_dtype(df[column])


def render_table(
    df: pd.DataFrame | Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    fmt: str = "table",
    *,
    color: bool | None = None,
) -> str:
    """``df`` (or a list of row mappings) as text in format ``fmt`` (module docstring). Columns
    not in ``df`` are skipped."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    df = _frame(df)
    extra = 0  # characters beyond WIDTH
    if columns is None:
        columns = df.columns if fmt in ("csv", "json") else _table_columns(df)
        if fmt == "table" and columns[0] == "model":  # added to the defaults: room of its own
            extra = 2 + int(df["model"].astype(str).str.len().max())
    cols = [c for c in columns if c in df.columns]
    view = df.loc[:, cols]
    if fmt == "csv":
        return view.to_csv(index=False)
    if fmt == "json":
        rows = view.itertuples(index=False)
        records = [{c: _json_value(v) for c, v in zip(cols, row)} for row in rows]
        return json.dumps(records, indent=1, allow_nan=False)
    if fmt == "markdown":
        return _markdown(view)
    return _rich(view, sys.stdout.isatty() if color is None else color, WIDTH + extra)


def _json_value(value: Any) -> Any:
    """Missing -> null; JSON has no infinity, so +-inf (a budget never reached) is the text
    "inf" / "-inf", as in the CSV."""
    if is_missing(value):
        return None
    value = value.item() if isinstance(value, np.generic) else value
    return str(value) if isinstance(value, float) and math.isinf(value) else value


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    numeric = [_numeric(df, c) for c in cols]
    body = [[_cell(v, 4).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
    widths = [max([len(c), 3, *(len(r[i]) for r in body)]) for i, c in enumerate(cols)]

    def line(cells: Sequence[str]) -> str:
        padded = (c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + ":" if num else "-" * (w + 2) for w, num in zip(widths, numeric)
    ) + "|"  # fmt: skip
    return "\n".join([line(cols), rule, *(line(r) for r in body)])


def _rich(df: pd.DataFrame, color: bool, max_width: int = WIDTH) -> str:
    legend = [f"{HEADERS[c]} = {c}" for c in df.columns if c in HEADERS]
    table = Table(
        box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False,
        show_edge=False, header_style="bold cyan" if color else None,
        caption="; ".join(legend) or None, caption_justify="left",
    )  # fmt: skip
    body = [[_cell(v, 3) for v in row] for row in df.itertuples(index=False)]
    for j, column in enumerate(df.columns):
        header = HEADERS.get(column, column)
        if _numeric(df, column):  # numbers never wrap: they keep their full width
            width = max([len(header), *(len(r[j]) for r in body)])
            table.add_column(header, justify="right", no_wrap=True, min_width=width)
        else:  # text wraps (nothing cut off) when the table would be wider than max_width
            style = "green" if column == "attack" else None
            table.add_column(header, style=style, overflow="fold")
    for cells in body:
        table.add_row(*cells)
    console = Console(
        file=io.StringIO(),
        width=max_width,
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        highlight=False,
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())

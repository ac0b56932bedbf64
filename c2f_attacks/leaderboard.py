"""The leaderboard: ``results/leaderboard.csv``, one row per (model, dataset, attack, stage,
config).

A run upserts its rows: a row whose key equals an existing row's key replaces it, every other row
is kept. The key is ``KEY`` = (model, dataset, attack, stage, norm, eps, steps, config). Key values
are compared in canonical form, so that a CSV round trip cannot split one configuration into two
rows: empty and NaN are the same (eps is empty for minimal-eps or unbounded runs), numbers compare
at 10 significant digits (``8/255`` read back from the CSV equals ``8/255``; ``10`` equals
``10.0``), strings compare stripped.

Writes hold a lock on ``<path>.lock`` for the whole read-merge-write, so two runs writing at once
lose nothing, and go through a temporary file that is renamed over the CSV, so a reader or a crash
never sees a half-written file. A CSV that exists but cannot be parsed is never overwritten.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from c2f_attacks._io import atomic_write

KEY: tuple[str, ...] = ("model", "dataset", "attack", "stage", "norm", "eps", "steps", "config")

COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "attack",
    "stage",
    "norm",
    "eps",
    "steps",
    "n",
    "clean_acc_coarse",
    "clean_acc_fine",
    "fooling_ratio",
    "success_rate",
    "linf_mean",
    "linf_median",
    "l2_mean",
    "l0_mean",
    "relevance_shift",
    "perturbation_in_relevance",
    "object_share",
    "queries_per_image",
    "ms_per_image",
    "images_per_s",
    "eval_backend",
    "backend_agreement",
    "device",
    "seed",
    "git_commit",
    "timestamp",
    "python_version",
    "torch_version",
    "torchvision_version",
    "onnxruntime_version",
    "onnxruntime_package",
    "c2f_attacks_version",
    "config",
)

# Key columns that hold numbers; the rest of the key is text.
_NUMERIC_KEY = ("eps", "steps")
# Columns that are whole numbers: written as "10", not "10.0", even when some rows leave them empty.
_INT_COLUMNS = ("steps", "n", "seed")
# Read as text whatever they look like, so that a model called "1" or a commit "1234567" stays
# text and keys compare as written.
_TEXT_COLUMNS = (
    "model",
    "dataset",
    "attack",
    "stage",
    "norm",
    "config",
    "eval_backend",
    "device",
    "git_commit",
    "timestamp",
    "python_version",
    "torch_version",
    "torchvision_version",
    "onnxruntime_version",
    "onnxruntime_package",
    "c2f_attacks_version",
)
# Only an empty field is missing: pandas' default would also read "NA", "None" or "null" as NaN.
_NA = [""]
_SORT = ("model", "dataset", "attack", "stage", "norm", "eps", "steps", "config")
_REQUIRED = ("model", "dataset", "attack", "stage")


def _is_missing(value: Any) -> bool:
    """None, NaN, pd.NA and blank strings are all "no value"."""
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # containers: a value, not a missing one
        return False


def _canon_number(value: Any, column: str) -> str:
    if _is_missing(value):
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"leaderboard key column {column!r} must be a number, got {value!r}"
        ) from None
    if math.isnan(number):
        return ""
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return format(number, ".10g")


def _canon_text(value: Any) -> str:
    return "" if _is_missing(value) else str(value).strip()


def canonical_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The row's key as a tuple of canonical strings (see the module docstring)."""
    return tuple(
        _canon_number(row.get(c), c) if c in _NUMERIC_KEY else _canon_text(row.get(c)) for c in KEY
    )


def config_string(**settings: Any) -> str:
    """Canonical ``config`` value: ``"alpha=0.007843;mode=fixed;random_start=1"``.

    Keys are sorted so the same settings always give the same string; floats keep 4 significant
    digits (enough to tell configurations apart, short enough to read); booleans are 1/0.
    """
    parts = []
    for name in sorted(settings):
        value = settings[name]
        if isinstance(value, bool):
            text = str(int(value))
        elif isinstance(value, float):
            text = format(value, ".4g")
        else:
            text = str(value)
        if any(ch in name + text for ch in ";="):
            raise ValueError(f"config setting {name}={text!r} must not contain ';' or '='")
        parts.append(f"{name}={text}")
    return ";".join(parts)


def _order_columns(df: pd.DataFrame) -> pd.DataFrame:
    """COLUMNS first, then unknown columns in their order in ``df``; missing ones are NaN."""
    extras = [c for c in df.columns if c not in COLUMNS]
    return df.reindex(columns=[*COLUMNS, *extras])


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    df = _order_columns(df).reset_index(drop=True)
    for col in _INT_COLUMNS:
        values = pd.to_numeric(df[col], errors="coerce")
        whole = values.dropna()
        if (whole == whole.round()).all():
            df[col] = values.astype("Int64")
    for col in _NUMERIC_KEY:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    keys = [canonical_key(row) for row in df.to_dict("records")]
    sort_frame = pd.DataFrame(
        {c: (df[c] if c in _NUMERIC_KEY else [k[KEY.index(c)] for k in keys]) for c in _SORT}
    )
    # A multi-column sort is a lexsort, which is stable: rows that tie keep their order.
    order = sort_frame.sort_values(list(_SORT), na_position="first").index
    return df.loc[order].reset_index(drop=True)


def _empty() -> pd.DataFrame:
    return _normalize(pd.DataFrame(columns=list(COLUMNS)))


def read_leaderboard(path: str | os.PathLike) -> pd.DataFrame:
    """The leaderboard at ``path`` (all COLUMNS, then any extra ones); empty if it does not exist.

    Raises ValueError naming the file if it exists but is not a leaderboard CSV.
    """
    path = Path(path)
    if not path.exists():
        return _empty()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"leaderboard {path} cannot be read: {err}") from err
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise ValueError(f"leaderboard {path} is not valid CSV: {err}") from err
    if not records or not records[0]:
        raise ValueError(f"leaderboard {path} is empty (no header row)")
    header = records[0]
    missing = [c for c in KEY if c not in header]
    if missing:
        raise ValueError(f"leaderboard {path} lacks the key columns {missing}")
    # pandas fills short rows with NaN silently; a row with the wrong field count means the file
    # was cut or edited by hand, and rewriting it would make the damage permanent.
    for lineno, record in enumerate(records[1:], start=2):
        if len(record) != len(header):
            raise ValueError(
                f"leaderboard {path}: record {lineno} has {len(record)} fields, "
                f"the header has {len(header)}"
            )
    try:
        df = pd.read_csv(
            io.StringIO(text),
            dtype={c: str for c in _TEXT_COLUMNS if c in header},
            keep_default_na=False,
            na_values=_NA,
        )
        return _normalize(df)
    except (ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"leaderboard {path} cannot be parsed: {err}") from err


def _rows_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    for i, row in enumerate(rows):
        absent = [c for c in _REQUIRED if _is_missing(row.get(c))]
        if absent:
            raise ValueError(f"leaderboard row {i} has no value for {absent}")
        canonical_key(row)  # raises on a non-numeric eps/steps before anything is written
    return pd.DataFrame([dict(r) for r in rows])


def upsert_rows(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], timeout: float = 60.0
) -> pd.DataFrame:
    """Insert ``rows`` into the leaderboard at ``path``, replacing rows with the same key.

    Unknown columns in ``rows`` are kept, missing ones are left empty. Among ``rows`` themselves
    the last row with a key wins. Returns the leaderboard as written. Raises ValueError (and
    writes nothing) if the existing file is not a leaderboard CSV, and filelock.Timeout if another
    writer holds the lock for longer than ``timeout`` seconds.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = _rows_frame(rows)
    with FileLock(f"{path}.lock", timeout=timeout):
        old = read_leaderboard(path)
        new_keys = [canonical_key(r) for r in new.to_dict("records")]
        last = [k not in new_keys[i + 1 :] for i, k in enumerate(new_keys)]
        replaced = set(new_keys)
        kept = old[[canonical_key(r) not in replaced for r in old.to_dict("records")]]
        # Concatenating object columns keeps every value as written, whatever the dtypes, and
        # avoids pandas' warning about all-NaN columns deciding the result dtype. Old extra
        # columns come before new ones: concat keeps the order of first appearance.
        merged = pd.concat(
            [_order_columns(kept).astype(object), _order_columns(new[last]).astype(object)],
            ignore_index=True,
        )
        merged = _normalize(merged.infer_objects())
        atomic_write(path, lambda tmp: merged.to_csv(tmp, index=False))
    return merged


def _version(*distributions: str) -> tuple[str, str]:
    """(version, distribution) of the first installed distribution, or ("", "")."""
    for name in distributions:
        try:
            return metadata.version(name), name
        except metadata.PackageNotFoundError:
            continue
    return "", ""


def _git_commit() -> str:
    # Asked from the package's own folder: the commit of the library that produced the numbers,
    # not of whatever repository the user happens to run from.
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


def _device_name(device: str | None) -> str:
    import torch  # only here: reading and printing the leaderboard need no torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return dev.type


def environment_columns(device: str | None = None) -> dict[str, str]:
    """Columns that say where and with what a row was produced.

    ``device`` is the torch device the run used (default: cuda when available, else cpu); CUDA
    devices are recorded with their name, e.g. ``"cuda (NVIDIA H100 80GB HBM3)"``.
    """
    ort_version, ort_package = _version("onnxruntime", "onnxruntime-gpu")
    return {
        "device": _device_name(device),
        "git_commit": _git_commit(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python_version": platform.python_version(),
        "torch_version": _version("torch")[0],
        "torchvision_version": _version("torchvision")[0],
        "onnxruntime_version": ort_version,
        "onnxruntime_package": ort_package,
        "c2f_attacks_version": _version("c2f-attacks")[0],
    }


# What format_table shows by default: enough to compare attacks at a glance.
TABLE_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "attack",
    "stage",
    "eps",
    "n",
    "fooling_ratio",
    "success_rate",
    "linf_mean",
    "l2_mean",
    "l0_mean",
    "relevance_shift",
    "queries_per_image",
    "ms_per_image",
    "eval_backend",
)


def _cell(value: Any) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, float):
        return format(value, ".4g")
    return str(value).replace("|", "\\|")


def format_table(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A Markdown pipe table of ``df`` that also reads well in a terminal (columns padded).

    ``columns`` defaults to TABLE_COLUMNS (those present in ``df``); floats show 4 significant
    digits, numbers are right-aligned, missing values are blank.
    """
    cols = [c for c in (columns if columns is not None else TABLE_COLUMNS) if c in df.columns]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in cols]
    body = [[_cell(v) for v in row] for row in df[cols].itertuples(index=False)]
    widths = [max([len(c), 3, *(len(r[i]) for r in body)]) for i, c in enumerate(cols)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(cells, widths, numeric)
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 1) + ":" if num else "-" * (w + 2) for w, num in zip(widths, numeric))
        + "|"
    )
    return "\n".join([line(cols), rule, *(line(r) for r in body)])

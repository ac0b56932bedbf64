"""``budget_curves.csv`` beside a leaderboard: FR(b) of every row at the budgets of a grid.

Columns :data:`~c2f_attacks.evaluation.budget.CURVE_COLUMNS` (``row_id, norm, budget,
fooling_ratio, fooling_ratio_lo, fooling_ratio_hi``), one block per leaderboard row, computed
from the row's records by :func:`~c2f_attacks.evaluation.budget.budget_curves`. A run replaces
the blocks of its own rows and keeps the others (as the leaderboard upserts its rows), under
``budget_curves.csv.lock``, written atomically; the file is read strictly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from filelock import FileLock

from c2f_attacks._io import atomic_write_text
from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.budget import CURVE_COLUMNS
from c2f_attacks.evaluation.typed_csv import read_records, typed_frame

SCHEMA = {c: "text" if c in ("row_id", "norm") else "float" for c in CURVE_COLUMNS}


def read_budget_curves(path: str | os.PathLike) -> pd.DataFrame:
    """The curves at ``path`` (an empty frame when there is none); ValueError naming the file,
    line and column for a bad cell, a missing column or a budget or ratio out of range."""
    path = Path(path)
    if not path.exists():
        return typed_frame(CURVE_COLUMNS, [], SCHEMA, str)
    header, rows = read_records(path, "budget curves")
    if tuple(header) != CURVE_COLUMNS:
        raise UserError(f"budget curves {path}, line 1: the header is not "
                         f"{','.join(CURVE_COLUMNS)}")  # fmt: skip
    frame = typed_frame(header, rows, SCHEMA, lambda line: f"budget curves {path}, line {line}")
    for (line, _), row in zip(rows, frame.itertuples(index=False)):
        if not (math.isfinite(row.budget) and row.budget >= 0 and 0 <= row.fooling_ratio <= 1):
            raise UserError(f"budget curves {path}, line {line}: budget {row.budget!r} or "
                             f"fooling_ratio {row.fooling_ratio!r} out of range")  # fmt: skip
    return frame


def upsert_budget_curves(path: str | os.PathLike, curves: pd.DataFrame) -> pd.DataFrame:
    """Replace the blocks of the row_ids in ``curves`` (keeping every other row's) and write
    the file; return what was written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        old = read_budget_curves(path)
        kept = old[~old["row_id"].isin(set(curves["row_id"]))]
        frame = pd.concat([kept, curves.loc[:, list(CURVE_COLUMNS)]], ignore_index=True)
        frame = frame.sort_values(["row_id", "norm", "budget"], kind="stable")
        atomic_write_text(path, frame.to_csv(index=False, float_format=None, lineterminator="\n"))
    return frame.reset_index(drop=True)

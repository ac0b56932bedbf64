"""The files of a results folder, read strictly once each, before anything is rendered.

A results folder holds *runs*: the folder itself and any subfolder with a ``leaderboard.csv``
(``c2f-bench run --out``), each with its per-image ``records/``, and optionally
``budget_curves.csv``, ``transfer.csv`` and ``figures/``; beside them, study files (JSON, CSV)
that single findings sections read. :class:`Results` finds them, reads each at most once and
refuses a damaged one with a ValueError naming the file (and line and column where the reader
knows them), so that the report writes nothing from a folder it cannot read whole.

Paths in the report are shown as the folder was named on the command line plus the file's
path inside it (``results/n256/leaderboard.csv``), with ``/`` separators on every system.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.records import load_records
from c2f_attacks.evaluation.transfer import TRANSFER_KEY
from c2f_attacks.evaluation.typed_csv import read_records, typed_frame
from c2f_attacks.leaderboard import read_leaderboard
from c2f_attacks.report.tables import target_of, with_labels

#: the columns of ``budget_curves.csv`` (one row per leaderboard row, norm and budget)
BUDGET_CURVE_SCHEMA: dict[str, str] = {
    "row_id": "text", "norm": "text", "budget": "float", "fooling_ratio": "float",
    "fooling_ratio_lo": "float", "fooling_ratio_hi": "float",
}  # fmt: skip


def read_table(path: Path, what: str, schema: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A CSV file read strictly (typed_csv's rules); ``schema`` names required columns and their
    kinds, other columns are kept with the kind their cells have."""
    schema = dict(schema or {})
    header, rows = read_records(path, what)
    missing = [c for c in schema if c not in header]
    if missing:
        raise UserError(f"{what} {path}, line 1: no column {missing[0]!r}")
    return typed_frame(header, rows, schema, lambda line: f"{what} {path}, line {line}")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path} cannot be read: {err}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None


@dataclass
class Run:
    """One ``c2f-bench run`` output folder inside the results folder."""

    folder: Path
    name: str  #: path inside the results folder, "" for the folder itself
    leaderboard: pd.DataFrame
    records: pd.DataFrame
    budget_curves: pd.DataFrame | None = None
    transfer: pd.DataFrame | None = None
    shown: str = ""  #: how the report names the folder ("results/n256")

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """The leaderboard's rows as dicts (in file order)."""
        return self.leaderboard.to_dict("records")

    @cached_property
    def transfer_rows(self) -> list[dict[str, Any]]:
        """The transfer table's rows as dicts; empty without a transfer.csv."""
        return [] if self.transfer is None else self.transfer.to_dict("records")

    def records_of(self, row_id: str) -> pd.DataFrame:
        return self.records[self.records["row_id"] == row_id]

    def figure(self, row: Mapping[str, Any]) -> Path | None:
        """The attack figure ``c2f-bench run`` drew for a leaderboard row, if it is there."""
        from c2f_attacks.runner.execute import figure_folder, file_name

        parts = [row["attack"], row["stage"], str(row["protocol"])]
        if row["mask"] != "none":
            parts.append(row["mask"])
        if (target := target_of(row)) != "none":  # a targeted row's figure, not its twin's
            parts.append(f"target={target}")
        path = (
            figure_folder(self.folder, row["model"]) / f"{file_name('/'.join(map(str, parts)))}.png"
        )
        return path if path.is_file() else None

    @property
    def images(self) -> int:
        """The largest number of images of any row (the run's size)."""
        return int(self.leaderboard["n"].max())


def _check_records(run: Run, board_path: Path, shown: str) -> None:
    have = set(run.records["row_id"])
    for i, rid in enumerate(run.leaderboard["row_id"]):
        if rid not in have:
            raise UserError(
                f"leaderboard {shown}, line {i + 2}: row {rid} has no records file "
                f"({shown.rsplit('/', 1)[0]}/records/{rid}.csv.gz); rerun it or remove the row"
            )


@dataclass
class Results:
    """A results folder; ``shown`` is how paths inside it are printed."""

    root: Path
    shown: str
    _json: dict[Path, Any] = field(default_factory=dict, repr=False)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, root: str | os.PathLike) -> Results:
        """The results folder at ``root``, every run in it read and checked."""
        path = Path(root)
        if not path.is_dir():
            raise UserError(f"results folder {root} does not exist or is not a folder")
        shown = PurePosixPath(*Path(os.path.normpath(root)).parts).as_posix()
        results = cls(path, shown)
        if not results.runs:
            raise UserError(
                f"{results.show(path / 'leaderboard.csv')} does not exist (nor a leaderboard.csv "
                f"in a subfolder): run `c2f-bench run --out {shown}` first"
            )
        return results

    def show(self, path: Path) -> str:
        """``path`` as the report prints it."""
        inside = PurePosixPath(*path.relative_to(self.root).parts)
        return (PurePosixPath(self.shown) / inside).as_posix()

    def glob(self, pattern: str) -> list[Path]:
        """Files matching ``pattern`` inside the folder, hidden folders skipped, sorted with
        the folder's own files before its subfolders'."""
        found = [
            p for p in self.root.glob(pattern)
            if p.is_file() and not any(part.startswith(".") for part in
                                       p.relative_to(self.root).parts)
        ]  # fmt: skip
        return sorted(found, key=lambda p: (len(p.relative_to(self.root).parts), p.as_posix()))

    def json(self, path: Path) -> Any:
        if path not in self._json:
            self._json[path] = read_json(path)
        return self._json[path]

    def memo(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per folder (the findings and the page share it)."""
        if name not in self._memo:
            self._memo[name] = compute()
        return self._memo[name]

    @cached_property
    def runs(self) -> list[Run]:
        return [self._read_run(p.parent) for p in self.glob("**/leaderboard.csv")]

    def _read_run(self, folder: Path) -> Run:
        board_path = folder / "leaderboard.csv"
        shown = self.show(board_path)
        board = with_labels(read_leaderboard(board_path))
        if not len(board):
            raise UserError(f"leaderboard {shown} has no rows")
        name = PurePosixPath(*folder.relative_to(self.root).parts).as_posix()
        run = Run(folder, "" if name == "." else name, board, load_records(folder),
                  shown=self.show(folder) if folder != self.root else self.shown)  # fmt: skip
        _check_records(run, board_path, shown)
        curves = folder / "budget_curves.csv"
        if curves.is_file():
            run.budget_curves = _read_curves(curves, self.show(curves), set(board["row_id"]))
        transfer = folder / "transfer.csv"
        if transfer.is_file():
            run.transfer = with_labels(read_leaderboard(transfer, key=TRANSFER_KEY))
        return run


def _read_curves(path: Path, shown: str, row_ids: set[str]) -> pd.DataFrame:
    frame = read_table(path, "budget curves", BUDGET_CURVE_SCHEMA)
    for i, row in enumerate(frame.itertuples(index=False)):
        where = f"budget curves {shown}, line {i + 2}"
        if row.row_id not in row_ids:
            raise UserError(f"{where}: row_id {row.row_id!r} is not a row of the leaderboard")
        if not (math.isfinite(row.budget) and 0 <= row.fooling_ratio <= 1):
            raise UserError(f"{where}: budget {row.budget!r} or fooling_ratio "
                             f"{row.fooling_ratio!r} out of range")  # fmt: skip
    return frame

"""Readable class names for per-image records, kept beside them.

Records hold class indices (the model's global fine and coarse indices), which every aggregate
needs and which stay exact. A run also writes its model's classes once, to
``<out>/records/classes-<model_hash>.csv``::

    fine_index,fine,fine_name,coarse_index,coarse,coarse_name
    0,n02123159,tiger cat,0,feline,feline

``fine`` and ``coarse`` are the hierarchy's own names (ImageNet synset ids stay ids: they match
the folders and the data); ``*_name`` are the words people read
(:func:`c2f_attacks.hierarchies.readable_name`). :func:`name_records` joins them onto loaded
records as extra columns, so ``load_records(out)`` and its schema are unchanged.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pandas as pd

from c2f_attacks._io import atomic_write_text
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchies import readable_name
from c2f_attacks.hierarchy import Hierarchy

CLASS_COLUMNS = ("fine_index", "fine", "fine_name", "coarse_index", "coarse", "coarse_name")
#: record column -> the class-table columns that name it (index column, name column)
NAMED_COLUMNS: dict[str, tuple[str, str]] = {
    "y_fine": ("fine_index", "fine_name"), "clean_fine": ("fine_index", "fine_name"),
    "adv_fine": ("fine_index", "fine_name"), "y_coarse": ("coarse_index", "coarse_name"),
    "clean_coarse": ("coarse_index", "coarse_name"), "adv_coarse": ("coarse_index", "coarse_name"),
}  # fmt: skip


def classes_path(out_dir: str | os.PathLike, model_hash: str) -> Path:
    return Path(out_dir) / "records" / f"classes-{model_hash}.csv"


def class_table(hierarchy: Hierarchy) -> pd.DataFrame:
    """One row per fine class (in global index order) with its coarse class, ids and words."""
    coarse_of = hierarchy.fine_to_coarse.tolist()
    return pd.DataFrame(
        [(i, fine, readable_name(fine), c, hierarchy.coarse_names[c],
          readable_name(hierarchy.coarse_names[c]))
         for i, (fine, c) in enumerate(zip(hierarchy.fine_names, coarse_of))],
        columns=list(CLASS_COLUMNS),
    )  # fmt: skip


def write_class_names(out_dir: str | os.PathLike, model_hash: str, hierarchy: Hierarchy) -> Path:
    """Write ``hierarchy``'s class table for the records of ``model_hash`` (atomic; the same
    hierarchy gives the same bytes)."""
    text = io.StringIO()
    class_table(hierarchy).to_csv(text, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return atomic_write_text(classes_path(out_dir, model_hash), text.getvalue())


def read_class_names(out_dir: str | os.PathLike, model_hash: str) -> pd.DataFrame:
    """The class table of ``model_hash`` under ``out_dir``; an error naming the file if it is
    missing or not a class table."""
    path = classes_path(out_dir, model_hash)
    if not path.is_file():
        raise FileNotFoundError(f"no class names for model {model_hash} in {out_dir}: {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(table.columns) != CLASS_COLUMNS:
        raise UserError(f"{path}, line 1: expected the header {','.join(CLASS_COLUMNS)}")
    for column in ("fine_index", "coarse_index"):
        if not table[column].str.fullmatch(r"\d+").all():
            bad = int((~table[column].str.fullmatch(r"\d+")).to_numpy().argmax())
            raise UserError(f"{path}, line {bad + 2}, column {column!r}: not an index")
        table[column] = table[column].astype("int64")
    return table


def name_records(records: pd.DataFrame, out_dir: str | os.PathLike) -> pd.DataFrame:
    """``records`` (from ``load_records(out_dir)``) with ``<column>_name`` beside each class
    column (``y_fine_name``, ``adv_coarse_name``, ...): the words of that class, from the class
    table of each row's model; "" where the index is -1 (unavailable)."""
    named = records.copy()
    for column in NAMED_COLUMNS:
        named[f"{column}_name"] = ""
    for model_hash, rows in records.groupby("model_hash", sort=False):
        table = read_class_names(out_dir, str(model_hash))
        for column, (index_column, name_column) in NAMED_COLUMNS.items():
            words = dict(zip(table[index_column], table[name_column]))
            indices = rows[column].astype("int64")
            unknown = sorted(set(indices) - set(words) - {-1})
            if unknown:
                raise UserError(
                    f"records of model {model_hash}: {column} {unknown[0]} is not a class in "
                    f"{classes_path(out_dir, str(model_hash))}"
                )
            named.loc[rows.index, f"{column}_name"] = indices.map(words).fillna("").to_numpy()
    return named

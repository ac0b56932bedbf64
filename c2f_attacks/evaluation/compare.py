"""Paired comparison of two leaderboard rows of one run, image by image.

Both rows' records are joined on the image ``index``; only images both rows attacked count,
and they must have the same clean predictions (the same model and images), else the rows are
not comparable. For each metric the table gives the value of row a, of row b, the difference
a - b, its paired-bootstrap 95% interval (the same resampled images for both rows) and the
number of images it rests on:

- ``fooling_ratio``: over all shared images;
- ``linf_median``, ``l2_median``: medians over the images both rows fooled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from c2f_attacks.evaluation.records import check_records
from c2f_attacks.evaluation.stats import nanmedian, paired_bootstrap

LEVEL = 0.95


def _one_row(records: pd.DataFrame, name: str) -> pd.DataFrame:
    check_records(records)
    if "row_id" in records.columns and records["row_id"].nunique() > 1:
        raise ValueError(
            f"{name} holds the records of {records['row_id'].nunique()} rows; pass one"
        )
    duplicated = records["index"][records["index"].duplicated()]
    if len(duplicated):
        raise ValueError(f"{name} has image index {int(duplicated.iloc[0])} more than once")
    return records.set_index("index")


def compare_records(
    records_a: pd.DataFrame, records_b: pd.DataFrame, seed: int = 0, n_boot: int = 1000
) -> pd.DataFrame:
    """Paired differences a - b (module docstring). Columns ``metric, a, b, difference, lo, hi,
    n_images``; one row each for fooling_ratio, linf_median, l2_median."""
    a = _one_row(records_a, "records_a")
    b = _one_row(records_b, "records_b")
    shared = a.index.intersection(b.index).sort_values()
    if not len(shared):
        raise ValueError("the two rows share no image index: they attacked different images")
    a, b = a.loc[shared], b.loc[shared]
    for column in ("clean_coarse", "clean_fine"):
        differ = a[column].to_numpy() != b[column].to_numpy()
        if differ.any():
            raise ValueError(
                f"the rows disagree on {column} for {int(differ.sum())} of {len(shared)} shared "
                f"images (first index {int(shared[differ.argmax()])}): not the same model or images"
            )
    success_a = a["success"].to_numpy(dtype=float)
    success_b = b["success"].to_numpy(dtype=float)
    both = (success_a > 0) & (success_b > 0)
    lo, hi = paired_bootstrap(success_a, success_b, np.mean, n_boot, LEVEL, seed)
    rows = [("fooling_ratio", success_a.mean(), success_b.mean(), lo, hi, len(shared))]
    for norm in ("linf", "l2"):
        va = np.where(both, a[norm].to_numpy(dtype=float), np.nan)
        vb = np.where(both, b[norm].to_numpy(dtype=float), np.nan)
        med_a, med_b = (float(np.median(v[both])) if both.any() else np.nan for v in (va, vb))
        lo, hi = paired_bootstrap(va, vb, nanmedian, n_boot, LEVEL, seed)
        rows.append((f"{norm}_median", med_a, med_b, lo, hi, int(both.sum())))
    table = pd.DataFrame(rows, columns=["metric", "a", "b", "lo", "hi", "n_images"])
    table.insert(3, "difference", table["a"] - table["b"])
    return table

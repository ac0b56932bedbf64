"""One leaderboard row's metrics, computed from its per-image records only.

Everything here is a function of the records frame, so every aggregate on the leaderboard can be
recomputed from the saved records. For N images (records rows):

- ``n`` = N; ``clean_acc_coarse`` / ``clean_acc_fine``: share of images whose clean coarse /
  fine prediction equals the label (a flat model: ``clean_acc_fine`` is its accuracy and
  ``clean_acc_coarse`` is NaN).
- ``fooling_ratio`` = #success / N with its 95% bootstrap interval ``fooling_ratio_lo/_hi``;
  ``success_rate`` = the same over the images classified correctly; ``misclassified`` = the
  number of images whose clean stage prediction was already wrong (never counted as fooled).
- Both fine-stage rules on every C2F row: ``fr_fine_any`` = #fine_flipped / N,
  ``fr_fine_coarse_kept`` = #fine_flipped_coarse_kept / N, ``coarse_flip_share`` = share of the
  fooled images whose coarse prediction flipped (NaN on flat models).
- Over the fooled images: ``linf_mean``, ``linf_median`` (with bootstrap interval), ``l2_mean``,
  ``l2_median`` (with interval), ``l0_mean``, and the means of ``relevance_shift``,
  ``perturbation_in_relevance`` (circular for LRP masks: see :mod:`.metrics`) and
  ``object_share`` (the headline explanation metric).
- ``<norm>_at_fr50`` / ``<norm>_at_fr90``: the smallest budget with FR(b) >= 50% / 90%
  (:mod:`.budget`); NaN when never reached.
- ``queries_per_image``: mean queries over all N images (NaN if any image has none recorded).

Statistics over an empty set are NaN. Medians are the usual ones (the mean of the two middle
values for an even count). The intervals resample images (:mod:`.stats`, seeded).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from c2f_attacks.evaluation.budget import NORMS, budget_at
from c2f_attacks.evaluation.records import check_records
from c2f_attacks.evaluation.stats import bootstrap_ci, nanmedian

METRIC_COLUMNS: tuple[str, ...] = (
    "n", "clean_acc_coarse", "clean_acc_fine", "fooling_ratio", "fooling_ratio_lo",
    "fooling_ratio_hi", "success_rate", "fr_fine_any", "fr_fine_coarse_kept",
    "coarse_flip_share", "misclassified", "linf_mean", "linf_median", "linf_median_lo",
    "linf_median_hi", "l2_mean", "l2_median", "l2_median_lo", "l2_median_hi", "l0_mean",
    "linf_at_fr50", "linf_at_fr90", "l2_at_fr50", "l2_at_fr90", "l0_at_fr50", "l0_at_fr90",
    "relevance_shift", "perturbation_in_relevance", "object_share", "queries_per_image",
)  # fmt: skip
#: metric columns that count images (whole numbers); the others are floats
COUNT_COLUMNS: tuple[str, ...] = ("n", "misclassified")
LEVEL = 0.95


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else float("nan")


def aggregate(records: pd.DataFrame, *, seed: int = 0, n_boot: int = 1000) -> dict[str, float]:
    """Every metric column of one leaderboard row from its records (module docstring)."""
    check_records(records)
    if "row_id" in records.columns and records["row_id"].nunique() > 1:
        raise ValueError(
            f"records hold {records['row_id'].nunique()} leaderboard rows; aggregate one row_id "
            "at a time"
        )
    col = {c: records[c].to_numpy() for c in records.columns}
    success = col["success"].astype(bool)
    n = len(records)
    c2f = n > 0 and bool((col["y_coarse"] >= 0).all())
    out: dict[str, float] = {
        "n": n,
        "clean_acc_coarse": _mean(col["clean_coarse"] == col["y_coarse"]) if c2f else np.nan,
        "clean_acc_fine": _mean(col["clean_fine"] == col["y_fine"]),
        "fooling_ratio": _mean(success),
    }
    out["fooling_ratio_lo"], out["fooling_ratio_hi"] = bootstrap_ci(
        success, np.mean, n_boot, LEVEL, seed
    )
    out["success_rate"] = _mean(success[col["correct"].astype(bool)])
    out["fr_fine_any"] = _mean(col["fine_flipped"]) if c2f else np.nan
    out["fr_fine_coarse_kept"] = _mean(col["fine_flipped_coarse_kept"]) if c2f else np.nan
    out["coarse_flip_share"] = _mean(col["coarse_flipped"][success]) if c2f else np.nan
    out["misclassified"] = int(col["misclassified"].sum())
    for norm in ("linf", "l2", "l0"):
        values = col[norm].astype(np.float64)
        out[f"{norm}_mean"] = _mean(values[success])
        if norm != "l0":
            out[f"{norm}_median"] = _median(values[success])
            out[f"{norm}_median_lo"], out[f"{norm}_median_hi"] = bootstrap_ci(
                np.where(success, values, np.nan), nanmedian, n_boot, LEVEL, seed
            )
    for norm in NORMS:
        for percent in (50, 90):
            out[f"{norm}_at_fr{percent}"] = budget_at(records, norm, percent / 100)
    for name in ("relevance_shift", "perturbation_in_relevance", "object_share"):
        out[name] = _mean(col[name].astype(np.float64)[success])
    queries = col["queries"]
    out["queries_per_image"] = _mean(queries) if (queries >= 0).all() else np.nan
    return {name: out[name] for name in METRIC_COLUMNS}

"""One leaderboard row's metrics, computed from its per-image records only.

Everything here is a deterministic function of the records frame, so every aggregate on the
leaderboard can be recomputed exactly from the saved records. For N images (records rows):

- ``n`` = N; ``clean_acc_coarse`` / ``clean_acc_fine``: share of images whose clean coarse /
  fine prediction equals the label (a flat model: ``clean_acc_fine`` is its accuracy and
  ``clean_acc_coarse`` is NaN).
- Shares, each with its exact 95% Clopper-Pearson interval ``<share>_lo/_hi``
  (:func:`.exact.share_interval`): ``fooling_ratio`` = #success / N; ``success_rate`` = the
  same over the images classified correctly; on every C2F row both fine-stage rules,
  ``fr_fine_any`` = #fine_flipped / N and ``fr_fine_coarse_kept`` = #fine_flipped_coarse_kept / N.
- ``misclassified`` = the number of images whose clean stage prediction was already wrong (never
  counted as fooled); ``coarse_flip_share`` = share of the fooled images whose coarse prediction
  flipped (NaN on flat models).
- Censored budgets over all N images (:mod:`.budget`: a failure's budget is +inf, never
  dropped): ``linf_median``, ``l2_median`` = the budget at FR 50% (+inf when FR < 50%) with its
  distribution-free 95% interval ``_lo/_hi``; ``<norm>_at_fr50`` / ``<norm>_at_fr90`` = the
  smallest budget with FR(b) >= 50% / 90% (+inf when never reached; ``<norm>_at_fr50`` equals
  ``<norm>_median``).
- Over the fooled images only: ``linf_mean``, ``l2_mean``, ``l0_mean``, and the means of
  ``relevance_shift``, ``perturbation_in_relevance`` (circular for LRP masks: see
  :mod:`.metrics`) and ``object_share`` (the headline explanation metric).
- ``queries_per_image``: mean queries over all N images (NaN if any image has none recorded).
- Mistake severity over the fooled images (:mod:`.severity`, :data:`SEVERITY_COLUMNS`):
  ``mistake_severity``, the mean of the records' ``severity``, with its percentile bootstrap
  interval ``mistake_severity_lo/_hi`` (seeded: the same records give the same interval), and
  ``severity_counts``, the fooled images per height as text (``"1:12 2:30"``); NaN and empty
  where the records have no severities (flat models, records written before the column).

Statistics over an empty set are NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from c2f_attacks.evaluation.budget import NORMS, budget_at, censored_median
from c2f_attacks.evaluation.exact import share_interval
from c2f_attacks.evaluation.records import check_records
from c2f_attacks.evaluation.severity import SEVERITY_COLUMNS, severity_metrics

METRIC_COLUMNS: tuple[str, ...] = (
    "n", "clean_acc_coarse", "clean_acc_fine", "fooling_ratio", "fooling_ratio_lo",
    "fooling_ratio_hi", "success_rate", "success_rate_lo", "success_rate_hi", "fr_fine_any",
    "fr_fine_any_lo", "fr_fine_any_hi", "fr_fine_coarse_kept", "fr_fine_coarse_kept_lo",
    "fr_fine_coarse_kept_hi", "coarse_flip_share", "misclassified", "linf_mean", "linf_median",
    "linf_median_lo", "linf_median_hi", "l2_mean", "l2_median", "l2_median_lo", "l2_median_hi",
    "l0_mean", "linf_at_fr50", "linf_at_fr90", "l2_at_fr50", "l2_at_fr90", "l0_at_fr50",
    "l0_at_fr90", "relevance_shift", "perturbation_in_relevance", "object_share",
    "queries_per_image", *SEVERITY_COLUMNS,
)  # fmt: skip
#: metric columns that count images (whole numbers)
COUNT_COLUMNS: tuple[str, ...] = ("n", "misclassified")
#: metric columns that hold text (``severity_counts``); the others are floats
TEXT_COLUMNS: tuple[str, ...] = ("severity_counts",)
#: the fine-stage success rules reported on every C2F row, and the record flag each counts
_FINE_RULES = {"fr_fine_any": "fine_flipped", "fr_fine_coarse_kept": "fine_flipped_coarse_kept"}


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def _share(name: str, flags: np.ndarray) -> dict[str, float]:
    """``name`` = the share of true ``flags``, with its exact interval ``name_lo/_hi``."""
    k, n = int(flags.sum()), flags.size
    lo, hi = share_interval(k, n)
    return {name: k / n if n else float("nan"), f"{name}_lo": lo, f"{name}_hi": hi}


def _no_share(name: str) -> dict[str, float]:
    return dict.fromkeys((name, f"{name}_lo", f"{name}_hi"), float("nan"))


def aggregate(records: pd.DataFrame) -> dict[str, float]:
    """Every metric column of one leaderboard row from its records (module docstring); nothing
    here is random (the one resampled interval, ``mistake_severity``'s, has a fixed seed)."""
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
    }
    out |= _share("fooling_ratio", success)
    out |= _share("success_rate", success[col["correct"].astype(bool)])
    for rule, flags in _FINE_RULES.items():
        out |= _share(rule, col[flags].astype(bool)) if c2f else _no_share(rule)
    out["coarse_flip_share"] = _mean(col["coarse_flipped"][success]) if c2f else np.nan
    out["misclassified"] = int(col["misclassified"].sum())
    for norm in NORMS:
        out[f"{norm}_mean"] = _mean(col[norm].astype(np.float64)[success])
        if norm != "l0":
            median = censored_median(records, norm)
            out[f"{norm}_median"], out[f"{norm}_median_lo"], out[f"{norm}_median_hi"] = median
        for percent in (50, 90):
            out[f"{norm}_at_fr{percent}"] = budget_at(records, norm, percent / 100)
    for name in ("relevance_shift", "perturbation_in_relevance", "object_share"):
        out[name] = _mean(col[name].astype(np.float64)[success])
    queries = col["queries"]
    out["queries_per_image"] = _mean(queries) if (queries >= 0).all() else np.nan
    out |= severity_metrics(records)
    return {name: out[name] for name in METRIC_COLUMNS}

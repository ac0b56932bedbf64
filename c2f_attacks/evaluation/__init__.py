"""Evaluation of attack runs: per-image records (the primary data), the leaderboard metrics
aggregated from them, exact intervals and tests, budget curves, paired comparisons, and
transfer records (a run's adversarial images on other models) with their aggregates.

Metrics from saved tensors, without rerunning an attack::

    records = per_image_records(model, x, x_adv, y, stage="fine")
    row = aggregate(records)

The adversarial images of a run are saved compactly per row (:mod:`.adversarial`).
"""

from c2f_attacks.evaluation.adversarial import (
    AdversarialBatch,
    AdversarialRow,
    SavedAdversarial,
    load_adversarial,
    save_adversarial,
)
from c2f_attacks.evaluation.budget import (
    BUDGET_GRIDS,
    NORMS,
    budget_at,
    budget_curves,
    budget_grids_for,
    censored_budgets,
    censored_median,
    fr_curve,
    parse_budget_grid,
)
from c2f_attacks.evaluation.class_names import class_table, name_records, write_class_names
from c2f_attacks.evaluation.compare import compare_many, compare_records
from c2f_attacks.evaluation.exact import (
    holm,
    order_statistic_interval,
    paired_share_difference_interval,
    share_interval,
    sign_test,
)
from c2f_attacks.evaluation.metrics import (
    DEFAULT_TOP_K,
    L0_TOLERANCE,
    clean_stage_heatmap,
    pearson,
    per_image_records,
    perturbation_norms,
    share_inside,
)
from c2f_attacks.evaluation.records import (
    KEY,
    RECORD_COLUMNS,
    canonical_key,
    load_records,
    read_records_file,
    row_id,
    write_records,
)
from c2f_attacks.evaluation.stats import bootstrap_ci
from c2f_attacks.evaluation.summary import COUNT_COLUMNS, METRIC_COLUMNS, aggregate
from c2f_attacks.evaluation.transfer import (
    TRANSFER_KEY,
    TRANSFER_RECORD_COLUMNS,
    load_transfer_records,
    transfer_summary,
    transfer_table,
)

__all__ = [
    "AdversarialBatch",
    "AdversarialRow",
    "BUDGET_GRIDS",
    "COUNT_COLUMNS",
    "DEFAULT_TOP_K",
    "KEY",
    "L0_TOLERANCE",
    "METRIC_COLUMNS",
    "NORMS",
    "RECORD_COLUMNS",
    "SavedAdversarial",
    "TRANSFER_KEY",
    "TRANSFER_RECORD_COLUMNS",
    "aggregate",
    "bootstrap_ci",
    "budget_at",
    "budget_curves",
    "budget_grids_for",
    "censored_budgets",
    "censored_median",
    "canonical_key",
    "class_table",
    "clean_stage_heatmap",
    "compare_many",
    "compare_records",
    "fr_curve",
    "holm",
    "load_adversarial",
    "load_records",
    "load_transfer_records",
    "name_records",
    "order_statistic_interval",
    "paired_share_difference_interval",
    "parse_budget_grid",
    "pearson",
    "per_image_records",
    "perturbation_norms",
    "read_records_file",
    "row_id",
    "save_adversarial",
    "share_inside",
    "share_interval",
    "sign_test",
    "transfer_summary",
    "transfer_table",
    "write_class_names",
    "write_records",
]

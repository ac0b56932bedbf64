"""Per-row mistake severity from per-image severities (c2f_attacks.evaluation.severity)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from c2f_attacks import Hierarchy
from c2f_attacks.evaluation.severity import (
    SEVERITY_COLUMNS,
    mistake_severity,
    parse_severity_counts,
    severity_counts,
    severity_metrics,
)

SEVERITY = np.array([0, 1, 2, 2, 1, 0, 2])
SUCCESS = np.array([False, True, True, True, True, False, False])


def test_the_mean_is_over_the_fooled_images_only():
    mean, lo, hi = mistake_severity(SEVERITY, SUCCESS)
    assert mean == 1.5  # (1 + 2 + 2 + 1) / 4; the unfooled 0, 0 and 2 do not count
    assert 1 <= lo <= mean <= hi <= 2  # a percentile interval stays inside the observed values
    assert mistake_severity(SEVERITY, SUCCESS) == (mean, lo, hi)  # seeded
    assert severity_counts(SEVERITY, SUCCESS) == "1:2 2:2"


def test_a_constant_severity_has_a_point_interval():
    # e.g. LRPF's coarse-kept rule on a two-level hierarchy: every fooled image is at height 1
    assert mistake_severity(np.ones(30, dtype=int), np.ones(30, dtype=bool)) == (1.0, 1.0, 1.0)


def test_the_interval_narrows_with_more_images():
    def width(n: int) -> float:
        severity = np.tile([1, 2], n // 2)  # half at each height: sd 0.5
        _, lo, hi = mistake_severity(severity, np.ones(n, dtype=bool), n_boot=2000)
        return hi - lo

    # the standard error shrinks with sqrt(n): ten times narrower at 100x the images
    assert width(2000) < width(20) / 3


def test_no_fooled_image_and_unavailable_severities_give_missing_values():
    none = mistake_severity(SEVERITY, np.zeros(7, dtype=bool))
    assert all(math.isnan(v) for v in none) and severity_counts(SEVERITY, SUCCESS & False) == ""
    unavailable = np.full(7, -1)  # the records' mark for a missing integer (a flat model)
    assert all(math.isnan(v) for v in mistake_severity(unavailable, SUCCESS))
    assert severity_counts(unavailable, SUCCESS) == ""
    assert all(math.isnan(v) for v in mistake_severity(np.array([], dtype=int), np.array([], bool)))


@pytest.mark.parametrize(
    "severity, success, error, message",
    [
        (np.array([1, -1]), np.array([True, True]), ValueError, "image 1 has severity -1"),
        (np.array([1, -2]), np.array([True, True]), ValueError, "image 1 has severity -2"),
        (np.array([1.0, 2.0]), np.array([True, True]), TypeError, "integers"),
        (np.array([1, 2]), np.array([1, 0]), TypeError, "success must be booleans"),
        (np.array([1, 2]), np.array([True]), ValueError, r"shapes \(2,\) and \(1,\)"),
    ],
)
def test_bad_inputs_are_named(severity, success, error, message):
    with pytest.raises(error, match=message):
        mistake_severity(severity, success)
    with pytest.raises(error, match=message):
        severity_counts(severity, success)


def test_counts_cell_round_trip_and_refusals():
    assert parse_severity_counts("1:2 2:2") == {1: 2, 2: 2}
    assert parse_severity_counts("3:1 8:12") == {3: 1, 8: 12}
    for missing in ("", float("nan"), None):
        assert parse_severity_counts(missing) == {}
    for bad in ("1:2,2:2", "1:2  2:2", "1:0", "a:1", "1:2 ", "2:1 1:3", "1:1 1:2"):
        with pytest.raises(ValueError, match="severity_counts cell"):
            parse_severity_counts(bad)


def test_severity_metrics_from_records_built_with_a_hierarchy():
    h = Hierarchy.from_dict({"animal": ["cat", "dog"], "vehicle": ["car", "bus"]})
    clean = torch.tensor([0, 0, 2, 3, 1])
    adv = torch.tensor([1, 2, 2, 0, 1])  # same group, across, unchanged, across, unchanged
    records = pd.DataFrame(
        {"severity": h.severity(clean, adv).numpy(), "success": (clean != adv).numpy()}
    )
    row = severity_metrics(records)
    assert list(row) == list(SEVERITY_COLUMNS)
    assert row["mistake_severity"] == pytest.approx(5 / 3)  # heights 1, 2, 2
    assert row["severity_counts"] == "1:1 2:2"
    assert row["mistake_severity_lo"] <= row["mistake_severity"] <= row["mistake_severity_hi"]
    with pytest.raises(ValueError, match="records have no column 'severity'"):
        severity_metrics(records.drop(columns="severity"))

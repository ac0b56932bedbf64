"""Per-image records: aggregates from records only (and recomputed exactly from a leaderboard
row's saved records), writing and strict loading, paired comparison of rows."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pandas as pd
import pytest
import torch

from c2f_attacks import leaderboard as lb
from c2f_attacks.evaluation import (
    METRIC_COLUMNS,
    RECORD_COLUMNS,
    aggregate,
    compare_many,
    compare_records,
    load_records,
    per_image_records,
    row_id,
    share_interval,
    sign_test,
    write_records,
)
from c2f_attacks.evaluation.compare import COLUMNS
from c2f_attacks.evaluation.exact import holm, paired_share_difference_interval
from c2f_attacks.evaluation.records import FILE_COLUMNS, RECORD_KINDS
from tests.conftest import small_c2f
from tests.test_metrics import noisy

inf = math.inf


def key(**changes) -> dict:
    base = {
        "model": "small", "model_hash": "abc123", "dataset": "random", "split": "test", "n": 12,
        "seed": 0, "attack": "pgd", "stage": "fine", "protocol": "fixed",
        "success_rule": "stage_changed", "mask": "none",
        "norm": "linf", "eps": 8 / 255, "steps": 10, "config": "alpha=0.1", "eval_backend": "torch",
        "device": "cpu",
    }  # fmt: skip
    return {**base, **changes}


def made_up(n: int, seed: int = 0, **columns) -> pd.DataFrame:
    """Records with random values (C2F layout), overridden by ``columns``."""
    rng = np.random.default_rng(seed)
    fine = rng.integers(0, 6, n)
    frame = pd.DataFrame({
        "index": np.arange(n), "y_fine": fine, "y_coarse": fine // 3,
        "clean_coarse": rng.integers(0, 2, n), "clean_fine": rng.integers(0, 6, n),
        "adv_coarse": rng.integers(0, 2, n), "adv_fine": rng.integers(0, 6, n),
        "correct": rng.random(n) < 0.8, "success": rng.random(n) < 0.6,
        "fine_flipped": rng.random(n) < 0.6, "fine_flipped_coarse_kept": rng.random(n) < 0.3,
        "coarse_flipped": rng.random(n) < 0.3, "first_success_step": rng.integers(-1, 10, n),
        "eps": rng.random(n), "linf": rng.random(n), "l2": rng.random(n) * 5,
        "l0": rng.random(n), "queries": rng.integers(1, 100, n),
        "relevance_shift": rng.random(n), "perturbation_in_relevance": rng.random(n),
        "object_share": rng.random(n), "target_class": np.full(n, -1),
        "severity": rng.integers(0, 3, n),
    })  # fmt: skip
    frame["misclassified"] = ~frame["correct"]
    for name, values in columns.items():
        frame[name] = values
    return frame[list(RECORD_COLUMNS)]


def test_aggregate_definitions():
    success = np.array([1, 1, 1, 1, 0, 0, 1, 0], bool)
    rec = made_up(
        8, success=success, linf=[0.4, 0.1, 0.3, 0.2, 0.01, 0.02, 0.5, 0.03],
        correct=np.array([1, 1, 0, 1, 1, 0, 1, 1], bool),
        coarse_flipped=np.array([1, 0, 0, 0, 1, 1, 0, 0], bool),
        severity=[1, 2, 2, 1, 0, 0, 2, 0],
    )  # fmt: skip
    rec["misclassified"] = ~rec["correct"]
    row = aggregate(rec)
    assert list(row) == list(METRIC_COLUMNS)
    assert row["n"] == 8 and row["fooling_ratio"] == 5 / 8 and row["misclassified"] == 2
    assert (row["fooling_ratio_lo"], row["fooling_ratio_hi"]) == share_interval(5, 8)
    assert row["success_rate"] == 4 / 6  # fooled among the 6 correctly classified images
    assert (row["success_rate_lo"], row["success_rate_hi"]) == share_interval(4, 6)
    k_any, k_kept = int(rec.fine_flipped.sum()), int(rec.fine_flipped_coarse_kept.sum())
    assert row["fr_fine_any"] == k_any / 8 and row["fr_fine_coarse_kept"] == k_kept / 8
    assert (row["fr_fine_any_lo"], row["fr_fine_any_hi"]) == share_interval(k_any, 8)
    assert (row["fr_fine_coarse_kept_lo"], row["fr_fine_coarse_kept_hi"]) == share_interval(
        k_kept, 8
    )
    # the means are over the fooled images; the median is over all 8 with failures at +inf:
    # 0.1 0.2 0.3 0.4 0.5 inf inf inf -> the 4th, 0.4; n = 8 gives ranks (1, 8): [0.1, inf]
    assert row["linf_mean"] == pytest.approx(0.3)
    assert (row["linf_median"], row["linf_median_lo"], row["linf_median_hi"]) == (0.4, 0.1, inf)
    assert row["linf_at_fr50"] == row["linf_median"] and row["linf_at_fr90"] == inf
    l2 = np.sort(rec.l2[success])
    assert (row["l2_median"], row["l2_median_lo"], row["l2_median_hi"]) == (l2[3], l2[0], inf)
    assert row["coarse_flip_share"] == 1 / 5
    assert row["queries_per_image"] == rec.queries.mean()
    assert row["object_share"] == pytest.approx(rec.object_share[success].mean())
    # mistake severity over the 5 fooled images: heights 1 2 2 1 2
    assert row["mistake_severity"] == 8 / 5 and row["severity_counts"] == "1:2 2:3"
    assert 1 <= row["mistake_severity_lo"] <= 8 / 5 <= row["mistake_severity_hi"] <= 2
    empty = aggregate(made_up(0))
    assert empty["n"] == 0 and math.isnan(empty["fooling_ratio"])
    assert math.isnan(empty["fooling_ratio_lo"]) and math.isnan(empty["linf_median_hi"])


def test_write_and_load_round_trip(tmp_path):
    rec = made_up(30, seed=1)
    path = write_records(tmp_path, key(), rec)
    assert path == tmp_path / "records" / f"{row_id(key())}.csv.gz"
    write_records(tmp_path, key(attack="lrpc", mask="lrp", eps=None), made_up(5, seed=2))
    back = load_records(tmp_path)
    assert list(back.columns) == list(FILE_COLUMNS) and len(back) == 35
    mine = back[back.row_id == row_id(key())].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine[list(RECORD_COLUMNS)], rec)  # floats exact, dtypes kept
    assert mine.model.iloc[0] == "small" and mine.key_eps.iloc[0] == 8 / 255
    assert str(mine.n.dtype) == "Int64" and mine.steps.iloc[0] == 10
    before = path.read_bytes()
    write_records(tmp_path, key(), rec)
    assert path.read_bytes() == before  # no time stamp or file name in the gzip header
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [path.name, f"{row_id(key(attack='lrpc', mask='lrp', eps=None))}.csv.gz"]
    )  # no temporary files left


def test_records_written_before_target_class_load_with_minus_one(tmp_path):
    """An earlier file (no target_class column, nor severity, added after it) reads as
    untargeted; any other header is refused."""
    path = write_records(tmp_path, key(), made_up(4, seed=3, target_class=[2, 0, 1, 5]))
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    earlier = [line.rsplit(",", 2)[0] for line in lines]  # target_class, severity: the last two
    path.write_bytes(gzip.compress(("\n".join(earlier) + "\n").encode(), mtime=0))
    back = load_records(tmp_path)
    assert list(back.columns) == list(FILE_COLUMNS) and back["target_class"].tolist() == [-1] * 4
    assert str(back["target_class"].dtype) == "int64" and back["severity"].tolist() == [-1] * 4
    path.write_bytes(gzip.compress(("\n".join(line.rsplit(",", 3)[0] for line in lines) + "\n")
                                   .encode(), mtime=0))  # fmt: skip
    with pytest.raises(ValueError, match="the header is not the records header"):
        load_records(tmp_path)


def test_empty_and_key_checks(tmp_path):
    empty = load_records(tmp_path)
    assert empty.empty and list(empty.columns) == list(FILE_COLUMNS)
    assert {c: str(empty[c].dtype) for c in RECORD_COLUMNS}["success"] == "bool"
    with pytest.raises(ValueError, match="missing fields \\['device'\\]"):
        write_records(tmp_path, {k: v for k, v in key().items() if k != "device"}, made_up(2))
    with pytest.raises(ValueError, match="unknown fields \\['colour'\\]"):
        write_records(tmp_path, key(colour="red"), made_up(2))
    with pytest.raises(ValueError, match="lack the columns \\['linf'\\]"):
        write_records(tmp_path, key(), made_up(2).drop(columns=["linf"]))
    with pytest.raises(TypeError, match="'queries' must hold int values, got float64"):
        write_records(tmp_path, key(), made_up(2, queries=[1.0, np.nan]))
    with pytest.raises(TypeError, match="'success' must hold bool values"):
        write_records(tmp_path, key(), made_up(2, success=[1, 0]))
    assert not (tmp_path / "records").exists()
    # the canonical key: 10 == 10.0, a float read back equals itself, text is stripped
    assert row_id(key(steps=10.0, model=" small ")) == row_id(key())
    assert row_id(key(split="train")) != row_id(key())


def _rewrite(path, edit) -> None:
    text = gzip.decompress(path.read_bytes()).decode()
    path.write_bytes(gzip.compress(edit(text).encode()))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace(",True,", ",yes,", 1), "line 2, column '.*': 'yes' is not True or"),
        (lambda t: t.replace("\n", ",0\n", 2).replace(",0", "", 1), "line 2: 43 fields, the"),
        (lambda t: t.replace("object_share", "object"), "line 1: the header"),
        (lambda t: t.replace("\nsmall,", "\nother,", 1), "line 2: the key does not hash"),
        (lambda t: t + t.splitlines()[1].replace(",fine,", ",coarse,") + "\n", "line 32"),
    ],
)  # fmt: skip
def test_bad_file_is_an_error_naming_it(tmp_path, edit, message):
    path = write_records(tmp_path, key(), made_up(30, seed=1))
    _rewrite(path, edit)
    with pytest.raises(ValueError, match=message) as err:
        load_records(tmp_path)
    assert str(path) in str(err.value)


def test_bad_number_and_bad_gzip(tmp_path):
    path = write_records(tmp_path, key(), made_up(3, seed=1))
    header, first, *rest = gzip.decompress(path.read_bytes()).decode().splitlines()
    cells = first.split(",")
    cells[FILE_COLUMNS.index("linf")] = "0.1.2"
    path.write_bytes(gzip.compress("\n".join([header, ",".join(cells), *rest]).encode()))
    with pytest.raises(ValueError, match=r"line 2, column 'linf': '0.1.2' is not a number"):
        load_records(tmp_path)
    cells[FILE_COLUMNS.index("linf")] = ""
    path.write_bytes(gzip.compress("\n".join([header, ",".join(cells)]).encode()))
    assert math.isnan(load_records(tmp_path).linf.iloc[0])  # an unavailable float is NaN
    cells[FILE_COLUMNS.index("queries")] = ""
    path.write_bytes(gzip.compress("\n".join([header, ",".join(cells)]).encode()))
    with pytest.raises(ValueError, match="column 'queries': empty"):
        load_records(tmp_path)
    path.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=f"records file {path} cannot be read"):
        load_records(tmp_path)
    assert RECORD_KINDS["queries"] == "int"


def test_leaderboard_row_recomputed_exactly_from_its_records(tmp_path):
    model = small_c2f(input_size=16)
    g = torch.Generator().manual_seed(8)
    x = torch.rand(12, 3, 16, 16, generator=g)
    y = torch.randint(0, 6, (12,), generator=g)
    masks = torch.rand(12, 16, 16, generator=g) > 0.5
    rec = per_image_records(model, x, noisy(x, 0.1), y, "fine", masks=masks, relevance=False,
                            queries=torch.arange(12), eps=8 / 255)  # fmt: skip
    board = tmp_path / "leaderboard.csv"
    metrics = aggregate(rec)
    assert 0 < metrics["fooling_ratio"] < 0.9 and metrics["linf_at_fr90"] == inf  # inf stored
    lb.upsert_rows(board, [{**key(), **metrics, "ms_per_image": 1.5}])
    write_records(tmp_path, key(), rec)
    row = lb.read_leaderboard(board).iloc[0]
    saved = load_records(tmp_path)
    again = aggregate(saved[saved.row_id == row.row_id])
    assert 0 < metrics["mistake_severity"] <= 2 and metrics["severity_counts"]
    for name in METRIC_COLUMNS:
        missing = again[name] == "" if name == "severity_counts" else math.isnan(again[name])
        assert (again[name] == row[name]) or (missing and pd.isna(row[name])), name
    with pytest.raises(ValueError, match="one row_id"):
        aggregate(pd.concat([saved, saved.assign(row_id="other")]))


def _pair() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ten images; budgets in eighths (exact in binary). Per image a - b: -1/8, a tie within
    float32 rounding, -1/8 (x3), then a-only fooled (-inf, x3), b-only (+inf), neither."""
    a = made_up(10, seed=4, success=np.array([1] * 8 + [0, 0], bool),
                linf=np.array([1, 2, 3, 4, 5, 1, 2, 3, 9, 9]) / 8)  # fmt: skip
    b = made_up(10, seed=4, success=np.array([1] * 5 + [0, 0, 0, 1, 0], bool),
                linf=np.array([2, 2 + 3e-7, 4, 5, 6, 9, 9, 9, 1, 9]) / 8)  # fmt: skip
    a["l2"], b["l2"] = a["linf"] * 10, b["linf"] * 10
    a["l0"], b["l0"] = a["linf"] / 8, b["linf"] / 8  # shares, exact in binary like the l-inf
    return a, b


def test_compare_records_by_hand():
    a, b = _pair()
    table = compare_records(a, b)
    assert list(table.columns) == list(COLUMNS)
    assert table["metric"].tolist() == ["fooling_ratio", "linf_median", "l2_median", "l0_median"]
    fr, linf, l2, l0 = (table.iloc[i] for i in range(4))
    # 5 fooled by both, 3 by a only, 1 by b only, 1 by neither
    assert (fr.a, fr.b, fr.difference, fr.estimate) == (0.8, 0.6, 0.8 - 0.6, 0.8 - 0.6)
    assert (fr.lo, fr.hi) == paired_share_difference_interval(5, 3, 1, 1)
    assert fr.test == "mcnemar-exact" and fr.p_value == 10 / 16  # 2 P(B(4, 1/2) <= 1)
    assert fr.n_images == 10
    # censored medians (5th of 10): a 1 1 2 2 3 3 4 5 inf inf -> 3/8, b 1 2 2 4 5 6 inf... -> 5/8
    assert (linf.a, linf.b, linf.difference) == (3 / 8, 5 / 8, -2 / 8)
    # 9 defined differences: -inf x3, -1/8 x4, 0, +inf; median the 5th; ranks (2, 8)
    assert (linf.estimate, linf.lo, linf.hi) == (-1 / 8, -inf, 0.0)
    assert linf.test == "sign" and linf.p_value == 18 / 256  # 1 up, 7 down: 2 P(B(8) <= 1)
    assert (l2.estimate, l2.lo, l2.hi, l2.p_value) == (-10 / 8, -inf, 0.0, 18 / 256)
    assert (l0.a, l0.b, l0.estimate, l0.lo, l0.hi) == (3 / 64, 5 / 64, -1 / 64, -inf, 0.0)
    assert l0.test == "sign" and l0.p_value == 18 / 256
    # swapping the rows negates the effect, the p-values stay
    swapped = compare_records(b, a)
    assert (swapped.iloc[1].estimate, swapped.iloc[1].lo, swapped.iloc[1].hi) == (1 / 8, 0, inf)
    assert swapped.p_value.tolist() == table.p_value.tolist()
    assert swapped.iloc[0].lo == pytest.approx(-fr.hi) and swapped.iloc[0].hi == pytest.approx(
        -fr.lo
    )


def test_compare_even_count_median_and_failures_of_both():
    # differences -3 -1 2 4 (eighths): the median is the mean of the middle two, 1/16
    a = made_up(4, success=np.ones(4, bool), linf=np.array([1, 3, 6, 8]) / 8)
    b = made_up(4, success=np.ones(4, bool), linf=np.array([4, 4, 4, 4]) / 8)
    assert compare_records(a, b).iloc[1].estimate == 1 / 16
    assert compare_records(b, a).iloc[1].estimate == -1 / 16
    # rows that each fool under half: both medians +inf, their difference undefined
    few = made_up(4, success=np.array([1, 0, 0, 0], bool), linf=np.full(4, 0.5))
    linf = compare_records(few, few).iloc[1]
    assert linf.a == linf.b == inf and math.isnan(linf.difference)
    assert (linf.estimate, linf.p_value) == (0.0, 1.0)  # one defined difference, a tie


def test_compare_records_on_shared_images_only():
    a = made_up(200, seed=4)
    fewer = a.assign(success=a.success & (a["index"] % 2 == 0)).iloc[::-1].iloc[:150]
    table = compare_records(a, fewer).set_index("metric")
    shared = a[a["index"].isin(fewer["index"])]
    assert table.loc["fooling_ratio", "n_images"] == 150
    assert table.loc["fooling_ratio", "a"] == shared.success.mean()
    only_a = int((shared.success & (shared["index"] % 2 == 1)).sum())
    assert table.loc["fooling_ratio", "p_value"] == sign_test(only_a, 0) < 1e-6
    assert table.loc["fooling_ratio", "lo"] > 0


def test_compare_many_adjusts_every_p_value_of_the_call():
    a, b = _pair()
    c = b.assign(linf=b["linf"] / 2)
    rows = pd.concat([a.assign(row_id="a"), b.assign(row_id="b"), c.assign(row_id="c")])
    table = compare_many(rows, [("a", "b"), ("a", "c")])
    assert list(table.columns) == ["row_a", "row_b", *COLUMNS, "p_holm"]
    metrics = len(compare_records(a, b))
    assert table.row_b.tolist() == ["b"] * metrics + ["c"] * metrics
    pd.testing.assert_frame_equal(
        table.iloc[:metrics, 2:-1].reset_index(drop=True), compare_records(a, b)
    )
    np.testing.assert_array_equal(table.p_holm, holm(table.p_value))
    assert (table.p_holm >= table.p_value).all()
    with pytest.raises(ValueError, match="row_id 'd' is not in the records"):
        compare_many(rows, [("a", "d")])
    with pytest.raises(ValueError, match="a pair is"):
        compare_many(rows, [("a", "b", "c")])
    with pytest.raises(ValueError, match="no pairs"):
        compare_many(rows, [])
    with pytest.raises(ValueError, match="row_id column"):
        compare_many(a, [("a", "b")])


def test_compare_refuses_rows_that_cannot_be_paired():
    a = made_up(10)
    with pytest.raises(ValueError, match="share no image"):
        compare_records(a, a.assign(index=a["index"] + 100))
    other = a.copy()
    other.loc[3, "clean_fine"] = (other.loc[3, "clean_fine"] + 1) % 6
    with pytest.raises(ValueError, match="disagree on clean_fine for 1 of 10 .*index 3"):
        compare_records(a, other)
    with pytest.raises(ValueError, match="more than once"):
        compare_records(a, pd.concat([a, a]))

"""Per-image records: aggregates from records only (and recomputed exactly from a leaderboard
row's saved records), writing and strict loading, paired comparison of two rows."""

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
    compare_records,
    load_records,
    per_image_records,
    row_id,
    share_interval,
    write_records,
)
from c2f_attacks.evaluation.records import FILE_COLUMNS, RECORD_KINDS
from tests.conftest import small_c2f
from tests.test_metrics import noisy

inf = math.inf


def key(**changes) -> dict:
    base = {
        "model": "small", "model_hash": "abc123", "dataset": "random", "split": "test", "n": 12,
        "seed": 0, "attack": "pgd", "stage": "fine", "mode": "fixed", "mask": "none",
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
        "object_share": rng.random(n),
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
    empty = aggregate(made_up(0))
    assert empty["n"] == 0 and math.isnan(empty["fooling_ratio"])
    assert math.isnan(empty["fooling_ratio_lo"]) and math.isnan(empty["linf_median_hi"])


def test_aggregate_is_deterministic_and_ignores_the_old_bootstrap_arguments():
    rec = made_up(50, seed=2)
    with pytest.warns(DeprecationWarning, match="seed and n_boot are ignored"):
        old_call = aggregate(rec, seed=7, n_boot=200)
    assert old_call == aggregate(rec)


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
        (lambda t: t.replace("\n", ",0\n", 2).replace(",0", "", 1), "line 2: 40 fields, the"),
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
    for name in METRIC_COLUMNS:
        assert (again[name] == row[name]) or (math.isnan(again[name]) and pd.isna(row[name])), name
    with pytest.raises(ValueError, match="one row_id"):
        aggregate(pd.concat([saved, saved.assign(row_id="other")]))


def test_compare_records():
    a = made_up(200, seed=4)
    b = a.copy()
    b["linf"] = a["linf"] + 0.1
    b["success"] = a["success"]
    table = compare_records(a, b, n_boot=200).set_index("metric")
    assert list(table.columns) == ["a", "b", "difference", "lo", "hi", "n_images"]
    assert table.loc["fooling_ratio", ["difference", "lo", "hi"]].tolist() == [0, 0, 0]
    assert table.loc["fooling_ratio", "n_images"] == 200
    assert table.loc["linf_median", "difference"] == pytest.approx(-0.1)
    assert table.loc["linf_median", ["lo", "hi"]].tolist() == pytest.approx([-0.1, -0.1])
    assert table.loc["linf_median", "n_images"] == a.success.sum()
    # b fools fewer images; only shared indices count, in any order
    fewer = b.assign(success=b.success & (b["index"] % 2 == 0)).iloc[::-1]
    table = compare_records(a, fewer.iloc[:150], n_boot=200).set_index("metric")
    shared = a[a["index"].isin(fewer.iloc[:150]["index"])]
    assert table.loc["fooling_ratio", "n_images"] == 150
    assert table.loc["fooling_ratio", "a"] == shared.success.mean()
    assert table.loc["fooling_ratio", "lo"] > 0


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

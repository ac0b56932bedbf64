"""Transfer records and their aggregates on constructed cases: what each column means, the exact
intervals, the strict reading, the transfer heatmap's rows."""

import gzip
import math

import numpy as np
import pandas as pd
import pytest
import torch

import c2f_attacks
from c2f_attacks import evaluation
from c2f_attacks.attacks.predictions import Predictions
from c2f_attacks.evaluation.records import KEY
from c2f_attacks.evaluation.transfer import (
    TRANSFER_RECORD_COLUMNS,
    load_transfer_records,
    read_transfer_records_file,
    stopping_rule,
    transfer_records,
    transfer_records_path,
    transfer_summary,
    transfer_table,
    write_transfer_records,
)
from c2f_attacks.figures import transfer_matrix, transfer_row_labels
from c2f_attacks.leaderboard import row_id


def _key(**values) -> dict:
    key = {**dict.fromkeys(KEY, np.nan), "model": "m", "model_hash": "abc", "dataset": "shapes",
           "split": "test", "n": 4, "seed": 0, "attack": "fgsm", "stage": "coarse",
           "protocol": "fixed", "mask": "none", "norm": "linf", "success_rule": "stage_changed",
           "eps": 8 / 255, "steps": 1, "eval_backend": "torch", "device": "cpu"}  # fmt: skip
    return {**key, **values}


def _source(success, clean_coarse, clean_fine) -> pd.DataFrame:
    return pd.DataFrame({"index": np.arange(len(success)) * 3, "success": success,
                         "clean_coarse": clean_coarse, "clean_fine": clean_fine})  # fmt: skip


def _pred(coarse, fine, stage="fine") -> Predictions:
    coarse, fine = torch.tensor(coarse), torch.tensor(fine)
    return Predictions(coarse if stage == "coarse" else fine, coarse, fine)


def test_each_record_column_means_what_it_says():
    # images: 0 coarse flip, 1 fine flip inside the superclass, 2 nothing, 3 both clean differ
    source = _source([True, True, False, False], [0, 0, 1, 1], [0, 1, 2, 3])
    clean, adv = _pred([0, 0, 1, 0], [0, 1, 2, 0]), _pred([1, 0, 1, 0], [2, 0, 2, 0])
    coarse = transfer_records(_key(), source, "t", "h", clean, adv)
    assert coarse["target_success"].tolist() == [True, False, False, False]
    assert coarse["clean_agreement"].tolist() == [True, True, True, False]
    assert coarse["quantized_away"].tolist() == [-1] * 4
    assert coarse["index"].tolist() == [0, 3, 6, 9]
    assert coarse["source_success"].tolist() == [True, True, False, False]
    assert coarse["target_adv_fine"].tolist() == [2, 0, 2, 0]
    strict = _key(stage="fine", success_rule="fine_changed_coarse_kept", attack="lrpf")
    fine = transfer_records(strict, source, "t", "h", clean, adv)
    assert fine["target_success"].tolist() == [False, True, False, False]  # 0 left the coarse
    any_fine = transfer_records(_key(stage="fine"), source, "t", "h", clean, adv)
    assert any_fine["target_success"].tolist() == [True, True, False, False]
    quantized = transfer_records(_key(), source, "t", "h", clean, adv,
                                 same_input=np.array([True, False, True, False]),
                                 input_quantization="QuantizeLinear on the raw input")  # fmt: skip
    assert quantized["quantized_away"].tolist() == [1, 0, 1, 0]
    assert set(quantized.columns) == set(TRANSFER_RECORD_COLUMNS)
    assert (quantized["row_id"] == row_id(_key())).all()


def test_predictions_for_other_images_are_refused():
    source = _source([True, False, False, True], [0] * 4, [0] * 4)
    with pytest.raises(ValueError, match="3 clean and 4 adversarial predictions, 4 input"):
        transfer_records(_key(), source, "t", "h", _pred([0] * 3, [0] * 3), _pred([0] * 4, [0] * 4))
    with pytest.raises(ValueError, match="4 clean and 4 adversarial predictions, 2 input"):
        transfer_records(_key(), source, "t", "h", _pred([0] * 4, [0] * 4),
                         _pred([0] * 4, [0] * 4), same_input=np.ones(2, bool))  # fmt: skip


def test_the_stopping_rule_comes_from_the_attack_registry():
    assert stopping_rule("lrpc") == stopping_rule("pgd") == "first_success"
    assert stopping_rule("torchattacks:APGD") == "own"  # external: its own iterations
    with pytest.raises(ValueError, match="no-such-attack"):
        stopping_rule("no-such-attack")


def _counts_case() -> pd.DataFrame:
    """10 images: the source fooled 0-3; the target is fooled on 1, 2, 3 (survivors) and 7, 8."""
    n = 10
    success = np.zeros(n, bool)
    success[:4] = True
    fooled = np.zeros(n, bool)
    fooled[[1, 2, 3, 7, 8]] = True
    clean_coarse = np.zeros(n, np.int64)
    source = _source(success, clean_coarse, np.zeros(n, np.int64))
    adv_coarse = fooled.astype(np.int64)  # the coarse prediction flips exactly where fooled
    return transfer_records(_key(n=n), source, "t", "h", _pred(clean_coarse, clean_coarse),
                            _pred(adv_coarse, np.zeros(n, np.int64)))  # fmt: skip


def test_survival_is_a_share_of_the_sources_successes_not_of_all_images():
    summary = transfer_summary(_counts_case())
    assert summary["transfer_fooling_ratio"] == 5 / 10
    assert summary["source_fooling_ratio"] == 4 / 10 and summary["n_source_success"] == 4
    assert summary["survival"] == 3 / 4  # not 3 / 10
    assert summary["coarse_flipped"] == 5 / 10 and summary["fine_flipped"] == 0
    assert summary["clean_agreement"] == 1 and math.isnan(summary["quantized_away"])
    for share in ("transfer_fooling_ratio", "survival", "source_fooling_ratio"):
        assert summary[f"{share}_lo"] < summary[share] < summary[f"{share}_hi"]


def test_intervals_are_exact_and_never_collapse_at_zero_or_one():
    records = _counts_case()
    summary = transfer_summary(records)
    n, tail = 10, 0.025
    # analytic Clopper-Pearson ends: 0 of n -> [0, 1 - tail^(1/n)], n of n -> [tail^(1/n), 1]
    assert summary["fine_flipped_lo"] == 0
    assert summary["fine_flipped_hi"] == pytest.approx(1 - tail ** (1 / n), rel=1e-9)
    assert summary["clean_agreement_hi"] == 1
    assert summary["clean_agreement_lo"] == pytest.approx(tail ** (1 / n), rel=1e-9)
    survivors = records[records["source_success"]]  # 3 of 4 among the successes
    assert transfer_summary(survivors)["survival"] == 3 / 4
    none = records.assign(source_success=False)
    empty = transfer_summary(none)
    assert empty["n_source_success"] == 0
    assert all(math.isnan(empty[c]) for c in ("survival", "survival_lo", "survival_hi"))


def test_quantized_away_counts_the_images_where_it_applies():
    records = _counts_case()
    records["quantized_away"] = [1, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    assert transfer_summary(records)["quantized_away"] == 3


def test_records_round_trip_byte_identical_and_the_table_follows(tmp_path):
    a = _counts_case()
    zeros = np.zeros(10, np.int64)
    b = transfer_records(_key(attack="pgd", n=10), _source(np.ones(10, bool), zeros, zeros),
                         "other,target", "h2", _pred(zeros, zeros), _pred(zeros + 1, zeros),
                         same_input=np.ones(10, bool),
                         input_quantization='scale 0.0157, "uint8"')  # fmt: skip
    records = pd.concat([a, b], ignore_index=True)
    paths = write_transfer_records(tmp_path, records)
    assert [p.name for p in paths] == [
        transfer_records_path(tmp_path, row_id(_key(n=10)), "t").name,
        transfer_records_path(tmp_path, row_id(_key(attack="pgd", n=10)), "other,target").name,
    ]
    first = [p.read_bytes() for p in paths]
    order = ["row_id", "target", "index"]
    loaded = load_transfer_records(tmp_path)
    pd.testing.assert_frame_equal(loaded.sort_values(order, ignore_index=True),
                                  records.sort_values(order, ignore_index=True),
                                  check_dtype=False)  # fmt: skip
    write_transfer_records(tmp_path, records)
    assert [p.read_bytes() for p in paths] == first
    table = transfer_table(loaded).set_index("target")
    assert table.loc["other,target", "quantized_away"] == 10
    assert math.isnan(table.loc["t", "quantized_away"])
    assert table.loc["other,target", "input_quantization"] == 'scale 0.0157, "uint8"'
    assert set(table["stopping_rule"]) == {"first_success"}
    assert c2f_attacks.load_transfer_records is evaluation.load_transfer_records


def test_an_empty_folder_loads_as_an_empty_frame_with_the_columns(tmp_path):
    frame = load_transfer_records(tmp_path)
    assert frame.empty and tuple(frame.columns) == TRANSFER_RECORD_COLUMNS


def _rewrite(path, edit) -> None:
    lines = gzip.decompress(path.read_bytes()).decode().split("\n")
    path.write_bytes(gzip.compress("\n".join(edit(lines)).encode()))


def _cell(lines, line: int, column: str, value: str) -> list[str]:
    j = lines[0].split(",").index(column)
    cells = lines[line - 1].split(",")
    cells[j] = value
    lines[line - 1] = ",".join(cells)
    return lines


def _every(lines, column: str, value: str) -> list[str]:
    for line in range(2, len(lines) + 1):
        if lines[line - 1]:
            _cell(lines, line, column, value)
    return lines


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: _cell(ls, 6, "target_success", "True"), "line 6, column 'target_success': not "
         "the success rule 'stage_changed'"),
        (lambda ls: _cell(ls, 4, "quantized_away", "2"), "line 4, column 'quantized_away'"),
        (lambda ls: _cell(ls, 5, "quantized_away", "0"), "line 5, column 'quantized_away': -1"),
        (lambda ls: _cell(ls, 5, "index", "3"), "line 5, column 'index': an image that appears"),
        (lambda ls: _cell(ls, 2, "target_adv_fine", "1.5"), "line 2, column 'target_adv_fine'"),
        (lambda ls: _cell(ls, 3, "target", "u"), "line 3: another key than line 2's"),
        (lambda ls: [ls[0].replace("target_hash", "hash"), *ls[1:]], "line 1: the header"),
        (lambda ls: _every(ls, "stopping_rule", "eager"), "'stopping_rule': 'eager'"),
        (lambda ls: _every(ls, "attack", "pgd"), "line 2, column 'row_id'"),
    ],
)  # fmt: skip
def test_a_damaged_file_is_an_error_naming_file_line_and_column(tmp_path, edit, message):
    (path,) = write_transfer_records(tmp_path, _counts_case())
    _rewrite(path, edit)
    with pytest.raises(ValueError, match="transfer records file .*") as err:
        load_transfer_records(tmp_path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_a_file_under_another_name_is_refused(tmp_path):
    (path,) = write_transfer_records(tmp_path, _counts_case())
    moved = path.with_name(f"{'0' * 12}.{path.name.split('.')[1]}.csv.gz")
    path.rename(moved)
    with pytest.raises(ValueError, match="the name is not that of row"):
        read_transfer_records_file(moved)
    moved.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=f"transfer records file {moved} cannot be read"):
        read_transfer_records_file(moved)


def test_heatmap_rows_are_labelled_uniquely_and_keep_the_tables_order():
    base = {"model": "m", "attack": "pgd", "protocol": "fixed", "mask": "none", "eps": 8 / 255}
    table = pd.DataFrame([
        {**base, "row_id": "r1", "target": "b", "transfer_fooling_ratio": 0.1},
        {**base, "row_id": "r1", "target": "a", "transfer_fooling_ratio": 0.2},
        {**base, "row_id": "r2", "target": "a", "transfer_fooling_ratio": 0.3},
        {**base, "attack": "lrpc", "mask": "lrp", "eps": np.nan, "protocol": "minimal",
         "row_id": "r3", "target": "b", "transfer_fooling_ratio": 0.4},
    ])  # fmt: skip
    labels = transfer_row_labels(table)
    assert labels == ["m pgd/fixed eps=8/255 r1", "m pgd/fixed eps=8/255 r1",
                      "m pgd/fixed eps=8/255 r2", "m lrpc/minimal/lrp"]  # fmt: skip
    matrix = transfer_matrix(table)
    assert list(matrix.columns) == ["b", "a"] and list(matrix.index) == list(dict.fromkeys(labels))
    assert matrix.loc["m pgd/fixed eps=8/255 r1", "a"] == 0.2
    assert math.isnan(matrix.loc["m pgd/fixed eps=8/255 r2", "b"])

"""Saved adversarial images (compact, outcome-preserving) and ``c2f-bench transfer``."""

import gzip
import json
import math
import re
import shutil

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import numpy_helper
from scipy import stats

from c2f_attacks import Hierarchy
from c2f_attacks.attacks import get_criterion
from c2f_attacks.attacks.predictions import Predictions
from c2f_attacks.cli import main
from c2f_attacks.evaluation import (
    AdversarialRow,
    aggregate,
    load_adversarial,
    per_image_records,
    save_adversarial,
    write_records,
)
from c2f_attacks.evaluation.adversarial import FLOAT16_ERROR, decode
from c2f_attacks.evaluation.transfer import (
    TRANSFER_KEY,
    load_transfer_records,
    transfer_records_path,
    transfer_table,
)
from c2f_attacks.leaderboard import KEY, read_leaderboard, upsert_rows
from c2f_attacks.models import load_model
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.models.zoo import save_checkpoint
from c2f_attacks.runner import RunConfig, model_hash, run
from c2f_attacks.runner.transfer import evaluate_transfer, load_sources, transfer
from tests.conftest import TINY_HIERARCHY, shapes_test, tiny_vgg

N = 8
SMALL = dict(model="shapes-vgg16", n=N, batch_size=4, settings={"steps": 3, "refresh": 2},
             attacks=["fgsm", "lrpf"], masks=["lrp"], protocols=["fixed"], progress=False,
             figures=False)  # fmt: skip


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A real run on 8 images: FGSM at both stages and LRPF (its own rule), at 8/255."""
    out = tmp_path_factory.mktemp("run")
    rows = run(RunConfig(out=str(out), **SMALL))
    return out, rows


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------------------ saved images
def _rows(model, x, x_adv, stage="coarse"):
    y = torch.zeros(len(x), dtype=torch.long)
    records = per_image_records(model, x, x_adv, y, stage, relevance=False)
    row = AdversarialRow()
    row.add(model, x, x_adv, y, records, stage)
    return records, row


def _key(**values):
    """A leaderboard key (every KEY field; the ones a test does not care about empty)."""
    key = {**dict.fromkeys(KEY, ""), "model": "m", "dataset": "shapes", "split": "test", "n": 4,
           "seed": 0, "attack": "fgsm", "stage": "coarse", "protocol": "fixed",
           "success_rule": "stage_changed", "mask": "none",
           "norm": "linf", "eval_backend": "torch", "device": "cpu"}  # fmt: skip
    return {**key, **values}


def test_every_row_of_a_run_saves_its_adversarial_images(source_run):
    out, rows = source_run
    x = shapes_test(N)[0]
    for rid in rows["row_id"]:
        saved = load_adversarial(out, rid)
        assert saved.meta["row_id"] == rid and list(saved.index) == list(range(N))
        assert saved.meta["storage"] in ("uint8", "float16", "float32")
        assert saved.x_adv().shape == x.shape and saved.meta["max_abs_error"] <= FLOAT16_ERROR


def test_float16_round_trip_is_within_the_stated_error(tmp_path, tiny_hierarchy):
    model = tiny_vgg(tiny_hierarchy)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=generator)
    x_adv = (x + 0.03 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    x_adv[:, :, :16] = x[:, :, :16]  # the attack left the top half alone
    path = save_adversarial(tmp_path, _key(), _rows(model, x, x_adv)[1])
    saved = load_adversarial(tmp_path, _key())
    assert path.name == f"{saved.meta['row_id']}.npz" and saved.stored.dtype == np.float16
    read_back = saved.x_adv(clean=x)
    error = (read_back - x_adv).abs().max().item()
    assert 0 < error <= FLOAT16_ERROR and saved.meta["max_abs_error"] == pytest.approx(error)
    assert torch.equal(read_back[:, :, :16], x[:, :, :16])  # untouched values: exactly clean
    alone = saved.x_adv()  # without the clean images every value carries the rounding
    assert 0 < (alone - x_adv).abs().max() <= FLOAT16_ERROR


def test_images_on_the_255_grid_round_trip_exactly_as_uint8(tmp_path, tiny_hierarchy):
    model = tiny_vgg(tiny_hierarchy)
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 32, 32), generator=generator) / 255
    x_adv = torch.randint(0, 256, x.shape, generator=generator) / 255
    save_adversarial(tmp_path, _key(), _rows(model, x, x_adv)[1])
    saved = load_adversarial(tmp_path, _key())
    assert saved.stored.dtype == np.uint8 and saved.meta["max_abs_error"] == 0
    assert torch.equal(saved.x_adv(), x_adv)


class PixelThreshold(C2FClassifier):
    """Coarse class 0 exactly when pixel (0, 0, 0) exceeds ``threshold``, else class 1: a
    decision boundary placed wherever a test needs it."""

    def __init__(self, threshold: float):
        super().__init__(Hierarchy.from_dict(TINY_HIERARCHY))
        self.threshold = threshold

    def logits(self, x):
        n = len(x)
        coarse = torch.zeros(n, self.hierarchy.num_coarse)
        coarse[:, 0] = x[:, 0, 0, 0] - self.threshold
        return coarse, torch.zeros(n, self.hierarchy.num_fine)


def test_an_outcome_that_float16_would_flip_is_stored_exactly(tmp_path):
    rounded = np.float32(np.float16(0.3))  # a float16 value; float16 steps are 2^-12 here
    value = rounded + np.float32(0.3 * 2**-12)  # rounds down to it
    assert rounded < value  # the boundary goes between x_adv and its float16 rounding
    model = PixelThreshold(float((value + rounded) / 2))
    x = torch.zeros(2, 3, 4, 4)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = float(value)  # crosses the boundary: success
    x_adv[1, 0, 0, 1] = 0.3001  # elsewhere: no success, whatever the rounding
    records, row = _rows(model, x, x_adv)
    assert records["success"].tolist() == [True, False]
    x_np, x_adv_np = x.numpy(), x_adv.numpy()
    as_float16 = torch.from_numpy(decode(x_adv_np.astype(np.float16), x_adv_np != x_np, x_np))
    again = per_image_records(model, x, as_float16, torch.zeros(2, dtype=torch.long), "coarse",
                              relevance=False)  # fmt: skip
    assert again["success"].tolist() == [False, False]  # what plain float16 would store

    save_adversarial(tmp_path, _key(n=2), row)
    saved = load_adversarial(tmp_path, _key(n=2))
    assert saved.stored.dtype == np.float32 and saved.meta["exact"] == [0]
    assert "float16" in saved.meta["note"] and "float32" in saved.meta["note"]
    read_back = saved.x_adv(clean=x)
    assert torch.equal(read_back[0], x_adv[0])
    assert 0 < (read_back[1] - x_adv[1]).abs().max() <= FLOAT16_ERROR
    kept = per_image_records(model, x, read_back, torch.zeros(2, dtype=torch.long), "coarse",
                             relevance=False)  # fmt: skip
    assert kept["success"].tolist() == records["success"].tolist()


def test_an_unwritable_adversarial_folder_stops_the_run_before_attacking(tmp_path, monkeypatch):
    (tmp_path / "adversarial").write_text("a file where the folder should be\n")
    monkeypatch.setattr("c2f_attacks.runner.execute._attack_all", pytest.fail)
    with pytest.raises(OSError, match="adversarial images folder .*adversarial"):
        run(RunConfig(out=str(tmp_path), **SMALL))
    assert not (tmp_path / "leaderboard.csv").exists()


# ------------------------------------------------------------------------------ transfer
def _records_of(out, rid) -> pd.DataFrame:
    return pd.read_csv(out / "records" / f"{rid}.csv.gz").sort_values("index")


def test_transfer_onto_the_source_model_reproduces_every_image(source_run, tmp_path):
    out, rows = source_run
    records = evaluate_transfer(load_sources(out), ["shapes-vgg16"], onnx_dir=tmp_path)
    assert set(records["row_id"]) == set(rows["row_id"]) and len(records) == 3 * N
    for rid, mine in records.groupby("row_id"):
        source = _records_of(out, rid)
        assert mine["index"].tolist() == source["index"].tolist()
        assert mine["stopping_rule"].eq("first_success").all()  # our attacks
        # every image: the target's predictions are the run's, so its verdict is the run's
        for column in ("clean_coarse", "clean_fine", "adv_coarse", "adv_fine"):
            assert mine[f"target_{column}"].tolist() == source[column].tolist()
        assert mine["target_success"].tolist() == source["success"].tolist()
        assert mine["source_success"].tolist() == source["success"].tolist()
        assert mine["clean_agreement"].all() and mine["quantized_away"].eq(-1).all()
    table = transfer_table(records)
    assert (table["survival"].isna() | (table["survival"] == 1.0)).all()
    assert (table["transfer_fooling_ratio"] == table["source_fooling_ratio"]).all()
    assert records["target_success"].any()  # the run fools something: the checks bite


def test_transfer_onto_another_model_is_the_hand_computed_number(source_run, tmp_path):
    out, _ = source_run
    records = evaluate_transfer(load_sources(out), ["shapes-vgg16-at"], onnx_dir=tmp_path)
    other = load_model("shapes-vgg16-at")
    x = shapes_test(N)[0]
    with torch.no_grad():
        clean = other(x)
        for rid, mine in records.groupby("row_id"):
            first = mine.iloc[0]
            adv = other(load_adversarial(out, rid).x_adv())
            stage = first["stage"]
            rule = get_criterion(first["success_rule"], stage)
            fooled = rule(*(Predictions(getattr(o, f"{stage}_pred"), o.coarse_pred, o.fine_pred)
                            for o in (clean, adv))).numpy()  # fmt: skip
            assert first["target"] == "shapes-vgg16-at"
            assert first["target_hash"] == model_hash(other)
            assert mine["target_success"].tolist() == fooled.tolist()
            assert mine["target_adv_coarse"].tolist() == adv.coarse_pred.tolist()
            assert mine["target_clean_fine"].tolist() == clean.fine_pred.tolist()
            source = _records_of(out, rid)
            agree = (clean.coarse_pred.numpy() == source["clean_coarse"].to_numpy()) & (
                clean.fine_pred.numpy() == source["clean_fine"].to_numpy()
            )
            assert mine["clean_agreement"].tolist() == agree.tolist()
    assert records["input_quantization"].isna().all()


def test_transfer_csv_recomputes_exactly_from_the_transfer_records(source_run, tmp_path):
    """Every column of transfer.csv, recomputed by hand from the per-image records alone."""
    out, _ = source_run
    transfer(out, ["shapes-vgg16-at", "shapes-vgg16"], out=tmp_path, device="cpu", figures=False)
    table = read_leaderboard(tmp_path / "transfer.csv", key=TRANSFER_KEY)
    records = load_transfer_records(tmp_path)
    assert len(table) == 6 and len(records) == 6 * N

    def interval(k: int, n: int) -> tuple[float, float]:  # Clopper-Pearson, from its definition
        if n == 0:
            return math.nan, math.nan
        lo = stats.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
        hi = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
        return lo, hi

    checked = set()
    for row in table.to_dict("records"):
        mine = records[(records["row_id"] == row["row_id"]) & (records["target"] == row["target"])]
        assert len(mine) == row["n"] == N
        src, hit = mine["source_success"].to_numpy(), mine["target_success"].to_numpy()
        counts = {
            "transfer_fooling_ratio": (hit.sum(), N),
            "coarse_flipped": ((mine["target_adv_coarse"] != mine["target_clean_coarse"]).sum(), N),
            "fine_flipped": ((mine["target_adv_fine"] != mine["target_clean_fine"]).sum(), N),
            "source_fooling_ratio": (src.sum(), N),
            "survival": ((src & hit).sum(), src.sum()),
            "clean_agreement": (mine["clean_agreement"].sum(), N),
        }
        for name, (k, n) in counts.items():
            expected = k / n if n else math.nan
            assert row[name] == pytest.approx(expected, nan_ok=True, rel=0, abs=0), name
            lo, hi = interval(int(k), int(n))
            assert row[f"{name}_lo"] == pytest.approx(lo, rel=1e-12, nan_ok=True), name
            assert row[f"{name}_hi"] == pytest.approx(hi, rel=1e-12, nan_ok=True), name
            checked |= {name, f"{name}_lo", f"{name}_hi"}
        assert row["n_source_success"] == src.sum()
        assert math.isnan(row["quantized_away"])  # PyTorch targets: does not apply
        for column in ("target_hash", "stopping_rule"):
            assert mine[column].nunique() == 1 and row[column] == mine[column].iloc[0]
        assert pd.isna(row["input_quantization"]) and mine["input_quantization"].isna().all()
        checked |= {"n_source_success", "quantized_away", "target_hash", "stopping_rule",
                    "input_quantization"}  # fmt: skip
    assert set(table.columns) == {*TRANSFER_KEY, "row_id", *checked}  # no column unchecked
    assert ((table["survival"] < 1) | table["survival"].isna()).any()  # not all trivial


def test_transfer_csv_upserts_by_source_row_and_target(source_run, tmp_path):
    out, _ = source_run
    first = transfer(out, ["shapes-vgg16"], rows=["fgsm"], out=tmp_path, device="cpu",
                     figures=False)  # fmt: skip
    transfer(out, ["shapes-vgg16-at"], rows=["fgsm"], out=tmp_path, device="cpu")
    files = sorted((tmp_path / "transfer_records").iterdir())
    before = {f.name: f.read_bytes() for f in files}
    again = transfer(out, ["shapes-vgg16"], rows=["fgsm"], out=tmp_path, device="cpu",
                     figures=False)  # fmt: skip
    table = read_leaderboard(tmp_path / "transfer.csv", key=TRANSFER_KEY)
    assert len(first) == 2 and set(first["stage"]) == {"coarse", "fine"}
    assert len(table) == 4 and set(table["target"]) == {"shapes-vgg16", "shapes-vgg16-at"}
    assert table.duplicated(["row_id", "target"]).sum() == 0
    keep = ["row_id", "target", "transfer_fooling_ratio", "survival"]
    pd.testing.assert_frame_equal(first[keep], again[keep])
    assert (tmp_path / "figures" / "transfer_coarse.png").stat().st_size > 5_000
    # one records file per (row, target), rewritten byte for byte by the same evaluation
    assert len(files) == 4
    assert {f.name: f.read_bytes() for f in files} == before
    assert {(r, t) for r, t in zip(table["row_id"], table["target"])} == {
        (rid, t) for rid, t in load_transfer_records(tmp_path)[["row_id", "target"]].itertuples(
            index=False)}  # fmt: skip


def test_upserted_rows_that_carry_their_row_id_keep_every_column(tmp_path):
    """A row carrying ``row_id`` before its last column used to lose that column's value."""
    key = _key(target="t")
    upsert_rows(tmp_path / "t.csv", [{**key, "row_id": None, "note": "kept"}], key=TRANSFER_KEY)
    table = read_leaderboard(tmp_path / "t.csv", key=TRANSFER_KEY)
    assert table["note"].tolist() == ["kept"]


def _crafted_run(out, x_adv: torch.Tensor) -> dict:
    """A run folder with one coarse FGSM-like row of shapes-vgg16 whose x_adv is given; its key."""
    model = load_model("shapes-vgg16")
    x, y, _ = shapes_test(len(x_adv))
    records = per_image_records(model, x, x_adv, y, "coarse", relevance=False)
    key = _key(model="shapes-vgg16", model_hash=model_hash(model), n=len(x), eps=8 / 255, steps=1)
    write_records(out, key, records)
    row = AdversarialRow()
    row.add(model, x, x_adv, y, records, "coarse")
    save_adversarial(out, key, row)
    upsert_rows(out / "leaderboard.csv", [{**key, **aggregate(records)}])
    return key


def test_an_int8_target_counts_the_images_its_input_quantization_erases(tmp_path, monkeypatch):
    import c2f_attacks.exporters.variant_files as variant_files

    # INT8 calibrated on 16 images against the default agreement floor on 32 check images: a
    # CPU's integer kernels decide whether all 32 agree. The floor is test_variants' business;
    # here only the graph's input quantization counts.
    export = variant_files.export_variants

    def without_floor(*args, **kwargs):
        return export(*args, **{**kwargs, "min_agreement": 0.0})

    monkeypatch.setattr(variant_files, "export_variants", without_floor)
    x = shapes_test(6)[0]
    x_adv = x.clone()  # 0, 1: unchanged; 2: one pixel moved by 1e-4; 3-5: moved by 0.05
    x_adv[2, 0, 5, 5] = (x_adv[2, 0, 5, 5] + 1e-4).clamp(0, 1)
    x_adv[3:] = (x_adv[3:] + 0.05).clamp(0, 1)
    x_adv = load_adversarial(tmp_path, _crafted_run(tmp_path, x_adv)).x_adv(clean=x)
    records = evaluate_transfer(load_sources(tmp_path), ["onnx:int8"], onnx_dir=tmp_path / "onnx",
                                calibration_images=16, check_images=32)  # fmt: skip
    (row,) = transfer_table(records).to_dict("records")
    digest = model_hash(load_model("shapes-vgg16"))
    graph = onnx.load(str(tmp_path / "onnx" / f"{digest}.int8.onnx")).graph
    init = {i.name: torch.tensor(numpy_helper.to_array(i)) for i in graph.initializer}
    reader = {name: node for node in graph.node for name in node.input}
    sub = reader[graph.input[0].name]  # the graph's normalization, then its input quantization
    div = reader[sub.output[0]]
    quantize = reader[div.output[0]]
    assert (sub.op_type, div.op_type, quantize.op_type) == ("Sub", "Div", "QuantizeLinear")
    scale, zero = (init[name] for name in quantize.input[1:3])

    def quantized(images):  # by hand: ONNX rounds half to even, as torch.round does
        normalized = (images - init[sub.input[1]]) / init[div.input[1]]
        return (torch.round(normalized / scale) + zero.float()).clamp(0, 255)

    by_hand = (quantized(x_adv) == quantized(x)).flatten(1).all(dim=1)
    assert by_hand[:2].all() and not by_hand[3:].any()
    assert records["quantized_away"].tolist() == by_hand.long().tolist()
    assert row["quantized_away"] == int(by_hand.sum())
    described = row["input_quantization"]
    assert described.startswith("QuantizeLinear after Sub/Div")
    assert f"zero point {int(zero)}" in described
    assert float(re.search(r"scale ([0-9.e-]+)", described)[1]) == pytest.approx(float(scale), 1e-3)


# ------------------------------------------------------------------------------ CLI errors
def test_cli_prints_the_table_and_writes_transfer_csv(source_run, tmp_path, capsys):
    out, _ = source_run
    args = ["transfer", "--from", str(out), "--targets", "shapes-vgg16-at", "--rows", "lrpf",
            "--out", str(tmp_path), "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "lrpf" in printed and "shapes-vgg16-at" in printed and "tFR" in printed
    assert max(len(line) for line in printed.splitlines()[:-2]) <= 100
    assert len(pd.read_csv(tmp_path / "transfer.csv")) == 1
    assert len(load_transfer_records(tmp_path)) == N
    assert main([*args, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["target"] == "shapes-vgg16-at"


def test_cli_refuses_a_missing_run_folder(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["transfer", "--from", str(missing), "--targets", "shapes-vgg16"]) == 2
    assert str(missing) in _error_line(capsys)


def test_cli_asks_to_rerun_a_run_without_adversarial_images(source_run, tmp_path, capsys):
    out, _ = source_run
    old = tmp_path / "old"
    shutil.copytree(out, old, ignore=shutil.ignore_patterns("adversarial"))
    assert main(["transfer", "--from", str(old), "--targets", "shapes-vgg16"]) == 2
    line = _error_line(capsys)
    assert "no saved adversarial images" in line and "rerun `c2f-bench run --out" in line
    assert not (old / "transfer.csv").exists()


def test_cli_explains_a_run_written_before_protocol_and_success_rule(source_run, tmp_path, capsys):
    """The committed results of older heads: their leaderboard has ``mode``, no ``protocol``
    and no ``success_rule``."""
    out, _ = source_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    board = pd.read_csv(old / "leaderboard.csv").rename(columns={"protocol": "mode"})
    board.drop(columns=["success_rule"]).to_csv(old / "leaderboard.csv", index=False)
    assert main(["transfer", "--from", str(old), "--targets", "shapes-vgg16"]) == 2
    line = _error_line(capsys)
    assert str(old / "leaderboard.csv") in line and "protocol and success_rule" in line
    assert f"rerun `c2f-bench run --out {old}`" in line
    assert not (old / "transfer.csv").exists() and not (old / "transfer_records").exists()


def _damage_gzip_line(path, line: int, old: str, new: str) -> None:
    lines = gzip.decompress(path.read_bytes()).decode().split("\n")
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_bytes(gzip.compress("\n".join(lines).encode()))


def test_cli_names_a_damaged_records_file_and_writes_nothing(source_run, tmp_path, capsys):
    out, rows = source_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    damaged = run / "records" / f"{rows['row_id'].iloc[0]}.csv.gz"
    _damage_gzip_line(damaged, 3, ",True,", ",Maybe,")
    assert main(["transfer", "--from", str(run), "--targets", "shapes-vgg16"]) == 2
    line = _error_line(capsys)
    assert str(damaged) in line and "line 3" in line
    assert not (run / "transfer.csv").exists() and not (run / "transfer_records").exists()


def test_cli_names_a_row_without_its_records(source_run, tmp_path, capsys):
    out, rows = source_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    gone = run / "records" / f"{rows['row_id'].iloc[0]}.csv.gz"
    gone.unlink()
    assert main(["transfer", "--from", str(run), "--targets", "shapes-vgg16"]) == 2
    line = _error_line(capsys)
    assert str(gone) in line and rows["row_id"].iloc[0] in line
    assert not (run / "transfer.csv").exists() and not (run / "transfer_records").exists()


def test_cli_names_a_damaged_transfer_records_file_and_writes_nothing(source_run, tmp_path,
                                                                      capsys):  # fmt: skip
    out, _ = source_run
    args = ["transfer", "--from", str(out), "--out", str(tmp_path), "--rows", "fgsm",
            "--device", "cpu", "--targets"]  # fmt: skip
    assert main([*args, "shapes-vgg16"]) == 0
    capsys.readouterr()
    table = (tmp_path / "transfer.csv").read_bytes()
    rid = read_leaderboard(tmp_path / "transfer.csv", key=TRANSFER_KEY)["row_id"].iloc[0]
    damaged = transfer_records_path(tmp_path, rid, "shapes-vgg16")
    text = gzip.decompress(damaged.read_bytes()).decode().split("\n")
    fields = text[1].split(",")
    column = text[0].split(",").index("target_success")
    fields[column] = "False" if fields[column] == "True" else "True"  # a verdict edited by hand
    text[1] = ",".join(fields)
    damaged.write_bytes(gzip.compress("\n".join(text).encode()))
    assert main([*args, "shapes-vgg16-at"]) == 2
    line = _error_line(capsys)
    assert str(damaged) in line and "line 2" in line and "target_success" in line
    assert (tmp_path / "transfer.csv").read_bytes() == table
    assert len(list((tmp_path / "transfer_records").iterdir())) == 2


@pytest.mark.parametrize("target", ["no-such-model", "onnx:fp64"])
def test_cli_refuses_an_unknown_target(source_run, tmp_path, capsys, target):
    out, _ = source_run
    code = main(["transfer", "--from", str(out), "--out", str(tmp_path), "--targets", target])
    assert code == 2 and target in _error_line(capsys)
    assert not (tmp_path / "transfer.csv").exists()
    assert not (tmp_path / "transfer_records").exists()


def test_cli_refuses_a_target_of_another_hierarchy(source_run, tmp_path, capsys):
    out, _ = source_run
    other = tmp_path / "other.pt"
    save_checkpoint(tiny_vgg(Hierarchy.from_dict(TINY_HIERARCHY)), other)
    code = main(["transfer", "--from", str(out), "--out", str(tmp_path / "t"),
                 "--targets", str(other), "--device", "cpu"])  # fmt: skip
    line = _error_line(capsys)
    assert code == 2 and "hierarchies" in line and str(other) in line
    assert not (tmp_path / "t" / "transfer.csv").exists()


def test_cli_keeps_the_committed_results_folder(source_run, capsys):
    from c2f_attacks.runner.preflight import COMMITTED_RESULTS

    out, _ = source_run
    code = main(["transfer", "--from", str(out), "--out", str(COMMITTED_RESULTS[0]),
                 "--targets", "shapes-vgg16"])  # fmt: skip
    assert code == 2 and "--allow-results-dir" in _error_line(capsys)

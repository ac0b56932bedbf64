"""Deployment variants: FP32 / FP16 / INT8 ONNX graphs of the shipped model, checked on load.

Thresholds (documented in docs/metrics.md and the exporters' docstrings): on 512 test-split
images, FP16 agrees with PyTorch FP32 on >= 99% of the images and INT8 (256 training-split
calibration images) on >= 98%; both stay within 2 points of PyTorch's accuracy.
"""

from __future__ import annotations

import argparse

import onnx
import pytest
import torch

from c2f_attacks.cli import export as export_command
from c2f_attacks.cli import main
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.exporters import (
    CALIBRATION_IMAGES,
    AgreementError,
    OrtC2F,
    export_variants,
    variant_path,
)
from c2f_attacks.models.zoo import load_model

CPU = ["CPUExecutionProvider"]
FP16_MIN_AGREEMENT, INT8_MIN_AGREEMENT = 0.99, 0.98


@pytest.fixture(scope="module")
def model():
    return load_model("shapes-vgg16")


@pytest.fixture(scope="module")
def test_split():
    images, labels, _ = ShapesC2F(512, seed=SHAPES_SPLITS["test"]).tensors()
    return images, labels


@pytest.fixture(scope="module")
def calibration():
    return ShapesC2F(CALIBRATION_IMAGES, seed=SHAPES_SPLITS["train"]).tensors()[0]


@pytest.fixture(scope="module")
def exported(model, test_split, calibration, tmp_path_factory, shipped_onnx):
    """The variants of the shipped model, built from the session's FP32 export (what
    ``to_onnx`` returns for this model: tracing it again is the slow part). No agreement floor
    here: INT8 agreement depends on the CPU's integer kernels, and only the test of the
    documented thresholds may fail on it, not every test of the module."""
    import c2f_attacks.exporters.variants as variants

    path = tmp_path_factory.mktemp("variants") / "shapes.onnx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(variants, "to_onnx", lambda model, **options: onnx.load(str(shipped_onnx)))
        reports = export_variants(model, path, calibration, *test_split, min_agreement=0.0)
    return path, {r.variant: r for r in reports}


def test_writes_every_variant_next_to_the_fp32_file(exported):
    path, reports = exported
    assert list(reports) == ["fp32", "fp16", "int8"]
    assert [reports[v].path for v in reports] == [
        path,
        path.with_name("shapes.fp16.onnx"),
        path.with_name("shapes.int8.onnx"),
    ]
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "shapes.fp16.onnx",
        "shapes.int8.onnx",
        "shapes.onnx",
    ]  # the quantizer's working folder is gone
    assert variant_path(path, "int8") == reports["int8"].path


def test_variants_agree_with_pytorch_at_documented_thresholds(exported):
    _, reports = exported
    assert reports["fp32"].agreement == 1.0
    assert reports["fp16"].agreement >= FP16_MIN_AGREEMENT, reports["fp16"].summary()
    assert reports["int8"].agreement >= INT8_MIN_AGREEMENT, reports["int8"].summary()
    for report in reports.values():
        assert report.n == 512
        assert abs(report.coarse_acc - report.torch_coarse_acc) <= 0.02, report.summary()
        assert abs(report.fine_acc - report.torch_fine_acc) <= 0.02, report.summary()
        assert report.torch_fine_acc > 0.9  # the shipped model is trained


def test_files_load_with_float32_io_and_reproduce_the_check(exported, model, test_split):
    """Each written file, loaded again, gives the predictions its export check saw: the same
    agreement with PyTorch on the same images, stage by stage (the same graph and CPU: exact,
    whatever the CPU's integer kernels make of INT8)."""
    reports = exported[1]
    images, _ = test_split
    with torch.no_grad():
        reference = model(images)
    for variant, report in reports.items():
        proto = onnx.load(str(report.path))
        float32 = onnx.TensorProto.FLOAT
        assert proto.graph.input[0].type.tensor_type.elem_type == float32
        assert [o.type.tensor_type.elem_type for o in proto.graph.output[:2]] == [float32] * 2
        props = {p.key: p.value for p in proto.metadata_props}
        assert props["c2f.variant"] == variant and "c2f.hierarchy" in props
        out = OrtC2F(report.path, providers=CPU)(images)
        coarse = out.coarse_pred == reference.coarse_pred
        fine = out.fine_pred == reference.fine_pred
        assert coarse.float().mean().item() == report.coarse_agreement, variant
        assert fine.float().mean().item() == report.fine_agreement, variant
        assert (coarse & fine).float().mean().item() == report.agreement, variant
    sizes = {v: r.path.stat().st_size for v, r in reports.items()}
    assert sizes["fp16"] < 0.6 * sizes["fp32"] and sizes["int8"] < 0.35 * sizes["fp32"]


def test_fp16_graph_is_half_precision(exported):
    proto = onnx.load(str(exported[1]["fp16"].path))
    dtypes = {t.data_type for t in proto.graph.initializer if len(t.dims) > 1}  # weights
    assert onnx.TensorProto.FLOAT16 in dtypes and onnx.TensorProto.FLOAT not in dtypes


def test_int8_graph_is_qdq_with_per_channel_weights(exported):
    proto = onnx.load(str(exported[1]["int8"].path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    init = {t.name: t for t in proto.graph.initializer}
    int8_weights = [t for t in init.values() if t.data_type == onnx.TensorProto.INT8]
    assert int8_weights
    per_channel = [
        n for n in proto.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in init
        and init[n.input[0]].data_type == onnx.TensorProto.INT8 and len(init[n.input[1]].dims) == 1
    ]  # fmt: skip
    assert per_channel, "weights carry one scale per output channel"
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["c2f.calibration_images"] == str(CALIBRATION_IMAGES)


@pytest.fixture
def reuse_fp32(exported, monkeypatch):
    """Later exports of the same model reuse the module's FP32 graph (tracing is the slow part;
    the graph is what ``to_onnx`` returns for this model)."""
    import c2f_attacks.exporters.variants as variants

    proto = onnx.load(str(exported[1]["fp32"].path))
    monkeypatch.setattr(variants, "to_onnx", lambda model, **options: proto)


def test_agreement_floor_fails_a_broken_export(model, test_split, tmp_path, reuse_fp32):
    """Calibrating on black images (a user error) clips every activation range: the INT8 graph
    no longer agrees with PyTorch, and the export fails before writing anything."""
    images, labels = test_split
    out = tmp_path / "out"
    with pytest.raises(AgreementError, match=r"int8 variant agrees .* below the minimum agreement"):
        export_variants(
            model, out / "broken.onnx", torch.zeros(8, 3, 32, 32), images[:128], labels[:128],
            variants=("fp32", "int8"), min_agreement=0.95,
        )  # fmt: skip
    assert not [p for p in out.rglob("*")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variants": ("fp32", "bf16")}, "variants must be distinct names"),
        ({"variants": ("fp16", "fp16")}, "variants must be distinct names"),
        ({"min_agreement": 1.5}, r"min_agreement must lie in \[0, 1\]"),
        ({"variants": ("int8",), "calibration_images": None}, "needs calibration images"),
        ({"labels": torch.full((4,), 99)}, "check labels must lie in"),
    ],
)
def test_bad_arguments_fail_before_exporting(
    model, test_split, tmp_path, monkeypatch, kwargs, message
):
    import c2f_attacks.exporters.variants as variants

    monkeypatch.setattr(variants, "to_onnx", lambda *a, **k: pytest.fail("exported anyway"))
    images, labels = test_split
    args = {"calibration_images": images[:4], "images": images[:4], "labels": labels[:4], **kwargs}
    with pytest.raises(ValueError, match=message):
        export_variants(model, tmp_path / "m.onnx", **args)


# ------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="c2f-bench")
    export_command.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_calibrates_on_the_training_split(tmp_path, capsys, monkeypatch, reuse_fp32):
    import c2f_attacks.exporters.variants as variants

    seen = {}
    real_to_int8 = variants.to_int8

    def spy(proto, images, **options):
        seen["images"] = images
        return real_to_int8(proto, images, **options)

    monkeypatch.setattr(variants, "to_int8", spy)
    argv = ["export", "--out", str(tmp_path / "m.onnx"), "--variants", "fp16,int8",
            "--min-agreement", "0",  # the floor is not this test's point (it depends on the CPU)
            "--calibration-images", "32", "--check-images", "64"]  # fmt: skip
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    train = ShapesC2F(32, seed=SHAPES_SPLITS["train"]).tensors()[0]
    assert torch.equal(seen["images"], train)
    printed = capsys.readouterr().out
    assert "m.fp16.onnx: fp16: agreement" in printed and "m.int8.onnx: int8" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fp16.onnx", "m.int8.onnx"]


def test_cli_reports_the_agreement_floor(tmp_path, capsys, monkeypatch, reuse_fp32):
    """A deliberately broken calibration (the training images replaced by black ones, which
    clip the activation ranges) leaves the INT8 graph far below the 95% floor (about 60%
    agreement: a gap of some 80 of the 256 check images, not a rounding difference), so the
    refusal does not depend on the CPU; it comes in one line, and nothing is written."""
    import c2f_attacks.exporters.variants as variants

    real_to_int8 = variants.to_int8
    monkeypatch.setattr(
        variants, "to_int8", lambda proto, images, **kw: real_to_int8(proto, 0 * images, **kw)
    )
    argv = ["export", "--out", str(tmp_path / "m.onnx"), "--variants", "int8",
            "--min-agreement", "0.95", "--calibration-images", "8",
            "--check-images", "256"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("c2f-bench export: error:") and len(err.strip().splitlines()) == 1
    assert "int8 variant agrees" in err and "no file was written" in err
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.parametrize(
    "argv",
    [["--variants", "fp32,bf16"], ["--variants", ""], ["--min-agreement", "2"],
     ["--min-agreement", "nan"], ["--calibration-images", "0"]],
)  # fmt: skip
def test_cli_rejects_bad_values(tmp_path, capsys, argv):
    with pytest.raises(SystemExit):
        _parser().parse_args(["export", "--out", str(tmp_path / "m.onnx"), *argv])
    assert "expected" in capsys.readouterr().err

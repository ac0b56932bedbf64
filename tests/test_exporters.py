"""exporters: ONNX export, onnxruntime parity with PyTorch, fooling-ratio evaluation, errors."""

from __future__ import annotations

import argparse
import copy
import json
import re

import onnx
import pytest
import torch

from c2f_attacks.cli import evaluate as evaluate_command
from c2f_attacks.cli import export as export_command
from c2f_attacks.cli import main
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.exporters import (
    IR_VERSION,
    OPSET,
    OnnxModelError,
    OrtC2F,
    ParityError,
    ProviderUnavailableError,
    compare_outputs,
    evaluate_fooling,
    export_onnx,
    load_pair,
    save_pair,
    to_onnx,
)
from c2f_attacks.exporters.evaluate import fooled_mask
from c2f_attacks.models.base import C2FOutput
from c2f_attacks.models.zoo import load_model, save_checkpoint

CPU = ["CPUExecutionProvider"]
RTOL, ATOL = 1e-3, 1e-5


@pytest.fixture(scope="module")
def model():
    return load_model("shapes-vgg16")


@pytest.fixture(scope="module")
def onnx_path(shipped_onnx):
    """``export_onnx`` of the shipped model (the session's one export)."""
    return shipped_onnx


@pytest.fixture(scope="module")
def session(onnx_path):
    return OrtC2F(onnx_path, providers=CPU)


@pytest.fixture(scope="module")
def clean_images():
    return ShapesC2F(256, seed=SHAPES_SPLITS["test"]).tensors()[0]


@pytest.fixture(scope="module")
def adv_images(model, clean_images):
    """A few signed-gradient steps on the coarse decision, eps 8/255: images near the boundary."""
    eps, x = 8 / 255, clean_images.clone()
    target = model(clean_images).coarse_pred
    for _ in range(3):
        x.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model.logits(x)[0], target)
        (grad,) = torch.autograd.grad(loss, x)
        x = (
            clean_images + (x.detach() + eps / 2 * grad.sign() - clean_images).clamp(-eps, eps)
        ).clamp(0, 1)
    return x.detach()


def _torch(model, x) -> C2FOutput:
    with torch.no_grad():
        return model(x)


# ------------------------------------------------------------------ the exported file
def test_file_pins_ir_opset_and_names(onnx_path):
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == IR_VERSION == 10
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {OPSET}
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == [
        "coarse_logits",
        "fine_logits",
        "coarse_pred",
        "fine_pred",
    ]
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # dynamic batch axis
    assert "agreement 100" in {p.key: p.value for p in proto.metadata_props}["c2f.export_parity"]
    assert not list(onnx_path.parent.glob("*.tmp"))  # atomic write left nothing behind


def test_loads_in_installed_onnxruntime(session, model):
    assert session.providers == CPU
    assert (session.num_coarse, session.num_fine) == (
        model.hierarchy.num_coarse,
        model.hierarchy.num_fine,
    )
    assert session.input_shape == (-1, 3, 32, 32)


@pytest.mark.parametrize("n", [1, 3, 256])
def test_parity_clean(session, model, clean_images, n):
    x = clean_images[:n]
    ref, out = _torch(model, x), session(x)
    assert torch.equal(out.coarse_pred, ref.coarse_pred)
    assert torch.equal(out.fine_pred, ref.fine_pred)
    torch.testing.assert_close(out.coarse_logits, ref.coarse_logits, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(out.fine_logits, ref.fine_logits, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("n", [1, 3, 256])
def test_parity_adversarial(session, model, clean_images, adv_images, n):
    assert (adv_images - clean_images).abs().max() <= 8 / 255 + 1e-6
    parity = compare_outputs(_torch(model, adv_images[:n]), session(adv_images[:n]), RTOL, ATOL)
    assert parity.agreement >= 0.998, parity.summary()
    assert parity.logits_close, parity.summary()


def test_numpy_input_and_chunking(onnx_path, session, clean_images):
    whole = session(clean_images)
    chunked = OrtC2F(onnx_path, providers=CPU, batch_size=100)(clean_images.numpy())
    for name in C2FOutput.__dataclass_fields__:
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name), rtol=0, atol=1e-6)
    assert isinstance(chunked.fine_pred, torch.Tensor) and chunked.fine_pred.dtype == torch.int64


def test_io_binding_on_the_cpu_gives_the_plain_outputs(
    onnx_path, session, clean_images, monkeypatch
):
    bound = OrtC2F(onnx_path, providers=CPU, batch_size=100, io_binding=True)
    monkeypatch.setattr(bound._session, "run", None)  # only run_with_iobinding may be used
    plain = session(clean_images)
    out = bound(clean_images)  # chunked: every chunk writes into tensors of its own
    for name in C2FOutput.__dataclass_fields__:
        torch.testing.assert_close(getattr(out, name), getattr(plain, name), rtol=0, atol=1e-6)


def test_export_restores_model_state(model, tmp_path):
    """Every submodule's own training flag comes back: here BatchNorm is deliberately in eval
    mode while the rest trains (restoring only the top-level flag would put it back in train)."""
    flags = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    model.train()
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batch_norms, "the shipped model has BatchNorm layers"
    for m in batch_norms:
        m.eval()
    before = {name: m.training for name, m in model.named_modules()}
    try:
        export_onnx(model, tmp_path / "m.onnx")
        assert {name: m.training for name, m in model.named_modules()} == before
        assert torch.equal(torch.get_rng_state(), rng)
    finally:
        model.eval()
    assert [p.requires_grad for p in model.parameters()] == flags


def test_session_from_bytes_writes_no_file(model, clean_images, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    data = to_onnx(model).SerializeToString()
    session = OrtC2F.from_bytes(data, CPU)
    assert torch.equal(
        session(clean_images[:4]).fine_pred, _torch(model, clean_images[:4]).fine_pred
    )
    assert session.name == "<in-memory ONNX model>"
    assert not list(scratch.iterdir()) and not list(tmp_path.glob("*.onnx"))
    with pytest.raises(TypeError, match="bytes"):
        OrtC2F.from_bytes(str(tmp_path / "m.onnx"))


def test_model_with_nan_weights_is_refused(model, tmp_path):
    broken = copy.deepcopy(model)
    with torch.no_grad():
        name, param = next(iter(broken.named_parameters()))
        param.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=rf"weight '{re.escape(name)}' has 1 NaN or infinite"):
        export_onnx(broken, tmp_path / "nan.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_onnx_file_with_non_finite_weights_is_refused(onnx_path, tmp_path, value):
    proto = onnx.load(str(onnx_path))
    weight = max(proto.graph.initializer, key=lambda t: len(t.raw_data) or len(t.float_data))
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[0] = value
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save_model(proto, str(tmp_path / "broken.onnx"))
    with pytest.raises(OnnxModelError, match=rf"broken.onnx has non-finite weights: {weight.name}"):
        OrtC2F(tmp_path / "broken.onnx", providers=CPU)


# ------------------------------------------------------------------ exporter variants
def test_torchscript_exporter(model, clean_images, tmp_path):
    path = export_onnx(model, tmp_path / "ts.onnx", dynamo=False)
    assert onnx.load(str(path)).ir_version == IR_VERSION
    out, ref = OrtC2F(path, providers=CPU)(clean_images[:5]), _torch(model, clean_images[:5])
    assert torch.equal(out.fine_pred, ref.fine_pred)


def test_falls_back_to_torchscript_when_dynamo_fails(model, tmp_path, monkeypatch):
    import c2f_attacks.exporters.export as export_module

    def broken(*args):
        raise RuntimeError("cannot trace")

    monkeypatch.setattr(export_module, "_trace_dynamo", broken)
    with pytest.warns(RuntimeWarning, match="falling back to the TorchScript exporter"):
        path = export_onnx(model, tmp_path / "fallback.onnx")
    assert path.is_file()
    with pytest.raises(RuntimeError, match="cannot trace"):
        export_onnx(model, tmp_path / "forced.onnx", dynamo=True)


def test_parity_failure_writes_nothing(model, tmp_path):
    class Drifting(type(model)):
        def forward(self, x):  # the graph exports logits(); a forward that disagrees must be caught
            out = super().forward(x)
            return C2FOutput(out.coarse_logits + 1, out.fine_logits, out.coarse_pred, out.fine_pred)

    drifting = Drifting(model.hierarchy, model.cfg)
    drifting.load_state_dict(model.state_dict())
    target = tmp_path / "bad.onnx"
    with pytest.raises(ParityError, match="nothing was written"):
        export_onnx(drifting.eval(), target)
    assert not target.exists() and not list(tmp_path.iterdir())


# ------------------------------------------------------------------ errors
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        OrtC2F(tmp_path / "nope.onnx")


@pytest.mark.parametrize("corrupt", ["garbage", "truncated"])
def test_corrupt_file(onnx_path, tmp_path, corrupt):
    bad = tmp_path / "bad.onnx"
    data = onnx_path.read_bytes()
    bad.write_bytes(
        b"\x00not an onnx file\xff" * 10 if corrupt == "garbage" else data[: len(data) // 2]
    )
    with pytest.raises(OnnxModelError, match="bad.onnx") as err:
        OrtC2F(bad, providers=CPU)
    assert isinstance(err.value, ValueError)


def test_unsupported_ir_version_is_a_clear_error(onnx_path, tmp_path):
    # onnx 1.23 writes IR 14 by default, which onnxruntime 1.31 refuses and 1.32 loads; an IR
    # version from the future is refused by every onnxruntime, so the error path is always hit.
    proto = onnx.load(str(onnx_path))
    proto.ir_version = 99
    onnx.save_model(proto, str(tmp_path / "ir99.onnx"))
    with pytest.raises(OnnxModelError, match="ir99.onnx.*IR version"):
        OrtC2F(tmp_path / "ir99.onnx", providers=CPU)


def test_model_that_is_not_c2f(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 32, 32])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3, 32, 32])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    onnx.save_model(proto, str(tmp_path / "flat.onnx"))
    with pytest.raises(OnnxModelError, match=r"flat.onnx.*outputs \['coarse_logits'"):
        OrtC2F(tmp_path / "flat.onnx", providers=CPU)


@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (2, 1, 32, 32), (3, 32, 32)])
def test_wrong_image_shape(session, shape):
    with pytest.raises(ValueError, match=r"do not fit .*shapes.onnx"):
        session(torch.rand(shape))


def test_explicit_gpu_provider_is_never_silently_cpu(onnx_path):
    with pytest.raises(ProviderUnavailableError, match="not in this onnxruntime build"):
        OrtC2F(onnx_path, providers=["NoSuchExecutionProvider"])
    try:
        sess = OrtC2F(onnx_path, providers=["CUDAExecutionProvider"])
    except ProviderUnavailableError as err:
        assert "CUDAExecutionProvider" in str(err)
    else:  # a machine where CUDA loads
        assert sess.providers[0] == "CUDAExecutionProvider"


def test_auto_providers_pick_what_loads(onnx_path, clean_images):
    sess = OrtC2F(onnx_path)
    assert sess.providers[-1] == "CPUExecutionProvider"
    assert sess(clean_images[:2]).fine_pred.shape == (2,)


# ------------------------------------------------------------------ fooling ratios
def _out(coarse, fine) -> C2FOutput:
    c, f = torch.tensor(coarse), torch.tensor(fine)
    return C2FOutput(torch.zeros(len(c), 2), torch.zeros(len(c), 4), c, f)


def test_fooled_mask_definitions():
    clean = _out([0, 0, 1, 1], [0, 1, 2, 3])
    adv = _out([0, 1, 1, 1], [1, 2, 2, 3])  # image 0: fine within coarse; 1: coarse flip
    assert fooled_mask(clean, adv, "coarse").tolist() == [False, True, False, False]
    assert fooled_mask(clean, adv, "fine").tolist() == [True, True, False, False]
    assert fooled_mask(clean, adv, "fine", "fine_changed_coarse_kept").tolist() == [
        True,
        False,
        False,
        False,
    ]


def test_evaluate_fooling_matches_torch(session, model, clean_images, adv_images):
    report = evaluate_fooling(session, clean_images, adv_images, "coarse", model)
    assert report.n == 256 and report.providers == CPU
    assert report.agreement >= 0.998
    assert report.fooling_ratio == pytest.approx(report.torch_fooling_ratio, abs=2 / 256)
    assert report.fooled.shape == (256,)
    fine = evaluate_fooling(session, clean_images, adv_images, "fine",
                            success_rule="fine_changed_coarse_kept")  # fmt: skip
    assert fine.fooling_ratio == pytest.approx(fine.fine_changed_coarse_kept)
    assert fine.fooling_ratio <= fine.fine_changed and fine.agreement is None
    same = evaluate_fooling(session, clean_images[:8], clean_images[:8], "fine")
    assert same.fooling_ratio == 0.0


def test_evaluate_fooling_rejects_bad_tensors(session, clean_images):
    with pytest.raises(ValueError, match="same shape"):
        evaluate_fooling(session, clean_images[:4], clean_images[:5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_fooling(session, clean_images[:4], clean_images[:4] * 3)
    with pytest.raises(ValueError, match="not defined for the coarse stage"):
        evaluate_fooling(session, clean_images[:4], clean_images[:4], "coarse",
                         success_rule="fine_changed_coarse_kept")  # fmt: skip


def test_saved_pair_roundtrip_and_errors(clean_images, tmp_path):
    save_pair(tmp_path / "pair.pt", clean_images[:4], clean_images[:4], attack="none")
    clean, adv = load_pair(tmp_path / "pair.pt")
    assert torch.equal(clean, clean_images[:4]) and torch.equal(adv, clean_images[:4])
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_pair(tmp_path / "missing.pt")
    torch.save({"clean": clean_images[:4]}, tmp_path / "nokey.pt")
    with pytest.raises(ValueError, match=r"nokey.pt.*'adv'"):
        load_pair(tmp_path / "nokey.pt")
    torch.save({"clean": clean_images[:4], "adv": clean_images[:3]}, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match=r"shape.pt.*\(3, 3, 32, 32\)"):
        load_pair(tmp_path / "shape.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt"):
        load_pair(tmp_path / "junk.pt")


# ------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="c2f-bench")
    sub = parser.add_subparsers(dest="command", required=True)
    export_command.add_parser(sub)
    evaluate_command.add_parser(sub)
    return parser


def test_cli_export_then_evaluate(model, clean_images, adv_images, tmp_path, capsys):
    ckpt = save_checkpoint(model, tmp_path / "model.pt")
    out = tmp_path / "cli.onnx"
    args = _parser().parse_args(["export", "--model", str(ckpt), "--out", str(out)])
    assert args.func(args) == 0
    assert "IR 10, opset 20" in capsys.readouterr().out
    save_pair(tmp_path / "pair.pt", clean_images[:32], adv_images[:32])
    argv = ["evaluate", "--onnx", str(out), "--tensors", str(tmp_path / "pair.pt"),
            "--stage", "fine", "--success-rule", "fine_changed_coarse_kept", "--model", str(ckpt),
            "--providers", "CPUExecutionProvider", "--json"]  # fmt: skip
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 32 and report["success_rule"] == "fine_changed_coarse_kept"
    assert report["agreement"] >= 0.998


def test_cli_reports_user_errors(tmp_path, capsys):
    argv = ["evaluate", "--onnx", str(tmp_path / "x.onnx"), "--tensors", str(tmp_path / "none.pt")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("c2f-bench evaluate: error:") and "none.pt" in err
    assert len(err.splitlines()) == 1

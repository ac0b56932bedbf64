"""``to_onnx`` / ``export_onnx``: a C2F model as a verified ONNX graph that onnxruntime loads.

``to_onnx`` returns the graph in memory (``OrtC2F(proto.SerializeToString())`` runs it without a
file); ``export_onnx`` writes it. A graph is returned or written only after it has passed
``onnx.checker`` and matched the PyTorch model on a verification batch in onnxruntime; the file is
written with temp file + rename, so a failed export leaves no file and an existing file is never
half overwritten.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import onnx
import torch

from c2f_attacks._io import atomic_write
from c2f_attacks.exporters.errors import ParityError
from c2f_attacks.exporters.graph import BATCH_AXIS, INPUT_NAME, OUTPUT_NAMES, C2FGraph
from c2f_attacks.exporters.parity import Parity, compare_outputs
from c2f_attacks.exporters.runtime import OrtC2F
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.models.checks import check_finite
from c2f_attacks.modes import eval_mode

#: Pinned so that every onnxruntime the project supports (>= 1.19) loads the file: onnx 1.23
#: writes IR 14 by default, which onnxruntime 1.31 refuses ("Unsupported model IR version").
#: IR 10 / opset 20 is what the torch.export-based exporter writes and what ORT 1.19+ reads.
OPSET = 20
IR_VERSION = 10

RTOL, ATOL = 1e-3, 1e-5


def to_onnx(
    model: C2FClassifier,
    *,
    input_size: int | None = None,
    verify_inputs: torch.Tensor | None = None,
    dynamo: bool | None = None,
    opset: int = OPSET,
) -> onnx.ModelProto:
    """``model``'s C2F forward as a verified FP32 ONNX graph.

    The graph takes ``images`` (N, 3, H, W) float32 in [0, 1], N dynamic, and returns
    ``coarse_logits``, ``fine_logits`` (float32), ``coarse_pred``, ``fine_pred`` (int64).

    The model is traced in eval mode (every submodule; each one's own ``training`` flag is given
    back afterwards) and refused up front when a parameter or buffer is NaN or infinite.
    ``dynamo=None`` uses the torch.export-based exporter and falls back to the TorchScript
    exporter (with a warning) when tracing fails; ``True``/``False`` force one of them.
    ``verify_inputs`` (default: 3 seeded random images) are run through both backends;
    predictions must agree exactly and logits within rtol 1e-3 / atol 1e-5, or
    :class:`ParityError` is raised.
    """
    if not isinstance(model, C2FClassifier):
        raise TypeError(f"model must be a C2FClassifier, got {type(model).__name__}")
    check_finite(model, "model")
    size = input_size or model.input_size or 224
    gen = torch.Generator().manual_seed(0)  # a private generator: the global RNG stays as it was
    if verify_inputs is None:
        verify_inputs = torch.rand(3, 3, size, size, generator=gen)
    device = next(model.parameters()).device
    with eval_mode(model):
        # Batch 2, not 1: torch.export specializes sizes 0 and 1 instead of keeping them dynamic.
        example = torch.rand(2, *verify_inputs.shape[1:], generator=gen).to(device)
        proto = _trace(C2FGraph(model).eval(), example, opset, dynamo)
        with torch.no_grad():
            reference = model(verify_inputs.to(device))
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    parity = _check_parity(proto, reference, verify_inputs)
    # Metadata does not change the graph, so the verified graph is what is returned.
    onnx.helper.set_model_props(
        proto,
        {
            "c2f.hierarchy": json.dumps(model.hierarchy.to_dict()),
            "c2f.export_parity": parity.summary(),
        },
    )
    return proto


def export_onnx(model: C2FClassifier, path: str | os.PathLike, **options) -> Path:
    """Write :func:`to_onnx` ``(model, **options)`` to ``path`` (atomically) and return the path.

    FP16 and INT8 files: :func:`c2f_attacks.exporters.export_variants`.
    """
    proto = to_onnx(model, **options)
    return atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)))


def _trace(
    graph: C2FGraph, example: torch.Tensor, opset: int, dynamo: bool | None
) -> onnx.ModelProto:
    if dynamo is not False:
        try:
            return _trace_dynamo(graph, example, opset)
        except Exception as err:  # any tracing failure: the TorchScript exporter may still work
            if dynamo:
                raise
            warnings.warn(
                f"torch.onnx.export(dynamo=True) failed ({type(err).__name__}: "
                f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); "
                "falling back to the TorchScript exporter",
                RuntimeWarning,
                stacklevel=3,
            )
    return _trace_torchscript(graph, example, opset)


def _trace_dynamo(graph: C2FGraph, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    program = torch.onnx.export(
        graph,
        (example,),
        dynamo=True,
        verbose=False,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={INPUT_NAME: {0: torch.export.Dim(BATCH_AXIS)}},
    )
    return program.model_proto


def _trace_torchscript(graph: C2FGraph, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # we chose the legacy path knowingly
        torch.onnx.export(
            graph,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: BATCH_AXIS} for name in (INPUT_NAME, *OUTPUT_NAMES)},
        )
    return onnx.load_from_string(buffer.getvalue())


def _check_parity(proto: onnx.ModelProto, reference, verify_inputs: torch.Tensor) -> Parity:
    session = OrtC2F(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    parity = compare_outputs(reference, session(verify_inputs.cpu()), rtol=RTOL, atol=ATOL)
    if parity.agreement < 1.0 or not parity.logits_close:
        raise ParityError(
            f"exported graph does not match the PyTorch model ({parity.summary()}; "
            f"tolerance rtol {RTOL} / atol {ATOL}); nothing was written"
        )
    return parity

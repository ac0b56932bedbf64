"""``export_onnx``: write a C2F model as a verified ONNX file that onnxruntime loads.

The file is written only after it has passed ``onnx.checker`` and matched the PyTorch model on a
verification batch in onnxruntime (temp file + rename, so a failed export leaves no file and an
existing file is never half overwritten).
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
from c2f_attacks.models.base import C2FClassifier
from exporters.errors import ParityError
from exporters.graph import BATCH_AXIS, INPUT_NAME, OUTPUT_NAMES, C2FGraph
from exporters.parity import Parity, compare_outputs

#: Pinned so that every onnxruntime the project supports (>= 1.19) loads the file: onnx 1.23
#: writes IR 14 by default, which onnxruntime 1.31 refuses ("Unsupported model IR version").
#: IR 10 / opset 20 is what the torch.export-based exporter writes and what ORT 1.19+ reads.
OPSET = 20
IR_VERSION = 10

_TOLERANCES = {False: (1e-3, 1e-5), True: (1e-2, 1e-2)}  # fp16 -> (rtol, atol)


def export_onnx(
    model: C2FClassifier,
    path: str | os.PathLike,
    *,
    fp16: bool = False,
    input_size: int | None = None,
    verify_inputs: torch.Tensor | None = None,
    dynamo: bool | None = None,
    opset: int = OPSET,
) -> Path:
    """Export ``model``'s C2F forward to ``path`` and return the path.

    The graph takes ``images`` (N, 3, H, W) float32 in [0, 1], N dynamic, and returns
    ``coarse_logits``, ``fine_logits`` (float32), ``coarse_pred``, ``fine_pred`` (int64).

    ``dynamo=None`` uses the torch.export-based exporter and falls back to the TorchScript
    exporter (with a warning) when tracing fails; ``True``/``False`` force one of them.
    ``fp16`` stores half-precision weights (input and logits stay float32). ``verify_inputs``
    (default: 3 seeded random images) are run through both backends; predictions must agree
    exactly and logits within rtol 1e-3 / atol 1e-5 (1e-2 / 1e-2 for fp16), or
    :class:`ParityError` is raised and nothing is written.
    """
    size = input_size or model.input_size or 224
    gen = torch.Generator().manual_seed(0)  # a private generator: the global RNG stays as it was
    if verify_inputs is None:
        verify_inputs = torch.rand(3, 3, size, size, generator=gen)
    device = next(model.parameters()).device
    was_training = model.training
    try:
        graph = C2FGraph(model, fp16=fp16)
        # Batch 2, not 1: torch.export specializes sizes 0 and 1 instead of keeping them dynamic.
        example = torch.rand(2, *verify_inputs.shape[1:], generator=gen).to(device)
        proto = _trace(graph, example, opset, dynamo)
        with torch.no_grad():
            reference = model(verify_inputs.to(device))
    finally:
        model.train(was_training)
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    parity = _check_parity(proto, reference, verify_inputs, fp16)
    # Metadata does not change the graph, so the verified graph is what gets written.
    onnx.helper.set_model_props(
        proto,
        {
            "c2f.hierarchy": json.dumps(model.hierarchy.to_dict()),
            "c2f.fp16": str(fp16),
            "c2f.export_parity": parity.summary(),
        },
    )
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


def _check_parity(
    proto: onnx.ModelProto, reference, verify_inputs: torch.Tensor, fp16: bool
) -> Parity:
    from exporters.runtime import OrtC2F  # runtime imports nothing from here; avoids a cycle

    session = OrtC2F(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rtol, atol = _TOLERANCES[fp16]
    parity = compare_outputs(reference, session(verify_inputs.cpu()), rtol=rtol, atol=atol)
    if parity.agreement < 1.0 or not parity.logits_close:
        raise ParityError(
            f"exported graph does not match the PyTorch model ({parity.summary()}; "
            f"tolerance rtol {rtol} / atol {atol}); no file was written"
        )
    return parity

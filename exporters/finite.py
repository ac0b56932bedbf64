"""Refuse an ONNX file whose weights are NaN or infinite (a PyTorch model's weights:
:func:`c2f_attacks.models.checks.check_finite`).

A model with one NaN weight still runs: every logit it feeds becomes NaN, argmax returns class 0,
and an evaluation writes plausible-looking but meaningless rows. The check runs before any
session is built and names the first offending tensor.

In an ONNX graph a scalar (one-element) ``-inf``/``inf`` constant is allowed: it is a fill value,
not a weight (the exported graph masks the fine logits outside the predicted coarse class with
``-inf`` before its argmax). NaN is refused everywhere.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from c2f_attacks.exporters.errors import OnnxModelError


def check_finite_onnx(proto: onnx.ModelProto, name: str) -> None:
    """Raise :class:`OnnxModelError` naming ``name`` (the file) and the first initializer or
    Constant holding a NaN, or an inf in a tensor of more than one element (see the module
    docstring). Tensors stored as external data are not read."""
    tensors = [(t.name, t) for t in proto.graph.initializer]
    tensors += [
        (node.name or node.output[0], attr.t)
        for node in proto.graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.type == onnx.AttributeProto.TENSOR
    ]
    for key, tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue
        values = numpy_helper.to_array(tensor)
        if not np.issubdtype(values.dtype, np.floating):
            continue
        if np.isnan(values).any() or (values.size > 1 and np.isinf(values).any()):
            raise OnnxModelError(
                f"{name} has non-finite weights: {key} holds {_count(values)}; refusing to load it"
            )


def _count(values: np.ndarray) -> str:
    nan = int(np.isnan(values).sum())
    inf = int(np.isinf(values).sum())
    return f"{nan} NaN and {inf} infinite values out of {values.size}"

"""What an INT8 graph does to its input: read its input quantization, and tell per image whether
a perturbation survives it.

A QDQ graph (:mod:`.quantize`) quantizes its image input with QuantizeLinear, after the
normalization's Sub and Div: ``q = clamp(round(x_normalized / scale) + zero_point)`` (round half
to even). An adversarial image whose quantized input equals the clean image's is *quantized
away*: whatever it did in float, the INT8 graph sees the clean image. :func:`input_quantization`
finds the QuantizeLinear nodes that every path from the image input passes through and builds an
onnxruntime session of the graph's own nodes up to them, so the check runs the graph's exact
arithmetic, nothing re-implemented. Nothing is guessed: a path to an output that passes no
QuantizeLinear, or a scale or zero point that is not a constant, gives an
:class:`InputQuantization` that says why and has no session.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
import torch
from onnx import numpy_helper

from c2f_attacks.exporters.runtime import CPU


@dataclass(frozen=True)
class InputQuantization:
    """How an INT8 graph quantizes its input: ``description`` in words and, when it does, a
    session computing the quantized input (the graph's own nodes up to its QuantizeLinear)."""

    description: str
    session: ort.InferenceSession | None = None
    input_name: str = ""

    def same(self, x: torch.Tensor, x_adv: torch.Tensor) -> np.ndarray:
        """Per image: whether ``x`` and ``x_adv`` quantize to the same input."""
        if self.session is None:
            raise ValueError(f"the graph has no input quantization ({self.description})")
        a, b = (
            self.session.run(None, {self.input_name: t.float().cpu().numpy()}) for t in (x, x_adv)
        )
        same = np.ones(len(x), dtype=bool)
        for qa, qb in zip(a, b):
            same &= (qa == qb).reshape(len(x), -1).all(axis=1)
        return same


def input_quantization(proto: onnx.ModelProto) -> InputQuantization:
    """The input quantization of an INT8 graph (module docstring): the QuantizeLinear nodes that
    every path from the image input passes through, after value-preserving pre-processing such
    as the normalization's Sub and Div."""
    graph = proto.graph
    constants = {i.name for i in graph.initializer}
    source = next(i.name for i in graph.input if i.name not in constants)
    outputs = {o.name for o in graph.output}
    readers = defaultdict(list)
    for position, node in enumerate(graph.node):
        for name in dict.fromkeys(node.input):
            readers[name].append((position, node))
    quantizers, before, frontier, seen = {}, [], [source], set()
    while frontier:
        name = frontier.pop()
        if name in outputs:
            return InputQuantization(
                f"none: output {name!r} is computed from the unquantized input"
            )
        for position, node in readers[name]:
            if node.op_type == "QuantizeLinear" and node.input[0] == name:
                quantizers[position] = node
            elif node.op_type not in ("Shape", "Size") and position not in seen:
                seen.add(position)  # shape ops read the input's shape, not its values
                before.append(node.op_type)
                frontier.extend(node.output)
    quantizers = list(quantizers.values())
    if not quantizers:
        return InputQuantization("none: the graph has no QuantizeLinear")
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    parts = []
    for q in quantizers:
        scale, zero = init.get(q.input[1]), init.get(q.input[2]) if len(q.input) > 2 else None
        if scale is None or (len(q.input) > 2 and zero is None):
            return InputQuantization(f"none readable: QuantizeLinear {q.name!r} has no constant "
                                     "scale / zero point")  # fmt: skip
        zero = np.zeros((), np.uint8) if zero is None else zero
        parts.append(f"scale {np.array2string(scale, precision=4)} zero point "
                     f"{np.array2string(zero)} ({zero.dtype})")  # fmt: skip
    where = f"after {'/'.join(before)}" if before else "on the raw input"
    inferred = onnx.shape_inference.infer_shapes(proto)
    head = onnx.utils.Extractor(inferred).extract_model([source], [q.output[0] for q in quantizers])
    session = ort.InferenceSession(head.SerializeToString(), providers=[CPU])
    return InputQuantization(f"QuantizeLinear {where}: {'; '.join(parts)}", session, source)

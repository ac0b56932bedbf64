"""Reading an INT8 graph's input quantization, on graphs built by hand."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from c2f_attacks.exporters.input_quantization import input_quantization

SHAPE = ["N", 1, 2, 2]


def _graph(nodes, initializers=(), outputs=("y",)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, SHAPE) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), name) for name, v in initializers],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


MEAN, STD, SCALE, ZERO = np.float32(0.5), np.float32(0.25), np.float32(0.05), np.uint8(128)
NORMALIZED = [("mean", MEAN), ("std", STD), ("scale", SCALE), ("zero", ZERO)]


def _normalized_qdq(extra_outputs=()) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["a"]),
        helper.make_node("Div", ["a", "std"], ["b"]),
        helper.make_node("QuantizeLinear", ["b", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"]),
        *extra_outputs,
    ]
    outputs = ("y", *(n.output[0] for n in extra_outputs))
    return _graph(nodes, NORMALIZED, outputs)


def test_the_quantization_after_the_normalization_is_read_and_run_as_the_graph_does():
    found = input_quantization(_normalized_qdq())
    assert found.description.startswith("QuantizeLinear after Sub/Div: scale 0.05")
    assert "zero point 128 (uint8)" in found.description
    step = float(STD * SCALE)  # one quantization step, in pixel values
    x = torch.full((3, 1, 2, 2), 0.5)  # normalized 0: exactly on a level
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] += 0.4 * step  # rounds back to the same level
    x_adv[1, 0, 1, 1] += 0.6 * step  # rounds to the next one
    x_adv[2] += 0.4 * step
    assert found.same(x, x_adv).tolist() == [True, False, True]


def test_a_float_graph_has_none():
    found = input_quantization(_graph([helper.make_node("Relu", ["x"], ["y"])]))
    assert found.description == "none: output 'y' is computed from the unquantized input"
    assert found.session is None
    with pytest.raises(ValueError, match="no input quantization"):
        found.same(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_a_path_around_the_quantization_means_none():
    bypass = helper.make_node("Relu", ["b"], ["z"])  # the normalized input, unquantized
    found = input_quantization(_normalized_qdq([bypass]))
    assert found.description == "none: output 'z' is computed from the unquantized input"
    assert found.session is None


def test_a_scale_that_is_not_a_constant_is_not_guessed():
    nodes = [
        helper.make_node("Abs", ["s"], ["computed"]),
        helper.make_node("QuantizeLinear", ["x", "computed", "zero"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"]),
    ]
    found = input_quantization(_graph(nodes, [("s", SCALE), ("scale", SCALE), ("zero", ZERO)]))
    assert found.description.startswith("none readable: QuantizeLinear 'quant'")
    assert found.session is None

"""ONNX export of the C2F forward pass and onnxruntime evaluation (TensorRT, CUDA or CPU)."""

from exporters.errors import OnnxModelError, ParityError, ProviderUnavailableError
from exporters.evaluate import FoolingReport, evaluate_fooling, load_pair, save_pair
from exporters.export import IR_VERSION, OPSET, export_onnx
from exporters.parity import Parity, compare_outputs
from exporters.runtime import OrtC2F

__all__ = [
    "IR_VERSION",
    "OPSET",
    "FoolingReport",
    "OnnxModelError",
    "OrtC2F",
    "Parity",
    "ParityError",
    "ProviderUnavailableError",
    "compare_outputs",
    "evaluate_fooling",
    "export_onnx",
    "load_pair",
    "save_pair",
]

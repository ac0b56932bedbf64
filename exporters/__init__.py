"""ONNX export of the C2F forward pass, its FP16 / INT8 deployment variants, and onnxruntime
evaluation (TensorRT, CUDA or CPU)."""

from c2f_attacks.exporters.errors import OnnxModelError, ParityError, ProviderUnavailableError
from c2f_attacks.exporters.evaluate import FoolingReport, evaluate_fooling, load_pair, save_pair
from c2f_attacks.exporters.export import IR_VERSION, OPSET, export_onnx, to_onnx
from c2f_attacks.exporters.parity import Parity, compare_outputs, torch_outputs
from c2f_attacks.exporters.quantize import CALIBRATION_IMAGES
from c2f_attacks.exporters.runtime import OrtC2F
from c2f_attacks.exporters.variants import (
    CHECK_IMAGES,
    MIN_AGREEMENT,
    VARIANTS,
    AgreementError,
    VariantReport,
    export_variants,
    variant_path,
)

__all__ = [
    "CALIBRATION_IMAGES",
    "CHECK_IMAGES",
    "IR_VERSION",
    "MIN_AGREEMENT",
    "OPSET",
    "VARIANTS",
    "AgreementError",
    "FoolingReport",
    "OnnxModelError",
    "OrtC2F",
    "Parity",
    "ParityError",
    "ProviderUnavailableError",
    "VariantReport",
    "compare_outputs",
    "evaluate_fooling",
    "export_onnx",
    "export_variants",
    "load_pair",
    "save_pair",
    "to_onnx",
    "torch_outputs",
    "variant_path",
]

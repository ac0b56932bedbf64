"""INT8 variant: onnxruntime static quantization in the QDQ format, per-channel weights.

Weights are quantized to int8 per output channel (symmetric); activations to uint8 with ranges
(min/max) recorded on calibration images, which must come from the training split, never from
the images the variant is evaluated on. Quantized operators: convolutions, matrix products and
the operators between them (ReLU, pooling). The prediction tail (the masked argmax that picks
the fine class inside the predicted coarse class) stays float32: its ``-inf`` fill value has no
int8 range, and argmax over dequantized logits would turn near ties into exact ties.

The graph first goes through onnxruntime's quantization pre-processing (shape inference and
graph optimization), the documented first step of static quantization. onnxruntime's quantizer
works on files: the FP32 graph, its pre-processed form and the result live in a temporary folder
(inside ``workdir`` when given) that is removed when the call returns.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from c2f_attacks.validation import check_image_batch

#: the calibration size ``c2f-bench export`` uses (images of the training split)
CALIBRATION_IMAGES = 256
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool")


class _Batches(CalibrationDataReader):
    """The calibration images, ``batch_size`` at a time, as onnxruntime's quantizer reads them."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int):
        self._batches = iter(
            [{input_name: images[i : i + batch_size]} for i in range(0, len(images), batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def to_int8(
    proto: onnx.ModelProto,
    calibration_images: torch.Tensor,
    *,
    batch_size: int = 64,
    workdir: str | os.PathLike | None = None,
) -> onnx.ModelProto:
    """The QDQ int8 graph of ``proto`` (an FP32 C2F graph), calibrated on ``calibration_images``
    (N, C, H, W) float in [0, 1]. ``proto`` itself is not changed."""
    check_image_batch(calibration_images, channels=None, name="calibration images")
    init = {i.name for i in proto.graph.initializer}
    input_name = next(i.name for i in proto.graph.input if i.name not in init)
    images = calibration_images.detach().float().cpu().contiguous().numpy()
    with tempfile.TemporaryDirectory(prefix=".c2f-quantize-", dir=workdir) as tmp:
        source, prepared, target = (Path(tmp) / f"{n}.onnx" for n in ("fp32", "prep", "int8"))
        onnx.save_model(proto, str(source))
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            _Batches(input_name, images, batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
        )
        return onnx.load(str(target))

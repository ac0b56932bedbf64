"""FP16 variant: half-precision weights and arithmetic, float32 inputs and outputs kept.

The FP32 graph is converted with onnxruntime's float16 converter
(``onnxruntime.transformers.float16``) with ``keep_io_types=True``: the graph casts ``images`` to
float16 on entry and the logits back to float32 on exit, so an FP16 file takes and returns
exactly what the FP32 one does. Execution providers without float16 kernels for an operator
(the CPU provider, for most of them) insert casts back to float32 around it, so on a CPU the
FP16 file is mainly smaller, not faster.
"""

from __future__ import annotations

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of ``proto`` (``proto`` itself is not changed) with float32 I/O."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return convert_float_to_float16(copy, keep_io_types=True)

"""The memory layout of the batches an attack feeds its model (``memory_format=``).

- ``"contiguous"``: the batch as a plain contiguous (NCHW) tensor, as torchattacks runs it; FGSM
  and PGD are then bit-identical to torchattacks' (no random start, CE loss, no early stop).
- ``"channels_last"``: NHWC batches.
- ``"auto"`` (default): channels-last for conv nets on the CPU when a one-image probe shows the
  model takes such a batch, the caller's layout everywhere else.

Why "auto": on the CPU, oneDNN runs convolutions on channels-last batches without reordering
them to and from its blocked layout at every layer: one forward and input-gradient pass of
shapes-vgg16 on 64 images takes about 26 ms instead of 31, and a forward alone 9 ms instead of
15 (2 cores; ``bench/test_bench_attacks.py``). The values agree only up to float rounding, and a
sign step turns a rounding difference in a near-zero gradient into a full step, so a few images
can end elsewhere than under ``"contiguous"``. Models that ``.view`` a conv output raise on a
channels-last batch; the probe finds this out once per attack and device type.
"""

from __future__ import annotations

import torch
from torch import nn

from c2f_attacks.errors import UserError

MEMORY_FORMATS = ("auto", "contiguous", "channels_last")


def prefers_channels_last(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether "auto" gives ``model`` channels-last batches of ``x`` (see the module docstring).

    Call in the model's eval mode: the probe runs one image through it without gradients.
    """
    if x.dim() != 4 or x.device.type != "cpu" or x.shape[0] == 0:
        return False
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    try:
        with torch.inference_mode():
            model(x[:1].contiguous(memory_format=torch.channels_last))
    except RuntimeError:
        return False
    return True


class Layout:
    """The layout policy of one attack: ``Layout(memory_format)(model, x)`` returns the batch
    the model sees; "auto" probes once per device type."""

    def __init__(self, memory_format: str):
        if memory_format not in MEMORY_FORMATS:
            raise UserError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
        self.memory_format = memory_format
        self.probed: dict[str, bool] = {}  # "auto": channels-last or not, by device type

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.memory_format == "contiguous":
            return x.contiguous()
        if self.memory_format == "channels_last":
            return x.contiguous(memory_format=torch.channels_last)
        device = x.device.type
        if device not in self.probed:
            self.probed[device] = prefers_channels_last(model, x)
        return x.contiguous(memory_format=torch.channels_last) if self.probed[device] else x

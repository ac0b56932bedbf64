"""The memory layout of the batches an attack feeds its model.

On the CPU, oneDNN runs convolutions on channels-last (NHWC) batches without reordering them to
and from its blocked layout at every layer: one forward and input-gradient pass of shapes-vgg16 on
64 images takes about 26 ms instead of 31, and a forward alone 9 ms instead of 15 (2 cores;
``bench/test_bench_attacks.py`` keeps the comparison with torchattacks in both layouts). The
values are the same up to float rounding.

So attacks feed conv nets on the CPU channels-last batches. They keep the caller's layout on other
devices (not measured here), for models without 2-d convolutions, and for models that cannot take
a channels-last batch (a ``.view`` of a conv output raises on it), which a one-image probe finds
out once per attack.
"""

from __future__ import annotations

import torch
from torch import nn


def prefers_channels_last(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``model`` should see ``x``'s batches channels-last (see the module docstring).

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

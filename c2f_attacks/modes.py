"""Mode hygiene: run a model in eval mode for the duration of a call, then give it back exactly.

``model.train(flag)`` sets every submodule's ``training`` flag to one value, so restoring only
the top-level flag would put a model whose BatchNorm or Dropout was deliberately kept in eval
mode back into train mode everywhere. :func:`eval_mode` records every submodule's flag and
restores each one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every submodule in eval mode inside the block; each one's own flag restored after."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training

"""Checks on model weights, run where weights enter the library (checkpoints, zoo, factories)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from c2f_attacks.errors import UserError


def check_finite(weights: nn.Module | Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`~c2f_attacks.errors.UserError` naming ``source`` and the tensor when any
    weight is NaN or infinite.

    ``weights``: a module (parameters and buffers) or a state dict. A NaN weight makes every
    output NaN, and every metric computed from it garbage, so it is refused before any use.
    """
    items = (
        list(weights.named_parameters()) + list(weights.named_buffers())
        if isinstance(weights, nn.Module)
        else list(weights.items())
    )
    for name, tensor in items:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            bad = (~torch.isfinite(tensor.detach())).sum().item()
            if bad:
                raise UserError(
                    f"{source}: weight {name!r} has {bad} NaN or infinite values "
                    f"(of {tensor.numel()}): corrupt weights or a diverged training"
                )

"""Canonization: the model seen in the form LRP's rules are defined on, for one call only.

Nothing here changes the model: merged parameters are computed on the fly, and the gate hooks
are removed when the explanation ends.

* :func:`fold_batchnorm`: a BatchNorm fed by a Conv/Linear, found in *data flow* while the
  forward runs (the engine defers each linear layer's rule until its output is first used; if
  that use is ``batch_norm``, the pair gets one rule with these parameters). This covers
  torchvision's ResNet blocks (downsample included) and MobileNet blocks, timm's conv/BN pairs
  and ``BatchNormAct2d`` (whose activation runs after the normalization and keeps its own rule)
  and any other container layout.
* :class:`SqueezeExcitation`: multiplicative gates treated as constants.

Residual additions need no canonizer here: in the gradient-times-input form the plain gradient
of ``a + b`` splits relevance in proportion to ``a`` and ``b`` (Zennit needs its ``Sum`` module
with the ``Norm`` rule for the same split).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from c2f_attacks.lrp.layers import qualified_names


@torch.no_grad()
def fold_batchnorm(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W', b')`` of ``batchnorm(linear(.))`` in eval mode (detached):

        s = gamma / sqrt(var + eps),   W' = W * s (per output channel),   b' = (b - mean) * s + beta

    (Zennit's ``MergeBatchNorm``; Zennit keeps ``eps`` in the merged BatchNorm, which then
    computes ``x / sqrt(1 + eps)``, so its canonized model differs from the original by that
    factor per BatchNorm; ours is the original function.)"""
    scale = (running_var + eps).rsqrt()
    if bn_weight is not None:
        scale = scale * bn_weight
    if bias is None:
        bias = torch.zeros_like(running_mean)
    new_bias = (bias - running_mean) * scale
    if bn_bias is not None:
        new_bias = new_bias + bn_bias
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.view(shape), new_bias


class SqueezeExcitation:
    """Squeeze-excitation gates as constants: ``y = x * s(x)`` is explained as
    ``y = x * stop_gradient(s)``, so ``R_x = R_y`` and the gate branch gets no relevance (the
    usual LRP treatment of multiplicative gates, as for LSTM gates).

    Known blocks and their gate module: torchvision ``SqueezeExcitation.scale_activation``, timm
    ``SqueezeExcite.gate``, ``SEModule.gate``, ``EffectiveSEModule.gate``. In the
    gradient-times-input form a detached gate is all it takes: the gradient at ``x`` is
    ``g * s``, and ``x * g * s = R_y``.
    """

    GATES: ClassVar[dict[str, str]] = {
        "torchvision.ops.misc.SqueezeExcitation": "scale_activation",
        "timm.models._efficientnet_blocks.SqueezeExcite": "gate",
        "timm.layers.squeeze_excite.SEModule": "gate",
        "timm.layers.squeeze_excite.EffectiveSEModule": "gate",
    }

    @classmethod
    def gates(cls, model: nn.Module) -> set[nn.Module]:
        """The gate modules of every known squeeze-excitation block in ``model``."""
        found = set()
        for module in model.modules():
            for name in qualified_names(module) & cls.GATES.keys():
                gate = getattr(module, cls.GATES[name], None)
                if isinstance(gate, nn.Module):
                    found.add(gate)
        return found

    @classmethod
    def register(cls, model: nn.Module) -> list:
        """Detach every gate's output; returns the hook handles (remove them after the call)."""
        return [g.register_forward_hook(_detach_output) for g in cls.gates(model)]


def _detach_output(module, args, output):
    return output.detach()

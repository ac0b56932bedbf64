"""LRP for LayerNorm: AttnLRP's identity rule on the normalization.

``F.layer_norm`` computes ``y = (x - mean(x)) * s * w + b`` with ``s = 1 / sqrt(var(x) + eps)``
over the normalized dimensions. The rule holds ``s`` constant: what remains is a linear map
(centring, scaling, affine), and relevance crosses it as through a linear layer in
gradient-times-input form (LRP-0; the bias keeps its share). Over the ``D`` normalized entries
of one position,

    R_j = x_j * s * sum_k (delta_jk - 1/D) * w_k * R_k / y_k.

This is LXT's efficient LayerNorm (AttnLRP, Achtibat et al., ICML 2024); it does not conserve
relevance exactly (the centring and the bias take a share), and it needs no stabilizer.
``nn.LayerNorm``, torchvision's and timm's ``LayerNorm2d`` (a permute around ``F.layer_norm``) and
every functional ``F.layer_norm`` call get it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from c2f_attacks.lrp.rules import GradientEdits, Rule


class _ConstantStdLayerNorm(torch.autograd.Function):
    """``F.layer_norm`` (the fused kernel) whose backward holds the scale ``s`` constant:
    ``grad_x = s * (g w - mean(g w))``. For plain explanations, whose graph serves the LRP
    backward alone (no parameter gradients, no second derivative)."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight, bias, eps):
        y, _, rstd = torch.native_layer_norm(x, normalized_shape, weight, bias, eps)
        ctx.dims = tuple(range(-len(normalized_shape), 0))
        ctx.save_for_backward(rstd, weight)
        return y

    @staticmethod
    def backward(ctx, g):
        rstd, weight = ctx.saved_tensors
        gw = g if weight is None else g * weight
        return (gw - gw.mean(ctx.dims, keepdim=True)) * rstd, None, None, None, None


class ConstantStd(Rule):
    """Identity rule for LayerNorm: the normalization ``1 / sqrt(var + eps)`` is a constant
    factor; ``R_j = x_j * s * sum_k (delta_jk - 1/D) w_k R_k / y_k`` (module docstring)."""

    def layer_norm(
        self,
        x: torch.Tensor,
        normalized_shape: Sequence[int],
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        eps: float,
        edits: GradientEdits,
    ) -> torch.Tensor:
        """``F.layer_norm(x, normalized_shape, weight, bias, eps)`` with this rule's gradient."""
        shape = tuple(normalized_shape)
        if not edits.differentiable:
            return _ConstantStdLayerNorm.apply(x, shape, weight, bias, eps)
        dims = tuple(range(-len(shape), 0))
        centred = x - x.mean(dims, keepdim=True)
        scale = edits.frozen((centred.square().mean(dims, keepdim=True) + eps).rsqrt())
        y = centred * scale
        if weight is not None:
            y = y * weight
        return y if bias is None else y + bias

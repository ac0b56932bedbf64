"""Canonization: BatchNorm merged into the preceding convolution, without touching the model.

A BatchNorm (eval mode) right after a linear layer is an affine map per channel, so the pair is
one linear layer with

    W' = W * gamma / sqrt(var + eps),   b' = (b - mean) * gamma / sqrt(var + eps) + beta

(Zennit's ``SequentialMergeBatchNorm``). We only *compute* W', b' during an explanation; the
engine then applies the rule to the pair (the BatchNorm's output, from the conv's input), and
the conv itself gets no rule.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from c2f_attacks.lrp.composites import BATCHNORM_TYPES, LINEAR_TYPES


def find_conv_bn_pairs(model: nn.Module) -> dict[nn.Module, nn.Module]:
    """``{batchnorm: linear layer}`` for every BatchNorm directly after a Conv/Linear inside
    an ``nn.Sequential`` (the layout of torchvision's and our VGGs)."""
    pairs: dict[nn.Module, nn.Module] = {}
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.children())
        for prev, cur in itertools.pairwise(children):
            if (
                isinstance(cur, BATCHNORM_TYPES)
                and isinstance(prev, LINEAR_TYPES)
                and prev.weight.shape[0] == cur.num_features
            ):
                pairs[cur] = prev
    return pairs


@torch.no_grad()
def merged_parameters(
    layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W', b')`` of ``bn(layer(.))`` with the BatchNorm's running statistics (detached)."""
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError(
            "cannot merge a BatchNorm without running statistics (track_running_stats=False)"
        )
    scale = (bn.running_var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale
    if bn.bias is not None:
        new_bias = new_bias + bn.bias
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    return layer.weight * scale.view(shape), new_bias

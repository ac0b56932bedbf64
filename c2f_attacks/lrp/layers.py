"""The layer types the LRP engine knows, and the model check every entry point runs.

Layers fall into a few kinds, each with one treatment in the gradient-times-input form:

* linear layers (Conv/Linear): a rule from the composite;
* BatchNorm (eval mode, running statistics): folded into the linear layer that feeds it, else
  pass-through;
* element-wise activations whose gradient would not pass relevance on (SiLU, ReLU6, ...):
  pass-through; average pooling: the proportional rule;
* layers whose plain gradient already routes relevance correctly: ReLU, max-pooling (to the
  winner), dropout and stochastic depth (identities in eval mode), flatten, padding (padded
  entries are constants and get none);
* squeeze-excitation gates: constants (see ``canonizers``);
* LayerNorm (``F.layer_norm``, torchvision's and timm's ``LayerNorm2d`` included): the
  identity rule on the normalization (see ``normalization``);
* attention modules: an attention rule for the softmax and the products of activations inside
  (see ``attention``); their linear projections are linear layers;
* index maps and identities: permutes, empty ``nn.Sequential`` containers.

Anything else is refused by :func:`~c2f_attacks.lrp.check.check_explainable`, because its
relevance would silently be a plain gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LINEAR_TYPES = (nn.Linear, *CONV_TYPES)
AVGPOOL_TYPES = (
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)  # fmt: skip
BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: element-wise activations whose plain gradient does not pass relevance through (ReLU6 clips
#: at 6: its gradient would drop the relevance of the clipped units)
PASS_ACTIVATIONS = (
    nn.ELU, nn.GELU, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU, nn.Mish, nn.PReLU, nn.ReLU6,
    nn.SELU, nn.SiLU, nn.Sigmoid, nn.Softplus, nn.Tanh,
)  # fmt: skip
#: parameter-free modules whose plain gradient already routes relevance (max-pooling to the
#: winner) and that keep the sign of their input
SIGN_KEEPING_TYPES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Flatten,
    nn.Identity,
)  # fmt: skip
#: padding: index maps whose gradient drops the padded (constant) entries
PADDING_TYPES = (
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
)
#: LayerNorm and its subclasses; which of them compute ``F.layer_norm`` is in LAYERNORM_FORWARDS
LAYERNORM_TYPES = (nn.LayerNorm,)
#: attention modules (torchvision's and timm's are named in ATTENTION_NAMES)
ATTENTION_TYPES = (nn.MultiheadAttention,)
#: rectifiers whose plain gradient passes relevance through
RECTIFIER_TYPES = (nn.ReLU,)
#: activations whose backward saves their input alone: a plain explanation hands their output
#: on uncopied (the pass-through rule never runs their backward)
OUTPUT_UNSAVED = (nn.GELU, nn.SiLU)
#: modules whose output is non-negative (a later z+ layer then needs one extra convolution)
NONNEG_TYPES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softplus)

# Third-party layers, by qualified class name (no import of those packages needed).
#: Conv/Linear subclasses whose own forward only pads the input (or only casts): the rule calls
#: that forward with its modified parameters
LINEAR_FORWARDS = {
    "timm.layers.conv2d_same.Conv2dSame",
    "timm.layers.linear.Linear",
}
#: identities in eval mode (stochastic depth) and average pooling written as ``x.mean``
IDENTITY_IN_EVAL = {"timm.layers.drop.DropPath", "torchvision.ops.stochastic_depth.StochasticDepth"}
#: index maps (relevance follows the entries)
INDEX_MAPS = {"torchvision.ops.misc.Permute"}
#: LayerNorm classes whose forward is ``F.layer_norm`` (around a permute, or a float32 cast)
LAYERNORM_FORWARDS = {
    "torch.nn.modules.normalization.LayerNorm",
    "torchvision.models.convnext.LayerNorm2d",
    "timm.layers.norm.LayerNorm", "timm.layers.norm.LayerNorm2d",
    "timm.layers.norm.LayerNormFp32", "timm.layers.norm.LayerNorm2dFp32",
}  # fmt: skip
#: modules computing softmax attention: torchvision's Swin (V1 and V2), timm's ViT family
ATTENTION_NAMES = (
    "torchvision.models.swin_transformer.ShiftedWindowAttention",
    "torchvision.models.swin_transformer.ShiftedWindowAttentionV2",
    "timm.layers.attention.Attention",
)
MEAN_POOLING = {"timm.layers.adaptive_avgmax_pool.FastAdaptiveAvgPool"}


def qualified_names(module: nn.Module | type) -> set[str]:
    """``package.module.Class`` of the module's class (or of a class) and of its bases."""
    cls = module if isinstance(module, type) else type(module)
    return {f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__}


def forward_owner(module: nn.Module) -> type:
    """The class in the module's MRO whose ``forward`` it runs."""
    return next(c for c in type(module).__mro__ if "forward" in vars(c))


def is_identity(module: nn.Module) -> bool:
    """An empty container: ``nn.Sequential()`` returns its input; ``nn.ModuleList()`` and
    ``nn.ModuleDict()`` are never called."""
    if next(module.children(), None) is not None:
        return False
    return isinstance(module, (nn.ModuleList, nn.ModuleDict)) or forward_owner(module) is (
        nn.Sequential
    )


def linear_op(module: nn.Module) -> Callable:
    """``op(input, weight, bias)``: the layer's linear map with replaceable parameters.

    Plain Conv/Linear call the functional op; a subclass whose forward pads first (timm's
    ``Conv2dSame``) is called through that forward, so padding is part of the map (the flat and
    z^B rules then see zeros, not ones or bounds, at padded positions, as Zennit does)."""
    owner = forward_owner(module)
    if owner in CONV_TYPES:
        return module._conv_forward
    if owner is nn.Linear:
        return F.linear
    return partial(_call_forward, module)


def _call_forward(module: nn.Module, a: torch.Tensor, weight, bias) -> torch.Tensor:
    if bias is None:  # the module may own a bias: the rule asked for none
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return torch.func.functional_call(module, {"weight": weight, "bias": bias}, (a,))

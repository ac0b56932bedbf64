"""The model check that every LRP entry point (and every attack that uses LRP) runs first."""

from __future__ import annotations

from torch import nn

from c2f_attacks.lrp.canonizers import SqueezeExcitation
from c2f_attacks.lrp.composites import Composite
from c2f_attacks.lrp.layers import (
    AVGPOOL_TYPES,
    BATCHNORM_TYPES,
    CONV_TYPES,
    IDENTITY_IN_EVAL,
    LINEAR_FORWARDS,
    LINEAR_TYPES,
    MEAN_POOLING,
    PADDING_TYPES,
    PASS_ACTIVATIONS,
    RECTIFIER_TYPES,
    SIGN_KEEPING_TYPES,
    forward_owner,
    qualified_names,
)
from c2f_attacks.models.base import Normalize

_KNOWN = (
    LINEAR_TYPES + AVGPOOL_TYPES + BATCHNORM_TYPES + PASS_ACTIVATIONS + RECTIFIER_TYPES
    + SIGN_KEEPING_TYPES + PADDING_TYPES + (Normalize,)
)  # fmt: skip
_KNOWN_BY_NAME = LINEAR_FORWARDS | IDENTITY_IN_EVAL | MEAN_POOLING


def _linear_problem(module: nn.Module) -> str | None:
    owner = forward_owner(module)
    if owner in CONV_TYPES or owner is nn.Linear:
        return None
    if f"{owner.__module__}.{owner.__qualname__}" in LINEAR_FORWARDS:
        return None
    return (
        f"its forward ({owner.__qualname__}.forward) is not a plain linear map (with padding), "
        "so a rule cannot replace its weights"
    )


def _batchnorm_problem(module: nn.Module) -> str | None:
    if module.running_mean is None or module.running_var is None:
        return (
            "it has no running statistics (track_running_stats=False), so it normalizes with "
            "batch statistics and is no fixed affine map"
        )
    return None


def check_explainable(model: nn.Module, composite: Composite | None = None) -> None:
    """Raise TypeError unless LRP has a rule for every layer of ``model``.

    Every leaf module must be of a kind listed in :mod:`c2f_attacks.lrp.layers`, be named in
    ``composite``'s own layer map, or be a squeeze-excitation gate; every Conv/Linear must
    compute its plain linear map (padding allowed); every BatchNorm must have running
    statistics. Operations in ``forward`` that are not modules (additions, reshapes, ``mean``)
    pass. The error names the module's path and type and what to do.
    """
    gates = SqueezeExcitation.gates(model)
    named = composite.named_types if composite is not None else ()
    for name, module in model.named_modules():
        if isinstance(module, LINEAR_TYPES):
            problem = _linear_problem(module)
        elif isinstance(module, BATCHNORM_TYPES):
            problem = _batchnorm_problem(module)
        elif module in gates or next(module.children(), None) is not None:
            continue
        elif isinstance(module, _KNOWN + named) or qualified_names(module) & _KNOWN_BY_NAME:
            problem = None
        else:
            problem = "LRP has no rule for this layer type"
        if problem is not None:
            kind = f"{type(module).__module__}.{type(module).__qualname__}"
            raise TypeError(
                f"cannot explain {type(model).__name__} with LRP: module {name or '(root)'!r} "
                f"({kind}): {problem}. Replace the layer with a supported one (Conv/Linear, "
                "BatchNorm, pooling, ReLU and element-wise activations, dropout, padding), or, "
                "for an element-wise layer, name a rule for its type in a Composite "
                "(e.g. Composite([((YourLayer,), Pass())]))."
            )

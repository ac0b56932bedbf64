"""The model check that every LRP entry point (and every attack that uses LRP) runs first."""

from __future__ import annotations

from torch import nn

from c2f_attacks.errors import UserError
from c2f_attacks.lrp.attention import AttentionRule
from c2f_attacks.lrp.canonizers import SqueezeExcitation
from c2f_attacks.lrp.composites import Composite
from c2f_attacks.lrp.layers import (
    AVGPOOL_TYPES,
    BATCHNORM_TYPES,
    CONV_TYPES,
    IDENTITY_IN_EVAL,
    INDEX_MAPS,
    LAYERNORM_FORWARDS,
    LAYERNORM_TYPES,
    LINEAR_FORWARDS,
    LINEAR_TYPES,
    MEAN_POOLING,
    PADDING_TYPES,
    PASS_ACTIVATIONS,
    RECTIFIER_TYPES,
    SIGN_KEEPING_TYPES,
    forward_owner,
    is_identity,
    qualified_names,
)
from c2f_attacks.models.base import Normalize

_KNOWN = (
    LINEAR_TYPES + AVGPOOL_TYPES + BATCHNORM_TYPES + PASS_ACTIVATIONS + RECTIFIER_TYPES
    + SIGN_KEEPING_TYPES + PADDING_TYPES + (Normalize,)
)  # fmt: skip
_KNOWN_BY_NAME = LINEAR_FORWARDS | IDENTITY_IN_EVAL | MEAN_POOLING | INDEX_MAPS


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


def _layernorm_problem(module: nn.Module) -> str | None:
    owner = forward_owner(module)
    if f"{owner.__module__}.{owner.__qualname__}" in LAYERNORM_FORWARDS:
        return None
    return (
        f"its forward ({owner.__qualname__}.forward) is not known to compute F.layer_norm, "
        "which the LayerNorm rule replaces"
    )


def _attention_problem(module: nn.MultiheadAttention) -> str | None:
    if module.bias_k is not None or module.add_zero_attn:
        return "add_bias_kv and add_zero_attn (extra key/value rows) have no LRP rule"
    return None


def _own_projections(model: nn.Module, composite: Composite | None) -> set[nn.Module]:
    """Attention modules whose rule names the rule of their projections, and their layers."""
    found: set[nn.Module] = set()
    for module in model.modules() if composite is not None else ():
        rule = composite.rule_for(module)
        if isinstance(rule, AttentionRule) and rule.projections is not None:
            found.update(module.modules())
    return found


def _coverage_problem(
    layer: nn.Module | type, composite: Composite | None, what: str = "this layer type"
) -> str | None:
    if composite is None:
        return None
    if composite.rule_for(layer) is None and composite.rule_for(layer, True) is None:
        return f"the composite {composite.name!r} has no rule for {what}"
    return None


def _batchnorm_problem(module: nn.Module) -> str | None:
    if module.running_mean is None or module.running_var is None:
        return (
            "it has no running statistics (track_running_stats=False), so it normalizes with "
            "batch statistics and is no fixed affine map"
        )
    return None


def check_explainable(model: nn.Module, composite: Composite | None = None) -> None:
    """Raise UserError unless LRP has a rule for every layer of ``model``.

    Every leaf module must be of a kind listed in :mod:`c2f_attacks.lrp.layers`, be named in
    ``composite``'s own layer map, or be a squeeze-excitation gate; every Conv/Linear must
    compute its plain linear map (padding allowed) and have a rule in ``composite``; every
    BatchNorm must have running statistics; every LayerNorm must compute ``F.layer_norm``.
    Empty containers are identities. Operations in ``forward`` that are not modules
    (additions, reshapes, ``mean``) pass; functional attention and layer norms get their rules
    while the model runs. The error names the module's path and type and what to do.
    """
    gates = SqueezeExcitation.gates(model)
    covered = _own_projections(model, composite)
    for name, module in model.named_modules():
        ruled = composite if module not in covered else None
        if isinstance(module, LINEAR_TYPES):
            problem = _linear_problem(module) or _coverage_problem(module, ruled)
        elif isinstance(module, BATCHNORM_TYPES):
            problem = _batchnorm_problem(module)
        elif isinstance(module, LAYERNORM_TYPES):
            problem = _layernorm_problem(module)
        elif isinstance(module, nn.MultiheadAttention):
            problem = _attention_problem(module) or _coverage_problem(
                nn.Linear, ruled, "its linear projections (nn.Linear)"
            )
        elif module in gates or is_identity(module) or next(module.children(), None) is not None:
            continue
        elif (
            isinstance(module, _KNOWN)
            or qualified_names(module) & _KNOWN_BY_NAME
            or (composite is not None and composite.names(module))
        ):
            problem = None
        else:
            problem = "LRP has no rule for this layer type"
        if problem is not None:
            kind = f"{type(module).__module__}.{type(module).__qualname__}"
            raise UserError(
                f"cannot explain {type(model).__name__} with LRP: module {name or '(root)'!r} "
                f"({kind}): {problem}. Replace the layer with a supported one (Conv/Linear, "
                "BatchNorm, LayerNorm, attention, pooling, ReLU and element-wise activations, "
                "dropout, padding), or name a rule for its type in a Composite (e.g. "
                "Composite([((nn.Conv2d,), ZPlus()), ((nn.Linear,), Epsilon()), ((YourLayer,), "
                "Pass())]) for an element-wise layer)."
            )

"""Composites: which rule each layer gets.

A composite maps ``(module, is_input_layer)`` to a rule. Input layers are the first linear
layers in data flow from the image: no other linear layer lies between the image and them
(normalization, padding or a channel repeat may); a model with separate backbones has several.
Every composite covers the non-linear layers of CNNs and transformers the same way unless its
map names them: proportional average pooling, pass-through for BatchNorm and activations
(AttnLRP's identity rule for GELU and SiLU), the identity rule for LayerNorm and CP-LRP for
attention.

The named composites live in :data:`COMPOSITES` (a :class:`~c2f_attacks.registry.Registry`
of factories, registered under their function names); :data:`DEFAULT_COMPOSITE` is the one
every entry point uses unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps

from torch import nn

from c2f_attacks.errors import UserError
from c2f_attacks.lrp.attention import AttentionRule, AttnLRP, CPAttention
from c2f_attacks.lrp.layers import (
    ATTENTION_NAMES,
    ATTENTION_TYPES,
    AVGPOOL_TYPES,
    BATCHNORM_TYPES,
    CONV_TYPES,
    LAYERNORM_TYPES,
    LINEAR_TYPES,
    PASS_ACTIVATIONS,
    qualified_names,
)
from c2f_attacks.lrp.normalization import ConstantStd
from c2f_attacks.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, Rule, ZBox, ZPlus
from c2f_attacks.registry import Registry

#: ``[(module types, rule), ...]``; a type may be given by its qualified name
#: (``"package.module.Class"``), for layers of packages that need not be installed
LayerMap = Sequence[tuple[tuple[type | str, ...], Rule]]


def _matches(layer: nn.Module | type, types: tuple[type | str, ...]) -> bool:
    cls = layer if isinstance(layer, type) else type(layer)
    classes = tuple(t for t in types if isinstance(t, type))
    if classes and issubclass(cls, classes):
        return True
    names = {t for t in types if isinstance(t, str)}
    return bool(names & qualified_names(cls)) if names else False


class Composite:
    """A rule per layer: the first matching entry of ``first_map`` for input layers, else of
    ``layer_map``; average pooling, un-merged BatchNorm, non-ReLU activations, LayerNorm and
    attention get the proportional, pass-through, identity and CP-LRP rules unless a map names
    them.

    Args:
        layer_map: ``[(module types, rule), ...]`` for every layer.
        first_map: the same for input layers (checked first there).
        low, high: the input box in pixel space, for the z^B rule (default [0, 1]).
    """

    def __init__(
        self,
        layer_map: LayerMap,
        first_map: LayerMap = (),
        low: float = 0.0,
        high: float = 1.0,
        name: str = "custom",
    ):
        base: LayerMap = [
            (AVGPOOL_TYPES, Norm()),
            (BATCHNORM_TYPES, Pass()),
            (PASS_ACTIVATIONS, Pass()),
            (LAYERNORM_TYPES, ConstantStd()),
            (ATTENTION_TYPES + ATTENTION_NAMES, CPAttention()),
        ]
        self.layer_map = list(layer_map) + base
        #: layer types this composite names beyond the linear layers (the model check accepts
        #: them), and those of them whose rule is element-wise (applied by a module hook)
        self.named_types = tuple(
            t for types, _ in layer_map for t in types
            if isinstance(t, str) or not issubclass(t, LINEAR_TYPES)
        )  # fmt: skip
        self.elementwise_types = tuple(
            t for types, rule in layer_map for t in types
            if isinstance(t, type) and not issubclass(t, LINEAR_TYPES)
            and not isinstance(rule, (ConstantStd, AttentionRule))
        )  # fmt: skip
        self.first_map = list(first_map)
        self.low, self.high = low, high
        self.name = name
        for _types, rule in self.layer_map:
            if rule.input_only:
                raise ValueError(f"{rule!r} applies to input layers only; put it in first_map")

    def names(self, layer: nn.Module) -> bool:
        """Whether this composite's own maps name ``layer``'s type (beyond the linear layers)."""
        return _matches(layer, self.named_types)

    def rule_for(self, layer: nn.Module | type, is_input: bool = False) -> Rule | None:
        """The rule for ``layer`` (a module, or a module type), or None: the composite does
        not cover it."""
        if is_input:
            for types, rule in self.first_map:
                if _matches(layer, types):
                    return rule
        for types, rule in self.layer_map:
            if _matches(layer, types):
                return rule
        return None

    def __repr__(self) -> str:
        return f"Composite({self.name!r})"


COMPOSITES: Registry[Callable[..., Composite]] = Registry("composite")


def register_composite(factory: Callable[..., Composite]) -> Callable[..., Composite]:
    """Decorator: register ``factory`` in :data:`COMPOSITES` under its function name, which is
    also the ``name`` of every composite it builds."""

    @wraps(factory)
    def build(*args, **kwargs) -> Composite:
        composite = factory(*args, **kwargs)
        composite.name = factory.__name__
        return composite

    return COMPOSITES.register(factory.__name__, build)


@register_composite
def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Zennit's ``EpsilonPlusFlat``: flat on input layers, z+ on convolutions, epsilon on
    fully connected layers, proportional average pooling."""
    return Composite(
        [(CONV_TYPES, ZPlus(stabilizer)), ((nn.Linear,), Epsilon(epsilon))],
        [(LINEAR_TYPES, Flat(stabilizer))],
    )


@register_composite
def epsilon_plus_box(
    epsilon: float = 1e-6, stabilizer: float = 1e-6, low: float = 0.0, high: float = 1.0
) -> Composite:
    """z^B on input layers (box [low, high] in pixel space), z+ on convolutions, epsilon on
    fully connected layers."""
    return Composite(
        [(CONV_TYPES, ZPlus(stabilizer)), ((nn.Linear,), Epsilon(epsilon))],
        [(LINEAR_TYPES, ZBox(stabilizer))],
        low=low,
        high=high,
    )


@register_composite
def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Zennit's ``EpsilonAlpha2Beta1Flat``: flat on input layers, alpha=2/beta=1 on
    convolutions, epsilon on fully connected layers."""
    return Composite(
        [(CONV_TYPES, AlphaBeta(2.0, 1.0, stabilizer)), ((nn.Linear,), Epsilon(epsilon))],
        [(LINEAR_TYPES, Flat(stabilizer))],
    )


@register_composite
def epsilon(epsilon: float = 1e-6) -> Composite:
    """Epsilon everywhere, input layers included (``epsilon=0``: LRP-0, which conserves
    relevance exactly when biases are zero)."""
    return Composite([(LINEAR_TYPES, Epsilon(epsilon))])


@register_composite
def epsilon_gamma_box(
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    stabilizer: float = 1e-6,
    low: float = 0.0,
    high: float = 1.0,
) -> Composite:
    """Zennit's ``EpsilonGammaBox``: z^B on input convolutions (box [low, high] in pixel space),
    gamma on the other convolutions, epsilon on fully connected layers. The usual choice for
    ResNets."""
    return Composite(
        [(CONV_TYPES, Gamma(gamma, stabilizer)), ((nn.Linear,), Epsilon(epsilon))],
        [(CONV_TYPES, ZBox(stabilizer))],
        low=low,
        high=high,
    )


@register_composite
def gamma(gamma: float = 0.25, stabilizer: float = 1e-6) -> Composite:
    """Gamma on every convolution and fully connected layer, input layers included (LXT's
    recipe for vision transformers, with one gamma), CP-LRP attention."""
    return Composite([(LINEAR_TYPES, Gamma(gamma, stabilizer))])


@register_composite
def attnlrp(epsilon: float = 1e-6) -> Composite:
    """AttnLRP: epsilon on every linear layer, the softmax's own rule and the uniform rule on
    the products inside attention."""
    return Composite(
        [(LINEAR_TYPES, Epsilon(epsilon)), (ATTENTION_TYPES + ATTENTION_NAMES, AttnLRP())]
    )


#: the composite of every entry point (attacks, metrics, figures, ``lrp``) unless told otherwise
DEFAULT_COMPOSITE = "epsilon_plus_flat"


def get_composite(composite: str | Composite) -> Composite:
    """A :class:`Composite` from its registered name (or the composite itself)."""
    if isinstance(composite, Composite):
        return composite
    if isinstance(composite, str):
        return COMPOSITES.get(composite)()
    raise UserError(f"composite must be a name or a Composite, got {type(composite).__name__}")

"""Composites: which rule each layer gets.

A composite maps ``(module, is_input_layer)`` to a rule (or ``None``: plain gradient). Input
layers are the first linear layers in data flow from the image: no other linear layer lies
between the image and them (normalization, padding or a channel repeat may); a model with
separate backbones has several.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from c2f_attacks.lrp.layers import (
    AVGPOOL_TYPES,
    BATCHNORM_TYPES,
    CONV_TYPES,
    LINEAR_TYPES,
    PASS_ACTIVATIONS,
)
from c2f_attacks.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, Rule, ZBox, ZPlus

LayerMap = Sequence[tuple[tuple[type, ...], Rule]]


class Composite:
    """A rule per layer: the first matching entry of ``first_map`` for input layers, else of
    ``layer_map``; average pooling, un-merged BatchNorm and non-ReLU activations get the
    proportional / pass-through rules unless a map names them.

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
        ]
        self.layer_map = list(layer_map) + base
        #: element-wise layer types this composite gives a rule beyond the built-in kinds
        self.named_types = tuple(
            t for types, _ in layer_map for t in types if not issubclass(t, LINEAR_TYPES)
        )
        self.first_map = list(first_map)
        self.low, self.high = low, high
        self.name = name
        for _types, rule in self.layer_map:
            if rule.input_only:
                raise ValueError(f"{rule!r} applies to input layers only; put it in first_map")

    def rule_for(self, module: nn.Module, is_input: bool) -> Rule | None:
        """The rule for ``module``, or None for the plain gradient."""
        if is_input:
            for types, rule in self.first_map:
                if isinstance(module, types):
                    return rule
        for types, rule in self.layer_map:
            if isinstance(module, types):
                return rule
        return None

    def __repr__(self) -> str:
        return f"Composite({self.name!r})"


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Zennit's ``EpsilonPlusFlat``: flat on input layers, z+ on convolutions, epsilon on
    fully connected layers, proportional average pooling."""
    return Composite(
        [(CONV_TYPES, ZPlus(stabilizer)), ((nn.Linear,), Epsilon(epsilon))],
        [(LINEAR_TYPES, Flat(stabilizer))],
        name="epsilon_plus_flat",
    )


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
        name="epsilon_plus_box",
    )


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Zennit's ``EpsilonAlpha2Beta1Flat``: flat on input layers, alpha=2/beta=1 on
    convolutions, epsilon on fully connected layers."""
    return Composite(
        [(CONV_TYPES, AlphaBeta(2.0, 1.0, stabilizer)), ((nn.Linear,), Epsilon(epsilon))],
        [(LINEAR_TYPES, Flat(stabilizer))],
        name="epsilon_alpha2_beta1_flat",
    )


def epsilon(epsilon: float = 1e-6) -> Composite:
    """Epsilon everywhere, input layers included (``epsilon=0``: LRP-0, which conserves
    relevance exactly when biases are zero)."""
    return Composite([(LINEAR_TYPES, Epsilon(epsilon))], name="epsilon")


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
        name="epsilon_gamma_box",
    )


COMPOSITES: dict[str, Callable[[], Composite]] = {
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_plus_box": epsilon_plus_box,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
    "epsilon": epsilon,
}


def get_composite(composite: str | Composite) -> Composite:
    """A :class:`Composite` from its registered name (or the composite itself)."""
    if isinstance(composite, Composite):
        return composite
    if isinstance(composite, str):
        if composite not in COMPOSITES:
            raise ValueError(
                f"unknown composite {composite!r}; choose one of {sorted(COMPOSITES)} "
                "or pass a Composite"
            )
        return COMPOSITES[composite]()
    raise TypeError(f"composite must be a name or a Composite, got {type(composite).__name__}")

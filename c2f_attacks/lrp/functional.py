"""Functional operations that get LRP rules while a model runs under an explanation.

Transformers compute their non-linear parts as functions, not modules: :class:`FunctionalRules`
is a torch function mode that hands each of these calls to the rule the composite gives the
module it runs in:

* ``F.layer_norm``: the LayerNorm's rule (:class:`~c2f_attacks.lrp.normalization.ConstantStd`);
  a call outside a LayerNorm module gets the composite's rule for ``nn.LayerNorm``;
* ``F.multi_head_attention_forward`` and ``F.scaled_dot_product_attention``: the rule of the
  attention module running them;
* softmax and matrix products inside an attention module (torchvision's Swin, timm's un-fused
  attention): the attention rule's treatment of the weights and of products of activations.

A matrix product of two activations anywhere else has no rule (the plain gradient would hand
each factor the full relevance): it is refused by name, with NotImplementedError (these calls are
seen only while the model runs; a TypeError raised from ``a @ b`` would be turned into
Python's "unsupported operand").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from c2f_attacks.lrp.attention import (
    AttentionRule,
    Project,
    multi_head_attention,
    scaled_dot_product_attention,
)
from c2f_attacks.lrp.normalization import ConstantStd
from c2f_attacks.lrp.rules import GradientEdits, Rule

_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax, torch.special.softmax}
_MATMUL = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm}


def _is_activation(t) -> bool:
    """A tensor computed from the explained input (parameters and constants are leaves or need
    no gradient)."""
    return isinstance(t, torch.Tensor) and t.requires_grad and not t.is_leaf


class FunctionalRules(TorchFunctionMode):
    """Route functional layer norms and attention to their rules (module docstring).

    Args:
        norm_rule: the rule for ``F.layer_norm`` outside a LayerNorm module.
        edits: the pass's gradient edits (plain or differentiable).
        project: ``project(layer, name, input, weight, bias)``: a projection of an attention
            module with its rule (the engine's linear-layer machinery).
    """

    def __init__(
        self,
        norm_rule: Rule | None,
        edits: GradientEdits,
        project: Callable[..., torch.Tensor],
    ):
        super().__init__()
        self.norm_rule, self.edits, self.project = norm_rule, edits, project
        self._norms: list[Rule] = []  # the rules of the LayerNorm modules running
        self._attention: list[tuple[nn.Module, AttentionRule]] = []  # running attention modules

    # -- scopes (the engine's module hooks) -----------------------------------------------------
    def enter_norm(self, rule: Rule) -> None:
        self._norms.append(rule)

    def leave_norm(self) -> None:
        self._norms.pop()

    def enter_attention(self, module: nn.Module, rule: AttentionRule) -> None:
        self._attention.append((module, rule))

    def leave_attention(self) -> None:
        self._attention.pop()

    # -- dispatch -------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.layer_norm:
            return self._layer_norm(args, kwargs)
        if func is F.multi_head_attention_forward:
            module, rule = self._attention_rule("F.multi_head_attention_forward")
            return multi_head_attention(rule, self.edits, self._projector(module, rule),
                                        *args, **kwargs)  # fmt: skip
        if func is F.scaled_dot_product_attention:
            _, rule = self._attention_rule("F.scaled_dot_product_attention")
            return scaled_dot_product_attention(rule, self.edits, *args, **kwargs)
        if func in _SOFTMAX and self._attention:
            return self._attention[-1][1].weights(func(*args, **kwargs), self.edits)
        if func in _MATMUL:
            return self._matmul(func, args, kwargs)
        return func(*args, **kwargs)

    def _layer_norm(self, args, kwargs):
        rule = self._norms[-1] if self._norms else self.norm_rule
        if not isinstance(rule, ConstantStd):  # e.g. Pass, applied by the module's own hook
            return F.layer_norm(*args, **kwargs)
        names = ("input", "normalized_shape", "weight", "bias", "eps")
        given = dict(zip(names, args), **kwargs)
        return rule.layer_norm(
            given["input"], given["normalized_shape"], given.get("weight"), given.get("bias"),
            given.get("eps", 1e-5), self.edits,
        )  # fmt: skip

    def _attention_rule(self, what: str) -> tuple[nn.Module, AttentionRule]:
        if not self._attention:
            raise NotImplementedError(
                f"{what} ran outside every module the composite gives an attention rule: name "
                "the module's type in the Composite with one (e.g. CPAttention())"
            )
        return self._attention[-1]

    def _projector(self, module: nn.Module, rule: AttentionRule) -> Project:
        def project(name, a, weight, bias):
            return self.project(module, name, a, weight, bias, rule.projections)

        return project

    def _matmul(self, func, args, kwargs):
        a, b = (*args, *kwargs.values())  # (input, other) or (input, mat2)
        if not (_is_activation(a) and _is_activation(b)):
            return func(a, b)  # a linear map of one activation: the plain gradient is LRP-0
        if not self._attention:
            raise NotImplementedError(
                f"{getattr(func, '__name__', func)} of two activations outside an attention "
                "module: LRP has no rule for it here (the plain gradient would give each factor "
                "all of the relevance); name the module's type in the Composite with an "
                "attention rule (CPAttention or AttnLRP)"
            )
        return func(*self._attention[-1][1].product(a, b, self.edits))

"""LRP rules in the gradient-times-input form.

Every rule here is a small object with one job: given one call of a linear layer (its input
``a``, effective weight ``W`` and bias ``b``, and its true output ``z``), it returns the *parts*
through which relevance flows back, each with a denominator and a coefficient. The engine wraps
the layer output with :class:`Redistribute`, whose value is ``z`` but whose backward sends

    grad(part_i) = coef_i * g * (z / denom_i)

where ``g`` is the gradient arriving at ``z``. Read with the convention *gradient at a tensor =
relevance / value*, ``g * z`` is the output relevance ``R_k``, the part's own backward applies
its (modified) weights, and ``a * grad(a)`` is the LRP relevance of the input. All formulas below
use ``R_k`` for the output relevance and ``stab(t) = t + eps * sign(t)`` with ``sign(0) = 1``,
exactly as Zennit stabilizes.

The backward is made of ordinary differentiable tensor ops on saved tensors, so with
``create_graph=True`` the relevance is an exactly differentiable function of the input.

A denominator is either ``z``, a fresh tensor that the rule hands over (the engine may
overwrite it with the ratio ``z / denom`` to save memory traffic), or :class:`Stabilized`: the
stabilized tensor described, which the engine computes together with the ratio (for
``z / stab(z)``, as ``|z| / (|z| + eps)``, half the passes over the output). A part's *value*
is never read again (the backward of a linear map needs only its input and weights), so a part
may be its own denominator, as in z+ and flat, whose stabilizer folds into the bias.

A part may also be smaller than ``z`` along dimensions where all its entries would be equal
(the flat rule's receptive-field counts are the same for every output channel): its gradient is
then summed over them, so its own backward has that many fewer channels to map back.

Input-layer rules (flat, z^B) also register *relevance sources* ``(tensor, coef)``: the engine
computes the input relevance as ``sum coef * tensor * grad(tensor)`` over them.

A rule's modified parameters (``W+``, ...) depend on the layer's parameters alone:
:meth:`Rule.params` computes them, and the engine caches them across explanations while the
model's parameters are unchanged (:mod:`~c2f_attacks.lrp.cache`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

#: ``op(input, weight, bias) -> output``: the layer's linear map with replaceable parameters
LinearOp = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def stabilize(t: torch.Tensor, eps: float) -> torch.Tensor:
    """``t + eps * sign(t)`` with ``sign(0) = +1`` (Zennit's ``stabilize``)."""
    return t + torch.where(t >= 0, eps, -eps)


@dataclass(frozen=True, eq=False)
class Stabilized:
    """The denominator ``stab(base) = base + eps * sign(base)``, left to the engine to compute
    with the ratio ``z / stab(base)`` (see the module docstring)."""

    base: torch.Tensor
    eps: float

    def ratio(self, z: torch.Tensor) -> torch.Tensor:
        """``z / stab(base)``, a fresh tensor (differentiable where autograd records)."""
        if self.base is not z:
            d = stabilize(self.base, self.eps)
            return z / d if torch.is_grad_enabled() else torch.div(z, d, out=d)
        # z / stab(z) = |z| / (|z| + eps): 0 where z = 0, as Zennit's
        r = z.abs()
        if torch.is_grad_enabled():
            return r / (r + self.eps)
        return torch.div(r, r + self.eps, out=r)


class Redistribute(torch.autograd.Function):
    """Value ``z``; backward sends ``coef_i * g * ratio_i`` into ``part_i``, nothing into ``z``.

    Call as ``Redistribute.apply(z, state, coefs, which, dirty, consume, *parts, *ratios)``: part
    ``i`` uses ``ratios[which[i]]``, where each ratio is ``z / denom`` (parts that share a
    denominator share a ratio); a part smaller than ``z`` gets that gradient summed to its shape.
    ``state.lrp`` is True during the explanation's backward pass; the engine sets it to False
    afterwards, so that when a loss on the relevance is differentiated (``create_graph=True``)
    the ratios are differentiated through the model's *true* Jacobians, not through the LRP
    rules. This makes the derivative of the relevance exact.

    Two memory savings for plain explanations, whose graph is used once:

    * ``dirty=True`` returns ``z`` itself (marked dirty) instead of a copy. Only for a ``z``
      that no graph node saved (a linear layer's output: its backward needs its input only),
      because the next module (VGG's ``ReLU(inplace=True)``) may then overwrite it.
    * ``consume=True`` multiplies the gradient into the ratios' memory.

    The differentiable mode needs neither: there the ratios' graphs saved ``z`` and are
    differentiated later.
    """

    @staticmethod
    def forward(ctx, z, state, coefs, which, dirty, consume, *tensors):
        ctx.state, ctx.coefs, ctx.which, ctx.consume = state, coefs, which, consume
        ctx.shapes = [p.shape for p in tensors[: len(coefs)]]
        ctx.save_for_backward(*tensors[len(coefs) :])
        if dirty:
            ctx.mark_dirty(z)
            return z
        return z.clone()

    @staticmethod
    def backward(ctx, g):
        ratios = ctx.saved_tensors
        unused = [None] * len(ratios)
        if not ctx.state.lrp:
            # After the explanation's own backward, this node is part of the ordinary forward
            # graph again (a later loss differentiates through the activations): the true
            # Jacobian of the identity.
            return (g, None, None, None, None, None, *([None] * len(ctx.coefs)), *unused)
        shares = [r.mul_(g) if ctx.consume else g * r for r in ratios]
        grads = []
        for coef, i, shape in zip(ctx.coefs, ctx.which, ctx.shapes):
            share = shares[i] if shares[i].shape == shape else shares[i].sum_to_size(shape)
            grads.append(share if coef == 1.0 else coef * share)
        return (None, None, None, None, None, None, *grads, *unused)


class LRPScale(torch.autograd.Function):
    """Value ``t``; the explanation's backward multiplies the gradient by ``factor`` (0: ``t``
    is a constant there), every later backward passes it unchanged.

    Call as ``LRPScale.apply(t, state, factor)``. Like :class:`Redistribute`, it reads
    ``state.lrp`` when the backward runs, so in the differentiable mode a loss on the relevance
    sees the model's true Jacobian through ``t`` (the attention weights or a LayerNorm's scale
    are constants for the rule, not for the derivative).
    """

    @staticmethod
    def forward(ctx, t, state, factor):
        ctx.state, ctx.factor = state, factor
        return t.view_as(t)

    @staticmethod
    def backward(ctx, g):
        if not ctx.state.lrp:
            return g, None, None
        if ctx.factor == 0.0:
            return None, None, None
        return g * ctx.factor, None, None


@dataclass
class GradientEdits:
    """How non-linear rules (normalization, attention) change the explanation's backward.

    ``frozen(t)``: ``t`` is a constant in it (no relevance reaches what ``t`` is computed
    from); ``scaled(t, f)``: the relevance reaching ``t`` is multiplied by ``f``. In a plain
    explanation, whose graph serves the LRP backward alone, ``frozen`` is ``t.detach()`` (the
    backward then skips that branch entirely); in the differentiable mode both are
    :class:`LRPScale` nodes, which pass true gradients once the relevance is computed.
    """

    state: object  #: the pass's shared ``state`` (``state.lrp``)
    differentiable: bool

    def frozen(self, t: torch.Tensor) -> torch.Tensor:
        if not self.differentiable:
            return t.detach()
        return LRPScale.apply(t, self.state, 0.0)

    def scaled(self, t: torch.Tensor, factor: float) -> torch.Tensor:
        return LRPScale.apply(t, self.state, factor)


@dataclass
class LayerCall:
    """One call of a linear layer, as a rule sees it."""

    op: LinearOp
    a: torch.Tensor  #: the layer input
    params: tuple  #: the rule's :meth:`Rule.params` of this layer
    z: torch.Tensor  #: the true output (differentiable w.r.t. ``a``)
    nonneg: bool  #: ``a >= 0`` is known from the graph structure (it comes out of a ReLU)
    is_input: bool  #: ``a`` is the model input (or its normalized form)
    low: torch.Tensor | None = None  #: box bounds of ``a`` (input layers only), broadcastable
    high: torch.Tensor | None = None
    sources: list[tuple[torch.Tensor, float]] = field(default_factory=list)


#: (part, denominator, coefficient)
Parts = list[tuple[torch.Tensor, "torch.Tensor | Stabilized", float]]


def _pos(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(max=0)


def _plus_eps(b: torch.Tensor | None, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The bias ``b + eps`` (``eps`` alone for no bias), one entry per output of ``weight``."""
    if b is None:
        return torch.full(weight.shape[:1], eps, dtype=weight.dtype, device=weight.device)
    return b + eps


class Rule:
    """Base class: ``parts(call)`` returns the relevance paths of one layer call.

    Each denominator must be ``call.z`` or a tensor the rule created for it and gives up: a plain
    explanation overwrites it with the ratio (see the module docstring)."""

    #: True for rules that only make sense where the input is the image (flat, z^B)
    input_only = False

    def params(
        self, weight: torch.Tensor, bias: torch.Tensor | None, nonneg: bool
    ) -> tuple[torch.Tensor | None, ...]:
        """The rule's modified parameters (``call.params`` in :meth:`parts`), a function of the
        layer's effective weight and bias (BatchNorm merged in where canonized; detached) and of
        whether its input is known to be non-negative alone. Default: none."""
        return ()

    def parts(self, call: LayerCall) -> Parts:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Epsilon(Rule):
    """Epsilon rule: ``R_j = a_j * sum_k w_jk R_k / stab(z_k)`` with ``z = W a + b``.

    With ``epsilon=0`` (and zero biases) this is LRP-0, which conserves relevance exactly.
    """

    def __init__(self, epsilon: float = 1e-6):
        self.epsilon = epsilon

    def parts(self, call: LayerCall) -> Parts:
        if call.is_input:
            call.sources.append((call.a, 1.0))
        denom = Stabilized(call.z, self.epsilon) if self.epsilon else call.z
        return [(call.z, denom, 1.0)]


class Norm(Epsilon):
    """Proportional rule for parameter-free linear layers (average / adaptive-average pooling):
    ``R_j = a_j * sum_k p_jk R_k / stab(z_k)`` with pooling weights ``p``. Zennit's ``Norm``."""

    def __init__(self, stabilizer: float = 1e-6):
        super().__init__(stabilizer)


class ZPlus(Rule):
    """z+ rule (Zennit's ``ZPlus``, i.e. alpha=1, beta=0):

    ``z+_k = sum_j a+_j w+_jk + b+_k + sum_j a-_j w-_jk``,
    ``R_j = (a+_j w+_jk + a-_j w-_jk) R_k / stab(z+_k)`` summed over k.

    After a ReLU the inputs are non-negative and one extra convolution (``W+``) suffices.
    """

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = stabilizer

    def params(self, weight, bias, nonneg):
        if nonneg:
            # a, W+ and b+ are non-negative, so z+ is, and stab(z+) = z+ + eps exactly: the
            # stabilizer goes into the bias, and the part is its own denominator.
            return weight.clamp(min=0), _plus_eps(_pos(bias), weight, self.stabilizer)
        return weight.clamp(min=0), _pos(bias), weight.clamp(max=0)

    def parts(self, call: LayerCall) -> Parts:
        if call.is_input:
            call.sources.append((call.a, 1.0))
        if call.nonneg:
            zp = call.op(call.a, *call.params)
            return [(zp, zp, 1.0)]
        wp, bp, wn = call.params
        zp = call.op(call.a.clamp(min=0), wp, bp)
        zn = call.op(call.a.clamp(max=0), wn, None)
        denom = stabilize(zp + zn, self.stabilizer)
        return [(zp, denom, 1.0), (zn, denom, 1.0)]


class AlphaBeta(Rule):
    """Alpha-beta rule (Zennit's ``AlphaBeta``), ``alpha - beta = 1``:

    ``R_j = sum_k [alpha * (a+_j w+_jk + a-_j w-_jk) / stab(z^alpha_k)
                   - beta * (a+_j w-_jk + a-_j w+_jk) / stab(z^beta_k)] R_k``
    with ``z^alpha = W+ a+ + b+ + W- a-`` and ``z^beta = W- a+ + b- + W+ a-``.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6):
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1.0) > 1e-12:
            raise ValueError(
                f"alpha-beta needs alpha, beta >= 0 and alpha - beta = 1, got {alpha}, {beta}"
            )
        self.alpha, self.beta, self.stabilizer = alpha, beta, stabilizer

    def params(self, weight, bias, nonneg):
        return weight.clamp(min=0), weight.clamp(max=0), _pos(bias), _neg(bias)

    def parts(self, call: LayerCall) -> Parts:
        if call.is_input:
            call.sources.append((call.a, 1.0))
        wp, wn, bp, bn = call.params
        s = self.stabilizer
        if call.nonneg:
            za = call.op(call.a, wp, bp)
            zb = call.op(call.a, wn, bn)
            return [(za, stabilize(za, s), self.alpha), (zb, stabilize(zb, s), -self.beta)]
        ap, an = call.a.clamp(min=0), call.a.clamp(max=0)
        za1, za2 = call.op(ap, wp, bp), call.op(an, wn, None)
        zb1, zb2 = call.op(ap, wn, bn), call.op(an, wp, None)
        da, db = stabilize(za1 + za2, s), stabilize(zb1 + zb2, s)
        return [
            (za1, da, self.alpha),
            (za2, da, self.alpha),
            (zb1, db, -self.beta),
            (zb2, db, -self.beta),
        ]


class Gamma(Rule):
    """Generalized gamma rule (Zennit's ``Gamma``): with ``W^+g = W + gamma W+``,
    ``W^-g = W + gamma W-`` (biases alike),

    ``z^+_k = (W^+g a+ + W^-g a- + b^+g)_k``,  ``z^-_k = (W^-g a+ + W^+g a- + b^-g)_k``,
    ``R_j = sum_k [ [z_k > 0] (a+_j w^+g_jk + a-_j w^-g_jk) / stab(z^+_k)
                  + [z_k < 0] (a+_j w^-g_jk + a-_j w^+g_jk) / stab(z^-_k) ] R_k``

    where ``z`` is the true output. For non-negative inputs (after a ReLU) this is the gamma
    rule of Montavon et al.; ``gamma = 0`` gives LRP-0 (epsilon = stabilizer). A unit whose
    output has the other sign contributes nothing to that term: its denominator is ``inf``.
    """

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6):
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma, self.stabilizer = gamma, stabilizer

    def params(self, weight, bias, nonneg):
        w, b, g = weight, bias, self.gamma
        b_up = None if b is None else b + g * b.clamp(min=0)
        b_down = None if b is None else b + g * b.clamp(max=0)
        return w + g * w.clamp(min=0), w + g * w.clamp(max=0), b_up, b_down

    def parts(self, call: LayerCall) -> Parts:
        if call.is_input:
            call.sources.append((call.a, 1.0))
        w_up, w_down, b_up, b_down = call.params
        if call.nonneg:  # a- = 0: two terms vanish
            up, down = [call.op(call.a, w_up, b_up)], [call.op(call.a, w_down, b_down)]
        else:
            ap, an = call.a.clamp(min=0), call.a.clamp(max=0)
            up = [call.op(ap, w_up, b_up), call.op(an, w_down, None)]
            down = [call.op(ap, w_down, b_down), call.op(an, w_up, None)]
        inf = torch.tensor(float("inf"), dtype=call.z.dtype, device=call.z.device)
        d_up = torch.where(call.z > 0, stabilize(sum(up), self.stabilizer), inf)
        d_down = torch.where(call.z < 0, stabilize(sum(down), self.stabilizer), inf)
        return [(p, d_up, 1.0) for p in up] + [(p, d_down, 1.0) for p in down]


class Flat(Rule):
    """Flat rule (input layer): ``R_j = sum_k R_k / stab(sum_j' 1)`` over k's receptive field,
    i.e. relevance spread evenly over the inputs each unit sees (weights and inputs set to one,
    zero bias). Independent of the input values."""

    input_only = True

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = stabilizer

    def params(self, weight, bias, nonneg):
        # the receptive-field counts are positive: stab(zf) = zf + eps, folded into the bias
        ones = torch.ones_like(weight)
        return ones, _plus_eps(None, ones, self.stabilizer)

    def parts(self, call: LayerCall) -> Parts:
        ones = torch.ones_like(call.a).requires_grad_()
        call.sources.append((ones, 1.0))
        weight, bias = call.params
        if weight.shape[1] == call.a.shape[1]:
            # Not a grouped convolution: every output channel counts the same receptive field,
            # so one channel is computed, and its backward maps one channel back, not all.
            weight, bias = weight[:1], bias[:1]
        zf = call.op(ones, weight, bias)
        return [(zf, zf, 1.0)]


class ZBox(Rule):
    """z^B rule for a box-bounded input ``l <= a <= h`` (Zennit's ``ZBox``):

    ``z^B_k = z_k - (W+ l + b+)_k - (W- h + b-)_k``,
    ``R_j = sum_k (a_j w_jk - l_j w+_jk - h_j w-_jk) R_k / stab(z^B_k)``.

    The bounds come from the engine: [0, 1] pixels (or ``low``/``high`` given to the composite)
    mapped through the model's ``Normalize`` when the layer sees normalized images.
    """

    input_only = True

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = stabilizer

    def params(self, weight, bias, nonneg):
        return weight.clamp(min=0), weight.clamp(max=0), _pos(bias), _neg(bias)

    def parts(self, call: LayerCall) -> Parts:
        low = call.low.expand_as(call.a).to(call.a.dtype).detach().clone().requires_grad_()
        high = call.high.expand_as(call.a).to(call.a.dtype).detach().clone().requires_grad_()
        call.sources += [(call.a, 1.0), (low, -1.0), (high, -1.0)]
        wp, wn, bp, bn = call.params
        zl = call.op(low, wp, bp)
        zh = call.op(high, wn, bn)
        denom = stabilize(call.z - zl - zh, self.stabilizer)
        return [(call.z, denom, 1.0), (zl, denom, 1.0), (zh, denom, 1.0)]


class Pass(Rule):
    """Pass-through for element-wise layers whose gradient would not pass relevance on
    (an un-merged BatchNorm, activations other than ReLU, ReLU6 included): ``R_in = R_out``.

    ReLU, Dropout, Flatten and max-pooling need no rule: their plain gradient already passes
    relevance through (to the max-pooling winner) in the gradient-times-input form.

    Limitation of the gradient-times-input form: an input that is exactly 0 gets relevance 0,
    whereas Zennit's ``Pass`` would hand it the output's relevance (this matters for a
    BatchNorm right after a ReLU; a BatchNorm after a conv is merged instead).
    """

    def __init__(self, stabilizer: float = 1e-12):
        self.stabilizer = stabilizer

    def parts(self, call: LayerCall) -> Parts:
        return [(call.a, Stabilized(call.a, self.stabilizer), 1.0)]

"""The LRP engine: one forward and one backward pass per (batched) explanation.

During an explanation, forward hooks replace the output of every linear layer (Conv/Linear, a
Conv+BatchNorm pair, average pooling, ...) by :class:`~c2f_attacks.lrp.rules.Redistribute`:
the same value, with a gradient that implements the layer's LRP rule. The backward is seeded
with ``R_out / z_out`` at the explained output, so the gradient at every activation ``a`` is
``R(a) / a`` and the input relevance is ``input * gradient`` (for the flat and z^B input rules,
a signed sum over the rule's proxy tensors). The hooks live only inside the call; the model's
parameters, buffers and ``requires_grad`` flags are never touched.

Differentiable mode (``create_graph=True``): the explanation's backward is recorded, and once it
has run, the ``Redistribute`` nodes of the pass switch to the identity gradient, so a later loss
on the relevance (or on the logits of the same pass) differentiates through the model's true
Jacobians: the derivative is exact, not the ``.detach()`` approximation (checked against finite
differences in tests/test_lrp.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

from c2f_attacks.lrp.canonizers import find_conv_bn_pairs, merged_parameters
from c2f_attacks.lrp.composites import (
    AVGPOOL_TYPES,
    BATCHNORM_TYPES,
    CONV_TYPES,
    LINEAR_TYPES,
    PASS_ACTIVATIONS,
    RECTIFIER_TYPES,
    SIGN_KEEPING_TYPES,
    Composite,
    get_composite,
)
from c2f_attacks.lrp.rules import LayerCall, Redistribute, stabilize
from c2f_attacks.models.base import C2FClassifier, C2FOutput, Normalize, fine_prediction
from c2f_attacks.validation import check_image_batch, check_labels

STAGES = ("coarse", "fine")
INITS = ("one_hot", "logit")

# Modules whose output is non-negative (so that a later z+ layer needs one extra convolution,
# not two); SIGN_KEEPING_TYPES pass non-negativity on.
_NONNEG_OUT = (*RECTIFIER_TYPES, nn.Sigmoid, nn.Softplus)


def _linear_op(module: nn.Module):
    if isinstance(module, CONV_TYPES):
        return module._conv_forward
    return F.linear


class _Explanation:
    """Hooks and bookkeeping of one explanation pass."""

    def __init__(self, composite: Composite, x: torch.Tensor, create_graph: bool):
        self.composite = composite
        self.x = x
        self.create_graph = create_graph
        # Tensors that count as "the input": x, and Normalize(x) with its module (for z^B bounds).
        self.roots: list[tuple[torch.Tensor, Normalize | None]] = [(x, None)]
        self.sources: list[tuple[torch.Tensor, float]] = []
        self.nonneg: set[int] = set()
        self._alive: list[torch.Tensor] = []  # keeps ids in `nonneg` unique during the pass
        # inputs recorded by pre-hooks: of a conv merged with its BatchNorm, and of an in-place
        # activation before it overwrites them
        self.inputs: dict[nn.Module, torch.Tensor] = {}
        self.handles: list = []
        # shared by every Redistribute node of this pass: LRP gradients until the relevance is
        # computed, true gradients afterwards
        self.state = SimpleNamespace(lrp=True)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _mark(self, t: torch.Tensor) -> None:
        self.nonneg.add(id(t))
        self._alive.append(t)

    def _is_nonneg(self, t: torch.Tensor) -> bool:
        return id(t) in self.nonneg

    def _root(self, t: torch.Tensor) -> tuple[torch.Tensor, Normalize | None] | None:
        for root in self.roots:
            if root[0] is t:
                return root
        return None

    def _bounds(self, norm: Normalize | None, like: torch.Tensor):
        low = torch.tensor(self.composite.low, dtype=like.dtype, device=like.device)
        high = torch.tensor(self.composite.high, dtype=like.dtype, device=like.device)
        if norm is not None:  # the box [low, high] in the normalized space the layer sees
            mean, std = norm.mean.to(like.dtype), norm.std.to(like.dtype)
            low, high = (low - mean) / std, (high - mean) / std
        return low, high

    # -- hooks ---------------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> None:
        pairs = find_conv_bn_pairs(model)
        paired = {layer: bn for bn, layer in pairs.items()}
        for m in model.modules():
            if isinstance(m, Normalize):
                self.handles.append(m.register_forward_hook(self._normalize_hook))
            elif m in paired:
                self.handles.append(m.register_forward_pre_hook(self._record_input_hook))
            elif isinstance(m, LINEAR_TYPES):
                self.handles.append(m.register_forward_hook(self._make_linear_hook(m, m)))
            elif m in pairs:
                self.handles.append(m.register_forward_hook(self._make_linear_hook(pairs[m], m)))
            elif isinstance(m, AVGPOOL_TYPES + BATCHNORM_TYPES + PASS_ACTIVATIONS):
                if getattr(m, "inplace", False):
                    self.handles.append(m.register_forward_pre_hook(self._copy_input_hook))
                self.handles.append(m.register_forward_hook(self._elementwise_hook))
            elif isinstance(m, _NONNEG_OUT):
                self.handles.append(m.register_forward_hook(lambda mod, args, out: self._mark(out)))
            elif isinstance(m, SIGN_KEEPING_TYPES):
                self.handles.append(m.register_forward_hook(self._keep_sign_hook))

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self._alive.clear()
        self.inputs.clear()

    def _normalize_hook(self, module, args, output):
        root = self._root(args[0])
        if root is not None and root[1] is None:
            self.roots.append((output, module))

    def _record_input_hook(self, module, args):
        self.inputs[module] = args[0]

    def _copy_input_hook(self, module, args):
        # The pass-through rule sends relevance to the activation's input, which an in-place
        # activation would overwrite (and re-attach to its own backward): it gets a copy.
        self.inputs[module] = args[0]
        return (args[0].clone(), *args[1:])

    def _keep_sign_hook(self, module, args, output):
        if self._is_nonneg(args[0]):
            self._mark(output)

    def _make_linear_hook(self, layer: nn.Module, out_module: nn.Module):
        """Hook for ``layer`` (Conv/Linear); ``out_module`` is the layer itself or the BatchNorm
        merged into it, whose output the hook replaces."""
        merged = out_module is not layer

        def hook(module, args, output):
            a = self.inputs.pop(layer) if merged else args[0]
            root = self._root(a)
            rule = self.composite.rule_for(layer, root is not None)
            if rule is None:
                if root is not None:
                    self.sources.append((a, 1.0))
                return None
            if merged:
                weight, bias = merged_parameters(layer, out_module)
            else:
                weight = layer.weight.detach()
                bias = None if layer.bias is None else layer.bias.detach()
            low = high = None
            if root is not None:
                low, high = self._bounds(root[1], a)
            call = LayerCall(
                _linear_op(layer), a, weight, bias, output, self._is_nonneg(a),
                root is not None, low, high, self.sources,
            )  # fmt: skip
            return self._redistribute(output, rule.parts(call), fresh_output=True)

        return hook

    def _elementwise_hook(self, module, args, output):
        rule = self.composite.rule_for(module, False)
        a = self.inputs.pop(module, args[0])
        if rule is None:
            new = None
        else:
            call = LayerCall(None, a, None, None, output, self._is_nonneg(a), False)
            # copied: an activation's backward may have saved this output (tanh, in-place
            # activations), and the other outputs here are small
            new = self._redistribute(output, rule.parts(call), fresh_output=False)
        if self._is_nonneg(a) and isinstance(module, AVGPOOL_TYPES):
            self._mark(output if new is None else new)
        return new

    def _redistribute(self, z, parts, fresh_output: bool):
        """Wrap ``z`` in :class:`Redistribute`. ``fresh_output``: ``z`` is a linear layer's
        output, which no graph node saved, so a plain explanation may hand it on uncopied."""
        ratios: dict[int, torch.Tensor] = {}  # by denominator: parts may share one
        for _, d, _ in parts:
            if id(d) not in ratios:
                ratios[id(d)] = self._ratio(z, d)
        which = [list(ratios).index(id(d)) for _, d, _ in parts]
        coefs = [c for _, _, c in parts]
        plain = not self.create_graph
        return Redistribute.apply(
            z, self.state, coefs, which, plain and fresh_output, plain,
            *[p for p, _, _ in parts], *ratios.values(),
        )  # fmt: skip

    def _ratio(self, z: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
        if self.create_graph:  # differentiable: a new tensor with its own graph
            return z / denom
        with torch.no_grad():
            # The rule handed the denominator over (rules.py): reuse its memory. Fresh
            # activation-sized tensors are what the pass pays for beyond its convolutions (page
            # faults included), so this pass allocates one per layer, the extra z+ output.
            if denom is z or denom.shape != z.shape or denom.dtype != z.dtype:
                return z / denom
            return torch.div(z, denom, out=denom)

    # -- backward ------------------------------------------------------------------------------
    def relevance(
        self, out: torch.Tensor, seed: torch.Tensor, init: str, create_graph: bool
    ) -> torch.Tensor:
        """Backward from ``out`` with output relevance ``seed`` (or ``seed * out`` for
        ``init="logit"``); returns the input relevance shaped like ``x``."""
        seed = seed.detach().to(out.dtype)
        # gradient = relevance / value; the tiny stabilizer only matters for a logit exactly 0
        grad_out = seed if init == "logit" else seed / stabilize(out, 1e-30)
        sources = self.sources or [(self.x, 1.0)]
        unique: dict[int, tuple[torch.Tensor, float]] = {}
        for t, c in sources:
            unique.setdefault(id(t), (t, c))
        tensors = [t for t, _ in unique.values()]
        try:
            grads = torch.autograd.grad(
                out, tensors, grad_outputs=grad_out, create_graph=create_graph, allow_unused=True
            )
        finally:
            self.state.lrp = False
        rel = torch.zeros_like(self.x)
        for (t, c), g in zip(unique.values(), grads):
            if g is None:
                continue
            r = t * g
            rel = rel + (r if c == 1.0 else c * r).reshape(rel.shape)
        return rel if create_graph else rel.detach()


def check_explainable(model: nn.Module) -> None:
    """Raise TypeError unless every leaf module of ``model`` is one the engine has a rule or a
    pass-through for (linear/conv, BatchNorm, pooling, dropout, flatten, the element-wise
    activations, the model's Normalize). Operations in ``forward`` that are not modules
    (concatenation, reshapes) are fine; unknown *modules* are not, since their relevance would
    silently pass as a plain gradient."""
    known = (
        LINEAR_TYPES + AVGPOOL_TYPES + BATCHNORM_TYPES + PASS_ACTIVATIONS + RECTIFIER_TYPES
        + SIGN_KEEPING_TYPES + (Normalize,)
    )  # fmt: skip
    for name, module in model.named_modules():
        if next(module.children(), None) is None and not isinstance(module, known):
            raise TypeError(
                f"LRP cannot explain module {name!r} ({type(module).__name__}) of "
                f"{type(model).__name__}: no LRP rule for that layer type"
            )


@contextlib.contextmanager
def _explaining(
    model: nn.Module, composite: Composite, x: torch.Tensor, create_graph: bool
) -> Iterator[tuple]:
    # The relevance is read off gradients at the input, so the input must be in the graph; the
    # caller's own x is used when it already requires grad (differentiable mode).
    x_root = x if x.requires_grad else x.detach().requires_grad_()
    ex = _Explanation(composite, x_root, create_graph)
    try:
        ex.attach(model)
        with torch.enable_grad():
            yield ex, x_root
    finally:
        ex.detach()


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


def _as_target(target, n: int, num_classes: int, device) -> torch.Tensor:
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((n,), target, dtype=torch.long)
    return check_labels(target, n, num_classes, name="target").to(device)


def lrp(
    module: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | int | None = None,
    composite: str | Composite = "epsilon_plus_flat",
    *,
    init: str = "one_hot",
    create_graph: bool = False,
    check_range: bool = True,
    return_output: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LRP relevance of ``target`` for a flat classifier ``module`` (images -> (N, C) logits).

    Args:
        module: the classifier; used as is (eval mode expected), left exactly as it was.
        x: images (N, C, H, W) in [0, 1].
        target: class per image (N,) or one int for all; None: the model's prediction.
        composite: a registered name (``epsilon_plus_flat``, ``epsilon_plus_box``,
            ``epsilon_alpha2_beta1_flat``, ``epsilon``) or a :class:`Composite`.
        init: ``"one_hot"``: R = delta on the target class; ``"logit"``: R = the target logit.
        create_graph: keep the graph so that a loss may depend on the relevance (exact
            derivatives); pass an ``x`` that requires grad to differentiate w.r.t. it.
        check_range: check that x lies in [0, 1] (one device sync).
        return_output: also return the logits of the same pass: detached, or with
            ``create_graph=True`` differentiable with the model's *true* gradient (the LRP
            rules only act inside the explanation's own backward), so that one forward pass
            serves both a loss on the logits and a loss on the relevance.

    Returns:
        relevance shaped like ``x`` (and the logits with ``return_output``).
    """
    if isinstance(module, C2FClassifier):
        raise TypeError("lrp() explains flat classifiers; use stage_relevance() for a C2F model")
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    check_image_batch(x, channels=None, check_range=check_range)
    _check_init(init)
    comp = get_composite(composite)
    with _explaining(module, comp, x, create_graph) as (ex, x_root):
        out = module(x_root)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"lrp() needs a module returning (N, classes) logits, got {shape}")
        if target is None:
            target = out.detach().argmax(dim=1)
        else:
            target = _as_target(target, x.shape[0], out.shape[1], out.device)
        seed = F.one_hot(target, out.shape[1]).to(out.dtype)
        rel = ex.relevance(out, seed, init, create_graph)
    if not return_output:
        return rel
    return rel, (out if create_graph else out.detach())


def stage_relevance(
    model: C2FClassifier,
    x: torch.Tensor,
    stage: str = "coarse",
    target: torch.Tensor | int | None = None,
    composite: str | Composite = "epsilon_plus_flat",
    *,
    init: str = "one_hot",
    create_graph: bool = False,
    check_range: bool = True,
    return_output: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, C2FOutput]:
    """LRP relevance of one stage of a C2F model's decision.

    ``stage="coarse"`` explains the coarse logit C_c; ``"fine"`` explains F_c at the fine
    class f (its global index in the fine logits). ``target`` is c (coarse indices) or f
    (global fine indices); None: the model's own ``coarse_pred`` / ``fine_pred``. The output
    relevance is the model's ``relevance_seed`` (one-hot; InducedC2F's coarse stage splits it
    over the group's members). Other arguments as in :func:`lrp`. With ``return_output=True``
    also returns the model's :class:`C2FOutput` for the same input (from the same pass, with
    the same gradient semantics as in :func:`lrp`; from a separate no-grad pass, when the
    model overrides ``relevance_seed``).

    One forward and one backward pass, except for models that override ``relevance_seed``
    (e.g. InducedC2F) when ``target`` is None or ``return_output`` is set: then an extra
    no-grad forward computes the predictions first.
    """
    if not isinstance(model, C2FClassifier):
        raise TypeError(
            f"stage_relevance() needs a C2FClassifier, got {type(model).__name__}; "
            "use lrp() for a flat classifier"
        )
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    check_image_batch(x, size=model.input_size, check_range=check_range)
    _check_init(init)
    comp = get_composite(composite)
    h = model.hierarchy
    n_classes = h.num_coarse if stage == "coarse" else h.num_fine
    if target is not None:
        target = _as_target(target, x.shape[0], n_classes, x.device)
    one_pass = type(model).relevance_seed is C2FClassifier.relevance_seed
    output = None
    if not one_pass and (target is None or return_output):
        with torch.no_grad():
            o = model(x)
        output = C2FOutput(o.coarse_logits, o.fine_logits, o.coarse_pred, o.fine_pred)
        if target is None:
            target = o.coarse_pred if stage == "coarse" else o.fine_pred
    with _explaining(model, comp, x, create_graph) as (ex, x_root):
        if one_pass:
            # The base class seeds a one-hot on the stage's logits; computing it here lets the
            # predictions (target=None) come from the same pass.
            coarse, fine = model.logits(x_root)
            coarse_pred = coarse.detach().argmax(dim=1)
            fine_pred = fine_prediction(fine.detach(), coarse_pred, model.group_mask)
            if create_graph:  # the graph is kept, and carries true gradients after the pass
                output = C2FOutput(coarse, fine, coarse_pred, fine_pred)
            else:
                output = C2FOutput(coarse.detach(), fine.detach(), coarse_pred, fine_pred)
            if target is None:
                target = coarse_pred if stage == "coarse" else fine_pred
            logits = coarse if stage == "coarse" else fine
            seed = F.one_hot(target, logits.shape[1]).to(logits.dtype)
        else:
            logits, seed = model.relevance_seed(x_root, stage, target)
        rel = ex.relevance(logits, seed, init, create_graph)
    return (rel, output) if return_output else rel

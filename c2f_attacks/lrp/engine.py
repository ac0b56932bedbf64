"""The LRP engine: one forward and one backward pass per (batched) explanation.

During an explanation, the output of every linear layer (Conv/Linear, a Conv+BatchNorm pair,
average pooling, ...) is replaced by :class:`~c2f_attacks.lrp.rules.Redistribute`: the same
value, with a gradient that implements the layer's LRP rule. The backward is seeded with
``R_out / z_out`` at the explained output, so the gradient at every activation ``a`` is
``R(a) / a`` and the input relevance is ``input * gradient`` (for the flat and z^B input rules,
a signed sum over the rule's proxy tensors). What a layer's output feeds, and whether a layer
sees the image, is read off the forward pass itself (:mod:`~c2f_attacks.lrp.dataflow`), so
BatchNorm folding and the input rule do not depend on how modules are nested. The model runs
in eval mode and its hooks live only inside the call; parameters, buffers, training and
``requires_grad`` flags are left exactly as they were.

Differentiable mode (``create_graph=True``): the explanation's backward is recorded, and once it
has run, the ``Redistribute`` nodes of the pass switch to the identity gradient, so a later loss
on the relevance (or on the logits of the same pass) differentiates through the model's true
Jacobians: the derivative is exact, not the ``.detach()`` approximation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._pytree import tree_map

from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import STAGES
from c2f_attacks.lrp.attention import AttentionRule
from c2f_attacks.lrp.cache import cached
from c2f_attacks.lrp.canonizers import SqueezeExcitation, fold_batchnorm
from c2f_attacks.lrp.check import check_explainable
from c2f_attacks.lrp.composites import DEFAULT_COMPOSITE, Composite, get_composite
from c2f_attacks.lrp.dataflow import DeferredLinear, InputLayers, Pending
from c2f_attacks.lrp.functional import FunctionalRules
from c2f_attacks.lrp.layers import (
    AVGPOOL_TYPES,
    BATCHNORM_TYPES,
    LAYERNORM_TYPES,
    LINEAR_TYPES,
    NONNEG_TYPES,
    OUTPUT_UNSAVED,
    PASS_ACTIVATIONS,
    SIGN_KEEPING_TYPES,
    linear_op,
)
from c2f_attacks.lrp.rules import (
    GradientEdits,
    LayerCall,
    Redistribute,
    Rule,
    Stabilized,
    stabilize,
)
from c2f_attacks.models.base import C2FClassifier, C2FOutput, Normalize, fine_prediction
from c2f_attacks.modes import eval_mode
from c2f_attacks.validation import check_image_batch, check_labels

INITS = ("one_hot", "logit")


class _Explanation:
    """Hooks and bookkeeping of one explanation pass."""

    def __init__(self, composite: Composite, x: torch.Tensor, create_graph: bool):
        self.composite = composite
        self.x = x
        self.create_graph = create_graph
        self.inputs = InputLayers(x)
        self.flow = DeferredLinear(self._finalize, self._fold)
        # per input layer: (its input a, the root a comes from, [(source tensor, coef)])
        self.sources: list[tuple[torch.Tensor, torch.Tensor, list]] = []
        self.nonneg: set[int] = set()
        self._alive: list[torch.Tensor] = []  # keeps ids in `nonneg` unique during the pass
        # inputs of in-place activations, recorded before they are overwritten
        self.inputs_of: dict[nn.Module, torch.Tensor] = {}
        self._folds_before: dict[nn.Module, int] = {}
        # id(running_mean) -> (running_mean, its BatchNorm's num_batches_tracked): the counter
        # that says whether the running statistics changed (cache.py)
        self._batch_counters: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._busy = False  # a rule is computing: its own calls of a layer are no layer calls
        self.handles: list = []
        # shared by every Redistribute node of this pass: LRP gradients until the relevance is
        # computed, true gradients afterwards
        self.state = SimpleNamespace(lrp=True)
        self.ops = FunctionalRules(
            composite.rule_for(nn.LayerNorm), GradientEdits(self.state, create_graph), self._project
        )
        # linear layers inside attention modules whose rule names the projections' rule
        self._projection_rules: dict[nn.Module, Rule] = {}

    # -- bookkeeping ---------------------------------------------------------------------------
    def _mark(self, t: torch.Tensor) -> None:
        self.nonneg.add(id(t))
        self._alive.append(t)

    def _is_nonneg(self, t: torch.Tensor) -> bool:
        return id(t) in self.nonneg

    def _bounds(self, norm: nn.Module | None, like: torch.Tensor):
        low = torch.tensor(self.composite.low, dtype=like.dtype, device=like.device)
        high = torch.tensor(self.composite.high, dtype=like.dtype, device=like.device)
        if norm is not None:  # the box [low, high] in the normalized space the layer sees
            mean, std = norm.mean.to(like.dtype), norm.std.to(like.dtype)
            low, high = (low - mean) / std, (high - mean) / std
        return low, high

    # -- hooks ---------------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> None:
        gates = SqueezeExcitation.gates(model)
        self.handles += SqueezeExcitation.register(model)
        elementwise = AVGPOOL_TYPES + PASS_ACTIVATIONS + self.composite.elementwise_types
        for m in model.modules():
            self._attach_scope(m)
            if m in gates:
                continue  # a constant: no rule of its own
            if isinstance(m, Normalize):
                self.handles.append(m.register_forward_hook(self._normalize_hook))
            elif isinstance(m, LINEAR_TYPES):
                if isinstance(m, nn.Linear):
                    self.flow.watch(m)
                self.handles.append(m.register_forward_pre_hook(self._linear_pre_hook))
                self.handles.append(m.register_forward_hook(self._linear_hook))
            elif isinstance(m, BATCHNORM_TYPES):
                if m.running_mean is not None and m.num_batches_tracked is not None:
                    counter = (m.running_mean, m.num_batches_tracked)
                    self._batch_counters[id(m.running_mean)] = counter
                self.handles.append(m.register_forward_pre_hook(self._batchnorm_pre_hook))
                self.handles.append(m.register_forward_hook(self._batchnorm_hook))
            elif isinstance(m, elementwise) and next(m.children(), None) is None:
                if getattr(m, "inplace", False):
                    self.handles.append(m.register_forward_pre_hook(self._copy_input_hook))
                self.handles.append(m.register_forward_hook(self._elementwise_hook))
            elif isinstance(m, NONNEG_TYPES):
                self.handles.append(m.register_forward_hook(lambda mod, args, out: self._mark(out)))
            elif isinstance(m, SIGN_KEEPING_TYPES):
                self.handles.append(m.register_forward_hook(self._keep_sign_hook))

    def _attach_scope(self, m: nn.Module) -> None:
        """LayerNorm and attention modules: their functional parts take the module's rule."""
        rule = self.composite.rule_for(m)
        if isinstance(m, LAYERNORM_TYPES):
            self.handles += [
                m.register_forward_pre_hook(lambda mod, args: self.ops.enter_norm(rule)),
                m.register_forward_hook(
                    lambda mod, args, out: self.ops.leave_norm(), always_call=True
                ),
            ]  # fmt: skip
        elif isinstance(rule, AttentionRule):
            self.handles += [
                m.register_forward_pre_hook(lambda mod, args: self.ops.enter_attention(mod, rule)),
                m.register_forward_hook(
                    lambda mod, args, out: self.ops.leave_attention(), always_call=True
                ),
            ]  # fmt: skip
            if rule.projections is not None:
                for child in m.modules():
                    if isinstance(child, LINEAR_TYPES):
                        self._projection_rules[child] = rule.projections

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self._alive.clear()
        self.inputs_of.clear()
        self._batch_counters.clear()
        # The data-flow mode and the functional rules hold bound methods of this object:
        # reference cycles that would keep the pass's tensors (its sources, every pending layer
        # output, its autograd nodes with their saved ratios) alive until the next full garbage
        # collection, which Python runs the more rarely the more objects live: hundreds of MB
        # over a run's batches. Break them here.
        self.flow = None
        self.ops = None

    def run(self, fn, *args):
        """``fn(*args)`` (the model's forward) with every linear output ruled, returned ones
        included."""
        with self.ops, self.flow:  # the data-flow mode sees each call first
            out = fn(*args)
        return tree_map(self.flow.resolve, out)

    def _normalize_hook(self, module, args, output):
        root = self.inputs.root_of(self.flow.resolve(args[0]))
        if root is not None and root[1] is None:
            self.inputs.add_root(output, module)

    def _linear_pre_hook(self, module, args):
        self.flow.enter(module)

    def _linear_hook(self, module, args, output):
        self.flow.leave(module)
        if not self._busy:
            self.flow.defer(module, args[0], output)

    def _batchnorm_pre_hook(self, module, args):
        self._folds_before[module] = self.flow.folds

    def _batchnorm_hook(self, module, args, output):
        if self.flow.folds > self._folds_before.pop(module):
            return None  # folded into the linear layer that feeds it
        return self._elementwise_hook(module, args, output)

    def _copy_input_hook(self, module, args):
        # The pass-through rule sends relevance to the activation's input, which an in-place
        # activation would overwrite (and re-attach to its own backward): it gets a copy.
        self.inputs_of[module] = args[0]
        return (args[0].clone(), *args[1:])

    def _keep_sign_hook(self, module, args, output):
        if self._is_nonneg(self.flow.resolve(args[0])):
            self._mark(output)

    def _elementwise_hook(self, module, args, output):
        rule = self.composite.rule_for(module, False)
        a = self.flow.resolve(self.inputs_of.pop(module, args[0]))
        if rule is None:
            new = None
        else:
            call = LayerCall(None, a, (), output, self._is_nonneg(a), False)
            # copied unless known unsaved: an activation's backward may have saved this output
            # (tanh, in-place activations)
            fresh = isinstance(module, OUTPUT_UNSAVED) and not getattr(module, "inplace", False)
            new = self._redistribute(output, rule.parts(call), fresh_output=fresh)
        out = output if new is None else new
        if isinstance(module, NONNEG_TYPES) or (
            isinstance(module, AVGPOOL_TYPES) and self._is_nonneg(a)
        ):
            self._mark(out)
        return new

    # -- linear layers (called by the data-flow mode) --------------------------------------------
    def _finalize(self, p: Pending) -> torch.Tensor:
        weight, bias = p.weight, p.bias

        def own() -> tuple[torch.Tensor, torch.Tensor | None]:
            return weight.detach(), None if bias is None else bias.detach()

        return self._apply_rule(p.layer, p.a, p.z, (weight, bias), own, (), not p.folded, op=p.op)

    def _fold(self, p: Pending, bn: dict, z: torch.Tensor) -> torch.Tensor:
        tensors = (p.weight, p.bias, bn["running_mean"], bn["running_var"], bn["weight"],
                   bn["bias"])  # fmt: skip
        eps = float(bn["eps"])
        mean, counter = self._batch_counters.get(id(bn["running_mean"]), (None, None))
        # without its module's counter, an update of the running statistics would go unseen
        key = ("folded", eps) if mean is bn["running_mean"] else None
        return self._apply_rule(
            p.layer, p.a, z, (*tensors, counter), lambda: fold_batchnorm(*tensors, eps), key, True,
            op=p.op,
        )  # fmt: skip

    def _rule_for(self, layer: nn.Module, is_input: bool) -> Rule:
        """The rule of a linear layer (an attention module's own projections: the composite's
        rule for ``nn.Linear``). Layers of a type the composite does not cover were refused by
        the model check; a layer covered for input layers alone is refused here."""
        rule = self._projection_rules.get(layer)
        if rule is None:
            target = nn.Linear if isinstance(layer, nn.MultiheadAttention) else layer
            rule = self.composite.rule_for(target, is_input)
        if rule is None:
            raise UserError(
                f"{self.composite!r} has no rule for {type(layer).__name__} layers that are "
                f"not input layers ({layer!r})"
            )
        return rule

    def _project(self, owner, name, a, weight, bias, rule) -> torch.Tensor:
        """``F.linear(a, weight, bias)``, a projection that ``owner`` (an attention module)
        computes functionally, with ``rule`` (None: the composite's rule for ``nn.Linear``)."""
        z = F.linear(a, weight, bias)

        def own() -> tuple[torch.Tensor, torch.Tensor | None]:
            return weight.detach(), None if bias is None else bias.detach()

        return self._apply_rule(owner, a, z, (weight, bias), own, (name,), True, F.linear, rule)

    def _apply_rule(
        self, layer, a, z, tensors, merged, key, fresh_output: bool, op=None, rule=None
    ) -> torch.Tensor:
        """``z`` (the output of ``layer``, or of the BatchNorm folded into it) wrapped with the
        layer's rule (or ``rule``). ``merged()`` computes the effective weight and bias from
        ``tensors`` (the layer's and the BatchNorm's parameters and buffers; ``key`` says how):
        the rule's parameters are cached on them, unless ``key`` is None. ``fresh_output``: no
        graph node saved ``z`` (a BatchNorm that used it did). ``op``: the linear map of a
        functional call (default: the layer's own)."""
        root = self.inputs.root_of(a)
        if rule is None:
            rule = self._rule_for(layer, root is not None)
        sources: list[tuple[torch.Tensor, float]] = []
        low = high = None
        if root is not None and a is root[0]:  # bounds are known in the root's space only
            low, high = self._bounds(root[1], a)
        nonneg = self._is_nonneg(a)

        def compute() -> tuple:
            return rule.params(*merged(), nonneg)

        if key is None:
            params = compute()
        else:
            slot = (type(rule), nonneg, *key)
            params = cached(layer, slot, tensors, compute, detail=repr(rule))
        call = LayerCall(
            op or linear_op(layer), a, params, z, nonneg, root is not None, low, high,
            sources,
        )  # fmt: skip
        self._busy = True
        try:
            out = self._redistribute(z, rule.parts(call), fresh_output)
        finally:
            self._busy = False
        if root is not None:
            self.sources.append((a, root[0], sources))
        self.inputs.add_linear_output(out)
        return out

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

    def _ratio(self, z: torch.Tensor, denom: torch.Tensor | Stabilized) -> torch.Tensor:
        if self.create_graph:  # differentiable: a new tensor with its own graph
            return denom.ratio(z) if isinstance(denom, Stabilized) else z / denom
        with torch.no_grad():
            if isinstance(denom, Stabilized):
                return denom.ratio(z)
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
        ``init="logit"``); returns the input relevance shaped like ``x``.

        Each input layer's relevance lands on its input ``a``. When ``a`` has the shape of the
        root it comes from (the image, or a ``Normalize`` output: element-wise preprocessing
        and padding inside the layer), that is the root's relevance. Otherwise ``a`` is an
        index map of the root (flatten, explicit padding, channel repeat) and the relevance is
        routed back by its gradient: padded entries dropped, copies summed. A root that a
        ``Normalize`` broadcast to more channels than the image has (a grayscale image with
        RGB statistics) sums its channels."""
        seed = seed.detach().to(out.dtype)
        # gradient = relevance / value; the tiny stabilizer only matters for a logit exactly 0
        grad_out = seed if init == "logit" else seed / stabilize(out, 1e-30)
        groups = self.sources or [(self.x, self.x, [(self.x, 1.0)])]
        unique: dict[int, tuple[torch.Tensor, float, int]] = {}
        for i, (_, _, sources) in enumerate(groups):
            for t, c in sources:
                unique.setdefault(id(t), (t, c, i))
        routed = any(a.shape != root.shape for a, root, _ in groups)
        try:
            grads = torch.autograd.grad(
                out, [t for t, _, _ in unique.values()], grad_outputs=grad_out,
                create_graph=create_graph, retain_graph=create_graph or routed, allow_unused=True,
            )  # fmt: skip
        finally:
            self.state.lrp = False
        per_input: list[torch.Tensor | None] = [None] * len(groups)
        for (t, c, i), g in zip(unique.values(), grads):
            if g is not None:
                r = t * g if c == 1.0 else c * t * g
                per_input[i] = r if per_input[i] is None else per_input[i] + r
        rel = torch.zeros_like(self.x)
        for (a, root, _), r in zip(groups, per_input):
            if r is None:
                continue
            if a.shape != root.shape:
                (r,) = torch.autograd.grad(a, root, r, create_graph=create_graph)
            rel = rel + r.sum_to_size(self.x.shape)
        return rel if create_graph else rel.detach()


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


def _predict(model: C2FClassifier, coarse: torch.Tensor, fine: torch.Tensor) -> C2FOutput:
    coarse_pred = coarse.detach().argmax(dim=1)
    fine_pred = fine_prediction(fine.detach(), coarse_pred, model.group_mask)
    return C2FOutput(coarse, fine, coarse_pred, fine_pred)


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
    composite: str | Composite = DEFAULT_COMPOSITE,
    *,
    init: str = "one_hot",
    create_graph: bool = False,
    check_range: bool = True,
    return_output: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LRP relevance of ``target`` for a flat classifier ``module`` (images -> (N, C) logits).

    Args:
        module: the classifier. It runs in eval mode (BatchNorm statistics never change) and
            is left exactly as it was: parameters, buffers, every submodule's training flag,
            ``requires_grad``. Refused (TypeError) when a layer has no LRP rule
            (:func:`~c2f_attacks.lrp.check.check_explainable`).
        x: images (N, C, H, W) in [0, 1] (any number of channels the model takes).
        target: class per image (N,) or one int for all; None: the model's prediction.
        composite: a registered name (``epsilon_plus_flat``, ``epsilon_plus_box``,
            ``epsilon_gamma_box``, ``epsilon_alpha2_beta1_flat``, ``epsilon``) or a
            :class:`Composite`.
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
    check_explainable(module, comp)
    with eval_mode(module), _explaining(module, comp, x, create_graph) as (ex, x_root):
        out = ex.run(module, x_root)
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
    composite: str | Composite = DEFAULT_COMPOSITE,
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
    check_image_batch(x, channels=None, size=model.input_size, check_range=check_range)
    _check_init(init)
    comp = get_composite(composite)
    check_explainable(model, comp)
    h = model.hierarchy
    n_classes = h.num_coarse if stage == "coarse" else h.num_fine
    if target is not None:
        target = _as_target(target, x.shape[0], n_classes, x.device)
    with eval_mode(model):
        one_pass = type(model).relevance_seed is C2FClassifier.relevance_seed
        output = None
        if not one_pass and (target is None or return_output):
            with torch.no_grad():  # model(x) without its layout check (x was checked above)
                output = _predict(model, *model.logits(x))
            if target is None:
                target = output.coarse_pred if stage == "coarse" else output.fine_pred
        with _explaining(model, comp, x, create_graph) as (ex, x_root):
            if one_pass:
                # The base class seeds a one-hot on the stage's logits; computing it here lets the
                # predictions (target=None) come from the same pass.
                coarse, fine = ex.run(model.logits, x_root)
                if create_graph:  # the graph is kept, and carries true gradients after the pass
                    output = _predict(model, coarse, fine)
                else:
                    output = _predict(model, coarse.detach(), fine.detach())
                if target is None:
                    target = output.coarse_pred if stage == "coarse" else output.fine_pred
                logits = coarse if stage == "coarse" else fine
                seed = F.one_hot(target, logits.shape[1]).to(logits.dtype)
            else:
                logits, seed = ex.run(model.relevance_seed, x_root, stage, target)
            rel = ex.relevance(logits, seed, init, create_graph)
    return (rel, output) if return_output else rel

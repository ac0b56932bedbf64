"""The scheme LRPC and LRPF share: masked signed steps guided by LRP (or by a control mask).

For each image with explained class t (the clean decision of the attacked stage) and step size
alpha, every ``r`` steps (starting at step 0) the attack refreshes at the current iterate:

    M = the mask of the chosen source, k fraction of pixels    (1 inside, 0 outside;
        :mod:`c2f_attacks.attacks.masks`: top-k of the LRP map of t by default)
    R = LRP relevance of t at x_t                              (N, C, H, W)
    G_rel = d/dx sum_{p in M} R_p(x)                           (relevance gradient, see below)

and every step it moves along

    g     = grad_x (margin(x) + penalty(x))                     (the decision's gradient)
    d     = M g / ||M g||_2 + lambda * M G_rel / ||M G_rel||_2  (per image, on the masked pixels)
    x_{t+1} = clip_[0,1]( x + clip_[-eps, eps]( x_t - alpha * M * sign(d) - x ) )

(no eps clip when ``eps=None``). ``margin`` is the stage margin of t (z_t minus the best other
allowed logit; < 0 means fooled); ``penalty`` is LRPF's coarse hinge. Both gradients are
normalised to unit l2 norm on the masked pixels of each image before they are added, so that
``lambda`` is the relative weight of the relevance term against the decision's gradient: 0
ignores it, 1 weighs both alike, a large lambda follows the relevance gradient (a zero gradient
stays zero). Without the normalisation the raw relevance gradient is orders of magnitude
smaller than the margin's on the shipped models, and no lambda up to 3 changed a single sign.
An image stops (is frozen) at the first iterate that meets the attack's success criterion, so
its perturbation is the smallest this path finds; the others run until ``steps``.

The relevance term is the same for every mask source: it lowers the LRP relevance of t on the
masked pixels, whichever source chose them, so that a control mask (gradient, random, ...)
differs from ``lrp`` in where it perturbs and in nothing else. It costs an LRP pass at every
refresh also for sources that need none for the mask; with ``lam=0`` or
``relevance_grad="none"`` it is off, and such sources then make no LRP pass at all.

Targeted (``atk(x, target=T)``): ``margin`` becomes ``-margin_T``, the margin of the requested
class T with its sign turned (LRPC: ``max_{j != T} C_j - C_T``; LRPF: ``max_{j in g(T), j != T}
F_j - F_T`` inside T's own group, with the hinge keeping the coarse margin of T's group
``g(T)`` at least kappa). It is negative exactly when the stage decides T (on the fine stage
together with the hinge's coarse decision), as the untargeted margin is negative exactly when
the stage leaves t. The mask and the relevance term stay those of the clean decision t: they
say where the evidence for the current decision lies, which is the same whether the attack goes
anywhere or to T, so a targeted row costs what an untargeted one does and differs from it only
in where the steps lead. Success is then ``target_reached``.

Relevance gradient (``relevance_grad``):

- ``"refresh"`` (default): ``G_rel`` is the exact derivative (LRP's differentiable mode, one
  double backward) computed with each refresh and reused for the next ``r - 1`` steps.
- ``"exact"``: ``G_rel`` recomputed at every step (a double backward per step).
- ``"none"``: no relevance term (lambda ignored), for ablations.

Why "refresh": on CPU a differentiable LRP pass plus its double backward costs many plain
forward+backward passes (shapes-vgg16, 64 images: 1.1 s vs 0.03-0.09 s), so "exact" makes every
step far more than 2.5x a PGD step, while "refresh" with ``r = 20`` measured 1.16-1.22x a PGD step
(``bench/test_bench_attacks.py``). The cheaper first-order form ``mask * g_LRP`` (using
``R = x * g_LRP``) does not hold at the flat input rule of ``epsilon_plus_flat``.

Modes: ``eps=None`` (unbounded, first success), ``eps=E`` (the same inside the l-inf ball of
radius E), ``minimal_eps=True, eps=E``: the batched per-image bisection of
:mod:`c2f_attacks.attacks.minimal_eps` for the smallest budget in ``(0, E]`` at which the
eps-constrained attack succeeds (alpha stays fixed; the ball clips the steps).

Cost counting: an LRP pass is one forward and one backward; its differentiable mode adds one
more backward (the double backward); each margin gradient (a step's, or a gradient mask's) is one
forward and one backward.
"""

from __future__ import annotations

import torch
from torch import nn

from c2f_attacks.attacks.base import Attack, Batch, CallCounter, Perturbed, rows_of
from c2f_attacks.attacks.criteria import Criterion
from c2f_attacks.attacks.masks import MaskInputs, get_mask_source
from c2f_attacks.errors import UserError
from c2f_attacks.lrp import check_explainable
from c2f_attacks.lrp.explain import heatmap, stage_relevance_of

RELEVANCE_GRADS = ("refresh", "exact", "none")

#: Defaults shared by LRPC and LRPF (so their norms compare at equal settings). ``steps``,
#: ``refresh`` and ``lam`` were chosen by ``scripts/sweep_defaults.py`` on 64 images of the shapes
#: validation split (never on test images) per shipped model, under the minimal protocol, with
#: the rule stated in that script (results/sweep/sweep_defaults.md): 20 steps with a refresh
#: every 5 are admissible in every cell and cost the fewest queries (874 against 3515 per image
#: summed over the four cells for 100/50), and no lambda > 0 lowered the censored median l-inf
#: below lambda = 0's interval in any cell (lambda = 1 raised it beyond the interval in three of
#: four, 10 in all four), so lambda = 0: the relevance term is off and the attacks are
#: LRP-masked signed gradient steps. ``top_k = 0.1`` and ``alpha = 4/255`` come from the earlier
#: sweep on 256 validation images (the smallest k at which both fooled at least 98%).
SHARED_DEFAULTS = {"top_k": 0.1, "alpha": 4 / 255, "steps": 20, "lam": 0.0, "refresh": 5}


class LRPGuidedAttack(Attack):
    """Base of :class:`LRPC` and :class:`LRPF`; subclasses set ``stages`` (the one stage they
    attack) and may add a penalty through :meth:`_penalty`."""

    protocols = ("minimal", "fixed", "first_success")
    masked = True

    def __init__(
        self,
        model: nn.Module,
        *,
        top_k: float,
        alpha: float,
        steps: int,
        lam: float,
        refresh: int,
        eps: float | None,
        minimal_eps: bool,
        search_steps: int,
        mask: str,
        relevance_grad: str,
        composite: str,
        seed: int,
        memory_format: str,
        criterion: str | Criterion | None,
    ):
        super().__init__(model, self.stages[0], seed, memory_format, criterion)
        if not isinstance(top_k, (int, float)) or not 0 < top_k <= 1:
            raise UserError(f"top_k must be a fraction of pixels in (0, 1], got {top_k!r}")
        self._check_eps("alpha", alpha)
        self._check_eps("eps", eps, allow_none=True)
        for name, value in (("steps", steps), ("refresh", refresh)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(lam, (int, float)) or lam < 0:
            raise UserError(f"lam must be a non-negative number, got {lam!r}")
        if relevance_grad not in RELEVANCE_GRADS:
            raise UserError(
                f"relevance_grad must be one of {RELEVANCE_GRADS}, got {relevance_grad!r}"
            )
        self._check_search_steps(search_steps)
        if minimal_eps and eps is None:
            raise UserError("minimal_eps=True needs eps, the upper bound of the search")
        self.mask_source = get_mask_source(mask)
        self.top_k, self.alpha, self.steps = float(top_k), float(alpha), steps
        self.lam, self.refresh, self.eps = float(lam), refresh, None if eps is None else float(eps)
        self.minimal_eps, self.search_steps = bool(minimal_eps), search_steps
        self.mask, self.relevance_grad, self.composite = mask, relevance_grad, composite

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(top_k={self.top_k}, alpha={self.alpha:.5g}, "
            f"steps={self.steps}, lam={self.lam}, refresh={self.refresh}, eps={self.eps}, "
            f"minimal_eps={self.minimal_eps}, mask={self.mask!r}, "
            f"relevance_grad={self.relevance_grad!r}, composite={self.composite!r}, "
            f"memory_format={self.memory_format!r})"
        )

    @property
    def _uses_relevance_term(self) -> bool:
        return self.lam > 0 and self.relevance_grad != "none"

    @property
    def _first_grad_at_clean(self) -> bool:
        return True  # the iterates start at x (in minimal-eps mode, the first run: every row)

    def _check_call(self, x: torch.Tensor, object_mask: torch.Tensor | None) -> None:
        if self.mask_source.needs == "object" and object_mask is None:
            raise UserError(
                "mask='object' needs the ground-truth object masks: call "
                "atk(x, y, object_mask=masks) with masks of shape (N, H, W) (nonzero = object)"
            )

    def _check_model(self, x: torch.Tensor) -> None:
        check_explainable(self.model)

    def _penalty(self, out, t: torch.Tensor) -> torch.Tensor | None:
        """Extra per-image loss term (LRPF's coarse hinge); None for none."""
        return None

    def _loss(self, logits: torch.Tensor, out, t: torch.Tensor) -> torch.Tensor:
        """The per-image loss the steps descend: stage margin (+ penalty)."""
        margin = self.view.margin(logits, t)
        penalty = self._penalty(out, t)
        return margin if penalty is None else margin + penalty

    def _toward(self, logits: torch.Tensor, out, target: torch.Tensor) -> torch.Tensor:
        """The targeted loss the steps descend: minus the margin of ``target`` (+ penalty)."""
        margin = -self.view.margin(logits, target)
        penalty = self._penalty(out, target)
        return margin if penalty is None else margin + penalty

    def _margin_loss(self, logits: torch.Tensor, out, t: torch.Tensor) -> torch.Tensor:
        return self.view.margin(logits, t)

    def _perturb(self, batch: Batch, counter: CallCounter) -> Perturbed:
        if self.minimal_eps:

            def attack_rows(sub: Batch, eps: torch.Tensor, rows: torch.Tensor):
                return self._attack_rows(sub, eps, rows, counter)

            return self._minimal_eps(batch, counter, self.eps, self.search_steps, attack_rows, True)
        n = batch.x.shape[0]
        eps = None if self.eps is None else torch.full((n,), self.eps, device=batch.x.device)
        x_adv, first = self._attack_rows(batch, eps, None, counter)
        return Perturbed(x_adv, eps, first)

    def _attack_rows(
        self,
        batch: Batch,
        eps: torch.Tensor | None,
        rows: torch.Tensor | None,
        counter: CallCounter,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The scheme on a (sub-)batch whose rows in the caller's batch are ``rows`` (None: all),
        with per-image budgets ``eps`` (n,) or None. Returns ``(x_adv, first-success step or
        -1)``; an image seen successful was frozen there."""
        x = batch.x
        t, loss = self._objective(batch)
        n = x.shape[0]
        x_adv = x.clone()
        mask = torch.zeros_like(x[:, :1])
        relevance_grad = torch.zeros_like(x) if self._uses_relevance_term else None
        first = torch.full((n,), -1, dtype=torch.long, device=x.device)
        bound = None if eps is None else eps.to(x.dtype).view(-1, 1, 1, 1)
        active = torch.arange(n, device=x.device)

        for step in range(self.steps):
            grad, pred = self._stage_grad(
                x_adv[active], t[active], loss, rows_of(rows, active), counter, step == 0
            )
            # the margin forward tells which iterates already succeed: freeze them first, so
            # that they pay for no further LRP pass
            hit = batch.success(active, pred)
            first[active[hit]] = step
            active, grad = active[~hit], grad[~hit]
            if active.numel() == 0:
                break
            refresh = step % self.refresh == 0
            if refresh or self.relevance_grad == "exact":
                new_mask = refresh and not (self.mask_source.fixed and step > 0)
                self._refresh(batch, x_adv, active, rows, counter, mask, relevance_grad, new_mask,
                              first_step=step == 0)  # fmt: skip
            if relevance_grad is not None:
                on = mask[active]
                grad = _unit(on * grad) + self.lam * _unit(on * relevance_grad[active])
            stepped = x_adv[active] - self.alpha * mask[active] * grad.sign()
            if bound is not None:
                e = bound[active]
                stepped = x[active] + torch.clamp(stepped - x[active], min=-e, max=e)
            x_adv[active] = stepped.clamp(0, 1)
        return x_adv, first

    def _refresh(
        self,
        batch: Batch,
        x_adv: torch.Tensor,
        active: torch.Tensor,
        rows: torch.Tensor | None,
        counter: CallCounter,
        mask: torch.Tensor,
        relevance_grad: torch.Tensor | None,
        new_mask: bool,
        first_step: bool = False,
    ) -> None:
        """At the iterates of the ``active`` positions: a new mask (``new_mask``) and the
        relevance gradient ``d/dx sum_{p in M} R_p(x)`` (when the relevance term is on), written
        into ``mask`` and ``relevance_grad``. One LRP pass serves both when both need it.
        ``first_step``: the iterates are still the clean images, whose mask and relevance
        gradient a bisection keeps from its first run (see :meth:`_stage_grad`)."""
        called = rows_of(rows, active)
        start = self._clean_start(first_step)
        if start is not None and (kept := start.get("refresh", called)) is not None:
            mask[active] = kept[0]
            if relevance_grad is not None:
                relevance_grad[active] = kept[1]
            return
        source = self.mask_source
        x, t = x_adv[active].detach(), batch.label[active]
        differentiable = self._uses_relevance_term
        relevance = None
        with torch.enable_grad():
            if differentiable or (new_mask and source.needs == "lrp"):
                x.requires_grad_(differentiable)
                relevance = stage_relevance_of(
                    self.model, x, self.stage, t, self.composite, create_graph=differentiable
                )
                counter.add(called, forwards=1, backwards=2 if differentiable else 1)
            if new_mask:
                inputs = MaskInputs(x.detach(), batch.index[active], self.top_k, self.seed)
                if source.needs == "lrp":
                    inputs.heat = heatmap(relevance.detach())
                elif source.needs == "gradient":
                    inputs.margin_grad, _ = self._stage_grad(
                        x, t, self._margin_loss, called, counter
                    )
                elif source.needs == "object":
                    inputs.object_mask = batch.object_mask[active]
                mask[active] = source.select(inputs).unsqueeze(1).to(mask.dtype)
            if differentiable:
                (grad,) = torch.autograd.grad((relevance * mask[active]).sum(), x)
                relevance_grad[active] = grad
        if start is not None:
            kept = [mask[active]] + ([] if relevance_grad is None else [relevance_grad[active]])
            start.keep("refresh", called, *kept)


def _unit(g: torch.Tensor) -> torch.Tensor:
    """Each image's ``g`` divided by its l2 norm (a zero ``g`` stays zero)."""
    norm = g.flatten(1).norm(dim=1).clamp_min(torch.finfo(g.dtype).tiny)
    return g / norm.view(-1, *([1] * (g.dim() - 1)))

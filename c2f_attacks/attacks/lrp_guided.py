"""The scheme LRPC and LRPF share (design.md section 5): masked signed steps guided by LRP.

For each image with explained class t (the clean decision of the attacked stage) and step size
alpha, every ``r`` steps (starting at step 0) the attack explains t at the current iterate:

    R = LRP relevance of t at x_t                          (N, C, H, W)
    M = top-k fraction of pixels of sum_c R                (the mask, 1 inside, 0 outside)
    G_rel = d/dx sum_{p in M} R_p(x)                       (relevance gradient, see below)

and every step it descends

    L(x) = margin(x) + penalty(x) + lambda * sum_{p in M} R_p(x)
    x_{t+1} = clip_[0,1]( x + clip_[-eps, eps]( x_t - alpha * M * sign(grad L) - x ) )

(no eps clip when ``eps=None``). ``margin`` is the stage margin of t (z_t minus the best other
allowed logit; < 0 means fooled); ``penalty`` is LRPF's coarse hinge. An image stops (is frozen)
at the first iterate that meets the attack's success criterion, so its perturbation is the
smallest this path finds; the others run until ``steps``.

Relevance gradient (``relevance_grad``):

- ``"refresh"`` (default): ``G_rel`` is the exact derivative (LRP's differentiable mode, one
  double backward) computed with each mask refresh and reused for the next ``r - 1`` steps. The
  mask refresh needs an LRP pass anyway, so this adds one double backward every ``r`` steps.
- ``"exact"``: ``G_rel`` recomputed at every step (a double backward per step).
- ``"none"``: no relevance term (lambda ignored), for ablations.

Why "refresh": on CPU a differentiable LRP pass plus its double backward costs many plain
forward+backward passes (shapes-vgg16, 64 images: 1.1 s vs 0.03-0.09 s), so "exact" makes every
step far more than the 2.5x-a-PGD-step goal, while "refresh" with ``r = 20`` measured 1.16-1.22x a
PGD step (bench/test_bench_attacks.py). The cheaper first-order form ``mask * g_LRP`` (using
``R = x * g_LRP``) is not available through ``stage_relevance``, which returns R only, and does
not hold at the flat input rule of ``epsilon_plus_flat``. On shapes-vgg16 the relevance term
changed fooling and norms by less than the sampling noise (see results/attacks_shapes.md); it is
kept because it is part of the attack's definition.

Cost counting: an LRP pass is one forward and one backward; its differentiable mode adds one
more backward (the double backward); each margin gradient is one forward and one backward.
"""

from __future__ import annotations

import torch
from torch import nn

from c2f_attacks.attacks.base import Attack, CallCounter
from c2f_attacks.attacks.relevance import heatmap, stage_relevance_of, top_fraction_mask
from c2f_attacks.lrp import check_explainable

RELEVANCE_GRADS = ("refresh", "exact", "none")

#: Defaults shared by LRPC and LRPF (so their norms compare at equal settings), chosen on the
#: shipped shapes-vgg16 (``python -m c2f_attacks.attacks.report --sweep 32``; numbers in
#: results/attacks_shapes.md): k = 0.15 is the smallest mask with which LRPF reaches >= 98% on
#: 256 test images (k = 0.1: 95-98%) while changing ~16% of the pixels (< 25%); alpha = 2/255
#: halves the queries of 1/255 at the same fooling ratio; 200 steps leave room for the images
#: whose masked pixels saturate (LRPF at 100 steps: 97.7%); r = 20 needs fewer queries than
#: r = 5 with no loss in fooling ratio; lambda = 1 (0 and 3 measured within noise).
SHARED_DEFAULTS = {"top_k": 0.15, "alpha": 2 / 255, "steps": 200, "lam": 1.0, "refresh": 20}


class LRPGuidedAttack(Attack):
    """Base of :class:`LRPC` and :class:`LRPF`; subclasses set ``attacked_stage`` and may add a
    penalty through :meth:`_penalty`."""

    attacked_stage: str = ""

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
        relevance_grad: str,
        composite: str,
        seed: int,
    ):
        super().__init__(model, self.attacked_stage, seed)
        if not isinstance(top_k, (int, float)) or not 0 < top_k <= 1:
            raise ValueError(f"top_k must be a fraction of pixels in (0, 1], got {top_k!r}")
        self._check_eps("alpha", alpha)
        self._check_eps("eps", eps, allow_none=True)
        for name, value in (("steps", steps), ("refresh", refresh)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(lam, (int, float)) or lam < 0:
            raise ValueError(f"lam must be a non-negative number, got {lam!r}")
        if relevance_grad not in RELEVANCE_GRADS:
            raise ValueError(
                f"relevance_grad must be one of {RELEVANCE_GRADS}, got {relevance_grad!r}"
            )
        self.top_k, self.alpha, self.steps = float(top_k), float(alpha), steps
        self.lam, self.refresh, self.eps = float(lam), refresh, None if eps is None else float(eps)
        self.relevance_grad, self.composite = relevance_grad, composite

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(top_k={self.top_k}, alpha={self.alpha:.5g}, "
            f"steps={self.steps}, lam={self.lam}, refresh={self.refresh}, eps={self.eps}, "
            f"relevance_grad={self.relevance_grad!r})"
        )

    @property
    def _uses_relevance_term(self) -> bool:
        return self.lam > 0 and self.relevance_grad != "none"

    @property
    def _first_grad_at_clean(self) -> bool:
        return True  # the iterates start at x

    def _check_model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        check_explainable(self.model)

    def _penalty(self, out, y: torch.Tensor) -> torch.Tensor | None:
        """Extra per-image loss term (LRPF's coarse hinge); None for none."""
        return None

    def _loss(self, logits: torch.Tensor, out, y: torch.Tensor) -> torch.Tensor:
        """The per-image loss the steps descend: stage margin (+ penalty)."""
        margin = self.view.margin(logits, y)
        penalty = self._penalty(out, y)
        return margin if penalty is None else margin + penalty

    def _explain(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        rows: torch.Tensor,
        counter: CallCounter,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One LRP pass at the iterate ``x``: ``(mask (n, 1, H, W), relevance gradient or None)``.

        The mask is the given one, or (None) the top-k pixels of this pass's relevance; the
        gradient is ``d/dx sum_{p in mask} R_p(x)`` when the relevance term is on.
        """
        differentiable = self._uses_relevance_term
        x = x.detach().requires_grad_(differentiable)
        with torch.enable_grad():
            relevance = stage_relevance_of(
                self.model, x, self.stage, y, self.composite, create_graph=differentiable
            )
            if mask is None:
                mask = top_fraction_mask(heatmap(relevance.detach()), self.top_k).unsqueeze(1)
                mask = mask.to(x.dtype)
            grad = None
            if differentiable:
                (grad,) = torch.autograd.grad((relevance * mask).sum(), x)
        counter.add(rows, forwards=1, backwards=2 if differentiable else 1)
        return mask, grad

    def _perturb(self, x, y, index, counter):
        n = x.shape[0]
        x_adv = x.clone()
        mask = torch.zeros_like(x[:, :1])
        relevance_grad = torch.zeros_like(x) if self._uses_relevance_term else None
        active = torch.arange(n, device=x.device)
        eps = None if self.eps is None else torch.full((n,), self.eps, device=x.device)

        for step in range(self.steps):
            grad, pred = self._stage_grad(x_adv[active], y[active], self._loss, active, counter)
            # the margin forward tells which iterates already succeed: freeze them first, so
            # that they pay for no further LRP pass
            keep = ~self.view.success(pred, y[active], self.keep_coarse)
            active, grad = active[keep], grad[keep]
            if active.numel() == 0:
                break
            refresh = step % self.refresh == 0
            if refresh or self.relevance_grad == "exact":
                kept = None if refresh else mask[active]
                new_mask, g = self._explain(x_adv[active], y[active], active, counter, kept)
                mask[active] = new_mask
                if g is not None:
                    relevance_grad[active] = g
            if relevance_grad is not None:
                grad = grad + self.lam * relevance_grad[active]
            stepped = x_adv[active] - self.alpha * mask[active] * grad.sign()
            if eps is not None:
                stepped = x[active] + (stepped - x[active]).clamp(-self.eps, self.eps)
            x_adv[active] = stepped.clamp(0, 1)
        return x_adv, eps

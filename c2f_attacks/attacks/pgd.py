"""Projected gradient descent (Madry et al. 2018), l-inf, with the options of the C2F benchmark.

Each step ascends the per-image loss L (cross-entropy, or ``-margin`` with
``margin = z_t - max_{j != t} z_j`` over the stage's allowed classes) of the target t (the clean
stage prediction on C2F models; y or the clean prediction on flat models):

    x_{s+1} = clip_[0,1]( x + clip_[-eps, eps]( x_s + alpha * sign(grad_x L(x_s)) - x ) )

which is torchattacks.PGD's update: with ``random_start=False, loss="ce", early_stop=False,
memory_format="contiguous"`` the outputs are bit-identical to torchattacks'. ``random_start``
draws ``x_0 = clip_[0,1](x + U(-eps, eps))`` from a counter-based hash of ``(seed, index[i],
pixel)``, so image i's start never depends on the rest of the batch. Every step's forward also
tells whether the iterate ``x_s`` already succeeds (``first_success_step`` = the first such s);
``early_stop`` freezes each image there. ``minimal_eps=True`` bisects a per-image eps in
``(0, eps]`` (see :mod:`c2f_attacks.attacks.minimal_eps`), scaling alpha with eps.

Targeted (``atk(x, target=T)``): the same update ascends ``L = -CE(d, T)`` (``loss="ce"``) or
``L = d_T - max_{j != T} d_j`` (``loss="margin"``) over the stage's decision logits d
(:meth:`~c2f_attacks.attacks.stage.StageView.decision_logits`: the logits on the coarse stage
and on flat models, the consistent fine view on the fine stage, so the loss moves the C2F
decision toward T, its coarse class included). On a flat model with the exactness settings
above this is torchattacks' targeted ``PGD``/``FGSM`` (``set_mode_targeted_by_label``), bit for
bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from c2f_attacks.attacks.base import Attack, Batch, CallCounter, Perturbed, rows_of
from c2f_attacks.attacks.criteria import Criterion
from c2f_attacks.attacks.noise import uniform_like
from c2f_attacks.attacks.registry import register_attack
from c2f_attacks.attacks.stage import class_margin
from c2f_attacks.errors import UserError

LOSSES = ("ce", "margin")


@register_attack
class PGD(Attack):
    """l-inf projected gradient descent (Madry et al. 2018), signed steps on CE or margin loss.

    ``PGD(model, eps=8/255, alpha=2/255, steps=10, random_start=True, loss="ce",
    early_stop=False, stage=None, minimal_eps=False, search_steps=8, seed=0,
    memory_format="auto", criterion=None)``; see the module docstring for the update."""

    name = "pgd"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        random_start: bool = True,
        loss: str = "ce",
        early_stop: bool = False,
        stage: str | None = None,
        minimal_eps: bool = False,
        search_steps: int = 8,
        seed: int = 0,
        memory_format: str = "auto",
        criterion: str | Criterion | None = None,
    ):
        super().__init__(model, stage, seed, memory_format, criterion)
        self._check_eps("eps", eps)
        self._check_eps("alpha", alpha)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise UserError(f"steps must be a positive integer, got {steps!r}")
        if loss not in LOSSES:
            raise UserError(f"loss must be one of {LOSSES}, got {loss!r}")
        self._check_search_steps(search_steps)
        self.eps, self.alpha, self.steps = float(eps), float(alpha), steps
        self.random_start, self.loss, self.early_stop = random_start, loss, early_stop
        self.minimal_eps, self.search_steps = minimal_eps, search_steps

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(eps={self.eps:.5g}, alpha={self.alpha:.5g}, "
            f"steps={self.steps}, random_start={self.random_start}, loss={self.loss!r}, "
            f"early_stop={self.early_stop}, stage={self.stage!r}, "
            f"minimal_eps={self.minimal_eps}, memory_format={self.memory_format!r})"
        )

    @classmethod
    def protocol_settings(
        cls, protocol: str, budget: float, search_bound: float, settings: Mapping[str, Any]
    ) -> dict[str, Any]:
        """As every attack's, and in ``minimal`` the step size keeps the fixed budget's
        step-to-budget ratio: the bisection scales alpha with each image's trial eps as
        ``alpha * eps / search_bound``, so alpha becomes ``alpha * search_bound / budget`` (a
        search up to 64/255 with the 8/255 step of 2/255 would otherwise take steps 8x too small
        and report inflated minimal norms)."""
        chosen = super().protocol_settings(protocol, budget, search_bound, settings)
        if protocol == "minimal" and "alpha" in settings:
            chosen["alpha"] = settings["alpha"] * search_bound / budget
        return chosen

    @property
    def _first_grad_at_clean(self) -> bool:
        # minimal eps: the first run covers every row from x, so it may reuse the clean forward
        return not self.random_start

    def _perturb(self, batch: Batch, counter: CallCounter) -> Perturbed:
        if not self.minimal_eps:
            x_adv, first = self._attack_rows(batch, self.eps, self.alpha, counter, None)
            return Perturbed(x_adv, torch.full_like(first, self.eps, dtype=torch.float32), first)

        def attack_rows(sub: Batch, eps: torch.Tensor, rows: torch.Tensor):
            return self._attack_rows(sub, eps, eps * (self.alpha / self.eps), counter, rows)

        return self._minimal_eps(
            batch, counter, self.eps, self.search_steps, attack_rows, self.early_stop
        )

    def _loss(self, logits: torch.Tensor, out, t: torch.Tensor) -> torch.Tensor:
        if self.loss == "ce":
            return self.view.cross_entropy(logits, t)
        return -self.view.margin(logits, t)

    def _toward(self, logits: torch.Tensor, out, target: torch.Tensor) -> torch.Tensor:
        """The targeted loss (ascended): toward the requested class ``target``."""
        d = self.view.decision_logits(logits, out)
        if self.loss == "ce":
            return -nn.functional.cross_entropy(d, target, reduction="none")
        return class_margin(d, target)

    def _attack_rows(
        self,
        batch: Batch,
        eps: float | torch.Tensor,
        alpha: float | torch.Tensor,
        counter: CallCounter,
        rows: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PGD on a (sub-)batch whose rows in the caller's batch are ``rows`` (None: all).

        ``eps`` and ``alpha`` are one float for all images or a per-image tensor (N,) (minimal
        eps); floats keep the step as cheap as torchattacks' (scalar clamps, no broadcasts).
        Returns ``(x_adv, first-success step or -1)``.
        """
        x = batch.x
        t, loss = self._objective(batch)
        eps, alpha = _per_image(eps, x.dtype), _per_image(alpha, x.dtype)
        first = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        x_adv = x.clone()
        if self.random_start:
            noise = (2 * uniform_like(x, self.seed, batch.index) - 1) * eps
            x_adv = (x + noise).clamp(0, 1)
        # rows of this sub-batch still attacked; without early stop a slice: views, no copies
        active = torch.arange(x.shape[0], device=x.device) if self.early_stop else slice(None)
        for step in range(self.steps):
            grad, pred = self._stage_grad(
                x_adv[active], t[active], loss, rows_of(rows, active), counter, step == 0
            )
            # the forward just made tells which iterates already fool the stage
            hit = batch.success(active, pred)
            _record_first(first, active, hit, step)
            if self.early_stop:  # freeze them
                active, grad = active[~hit], grad[~hit]
                if active.numel() == 0:
                    break
            e, a = _select(eps, active), _select(alpha, active)
            stepped = x_adv[active] + a * grad.sign()
            delta = torch.clamp(stepped - x[active], min=-e, max=e)
            x_adv[active] = torch.clamp(x[active] + delta, min=0, max=1)
        return x_adv, first


def _record_first(first: torch.Tensor, active, hit: torch.Tensor, step: int) -> None:
    """Set ``first`` to ``step`` at the ``active`` positions hit now and never before."""
    current = first[active]
    first[active] = torch.where(hit & (current < 0), step, current)


def _per_image(value: float | torch.Tensor, dtype: torch.dtype) -> float | torch.Tensor:
    """A float stays a float; a per-image tensor (N,) becomes (N, 1, 1, 1) in the images' dtype
    (so that low-precision iterates stay low-precision)."""
    return value.to(dtype).view(-1, 1, 1, 1) if isinstance(value, torch.Tensor) else value


def _select(value: float | torch.Tensor, active) -> float | torch.Tensor:
    return value[active] if isinstance(value, torch.Tensor) else value

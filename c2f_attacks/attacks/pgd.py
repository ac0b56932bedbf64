"""Projected gradient descent (Madry et al. 2018), l-inf, with the options of the C2F benchmark.

Each step ascends the per-image loss L (cross-entropy, or ``-margin`` with
``margin = z_y - max_{j != y} z_j`` over the stage's allowed classes):

    x_{t+1} = clip_[0,1]( x + clip_[-eps, eps]( x_t + alpha * sign(grad_x L(x_t)) - x ) )

which is exactly torchattacks.PGD's update (so with ``random_start=False, loss="ce",
early_stop=False`` the outputs match torchattacks to float rounding). ``random_start`` draws
``x_0 = clip_[0,1](x + U(-eps, eps))`` from a counter-based hash of ``(seed, index[i], pixel)``,
so image i's start never depends on the rest of the batch. ``early_stop`` freezes each image at
the first iterate that fools the stage. ``minimal_eps=True`` bisects a per-image eps in
``(0, eps]`` (see :mod:`c2f_attacks.attacks.minimal_eps`), scaling alpha with eps.
"""

from __future__ import annotations

import torch
from torch import nn

from c2f_attacks.attacks.base import Attack, CallCounter
from c2f_attacks.attacks.minimal_eps import bisect_eps
from c2f_attacks.attacks.noise import uniform_like

LOSSES = ("ce", "margin")


class PGD(Attack):
    """l-inf PGD: ``PGD(model, eps=8/255, alpha=2/255, steps=10, random_start=True, loss="ce",
    early_stop=False, stage=None)``; see the module docstring for the update."""

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
    ):
        super().__init__(model, stage, seed)
        self._check_eps("eps", eps)
        self._check_eps("alpha", alpha)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not isinstance(search_steps, int) or search_steps < 0:
            raise ValueError(f"search_steps must be a non-negative integer, got {search_steps!r}")
        self.eps, self.alpha, self.steps = float(eps), float(alpha), steps
        self.random_start, self.loss, self.early_stop = random_start, loss, early_stop
        self.minimal_eps, self.search_steps = minimal_eps, search_steps

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(eps={self.eps:.5g}, alpha={self.alpha:.5g}, "
            f"steps={self.steps}, random_start={self.random_start}, loss={self.loss!r}, "
            f"early_stop={self.early_stop}, "
            f"stage={self.stage!r}, minimal_eps={self.minimal_eps})"
        )

    @property
    def _first_grad_at_clean(self) -> bool:
        return not self.random_start and not self.minimal_eps

    def _perturb(self, x, y, index, counter):
        n = x.shape[0]
        if not self.minimal_eps:
            x_adv = self._attack_rows(x, y, index, self.eps, self.alpha, counter, None)
            return x_adv, torch.full((n,), self.eps, device=x.device)

        def run(rows: torch.Tensor, eps: torch.Tensor):
            alpha = eps * (self.alpha / self.eps)
            x_adv = self._attack_rows(x[rows], y[rows], index[rows], eps, alpha, counter, rows)
            with torch.no_grad():
                _, pred, _ = self.view.forward(x_adv)
            counter.add(rows, forwards=1, backwards=0)
            return x_adv, self.view.success(pred, y[rows], self.keep_coarse)

        return bisect_eps(run, n, self.eps, self.search_steps, x.device)

    def _loss(self, logits: torch.Tensor, out, y: torch.Tensor) -> torch.Tensor:
        if self.loss == "ce":
            return self.view.cross_entropy(logits, y)
        return -self.view.margin(logits, y)

    def _attack_rows(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        index: torch.Tensor,
        eps: float | torch.Tensor,
        alpha: float | torch.Tensor,
        counter: CallCounter,
        rows: torch.Tensor | None,
    ) -> torch.Tensor:
        """PGD on a sub-batch whose rows in the caller's batch are ``rows`` (None: all of them).

        ``eps`` and ``alpha`` are one float for all images or a per-image tensor (N,) (minimal
        eps); floats keep the step as cheap as torchattacks' (scalar clamps, no broadcasts).
        """
        eps, alpha = _per_image(eps), _per_image(alpha)
        x_adv = x.clone()
        if self.random_start:
            noise = (2 * uniform_like(x, self.seed, index) - 1) * eps
            x_adv = (x + noise).clamp(0, 1)
        # rows of this sub-batch still attacked; without early stop a slice: views, no copies
        active = torch.arange(x.shape[0], device=x.device) if self.early_stop else slice(None)
        for _ in range(self.steps):
            counted = _rows(rows, active)
            grad, pred = self._stage_grad(x_adv[active], y[active], self._loss, counted, counter)
            if self.early_stop:
                # the forward just made tells which iterates already fool the stage: freeze them
                keep = ~self.view.success(pred, y[active], self.keep_coarse)
                active, grad = active[keep], grad[keep]
                if active.numel() == 0:
                    break
            e, a = _select(eps, active), _select(alpha, active)
            stepped = x_adv[active] + a * grad.sign()
            delta = torch.clamp(stepped - x[active], min=-e, max=e)
            x_adv[active] = torch.clamp(x[active] + delta, min=0, max=1)
        return x_adv


def _per_image(value: float | torch.Tensor) -> float | torch.Tensor:
    """A float stays a float; a per-image tensor (N,) becomes (N, 1, 1, 1) to broadcast."""
    return value.view(-1, 1, 1, 1) if isinstance(value, torch.Tensor) else value


def _select(value: float | torch.Tensor, active) -> float | torch.Tensor:
    return value[active] if isinstance(value, torch.Tensor) else value


def _rows(rows: torch.Tensor | None, active) -> torch.Tensor | None:
    """Rows of the caller's batch for the active positions of the sub-batch (None: all)."""
    if rows is None:
        return None if isinstance(active, slice) else active
    return rows[active]

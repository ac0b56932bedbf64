"""The attack base class: validation, clean predictions, cost counting and sanity checks.

Subclasses implement :meth:`Attack._perturb`; ``atk(x, y=None, index=None)`` does the rest, like
torchattacks' ``Attack.__call__``:

1. validate the images (rank, channels, size, finite values in [0, 1]), labels and indices;
2. put the model in eval mode for the call (its previous mode is restored afterwards), and
   hand it the batch in its fastest memory layout (:mod:`c2f_attacks.attacks.layout`);
3. predict the clean batch; ``y`` defaults to the clean stage predictions (an attack whose first
   step starts at the clean batch takes its first gradient from this same forward);
4. perturb; predict the adversarial batch; decide per-image success;
5. check the result (no NaN, pixels in [0, 1], ``max |delta| <= eps + 1e-6`` when an eps is
   set) and raise :class:`AttackSanityError` when a check fails.

Cost counts the model calls the attack itself makes to produce ``x_adv`` (the clean and final
evaluation forwards are not counted): ``forwards[i]`` / ``backwards[i]`` per image, counting only
the passes image i took part in (early-stopped images stop paying).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from c2f_attacks.attacks.layout import prefers_channels_last
from c2f_attacks.attacks.stage import Predictions, StageView
from c2f_attacks.models.base import C2FOutput
from c2f_attacks.validation import check_image_batch

SANITY_TOLERANCE = 1e-6


class AttackSanityError(RuntimeError):
    """An attack produced an invalid adversarial batch (NaN, outside [0, 1], or beyond eps)."""


@dataclass
class AttackResult:
    """What one attack call returns, per image of the batch of N."""

    x_adv: torch.Tensor  #: (N, C, H, W) adversarial images in [0, 1]
    success: torch.Tensor  #: (N,) bool, the attack's own success criterion
    y: torch.Tensor  #: (N,) attacked labels in the stage's index space
    clean_pred: torch.Tensor  #: (N,) stage prediction on the clean images
    adv_pred: torch.Tensor  #: (N,) stage prediction on the adversarial images
    forwards: torch.Tensor  #: (N,) forward passes image i took part in
    backwards: torch.Tensor  #: (N,) backward passes image i took part in
    eps: torch.Tensor | None = None  #: (N,) l-inf budget per image (minimal-eps: the one found)
    clean_coarse_pred: torch.Tensor | None = None  #: C2F models only
    clean_fine_pred: torch.Tensor | None = None
    adv_coarse_pred: torch.Tensor | None = None
    adv_fine_pred: torch.Tensor | None = None

    @property
    def queries(self) -> torch.Tensor:
        """(N,) forward plus backward passes per image."""
        return self.forwards + self.backwards

    def cost(self) -> dict[str, float]:
        """Mean forward, backward and total passes per image."""
        return {
            "forwards_per_image": self.forwards.float().mean().item(),
            "backwards_per_image": self.backwards.float().mean().item(),
            "queries_per_image": self.queries.float().mean().item(),
        }


class CallCounter:
    """Per-image forward/backward counts; ``rows`` are the batch rows that took part."""

    def __init__(self, n: int, device: torch.device):
        self.forwards = torch.zeros(n, dtype=torch.long, device=device)
        self.backwards = torch.zeros(n, dtype=torch.long, device=device)

    def add(self, rows: torch.Tensor | None, forwards: int = 1, backwards: int = 1) -> None:
        if rows is None:
            self.forwards += forwards
            self.backwards += backwards
        else:
            self.forwards.index_add_(0, rows, torch.full_like(rows, forwards))
            self.backwards.index_add_(0, rows, torch.full_like(rows, backwards))


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for the duration of a call, then the caller's mode again."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_index(index: object, n: int, device: torch.device) -> torch.Tensor:
    """Validate global image indices (N,) of non-negative integers; default ``arange(N)``."""
    if index is None:
        return torch.arange(n, device=device)
    if not isinstance(index, torch.Tensor) or index.is_floating_point() or index.is_complex():
        raise TypeError("index must be an integer tensor of global image indices")
    if index.shape != (n,):
        raise ValueError(
            f"index must have shape ({n},) to match the images, got {tuple(index.shape)}"
        )
    if n and index.min() < 0:
        raise ValueError("index must hold non-negative global image indices")
    return index.to(device, torch.long)


def sanity_check(x: torch.Tensor, x_adv: torch.Tensor, eps: torch.Tensor | None) -> None:
    """Raise :class:`AttackSanityError` on NaN, pixels outside [0, 1] or ``|delta| > eps``."""
    if x_adv.shape != x.shape:
        raise AttackSanityError(f"x_adv has shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
    if torch.isnan(x_adv).any():
        raise AttackSanityError("x_adv contains NaN")
    lo, hi = torch.aminmax(x_adv)
    if lo < 0 or hi > 1:
        raise AttackSanityError(
            f"x_adv leaves [0, 1]: values in [{lo.item():.6g}, {hi.item():.6g}]"
        )
    if eps is not None:
        linf = (x_adv - x).abs().flatten(1).amax(dim=1)
        over = linf > eps + SANITY_TOLERANCE
        if over.any():
            i = int(over.nonzero()[0])
            raise AttackSanityError(
                f"image {i}: max |delta| = {linf[i].item():.6g} exceeds eps = {eps[i].item():.6g}"
            )


class Attack:
    """Base class: ``res = atk(x, y=None, index=None)``; see the module docstring.

    ``keep_coarse`` (class attribute) selects LRPF's success criterion: the fine label changed
    and the coarse label did not.
    """

    keep_coarse = False

    def __init__(self, model: nn.Module, stage: str | None = None, seed: int = 0):
        self.view = StageView(model, stage)
        self.model, self.stage = model, stage
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed
        self._channels_last: dict[str, bool] = {}  # by device type, see _in_fast_layout
        self._clean_pass: tuple | None = None  # during a call, see _first_grad_at_clean

    def __repr__(self) -> str:
        return f"{type(self).__name__}(stage={self.stage!r})"

    @staticmethod
    def _check_eps(name: str, value: float | None, allow_none: bool = False) -> None:
        if value is None and allow_none:
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor | None = None, index: torch.Tensor | None = None
    ) -> AttackResult:
        check_image_batch(x, size=getattr(self.model, "input_size", None))
        n = x.shape[0]
        index = check_index(index, n, x.device)
        caller_x = x.detach()
        with eval_mode(self.model):
            x = self._in_fast_layout(caller_x)
            # An attack whose first gradient is taken at x keeps this forward's graph for it.
            keep = self._first_grad_at_clean
            x_clean = x.detach().requires_grad_(keep)
            with torch.set_grad_enabled(keep):
                logits, clean, out = self.view.forward(x_clean)
            num_classes = self.view.num_classes if self.view.is_c2f else logits.shape[1]
            y = clean.stage if y is None else self.view.check_labels(y, n, num_classes).to(x.device)
            self._check_model(x, y)
            counter = CallCounter(n, x.device)
            self._clean_pass = (x_clean, logits, out, clean) if keep else None
            try:
                x_adv, eps = self._perturb(x, y, index, counter)
            finally:
                self._clean_pass = None
            x_adv = x_adv.detach()
            with torch.no_grad():
                _, adv, _ = self.view.forward(x_adv)
        if caller_x.is_contiguous():
            x_adv = x_adv.contiguous()
        sanity_check(x, x_adv, eps)
        return AttackResult(
            x_adv=x_adv,
            success=self.view.success(adv, y, self.keep_coarse),
            y=y,
            clean_pred=clean.stage,
            adv_pred=adv.stage,
            forwards=counter.forwards,
            backwards=counter.backwards,
            eps=eps,
            clean_coarse_pred=clean.coarse,
            clean_fine_pred=clean.fine,
            adv_coarse_pred=adv.coarse,
            adv_fine_pred=adv.fine,
        )

    def _in_fast_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory layout the model runs fastest on (:mod:`.layout`), probed once
        per device type."""
        device = x.device.type
        if device not in self._channels_last:
            self._channels_last[device] = prefers_channels_last(self.model, x)
        if self._channels_last[device]:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @property
    def _first_grad_at_clean(self) -> bool:
        """True for attacks whose first :meth:`_stage_grad` call is at the clean batch, all
        rows: that call then reuses the forward that gave the clean predictions (FGSM, for one,
        makes two forwards instead of three)."""
        return False

    def _check_model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Hook for attacks with extra requirements on the model (LRP attacks)."""

    def _perturb(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, counter: CallCounter
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(x_adv, eps per image or None)``; count model calls on ``counter``."""
        raise NotImplementedError

    def _stage_grad(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, C2FOutput | None, torch.Tensor], torch.Tensor],
        rows: torch.Tensor | None,
        counter: CallCounter,
    ) -> tuple[torch.Tensor, Predictions]:
        """One forward and backward: ``(d sum_i loss_i / dx, predictions at x)``.

        ``loss_fn(stage_logits, c2f_output_or_None, y) -> (N,)``. Per-image losses are summed
        (not averaged) so each image's gradient does not depend on the batch size.
        """
        clean_pass, self._clean_pass = self._clean_pass, None
        with torch.enable_grad():
            if clean_pass is not None:  # the first gradient, at x: the clean forward's graph
                x, logits, out, pred = clean_pass
            else:
                x = x.detach().requires_grad_(True)
                logits, pred, out = self.view.forward(x)
            (grad,) = torch.autograd.grad(loss_fn(logits, out, y).sum(), x)
        counter.add(rows)
        return grad, pred

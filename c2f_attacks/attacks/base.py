"""The attack base class: validation, clean predictions, labels, cost counting and sanity checks.

Subclasses implement :meth:`Attack._perturb`; ``atk(x, y=None, index=None, object_mask=None,
target=None)`` does the rest, like torchattacks' ``Attack.__call__``:

1. validate the images (rank, the model's channel count (:func:`model_channels`) and size,
   finite values in [0, 1], the model's dtype and device), the labels, the indices, the object
   masks and the targets, before any model call;
2. put every submodule in eval mode for the call (each one's flag restored afterwards) and hand
   the model the batch in the chosen memory layout (:mod:`c2f_attacks.attacks.layout`);
3. predict the clean batch. The label ``t`` the loss moves away from (``res.y``) is, on a C2F
   model, the clean stage prediction: the attack pushes away from what the model decides,
   whatever ``y`` says; on a flat model it is ``y`` (torchattacks' convention), or the clean
   prediction without y;
4. perturb; predict the adversarial batch; ``success`` = the call's criterion
   (:mod:`c2f_attacks.attacks.criteria`) of the adversarial against the clean predictions;
   ``misclassified`` flags the images whose clean stage prediction differs from the stage label
   of the given y (all False without y);
5. check the result (no NaN, pixels in [0, 1], ``max |delta| <= eps + tolerance`` when an eps is
   set, ``tolerance = max(1e-6, 4 * finfo(dtype).eps)``) and raise :class:`AttackSanityError`
   when a check fails.

Targeted calls (:mod:`c2f_attacks.attacks.targets`): ``target`` is a tensor of requested classes
in the stage's label space (coarse indices, global fine indices, or a flat model's classes), or
a policy name (``"random"``, ``"least_likely"``, ``"nearest"``, ``"farthest"``) that chooses
them from the clean predictions, seeded by ``(seed, index)``. The loss then moves toward the
target and success, early stopping and the minimal-budget search follow ``target_reached``
(``res.criterion``, holding the targets; ``res.target``). A target outside the label space, of
the wrong shape or dtype is refused before any model call, and so is any target for an attack
without a targeted form (``targetable``); a target equal to the clean decision after the clean
forward, before the attack's first query. Each is a :class:`~c2f_attacks.errors.UserError`.

Cost counts the model calls the attack itself makes to produce ``x_adv`` (the clean and final
evaluation forwards are not counted): ``forwards[i]`` / ``backwards[i]`` per image, counting only
the passes image i took part in (early-stopped images stop paying).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from c2f_attacks.attacks.criteria import Criterion, TargetReached, get_criterion
from c2f_attacks.attacks.layout import Layout
from c2f_attacks.attacks.minimal_eps import RunStart, bisect_eps
from c2f_attacks.attacks.predictions import Predictions
from c2f_attacks.attacks.stage import StageView
from c2f_attacks.attacks.targets import (
    TARGET_POLICIES,
    check_not_clean,
    check_target,
    choose_targets,
)
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import STAGES
from c2f_attacks.models.base import C2FOutput
from c2f_attacks.modes import eval_mode
from c2f_attacks.validation import check_image_batch, check_matches_model


class AttackSanityError(RuntimeError):
    """An attack produced an invalid adversarial batch (NaN, outside [0, 1], or beyond eps)."""


@dataclass
class AttackResult:
    """What one attack call returns, per image of the batch of N."""

    x_adv: torch.Tensor  #: (N, C, H, W) adversarial images in [0, 1]
    success: torch.Tensor  #: (N,) bool, the call's criterion against the clean predictions
    misclassified: torch.Tensor  #: (N,) bool, clean stage prediction != stage label of y
    clean: Predictions  #: predictions on the clean images
    adv: Predictions  #: predictions on the adversarial images
    y: torch.Tensor  #: (N,) the labels the loss moved away from, in the stage's index space
    forwards: torch.Tensor  #: (N,) forward passes image i took part in
    backwards: torch.Tensor  #: (N,) backward passes image i took part in
    eps: torch.Tensor | None  #: (N,) l-inf budget per image (minimal eps: the one found)
    #: (N,) update steps taken when x_adv's path was first seen successful; -1 if not successful
    #: or not tracked
    first_success_step: torch.Tensor
    #: the success rule of the call (a targeted call's holds its targets)
    criterion: Criterion
    target: torch.Tensor | None = None  #: (N,) requested classes of a targeted call, else None

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


@dataclass
class Perturbed:
    """What :meth:`Attack._perturb` returns: ``x_adv``, the eps per image (or None) and the
    first-success step per image (-1 where no iterate was seen successful; None: not tracked)."""

    x_adv: torch.Tensor
    eps: torch.Tensor | None = None
    first_success_step: torch.Tensor | None = None


@dataclass
class Batch:
    """One call's inputs as the attack loops see them (all tensors have N rows).

    ``label`` is the class the loss moves away from (stage index space: the clean decision on
    C2F models), ``clean`` the clean predictions, ``index`` the global image indices,
    ``criterion`` the call's success rule, ``target`` the requested classes of a targeted call
    (None otherwise), ``object_mask`` (N, H, W) or None.
    """

    x: torch.Tensor
    label: torch.Tensor
    clean: Predictions
    index: torch.Tensor
    criterion: Criterion
    target: torch.Tensor | None = None
    object_mask: torch.Tensor | None = None

    def __getitem__(self, rows: torch.Tensor) -> Batch:
        return Batch(
            self.x[rows], self.label[rows], self.clean[rows], self.index[rows],
            self.criterion[rows], None if self.target is None else self.target[rows],
            None if self.object_mask is None else self.object_mask[rows],
        )  # fmt: skip

    def success(self, rows, pred: Predictions) -> torch.Tensor:
        """The criterion's verdict on ``pred``, the predictions of the batch rows ``rows`` (an
        index tensor or ``slice(None)``)."""
        return self.criterion[rows](self.clean[rows], pred)


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


def rows_of(rows: torch.Tensor | None, active) -> torch.Tensor | None:
    """Caller-batch rows of the ``active`` positions of a sub-batch whose caller rows are
    ``rows`` (None: the whole batch); ``active`` is an index tensor or ``slice(None)``."""
    if rows is None:
        return None if isinstance(active, slice) else active
    return rows[active]


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


def check_object_mask(mask: object, x: torch.Tensor) -> torch.Tensor | None:
    """Validate ground-truth object masks: None, or a tensor (N, H, W) (nonzero = object)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"object_mask must be a torch.Tensor, got {type(mask).__name__}")
    expected = (x.shape[0], *x.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(f"object_mask must have shape {expected}, got {tuple(mask.shape)}")
    return mask.to(x.device).bool()


def model_channels(model: nn.Module) -> int | None:
    """The image channels ``model`` takes (1 for grayscale), or None for any number.

    C2F models say so in their ``in_channels`` attribute (3 unless the model sets it;
    :class:`~c2f_attacks.models.InducedC2F` reads it from its normalization or its first
    convolution); a flat model may set the same attribute, else it is its first convolution's
    input channels, else unchecked."""
    if hasattr(model, "in_channels"):
        return model.in_channels
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first_conv.in_channels if first_conv is not None else None


def sanity_tolerance(dtype: torch.dtype) -> float:
    """Slack of the eps check: rounding of ``x + delta`` in ``dtype`` (1e-6 at least)."""
    return max(1e-6, 4 * torch.finfo(dtype).eps)


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
        linf = (x_adv - x).abs().flatten(1).amax(dim=1).float()
        over = linf > eps + sanity_tolerance(x.dtype)
        if over.any():
            i = int(over.nonzero()[0])
            raise AttackSanityError(
                f"image {i}: max |delta| = {linf[i].item():.6g} exceeds eps = {eps[i].item():.6g}"
            )


class Attack:
    """Base class: ``res = atk(x, y=None, index=None, object_mask=None, target=None)``; see the
    module docstring.

    A subclass declares what it is as class attributes, which the registry
    (:func:`~c2f_attacks.attacks.registry.register_attack`) reads: ``name``, the ``stages`` it
    attacks, the ``norm`` of its budget, the ``protocols`` it can follow, its
    ``default_criterion`` (the success rule when the caller names none) and whether it takes a
    mask source (``masked``). ``criterion=`` (a rule name or a
    :class:`~c2f_attacks.attacks.criteria.Criterion`) chooses another rule: success, early
    stopping and the minimal-budget search all follow it. A targeted call judges by
    ``target_reached`` instead; ``targetable`` says whether the attack has a targeted form.
    """

    name: ClassVar[str]
    stages: ClassVar[tuple[str, ...]] = STAGES
    norm: ClassVar[str] = "linf"
    protocols: ClassVar[tuple[str, ...]] = ("minimal", "fixed")
    default_criterion: ClassVar[str] = "stage_changed"
    masked: ClassVar[bool] = False
    #: the attack accepts ``target=`` (external attacks: where their library has a targeted mode)
    targetable: bool = True
    #: the number of update steps of a full run (first-success steps of images that succeed
    #: only at the end); None where not tracked
    steps: int | None = None

    def __init__(
        self, model: nn.Module, stage: str | None = None, seed: int = 0,
        memory_format: str = "auto", criterion: str | Criterion | None = None,
    ):  # fmt: skip
        self.view = StageView(model, stage)
        self.model, self.stage = model, stage
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed
        self._layout = Layout(memory_format)
        self.memory_format = memory_format
        self.criterion = get_criterion(
            self.default_criterion if criterion is None else criterion, stage
        )
        self._clean_pass: tuple | None = None  # during a call, see _first_grad_at_clean
        self._run_start: RunStart | None = None  # during a bisection, see _stage_grad

    @classmethod
    def protocol_settings(
        cls, protocol: str, budget: float, search_bound: float, settings: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The settings that make this attack follow ``protocol`` (see
        :mod:`~c2f_attacks.attacks.registry`): ``fixed`` runs at ``budget`` and ``minimal``
        searches each image's budget in ``(0, search_bound]``, both stopping each image at its
        first success; ``first_success`` runs unbounded. ``settings`` are the run's other
        settings of the attack (a subclass may derive from them, as PGD does its step size).
        They are merged over ``settings``: they win."""
        if protocol not in cls.protocols:
            raise UserError(f"attack {cls.name!r} cannot follow protocol {protocol!r} (it "
                             f"follows {', '.join(cls.protocols)})")  # fmt: skip
        eps = {"fixed": budget, "minimal": search_bound, "first_success": None}[protocol]
        chosen: dict[str, Any] = {"eps": eps, "minimal_eps": protocol == "minimal"}
        if "early_stop" in inspect.signature(cls.__init__).parameters:
            chosen["early_stop"] = True
        return chosen

    def __repr__(self) -> str:
        return f"{type(self).__name__}(stage={self.stage!r}, memory_format={self.memory_format!r})"

    @staticmethod
    def _check_eps(name: str, value: float | None, allow_none: bool = False) -> None:
        if value is None and allow_none:
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise UserError(f"{name} must be a positive number, got {value!r}")

    @staticmethod
    def _check_search_steps(value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(f"search_steps must be a non-negative integer, got {value!r}")

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
        object_mask: torch.Tensor | None = None,
        target: torch.Tensor | str | None = None,
    ) -> AttackResult:
        check_image_batch(
            x, channels=model_channels(self.model), size=getattr(self.model, "input_size", None)
        )
        check_matches_model(x, self.model)
        n = x.shape[0]
        index = check_index(index, n, x.device)
        object_mask = check_object_mask(object_mask, x)
        self._check_call(x, object_mask)
        if y is not None and self.view.is_c2f:
            y = self.view.check_labels(y, n, -1).to(x.device)
        self._check_target_call(target, n)
        caller_x = x.detach()
        with eval_mode(self.model):
            x = self._layout(self.model, caller_x)
            # An attack whose first gradient is taken at x keeps this forward's graph for it.
            keep = self._first_grad_at_clean
            x_clean = x.detach().requires_grad_(keep)
            with torch.set_grad_enabled(keep):
                logits, clean, out = self.view.forward(x_clean)
            if y is not None and not self.view.is_c2f:  # the class count is known now
                y = self.view.check_labels(y, n, logits.shape[1]).to(x.device)
            label = y if y is not None and not self.view.is_c2f else clean.stage
            criterion = self.criterion
            if target is not None:
                target = self._targets(target, logits, out, clean, index)
                criterion = TargetReached(self.stage, target)
            misclassified = torch.zeros(n, dtype=torch.bool, device=x.device)
            if y is not None:
                misclassified = self.view.stage_labels(y) != clean.stage
            self._check_model(x)
            counter = CallCounter(n, x.device)
            self._clean_pass = (x_clean, logits, out, clean) if keep else None
            batch = Batch(x, label, clean, index, criterion, target, object_mask)
            try:
                done = self._perturb(batch, counter)
            finally:
                self._clean_pass = None
            x_adv = done.x_adv.detach()
            with torch.no_grad():
                _, adv, _ = self.view.forward(x_adv)
        if caller_x.is_contiguous():
            x_adv = x_adv.contiguous()
        sanity_check(x, x_adv, done.eps)
        success = criterion(clean, adv)
        return AttackResult(
            x_adv=x_adv, success=success, misclassified=misclassified, clean=clean, adv=adv,
            y=label, forwards=counter.forwards, backwards=counter.backwards, eps=done.eps,
            first_success_step=self._first_success(done.first_success_step, success),
            criterion=criterion, target=target,
        )  # fmt: skip

    def _check_target_call(self, target: object, n: int) -> None:
        """Refuse, before any model call, a target this attack or call cannot take: a targeted
        call of an attack without a targeted form, a bad policy name or tensor, or no target
        for a targeted criterion."""
        if target is None:
            if self.criterion.targeted and getattr(self.criterion, "target", None) is None:
                raise UserError(f"success rule {self.criterion.name!r} needs the requested "
                                "classes: call atk(x, target=T)")  # fmt: skip
            return
        if not self.targetable:
            raise UserError(f"{self.name} has no targeted mode: call it without target=")
        if isinstance(target, str):
            if target not in TARGET_POLICIES:
                raise UserError(f"unknown target policy {target!r}; choose from "
                                f"{', '.join(TARGET_POLICIES)} or pass a tensor")  # fmt: skip
            if not self.view.is_c2f and target in ("nearest", "farthest"):
                raise UserError(f"target policy {target!r} needs a hierarchy: use it on a C2F "
                                "model")  # fmt: skip
            return
        hierarchy = self.model.hierarchy if self.view.is_c2f else None
        classes = {"coarse": getattr(hierarchy, "num_coarse", None),
                   "fine": getattr(hierarchy, "num_fine", None)}.get(self.stage)  # fmt: skip
        check_target(target, n, classes, self.stage)

    def _targets(self, target, logits, out, clean: Predictions, index) -> torch.Tensor:
        """The requested classes (N,) of a targeted call, checked against the clean decision."""
        if isinstance(target, str):
            return choose_targets(target, self.view, logits.detach(), out, clean, index,
                                  self.seed)  # fmt: skip
        if not self.view.is_c2f:  # the class count is known now
            check_target(target, len(target), logits.shape[1], None)
        target = target.to(logits.device, torch.long)
        check_not_clean(target, clean, self.stage)
        return target

    def _first_success(self, seen: torch.Tensor | None, success: torch.Tensor) -> torch.Tensor:
        """Per image: the step its path was first seen successful, ``steps`` for a success seen
        only by the final forward, -1 for a failure or where not tracked."""
        if seen is None or self.steps is None:
            return torch.full_like(success, -1, dtype=torch.long)
        seen = torch.where(seen >= 0, seen, self.steps)
        return torch.where(success, seen, -1)

    @property
    def _first_grad_at_clean(self) -> bool:
        """True for attacks whose first :meth:`_stage_grad` call is at the clean batch, all
        rows: that call then reuses the forward that gave the clean predictions (FGSM, for one,
        makes two forwards instead of three)."""
        return False

    def _clean_start(self, first_step: bool) -> RunStart | None:
        """The bisection's values kept at the clean batch, when ``first_step`` is a run's first
        step and the attack starts at the clean batch (:attr:`_first_grad_at_clean`); None
        outside a bisection and otherwise."""
        return self._run_start if first_step and self._first_grad_at_clean else None

    def _objective(self, batch: Batch) -> tuple[torch.Tensor, Callable]:
        """``(classes, loss_fn)`` of the update steps: the label and :meth:`_loss` (away from
        it), or on a targeted call the targets and :meth:`_toward` (toward them)."""
        if batch.target is None:
            return batch.label, self._loss
        return batch.target, self._toward

    def _loss(self, logits: torch.Tensor, out: C2FOutput | None, t: torch.Tensor) -> torch.Tensor:
        """Per-image loss away from the classes ``t`` (attacks that take gradient steps)."""
        raise NotImplementedError

    def _toward(
        self, logits: torch.Tensor, out: C2FOutput | None, target: torch.Tensor
    ) -> torch.Tensor:
        """Per-image loss toward the requested classes ``target`` (targeted calls)."""
        raise NotImplementedError

    def _check_call(self, x: torch.Tensor, object_mask: torch.Tensor | None) -> None:
        """Hook for attacks with extra requirements on a call's inputs (mask sources)."""

    def _check_model(self, x: torch.Tensor) -> None:
        """Hook for attacks with extra requirements on the model (LRP attacks)."""

    def _perturb(self, batch: Batch, counter: CallCounter) -> Perturbed:
        """Attack ``batch``; count model calls on ``counter``."""
        raise NotImplementedError

    def _stage_grad(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, C2FOutput | None, torch.Tensor], torch.Tensor],
        rows: torch.Tensor | None,
        counter: CallCounter,
        first_step: bool = False,
    ) -> tuple[torch.Tensor, Predictions]:
        """One forward and backward: ``(d sum_i loss_i / dx, predictions at x)``.

        ``loss_fn(stage_logits, c2f_output_or_None, t) -> (N,)``. Per-image losses are summed
        (not averaged) so each image's gradient does not depend on the batch size.
        ``first_step``: the gradient of a run's first step, which is at the clean batch's rows
        ``rows`` for an attack that starts there (:attr:`_first_grad_at_clean`); during a
        bisection the first run's result is kept and later runs reuse it (:class:`RunStart`),
        without a model call.
        """
        start = self._clean_start(first_step)
        key = ("grad", loss_fn)
        if start is not None and (kept := start.get(key, rows)) is not None:
            return kept
        clean_pass, self._clean_pass = self._clean_pass, None
        with torch.enable_grad():
            if clean_pass is not None:  # the first gradient, at x: the clean forward's graph
                x, logits, out, pred = clean_pass
            else:
                x = x.detach().requires_grad_(True)
                logits, pred, out = self.view.forward(x)
            (grad,) = torch.autograd.grad(loss_fn(logits, out, t).sum(), x)
        counter.add(rows)
        if start is not None:
            start.keep(key, rows, grad, pred)
        return grad, pred

    def _minimal_eps(
        self,
        batch: Batch,
        counter: CallCounter,
        eps_max: float,
        search_steps: int,
        attack_rows: Callable[
            [Batch, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
        ],
        frozen_at_success: bool,
    ) -> Perturbed:
        """Bisect a per-image eps in ``(0, eps_max]`` (:func:`bisect_eps`).

        ``attack_rows(sub_batch, eps (n,), rows) -> (x_adv, first-success steps)`` runs the
        attack on the caller rows ``rows``. Its success is then judged by one counted forward,
        skipped for images already known successful (``frozen_at_success``: an image seen
        successful was frozen there).
        """

        def run(rows: torch.Tensor, eps: torch.Tensor):
            sub = batch[rows]
            x_adv, seen = attack_rows(sub, eps, rows)
            success = seen >= 0 if frozen_at_success else torch.zeros_like(seen, dtype=torch.bool)
            unknown = (~success).nonzero().squeeze(1)
            if unknown.numel():
                with torch.no_grad():
                    _, pred, _ = self.view.forward(x_adv[unknown])
                counter.add(rows[unknown], forwards=1, backwards=0)
                success[unknown] = sub.success(unknown, pred)
            return x_adv, success, self._first_success(seen, success)

        n = batch.x.shape[0]
        self._run_start = RunStart(n, batch.x.device)
        try:
            x_adv, eps, first = bisect_eps(run, n, eps_max, search_steps, batch.x.device)
        finally:
            self._run_start = None
        return Perturbed(x_adv, eps, first)

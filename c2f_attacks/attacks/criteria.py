"""What "success" (an image is fooled) means: one definition, used by every attack and metric.

A criterion compares the predictions on the adversarial images with those on the clean images,
never with the dataset's label: an image the model already got wrong is not fooled by a zero
perturbation. For one image with clean predictions (coarse c, fine f, attacked stage s) and
adversarial predictions (c', f', s'):

- ``stage_changed`` (:class:`StageChanged`): ``s' != s`` (coarse: ``c' != c``; fine:
  ``f' != f``, a coarse flip included; flat: the argmax changed);
- ``fine_changed_coarse_kept`` (:class:`FineChangedCoarseKept`, fine stage only):
  ``f' != f and c' == c`` (LRPF's rule: the mistake stays inside the superclass);
- ``target_reached`` (:class:`TargetReached`, targeted calls): ``s' == T`` for the requested
  class T of each image, in the stage's label space (coarse indices on the coarse stage, global
  fine indices on the fine stage, class indices on a flat model).

The fine stage has both rules; a run uses one rule per stage for every attack (the strict one on
the fine stage by default) and records its name in the ``success_rule`` column, while the
records keep both fine-stage verdicts for every image. ``get_criterion(name, stage)`` builds one;
``criterion(clean, adv) -> BoolTensor (N,)``.

A targeted rule holds its per-image targets, as Foolbox's ``TargetedMisclassification`` does:
``TargetReached(stage, target=T)`` (or ``get_criterion("target_reached", stage).aimed_at(T)``);
``criterion[rows]`` is the rule for a subset of the images (the untargeted rules have no
per-image state and return themselves). A targeted call of an attack (``atk(x, target=T)``)
judges with ``TargetReached`` whatever its ``criterion=``, and returns that rule as
``res.criterion``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from c2f_attacks.attacks.predictions import Predictions
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import STAGES
from c2f_attacks.registry import Registry


class Criterion:
    """Per-image success of adversarial predictions against the clean ones; ``name`` is what
    the records and the leaderboard call it (``success_rule``)."""

    name: ClassVar[str]
    #: the stages (None: a flat model) the rule is defined for
    stages: ClassVar[tuple[str | None, ...]]
    #: the rule judges against a requested class per image (:class:`TargetReached`)
    targeted: ClassVar[bool] = False
    stage: str | None

    def __call__(self, clean: Predictions, adv: Predictions) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, rows) -> Criterion:
        """The rule for the images ``rows`` (index tensor, mask or slice) of the batch."""
        return self


@dataclass(frozen=True)
class StageChanged(Criterion):
    """Fooled when the prediction of ``stage`` ("coarse", "fine", or None: flat) changed."""

    name: ClassVar[str] = "stage_changed"
    stages: ClassVar[tuple[str | None, ...]] = (*STAGES, None)
    stage: str | None = None

    def __post_init__(self):
        if self.stage not in self.stages:
            raise UserError(f"stage must be None, 'coarse' or 'fine', got {self.stage!r}")

    def __call__(self, clean: Predictions, adv: Predictions) -> torch.Tensor:
        field = "stage" if self.stage is None else self.stage
        return getattr(adv, field) != getattr(clean, field)


@dataclass(frozen=True)
class FineChangedCoarseKept(Criterion):
    """Fooled when the fine prediction changed and the coarse one did not (LRPF's rule)."""

    name: ClassVar[str] = "fine_changed_coarse_kept"
    stages: ClassVar[tuple[str | None, ...]] = ("fine",)
    stage: str | None = "fine"

    def __post_init__(self):
        if self.stage != "fine":
            raise UserError(f"{self.name} applies to the fine stage only, got {self.stage!r}")

    def __call__(self, clean: Predictions, adv: Predictions) -> torch.Tensor:
        return (adv.fine != clean.fine) & (adv.coarse == clean.coarse)


@dataclass(frozen=True, eq=False)
class TargetReached(Criterion):
    """Fooled when the prediction of ``stage`` equals the requested class ``target[i]`` (N,):
    coarse indices (coarse stage), global fine indices (fine stage) or class indices (flat).
    Without ``target`` it names the rule only; calling it then is an error."""

    name: ClassVar[str] = "target_reached"
    stages: ClassVar[tuple[str | None, ...]] = (*STAGES, None)
    targeted: ClassVar[bool] = True
    stage: str | None = None
    target: torch.Tensor | None = None

    def __post_init__(self):
        if self.stage not in self.stages:
            raise UserError(f"stage must be None, 'coarse' or 'fine', got {self.stage!r}")
        if self.target is not None and (
            not isinstance(self.target, torch.Tensor) or self.target.dim() != 1
        ):
            raise UserError("target must be a 1-D tensor of requested classes, one per image")

    def aimed_at(self, target: torch.Tensor) -> TargetReached:
        """The rule with the requested classes ``target`` (N,)."""
        return replace(self, target=target)

    def __getitem__(self, rows) -> TargetReached:
        return self if self.target is None else replace(self, target=self.target[rows])

    def __call__(self, clean: Predictions, adv: Predictions) -> torch.Tensor:
        if self.target is None:
            raise UserError(
                "success rule 'target_reached' needs the requested classes: "
                "TargetReached(stage, target=T), or call the attack as atk(x, target=T)"
            )
        if self.target.shape != adv.stage.shape:
            raise UserError(f"target_reached holds {self.target.shape[0]} targets for "
                            f"{adv.stage.shape[0]} images")  # fmt: skip
        return adv.stage == self.target.to(adv.stage.device)


CRITERIA: Registry[type[Criterion]] = Registry("success rule")
for _rule in (StageChanged, FineChangedCoarseKept, TargetReached):
    CRITERIA.register(_rule.name, _rule)


def get_criterion(
    rule: str | Criterion, stage: str | None, target: torch.Tensor | None = None
) -> Criterion:
    """The criterion ``rule`` (a name of :data:`CRITERIA` or a Criterion) for ``stage``; a rule
    that is not defined at that stage is a ValueError naming both. ``target``: the requested
    classes (N,) a targeted rule judges against (a row's ``target_class`` records), ignored by
    the others."""
    if isinstance(rule, Criterion):
        if rule.stage != stage:
            raise UserError(f"success rule {rule.name!r} is for stage {rule.stage!r}, "
                             f"not {stage!r}")  # fmt: skip
        criterion = rule
    else:
        cls = CRITERIA.get(rule)
        if stage not in cls.stages:
            where = "flat models" if stage is None else f"the {stage} stage"
            raise UserError(f"success rule {rule!r} is not defined for {where} "
                             f"(it applies to: {', '.join(map(str, cls.stages))})")  # fmt: skip
        criterion = cls(stage)
    if target is not None and criterion.targeted:
        copied = target.clone() if isinstance(target, torch.Tensor) else torch.tensor(target)
        criterion = criterion.aimed_at(copied)
    return criterion

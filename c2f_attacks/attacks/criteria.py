"""What "success" (an image is fooled) means: one definition, used by every attack and metric.

A criterion compares the predictions on the adversarial images with those on the clean images,
never with the dataset's label: an image the model already got wrong is not fooled by a zero
perturbation. For one image with clean predictions (coarse c, fine f, attacked stage s) and
adversarial predictions (c', f', s'):

- ``stage_changed`` (:class:`StageChanged`): ``s' != s`` (coarse: ``c' != c``; fine:
  ``f' != f``, a coarse flip included; flat: the argmax changed);
- ``fine_changed_coarse_kept`` (:class:`FineChangedCoarseKept`, fine stage only):
  ``f' != f and c' == c`` (LRPF's rule: the mistake stays inside the superclass).

The fine stage has both rules; a run uses one rule per stage for every attack (the strict one on
the fine stage by default) and records its name in the ``success_rule`` column, while the
records keep both fine-stage verdicts for every image. ``get_criterion(name, stage)`` builds one;
``criterion(clean, adv) -> BoolTensor (N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    stage: str | None

    def __call__(self, clean: Predictions, adv: Predictions) -> torch.Tensor:
        raise NotImplementedError


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


CRITERIA: Registry[type[Criterion]] = Registry("success rule")
for _rule in (StageChanged, FineChangedCoarseKept):
    CRITERIA.register(_rule.name, _rule)


def get_criterion(rule: str | Criterion, stage: str | None) -> Criterion:
    """The criterion ``rule`` (a name of :data:`CRITERIA` or a Criterion) for ``stage``; a rule
    that is not defined at that stage is a ValueError naming both."""
    if isinstance(rule, Criterion):
        if rule.stage != stage:
            raise UserError(f"success rule {rule.name!r} is for stage {rule.stage!r}, "
                             f"not {stage!r}")  # fmt: skip
        return rule
    cls = CRITERIA.get(rule)
    if stage not in cls.stages:
        where = "flat models" if stage is None else f"the {stage} stage"
        raise UserError(f"success rule {rule!r} is not defined for {where} "
                         f"(it applies to: {', '.join(map(str, cls.stages))})")  # fmt: skip
    return cls(stage)

"""What "success" (an image is fooled) means: one definition, used by every attack and metric.

A criterion compares the predictions on the adversarial images with those on the clean images,
never with the dataset's label: an image the model already got wrong is not fooled by a zero
perturbation. For one image with clean predictions (coarse c, fine f, attacked stage s) and
adversarial predictions (c', f', s'):

- :class:`StageChanged` ``(stage)``: ``s' != s`` (coarse: ``c' != c``; fine: ``f' != f``, a
  coarse flip included; flat: the argmax changed);
- :class:`FineChangedCoarseKept`: ``f' != f and c' == c`` (LRPF's rule).

``criterion_for(stage, keep_coarse)`` picks one; ``criterion(clean, adv) -> BoolTensor (N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from c2f_attacks.attacks.stage import STAGES, Predictions


class Criterion:
    """Per-image success of adversarial predictions against the clean ones."""

    def __call__(self, clean: Predictions, adv: Predictions) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class StageChanged(Criterion):
    """Fooled when the prediction of ``stage`` ("coarse", "fine", or None: flat) changed."""

    stage: str | None = None

    def __post_init__(self):
        if self.stage is not None and self.stage not in STAGES:
            raise ValueError(f"stage must be None, 'coarse' or 'fine', got {self.stage!r}")

    def __call__(self, clean: Predictions, adv: Predictions) -> torch.Tensor:
        field = "stage" if self.stage is None else self.stage
        return getattr(adv, field) != getattr(clean, field)


@dataclass(frozen=True)
class FineChangedCoarseKept(Criterion):
    """Fooled when the fine prediction changed and the coarse one did not (LRPF's rule)."""

    def __call__(self, clean: Predictions, adv: Predictions) -> torch.Tensor:
        return (adv.fine != clean.fine) & (adv.coarse == clean.coarse)


def criterion_for(stage: str | None, keep_coarse: bool = False) -> Criterion:
    """The criterion of an attack on ``stage``; ``keep_coarse=True`` (fine stage only) is
    LRPF's rule."""
    if keep_coarse:
        if stage != "fine":
            raise ValueError(f"keep_coarse applies to the fine stage only, got stage={stage!r}")
        return FineChangedCoarseKept()
    return StageChanged(stage)

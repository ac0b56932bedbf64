"""What one attacked stage means: its logits, its prediction, its margin and its success test.

A *stage* is ``None`` for a flat classifier (any ``nn.Module`` returning logits ``(N, K)``),
``"coarse"`` (the coarse classifier C of a C2F model) or ``"fine"`` (the fine classifier F_c of
the coarse class c that the label belongs to). Labels ``y`` are always in the stage's own index
space: class index (flat), coarse index (coarse), global fine index (fine).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from c2f_attacks.models.base import C2FClassifier, C2FOutput
from c2f_attacks.validation import check_labels

STAGES = (None, "coarse", "fine")


def check_stage(model: nn.Module, stage: str | None) -> None:
    """Raise unless ``stage`` fits the model: a stage on C2F models, ``None`` on flat ones."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if stage not in STAGES:
        raise ValueError(f"stage must be None, 'coarse' or 'fine', got {stage!r}")
    is_c2f = isinstance(model, C2FClassifier)
    if is_c2f and stage is None:
        raise ValueError(
            "this is a coarse-to-fine model: pass stage='coarse' or stage='fine' to say which "
            "decision to attack"
        )
    if not is_c2f and stage is not None:
        raise ValueError(
            f"stage={stage!r} needs a C2FClassifier; {type(model).__name__} is a flat classifier "
            "(use stage=None)"
        )


@dataclass
class Predictions:
    """Predictions of one batch: ``stage`` always; ``coarse``/``fine`` on C2F models, else None."""

    stage: torch.Tensor
    coarse: torch.Tensor | None = None
    fine: torch.Tensor | None = None


class StageView:
    """Stage logits, predictions, margins and success for ``model`` at ``stage``.

    ``margin(x, y) = z_y - max_{j != y, j allowed} z_j`` where the allowed classes are all classes
    (flat, coarse) or the members of ``y``'s coarse group (fine: the margin inside F_c). A
    negative margin means the stage no longer predicts ``y``.
    """

    def __init__(self, model: nn.Module, stage: str | None):
        check_stage(model, stage)
        self.model, self.stage = model, stage
        self.is_c2f = stage is not None

    @property
    def num_classes(self) -> int:
        if self.stage == "coarse":
            return self.model.hierarchy.num_coarse
        if self.stage == "fine":
            return self.model.hierarchy.num_fine
        return -1  # flat: known after the first forward

    def check_labels(self, y: torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
        return check_labels(y, n, num_classes, name=f"labels for stage {self.stage!r}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Predictions, C2FOutput | None]:
        """``(stage logits (N, K_stage), predictions, full C2F output or None)``."""
        out = self.model(x)
        if not self.is_c2f:
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise TypeError(
                    "a flat model must return logits (N, classes); "
                    f"{type(self.model).__name__} returned {type(out).__name__}"
                )
            return out, Predictions(out.argmax(dim=1)), None
        logits = out.coarse_logits if self.stage == "coarse" else out.fine_logits
        pred = out.coarse_pred if self.stage == "coarse" else out.fine_pred
        return logits, Predictions(pred, out.coarse_pred, out.fine_pred), out

    def allowed(self, y: torch.Tensor) -> torch.Tensor | None:
        """BoolTensor (N, K) of the classes the stage chooses among for label y (fine only)."""
        if self.stage != "fine":
            return None
        return self.model.group_mask[self.model.fine_to_coarse[y]]

    def restrict(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logits with the classes outside y's group set to -inf (fine), unchanged otherwise."""
        allowed = self.allowed(y)
        return logits if allowed is None else logits.masked_fill(~allowed, float("-inf"))

    def margin(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image ``z_y - max_{j != y} z_j`` over the allowed classes, shape (N,)."""
        logits = self.restrict(logits, y)
        true = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.scatter(1, y[:, None], float("-inf"))
        return true - others.max(dim=1).values

    def cross_entropy(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image cross-entropy over the allowed classes, shape (N,)."""
        return nn.functional.cross_entropy(self.restrict(logits, y), y, reduction="none")

    def coarse_label(self, y: torch.Tensor) -> torch.Tensor | None:
        """The coarse class to keep for label y (fine stage), else None."""
        return self.model.fine_to_coarse[y] if self.stage == "fine" else None

    def success(self, pred: Predictions, y: torch.Tensor, keep_coarse: bool = False):
        """Per-image success: the stage no longer predicts y (and, with ``keep_coarse``, the
        coarse prediction is still y's coarse class: LRPF's criterion)."""
        changed = pred.stage != y
        if keep_coarse:
            changed &= pred.coarse == self.coarse_label(y)
        return changed

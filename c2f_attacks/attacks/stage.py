"""What one attacked stage means: its logits, its predictions, its labels and its margin.

A *stage* is ``"coarse"`` (the coarse classifier C of a C2F model), ``"fine"`` (the fine
classifier F_c of the coarse class c) or ``None`` for a flat classifier (any ``nn.Module``
returning logits ``(N, K)``).

Labels: on a C2F model ``y`` is always the global fine label (what a dataset yields); the stage
label is derived from it (coarse: ``fine_to_coarse[y]``; fine: ``y``). On a flat model ``y`` is
the class index, as in torchattacks.
"""

from __future__ import annotations

import torch
from torch import nn

from c2f_attacks.attacks.predictions import Predictions, predictions_of
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import STAGES
from c2f_attacks.models.base import C2FClassifier, C2FOutput
from c2f_attacks.validation import check_labels


def check_stage(model: nn.Module, stage: str | None) -> None:
    """Raise unless ``stage`` fits the model: a stage on C2F models, ``None`` on flat ones."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if stage is not None and stage not in STAGES:
        raise UserError(f"stage must be None, 'coarse' or 'fine', got {stage!r}")
    is_c2f = isinstance(model, C2FClassifier)
    if is_c2f and stage is None:
        raise UserError(
            "this is a coarse-to-fine model: pass stage='coarse' or stage='fine' to say which "
            "decision to attack"
        )
    if not is_c2f and stage is not None:
        raise UserError(
            f"stage={stage!r} needs a C2FClassifier; {type(model).__name__} is a flat classifier "
            "(use stage=None)"
        )


class StageView:
    """Stage logits, predictions, labels and margins for ``model`` at ``stage``.

    ``margin(logits, t) = z_t - max_{j != t, j allowed} z_j`` where the allowed classes are all
    classes (flat, coarse) or the members of t's coarse group (fine: the margin inside F_c). A
    negative margin means the stage no longer predicts t.
    """

    def __init__(self, model: nn.Module, stage: str | None):
        check_stage(model, stage)
        self.model, self.stage = model, stage
        self.is_c2f = stage is not None

    def check_labels(self, y: object, n: int, num_flat_classes: int) -> torch.Tensor:
        """Validate the caller's labels: global fine labels (C2F) or class indices in
        ``0..num_flat_classes-1`` (flat)."""
        if self.is_c2f:
            num_fine = self.model.hierarchy.num_fine
            return check_labels(y, n, num_fine, name="labels y (global fine labels)")
        return check_labels(y, n, num_flat_classes, name="labels y")

    def stage_labels(self, y: torch.Tensor) -> torch.Tensor:
        """The stage's label for the caller's label y: the coarse class of a fine label for the
        coarse stage, y itself otherwise."""
        return self.model.fine_to_coarse[y] if self.stage == "coarse" else y

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Predictions, C2FOutput | None]:
        """``(stage logits (N, K_stage), predictions, full C2F output or None)``."""
        out = self.model(x)
        pred = predictions_of(out, self.stage)
        if not self.is_c2f:
            return out, pred, None
        logits = out.coarse_logits if self.stage == "coarse" else out.fine_logits
        return logits, pred, out

    def allowed(self, t: torch.Tensor) -> torch.Tensor | None:
        """BoolTensor (N, K) of the classes the stage chooses among for class t (fine only)."""
        if self.stage != "fine":
            return None
        return self.model.group_mask[self.model.fine_to_coarse[t]]

    def restrict(self, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits with the classes outside t's group set to -inf (fine), unchanged otherwise."""
        allowed = self.allowed(t)
        return logits if allowed is None else logits.masked_fill(~allowed, float("-inf"))

    def margin(self, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-image ``z_t - max_{j != t} z_j`` over the allowed classes, shape (N,)."""
        logits = self.restrict(logits, t)
        true = logits.gather(1, t[:, None]).squeeze(1)
        others = logits.scatter(1, t[:, None], float("-inf"))
        return true - others.max(dim=1).values

    def cross_entropy(self, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-image cross-entropy of class t over the allowed classes, shape (N,)."""
        return nn.functional.cross_entropy(self.restrict(logits, t), t, reduction="none")

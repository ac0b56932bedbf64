"""What one attacked stage means: its logits, its predictions, its labels and its margin.

A *stage* is ``"coarse"`` (the coarse classifier C of a C2F model), ``"fine"`` (the fine
classifier F_c of the coarse class c) or ``None`` for a flat classifier (any ``nn.Module``
returning logits ``(N, K)``).

Labels: on a C2F model ``y`` is always the global fine label (what a dataset yields); the stage
label is derived from it (coarse: ``fine_to_coarse[y]``; fine: ``y``). On a flat model ``y`` is
the class index, as in torchattacks.

Decision logits. The fine logits of a C2F model do not say what it decides: their argmax may lie
outside the predicted coarse class. :func:`consistent_fine_logits` turns coarse and fine logits
into one score per fine class whose argmax *is* the C2F fine decision, exactly; the fine
stage's :meth:`StageView.decision_logits` are these (the coarse stage's and a flat model's are
their logits). Targeted losses and external attacks read the fine stage through them.
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


def consistent_fine_logits(
    coarse_logits: torch.Tensor,
    fine_logits: torch.Tensor,
    fine_to_coarse: torch.Tensor,
    fine_pred: torch.Tensor,
) -> torch.Tensor:
    """(N, K) scores whose argmax is the C2F fine decision ``fine_pred``, exactly.

    For fine class j of coarse class g = g(j), with C the coarse and F the fine logits:

        d_j = (F_j - max_{i in g} F_i) + (C_g - max_h C_h)

    Both terms are <= 0 and both are 0 only for the winner of the winning group, so
    ``d_f = 0`` at the decision f and ``d_j < 0`` elsewhere: the first term is 0 for j only if
    F_j ties its group's maximum, the second only if C_g ties the coarse maximum (in IEEE
    arithmetic ``a - b == 0`` only when ``a == b``, and ``round(a + b) <= b < 0`` for
    ``a <= 0 > b``). Ties, which the C2F argmax breaks by the first index, are broken the same
    way: a tied class other than ``fine_pred`` gets ``-tiny``.

    Differences are C2F margins, which is what a minimum-norm attack linearizes:
    ``d_k - d_f = F_k - F_f`` inside the predicted group, ``C_h - C_c`` to the best class of
    another group h, plus ``F_k - max_{i in h} F_i`` to its other classes. The gradient of d_j
    reaches the coarse logits, so an attack on this view can move a class into another group.
    (The log-probability view ``log p(g) + log p(j | g)`` normalizes by logsumexp instead of
    max, and its argmax can leave the decided group: a group with a peaked fine softmax loses
    less there.)
    """
    n, k = fine_logits.shape
    groups = fine_to_coarse.to(fine_logits.device).expand(n, k)
    group_max = torch.full_like(coarse_logits, float("-inf")).scatter_reduce(
        1, groups, fine_logits, "amax", include_self=False
    )
    within = fine_logits - group_max.gather(1, groups)
    coarse = coarse_logits - coarse_logits.amax(dim=1, keepdim=True)
    scores = within + coarse.gather(1, groups)
    decided = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, fine_pred[:, None], True)
    tied = (scores >= 0) & ~decided
    return scores.masked_fill(tied, -torch.finfo(scores.dtype).tiny)


def class_margin(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-image ``z_t - max_{j != t} z_j`` over every column of ``logits``, shape (N,):
    positive exactly when class t is the argmax."""
    true = logits.gather(1, t[:, None]).squeeze(1)
    others = logits.scatter(1, t[:, None], float("-inf"))
    return true - others.max(dim=1).values


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
        return class_margin(self.restrict(logits, t), t)

    def cross_entropy(self, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-image cross-entropy of class t over the allowed classes, shape (N,)."""
        return nn.functional.cross_entropy(self.restrict(logits, t), t, reduction="none")

    def decision_logits(self, logits: torch.Tensor, out: C2FOutput | None) -> torch.Tensor:
        """Stage scores whose argmax is the stage's decision: the fine stage's
        :func:`consistent_fine_logits`, the logits themselves otherwise."""
        if self.stage != "fine":
            return logits
        return consistent_fine_logits(
            out.coarse_logits, logits, self.model.fine_to_coarse, out.fine_pred
        )

"""Induced C2F: turn any flat classifier into a coarse-to-fine one through a hierarchy.

F_i = the flat logits of coarse i's members; C_i = logsumexp of those logits. The fine ranking
inside every group is exactly the flat model's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.models.base import C2FClassifier, Normalize


class InducedC2F(C2FClassifier):
    """C2F view of a flat classifier.

    Args:
        flat: any module mapping (normalized) images to (N, num_flat_classes) logits.
        hierarchy: the grouping; its fine classes must be a subset of the flat classes.
        class_index: for each global fine index, the flat model's output index (default: the
            identity, when the hierarchy lists the flat classes in the flat model's order).
        mean, std: normalization applied before ``flat`` (None: the flat model takes [0, 1]).
        input_size: the side length the flat model expects, if fixed.
    """

    def __init__(
        self,
        flat: nn.Module,
        hierarchy: Hierarchy,
        class_index: Sequence[int] | torch.Tensor | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_size: int | None = None,
    ):
        super().__init__(hierarchy)
        if class_index is None:
            class_index = torch.arange(hierarchy.num_fine)
        class_index = torch.as_tensor(class_index, dtype=torch.long)
        if class_index.shape != (hierarchy.num_fine,):
            raise ValueError(
                f"class_index must give one flat index per fine class ({hierarchy.num_fine}), "
                f"got shape {tuple(class_index.shape)}"
            )
        if len(set(class_index.tolist())) != hierarchy.num_fine:
            raise ValueError("class_index maps two fine classes to the same flat output")
        self.flat = flat
        self.normalize = Normalize(tuple(mean), tuple(std)) if mean is not None else nn.Identity()
        self.input_size = input_size
        self.register_buffer("class_index", class_index, persistent=False)

    def flat_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.flat(self.normalize(x))
        if logits.dim() != 2 or logits.shape[1] <= int(self.class_index.max()):
            raise ValueError(
                f"flat model returned logits of shape {tuple(logits.shape)}, but the hierarchy "
                f"needs output index {int(self.class_index.max())}"
            )
        return logits

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine = self.flat_logits(x)[:, self.class_index]
        grouped = fine.unsqueeze(1).masked_fill(~self.group_mask, float("-inf"))  # (N, M, K)
        return grouped.logsumexp(dim=2), fine

    def relevance_seed(self, x, stage, target):
        """Fine: one-hot on f. Coarse: C_c = logsumexp of c's member logits is not a linear layer,
        so its unit relevance is split over the members by their softmax share (the soft analogue
        of max-pooling's winner-takes-all) and explained from the fine logits."""
        if stage != "coarse":
            return super().relevance_seed(x, stage, target)
        fine = self.logits(x)[1]
        members = self.group_mask[target]  # (N, K)
        share = fine.detach().masked_fill(~members, float("-inf")).softmax(dim=1)
        return fine, share

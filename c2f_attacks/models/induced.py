"""Induced C2F: turn any flat classifier into a coarse-to-fine one through a hierarchy.

F_i = the flat logits of coarse i's members; C_i = logsumexp of those logits. The fine ranking
inside every group is exactly the flat model's. The hierarchy may cover a subset of the flat
model's classes (e.g. a BREEDS hierarchy over ImageNet-1k): the other outputs are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.models.base import C2FClassifier, Normalize


def _channels_of(flat: nn.Module, mean: Sequence[float] | None) -> int | None:
    if mean is not None:
        return len(mean)
    first_conv = next((m for m in flat.modules() if isinstance(m, nn.Conv2d)), None)
    return first_conv.in_channels if first_conv is not None else None


class InducedC2F(C2FClassifier):
    """C2F view of a flat classifier.

    Args:
        flat: any module mapping (normalized) images to (N, num_flat_classes) logits.
        hierarchy: the grouping; its fine classes must be a subset of the flat classes.
        class_index: for each global fine index, the flat model's output index.
        class_names: the name of each flat output (default: ``flat.class_names`` when the module
            has one); fine classes are then matched by name, the hierarchy may name any subset
            of them and the flat model must return exactly ``len(class_names)`` logits.
            Without ``class_index`` or names, the mapping is the identity: the hierarchy lists
            the flat classes in the flat model's order and the flat model has exactly K outputs.
        mean, std: normalization applied before ``flat`` (None: the flat model takes [0, 1]).
        input_size: the side length the flat model expects, if fixed.
        in_channels: image channels (1 for grayscale); default: the length of ``mean`` if given,
            else the first convolution's input channels, else unchecked.
    """

    def __init__(
        self,
        flat: nn.Module,
        hierarchy: Hierarchy,
        class_index: Sequence[int] | torch.Tensor | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_size: int | None = None,
        in_channels: int | None = None,
        class_names: Sequence[str] | None = None,
    ):
        super().__init__(hierarchy)
        if class_index is not None and class_names is not None:
            raise UserError("give class_index or class_names, not both")
        if class_index is None and class_names is None:
            class_names = getattr(flat, "class_names", None)
        # With names or the identity mapping the number of outputs is known: another width
        # means the names or the hierarchy do not describe this model (checked on each forward).
        self._outputs: tuple[int, str] | None = None  # (width, what says so)
        if class_names is not None:
            class_index = hierarchy.output_index(class_names, "the model's class_names")
            self._outputs = (len(class_names), f"its class_names name {len(class_names)} outputs")
        elif class_index is None:
            class_index = torch.arange(hierarchy.num_fine)
            self._outputs = (
                hierarchy.num_fine,
                f"the hierarchy has {hierarchy.num_fine} fine classes (give class_index, or "
                "class_names on the model, to pick its outputs)",
            )
        class_index = torch.as_tensor(class_index, dtype=torch.long)
        if class_index.shape != (hierarchy.num_fine,):
            raise UserError(
                f"class_index must give one flat index per fine class ({hierarchy.num_fine}), "
                f"got shape {tuple(class_index.shape)}"
            )
        if len(set(class_index.tolist())) != hierarchy.num_fine:
            raise UserError("class_index maps two fine classes to the same flat output")
        self.flat = flat
        self.normalize = Normalize(tuple(mean), tuple(std)) if mean is not None else nn.Identity()
        self.input_size = input_size
        self.in_channels = in_channels if in_channels is not None else _channels_of(flat, mean)
        self.register_buffer("class_index", class_index, persistent=False)
        # the least number of flat outputs, kept as a number: reading it from the buffer on each
        # forward would wait for the GPU and stop torch.export (a value read from data)
        self._least_outputs = int(class_index.max()) + 1

    def flat_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.flat(self.normalize(x))
        if logits.dim() != 2 or logits.shape[1] < self._least_outputs:
            raise UserError(
                f"flat model returned logits of shape {tuple(logits.shape)}, but the hierarchy "
                f"needs output index {self._least_outputs - 1}"
            )
        if self._outputs is not None and logits.shape[1] != self._outputs[0]:
            raise UserError(
                f"flat model returned {logits.shape[1]} logits per image, but {self._outputs[1]}"
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

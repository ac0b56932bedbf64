"""Wrap a flat-labelled torchvision dataset so that it yields global fine indices of a hierarchy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import Hierarchy


class HierarchicalDataset(Dataset):
    """``(image, fine_label)`` where ``fine_label`` indexes ``hierarchy.fine_names``.

    ``class_names[t]`` names the base dataset's target ``t``; every name must be a fine class of
    the hierarchy (names outside it would have no coarse class).
    """

    def __init__(self, base: Dataset, hierarchy: Hierarchy, class_names: Sequence[str]):
        fine_index = {name: i for i, name in enumerate(hierarchy.fine_names)}
        missing = [name for name in class_names if name not in fine_index]
        if missing:
            raise UserError(
                f"{len(missing)} classes of the dataset are not in the hierarchy, "
                f"e.g. {missing[0]!r}"
            )
        self.base = base
        self.hierarchy = hierarchy
        self._to_fine = torch.tensor([fine_index[name] for name in class_names])

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, target = self.base[index]
        return image, int(self._to_fine[target])

    @property
    def targets(self) -> torch.Tensor:
        """Fine labels of all images, without decoding any image."""
        return self._to_fine[torch.as_tensor(self.base.targets)]

"""Datasets yielding ``(image, fine_label)`` with a ``.hierarchy``: shapes, CIFAR, ImageNet,
your own image folders, and the offline photos of the demo; :func:`load_batch` stacks items."""

from collections.abc import Iterable

import torch

from c2f_attacks.data.cifar import cifar10, cifar100
from c2f_attacks.data.folder import HierarchyFolder, center_crop_transform, even_subset
from c2f_attacks.data.imagenet import imagenet
from c2f_attacks.data.photos import (
    PHOTO_SYNSETS,
    PHOTOS,
    load_photos,
    photo_array,
    photo_hierarchy,
    write_photo_folder,
)
from c2f_attacks.data.registry import DATASETS, classes_from_hierarchy, get_dataset
from c2f_attacks.data.relabel import HierarchicalDataset
from c2f_attacks.data.shapes import SHAPES_HIERARCHY, SHAPES_MAX_IMAGES, SHAPES_SPLITS, ShapesC2F

__all__ = [
    "DATASETS", "PHOTO_SYNSETS", "PHOTOS", "SHAPES_HIERARCHY", "SHAPES_MAX_IMAGES", "SHAPES_SPLITS",
    "HierarchicalDataset", "HierarchyFolder", "ShapesC2F", "center_crop_transform",
    "cifar10", "cifar100", "classes_from_hierarchy", "even_subset", "get_dataset", "imagenet",
    "load_batch", "load_photos", "photo_array", "photo_hierarchy", "write_photo_folder",
]  # fmt: skip


def load_batch(
    dataset, indices: Iterable[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(images, fine labels, object masks or None) of the dataset's items ``indices``: the
    images stacked (N, C, H, W), the labels a LongTensor, the masks those of a dataset with
    ``object_mask(i)`` (shapes)."""
    indices = [int(i) for i in indices]
    items = [dataset[i] for i in indices]
    x = torch.stack([torch.as_tensor(img) for img, _ in items])
    y = torch.as_tensor([int(label) for _, label in items], dtype=torch.long)
    object_mask = getattr(dataset, "object_mask", None)
    masks = torch.stack([object_mask(i) for i in indices]) if object_mask is not None else None
    return x, y, masks

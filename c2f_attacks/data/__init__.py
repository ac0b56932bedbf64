"""Datasets yielding ``(image, fine_label)`` with a ``.hierarchy``: shapes, CIFAR, ImageNet."""

from c2f_attacks.data.cifar import cifar10, cifar100
from c2f_attacks.data.imagenet import SynsetFolder, imagenet
from c2f_attacks.data.registry import DATASETS, get_dataset
from c2f_attacks.data.relabel import HierarchicalDataset
from c2f_attacks.data.shapes import SHAPES_HIERARCHY, SHAPES_SPLITS, ShapesC2F

__all__ = [
    "DATASETS", "HierarchicalDataset", "SHAPES_HIERARCHY", "SHAPES_SPLITS",
    "ShapesC2F", "SynsetFolder", "cifar10", "cifar100", "get_dataset",
    "imagenet",
]  # fmt: skip

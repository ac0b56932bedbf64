"""Datasets by name: ``get_dataset("shapes" | "cifar10" | "cifar100" | "imagenet", ...)``."""

from __future__ import annotations

import os

from torch.utils.data import Dataset, Subset

from c2f_attacks.data.cifar import cifar10, cifar100
from c2f_attacks.data.imagenet import imagenet
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F

DATASETS = ("shapes", "cifar10", "cifar100", "imagenet")


def get_dataset(
    name: str,
    split: str = "test",
    n: int | None = None,
    root: str | os.PathLike | None = None,
    download: bool = False,
    size: int = 32,
) -> Dataset:
    """The first ``n`` images (all if None) of a dataset's split; ``.hierarchy`` is its grouping.

    ``shapes`` needs no files (``size`` sets its resolution); the others read ``root``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if name == "shapes":
        if split not in SHAPES_SPLITS:
            raise ValueError(
                f"unknown shapes split {split!r}; choose one of {', '.join(SHAPES_SPLITS)}"
            )
        return ShapesC2F(n or 1000, seed=SHAPES_SPLITS[split], size=size)
    if root is None:
        raise ValueError(f"dataset {name!r} needs a root folder (--root)")
    if name == "imagenet":
        if split != "val":
            raise ValueError("the imagenet loader reads the validation set only: use split='val'")
        ds = imagenet(root)
    else:
        if split not in ("train", "test"):
            raise ValueError(f"{name} splits are 'train' and 'test', got {split!r}")
        ds = (cifar10 if name == "cifar10" else cifar100)(
            root, train=split == "train", download=download
        )
    if n is None or n >= len(ds):
        return ds
    subset = Subset(ds, range(n))
    subset.hierarchy = ds.hierarchy
    return subset

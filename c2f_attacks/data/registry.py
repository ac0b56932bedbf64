"""Datasets by name: ``get_dataset("shapes" | "cifar10" | "cifar100" | "imagenet" |
"imagefolder:PATH", ...)``."""

from __future__ import annotations

import os

from torch.utils.data import Dataset, Subset

from c2f_attacks.data.cifar import cifar10, cifar100
from c2f_attacks.data.folder import HierarchyFolder, even_subset
from c2f_attacks.data.imagenet import imagenet
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.hierarchies import resolve_hierarchy
from c2f_attacks.hierarchy import Hierarchy, check_same_hierarchy

DATASETS = ("shapes", "cifar10", "cifar100", "imagenet", "imagefolder:PATH")


def classes_from_hierarchy(name: str) -> bool:
    """Whether dataset ``name`` takes its classes from the hierarchy it is given (image
    folders, ImageNet) rather than having a grouping of its own (shapes, CIFAR)."""
    return name == "imagenet" or name.startswith("imagefolder:")


def get_dataset(
    name: str,
    split: str = "test",
    n: int | None = None,
    root: str | os.PathLike | None = None,
    download: bool = False,
    size: int | None = None,
    hierarchy: Hierarchy | str | os.PathLike | None = None,
    seed: int = 0,
) -> Dataset:
    """``n`` images (all if None) of a dataset's split; ``.hierarchy`` is its grouping.

    - ``shapes`` needs no files; images ``0..n-1`` of the split.
    - ``cifar10``, ``cifar100``, ``imagenet`` read ``root``; ``imagefolder:PATH`` reads PATH, one
      sub-folder per fine class of ``hierarchy`` (required). ``imagenet`` takes ``hierarchy`` to
      regroup or restrict its classes (synset ids), e.g. ``"breeds-living17"``.
    - ``hierarchy``: a Hierarchy, a shipped name or a JSON path
      (:func:`c2f_attacks.hierarchies.resolve_hierarchy`).
    - File datasets give ``n`` images spread evenly over the classes, chosen with ``seed``
      (:func:`even_subset`), never the first ``n`` files; ``n`` beyond the split's size is
      refused. ``size``: the image side (shapes: 32 by default; image folders: the centre crop,
      224 by default; CIFAR: ignored).
    - For shapes and CIFAR a given ``hierarchy`` must equal the dataset's (differences named).
    """
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if hierarchy is not None:
        hierarchy = resolve_hierarchy(hierarchy)
    ds = _full_split(name, split, n, root, download, size, hierarchy)
    if hierarchy is not None:
        check_same_hierarchy(ds.hierarchy, hierarchy, (f"dataset {name!r}", "the given hierarchy"))
    if isinstance(ds, ShapesC2F) or n is None or n == len(ds):
        return ds
    if n > len(ds):
        raise ValueError(f"n={n} is more than the {len(ds):,} images of {name}/{split}")
    subset = Subset(ds, even_subset(ds.targets, n, seed))
    subset.hierarchy = ds.hierarchy
    return subset


def _full_split(name, split, n, root, download, size, hierarchy) -> Dataset:
    if name == "shapes":
        if split not in SHAPES_SPLITS:
            raise ValueError(
                f"unknown shapes split {split!r}; choose one of {', '.join(SHAPES_SPLITS)}"
            )
        return ShapesC2F(n or 1000, seed=SHAPES_SPLITS[split], size=size or 32)
    if name.startswith("imagefolder:"):
        path = name.split(":", 1)[1]
        if hierarchy is None:
            raise ValueError(
                f"dataset {name!r} needs a hierarchy whose fine classes are its folder names "
                "(hierarchy= / --hierarchy FILE.json)"
            )
        return HierarchyFolder(path, hierarchy, size=size or 224)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs a root folder (--root)")
    if name == "imagenet":
        if split != "val":
            raise ValueError("the imagenet loader reads the validation set only: use split='val'")
        return imagenet(root, hierarchy, size=size or 224)
    if split not in ("train", "test"):
        raise ValueError(f"{name} splits are 'train' and 'test', got {split!r}")
    return (cifar10 if name == "cifar10" else cifar100)(
        root, train=split == "train", download=download
    )

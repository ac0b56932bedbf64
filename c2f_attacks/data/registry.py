"""Datasets by name: ``get_dataset("shapes" | "cifar10" | "cifar100" | "imagenet" | "photos" |
"imagefolder:PATH", ...)``.

:data:`DATASETS` (a :class:`~c2f_attacks.registry.Registry`) maps each name to a
:class:`DatasetEntry`; ``imagefolder:PATH`` resolves to the image folder at PATH.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset, Subset

from c2f_attacks.data.cifar import cifar10, cifar100
from c2f_attacks.data.folder import HierarchyFolder, even_subset
from c2f_attacks.data.imagenet import imagenet
from c2f_attacks.data.photos import LabelledPhotos
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchies import resolve_hierarchy
from c2f_attacks.hierarchy import Hierarchy, check_same_hierarchy
from c2f_attacks.registry import Registry

#: ``load(split, n, root, download, size, hierarchy) -> Dataset``: a whole split (shapes: its
#: first ``n`` images), arguments already checked by :func:`get_dataset`
Loader = Callable[[str, "int | None", "str | None", bool, "int | None", "Hierarchy | None"],
                  Dataset]  # fmt: skip


@dataclass(frozen=True)
class DatasetEntry:
    """How a dataset name loads a split. ``classes_from_hierarchy``: its classes are those of
    the hierarchy it is given (image folders, ImageNet), not a grouping of its own (shapes,
    CIFAR)."""

    load: Loader
    classes_from_hierarchy: bool = False


def _shapes(split, n, root, download, size, hierarchy) -> Dataset:
    if split not in SHAPES_SPLITS:
        raise UserError(f"unknown shapes split {split!r}; choose one of {', '.join(SHAPES_SPLITS)}")
    return ShapesC2F(n or 1000, seed=SHAPES_SPLITS[split], size=size or 32)


def _cifar(name: str, build: Callable) -> Loader:
    def load(split, n, root, download, size, hierarchy) -> Dataset:
        if split not in ("train", "test"):
            raise UserError(f"{name} splits are 'train' and 'test', got {split!r}")
        return build(_root(name, root), train=split == "train", download=download)

    return load


def _imagenet(split, n, root, download, size, hierarchy) -> Dataset:
    if split != "val":
        raise UserError("the imagenet loader reads the validation set only: use split='val'")
    return imagenet(_root("imagenet", root), hierarchy, size=size or 224)


def _image_folder(path: str) -> DatasetEntry:
    def load(split, n, root, download, size, hierarchy) -> Dataset:
        if hierarchy is None:
            raise UserError(
                f"dataset 'imagefolder:{path}' needs a hierarchy whose fine classes are its "
                "folder names (hierarchy= / --hierarchy FILE.json)"
            )
        return HierarchyFolder(path, hierarchy, size=size or 224)

    return DatasetEntry(load, classes_from_hierarchy=True)


def _photos(split, n, root, download, size, hierarchy) -> Dataset:
    if split != "test":
        raise UserError(f"the photos are one test split: use split='test', got {split!r}")
    if hierarchy is None:
        raise UserError("dataset 'photos' takes its labels from an ImageNet model's hierarchy")
    return LabelledPhotos(hierarchy, size=size or 224)


def _root(name: str, root: str | os.PathLike | None) -> str | os.PathLike:
    if root is None:
        raise UserError(f"dataset {name!r} needs a root folder (--root)")
    return root


DATASETS: Registry[DatasetEntry] = Registry("dataset")
DATASETS.register("shapes", DatasetEntry(_shapes))
DATASETS.register("cifar10", DatasetEntry(_cifar("cifar10", cifar10)))
DATASETS.register("cifar100", DatasetEntry(_cifar("cifar100", cifar100)))
DATASETS.register("imagenet", DatasetEntry(_imagenet, classes_from_hierarchy=True))
DATASETS.register("photos", DatasetEntry(_photos, classes_from_hierarchy=True))
DATASETS.add_resolver("imagefolder", _image_folder, names=list)


def classes_from_hierarchy(name: str) -> bool:
    """Whether dataset ``name`` takes its classes from the hierarchy it is given (image
    folders, ImageNet) rather than having a grouping of its own (shapes, CIFAR)."""
    return DATASETS.get(name).classes_from_hierarchy


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
    - ``photos``: the offline photos with an ImageNet class (scikit-image, matplotlib), labelled
      by ``hierarchy`` (an ImageNet model's, given by the run).
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
        raise UserError(f"n must be a positive integer, got {n!r}")
    entry = DATASETS.get(name)
    if hierarchy is not None:
        hierarchy = resolve_hierarchy(hierarchy)
    ds = entry.load(split, n, root, download, size, hierarchy)
    if hierarchy is not None:
        check_same_hierarchy(ds.hierarchy, hierarchy, (f"dataset {name!r}", "the given hierarchy"))
    if isinstance(ds, ShapesC2F) or n is None or n == len(ds):
        return ds
    if n > len(ds):
        raise UserError(f"n={n} is more than the {len(ds):,} images of {name}/{split}")
    subset = Subset(ds, even_subset(ds.targets, n, seed))
    subset.hierarchy = ds.hierarchy
    return subset

"""CIFAR-10 (vehicles / animals) and CIFAR-100 (the 20 official superclasses) through torchvision.

The files are torchvision's python pickles under ``root`` (``cifar-10-batches-py`` /
``cifar-100-python``). ``download=True`` fetches them with torchvision, which checks their MD5.
Files already present in ``root`` are read as they are (no MD5): a local copy may be a subset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import torchvision
from torchvision.transforms import ToTensor

from c2f_attacks.data.relabel import HierarchicalDataset
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchies import CIFAR10_HIERARCHY, cifar100_hierarchy


def _local_files_present(cls, root: str, train: bool) -> bool:
    folder = Path(root) / cls.base_folder
    files = [f for f, _ in (cls.train_list if train else cls.test_list)] + [cls.meta["filename"]]
    return all((folder / f).is_file() for f in files)


def _load(cls, root: str | os.PathLike, train: bool, download: bool):
    root = str(root)

    class Local(cls):
        # torchvision verifies every split's and the meta file's MD5 before reading; a local copy
        # is trusted instead (md5 None: present is enough), and only the requested split's files
        # must be there.
        meta: ClassVar[dict] = {**cls.meta, "md5": None}

        def _check_integrity(self) -> bool:
            return _local_files_present(cls, self.root, train)

    if not download and not _local_files_present(cls, root, train):
        raise FileNotFoundError(
            f"{cls.__name__} files not found under {Path(root) / cls.base_folder} "
            f"(need {', '.join(f for f, _ in (cls.train_list if train else cls.test_list))} and "
            f"{cls.meta['filename']}); pass download=True to fetch them"
        )
    try:
        return Local(root, train=train, transform=ToTensor(), download=download)
    except Exception as err:  # unpickling errors, wrong layout: name the folder
        raise UserError(f"cannot read {cls.__name__} from {root}: {err}") from None


def cifar10(root: str | os.PathLike, train: bool = False, download: bool = False):
    """CIFAR-10 as a C2F dataset: coarse vehicle / animal."""
    base = _load(torchvision.datasets.CIFAR10, root, train, download)
    return HierarchicalDataset(base, CIFAR10_HIERARCHY, base.classes)


def cifar100(root: str | os.PathLike, train: bool = False, download: bool = False):
    """CIFAR-100 as a C2F dataset: the 20 official superclasses x 5 classes."""
    base = _load(torchvision.datasets.CIFAR100, root, train, download)
    return HierarchicalDataset(base, cifar100_hierarchy(), base.classes)

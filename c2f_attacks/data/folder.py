"""Image folders (one sub-folder per fine class) labelled through a hierarchy, and even subsets.

The preprocessing is the usual ImageNet evaluation crop: resize the shorter side to
``size * 8 / 7`` (256 for 224) with bicubic interpolation, then centre-crop ``size``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torchvision
from torchvision import transforms

from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import Hierarchy


def center_crop_transform(size: int = 224) -> transforms.Compose:
    """PIL image -> float tensor (C, size, size) in [0, 1]: bicubic resize to size*8/7, crop."""
    return transforms.Compose(
        [
            transforms.Resize(size * 8 // 7, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
        ]
    )


class HierarchyFolder(torchvision.datasets.ImageFolder):
    """``ImageFolder`` whose sub-folder names are fine classes of ``hierarchy``.

    Targets are the hierarchy's global fine indices. A sub-folder that is not a fine class is an
    error naming it, unless ``skip_unknown`` (then it is left out; ``skipped`` lists it). Fine
    classes without a folder are allowed (a subset of the classes). ``mode="L"`` reads grayscale.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        hierarchy: Hierarchy,
        size: int = 224,
        skip_unknown: bool = False,
        mode: str = "RGB",
    ):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root} does not exist")
        self.hierarchy = hierarchy
        self.skip_unknown = skip_unknown
        self.skipped: list[str] = []
        super().__init__(
            str(root),
            transform=center_crop_transform(size),
            loader=lambda path: torchvision.datasets.folder.default_loader(path).convert(mode),
        )

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        fine_index = {name: i for i, name in enumerate(self.hierarchy.fine_names)}
        folders = sorted(
            e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")
        )
        present = [name for name in folders if name in fine_index]
        unknown = [name for name in folders if name not in fine_index]
        if unknown and not self.skip_unknown:
            raise UserError(
                f"{len(unknown)} folders under {directory} are not fine classes of the "
                f"hierarchy: {', '.join(repr(u) for u in unknown[:3])}"
                f"{' ...' if len(unknown) > 3 else ''} (folder names must be fine class names)"
            )
        self.skipped = unknown
        if not present:
            raise FileNotFoundError(
                f"no folder of a fine class of the hierarchy under {directory} "
                f"(expected folders such as {self.hierarchy.fine_names[0]}/)"
            )
        return present, {name: fine_index[name] for name in present}


def even_subset(targets: Sequence[int], n: int, seed: int = 0) -> list[int]:
    """``n`` indices spread evenly over the classes of ``targets``, chosen with ``seed``.

    Each class's indices are shuffled (seeded); then rounds take one image from every class that
    still has one, classes in a seeded order, until ``n`` are taken. Class counts differ by at
    most one unless a class runs out. Returned sorted (file order). ``n`` must be at most
    ``len(targets)``.
    """
    targets = np.asarray(targets)
    if not 1 <= n <= len(targets):
        raise UserError(f"n must be in 1..{len(targets)} (the images available), got {n}")
    rng = np.random.default_rng(seed)
    classes = np.unique(targets)
    pools = [rng.permutation(np.flatnonzero(targets == c)) for c in rng.permutation(classes)]
    chosen: list[int] = []
    for round_ in range(max(len(p) for p in pools)):
        for pool in pools:
            if round_ < len(pool):
                chosen.append(int(pool[round_]))
                if len(chosen) == n:
                    return sorted(chosen)
    return sorted(chosen)

"""ImageNet validation images in an ImageFolder layout (one folder per synset id, e.g. n01440764).

Only the synsets named by the hierarchy are read; their targets are the hierarchy's global fine
indices. Images are resized to 256 and centre-cropped to 224, as torchvision's VGG expects.
"""

from __future__ import annotations

import os
from pathlib import Path

import torchvision
from torchvision import transforms

from c2f_attacks.hierarchies import imagenet_hierarchy
from c2f_attacks.hierarchy import Hierarchy


class SynsetFolder(torchvision.datasets.ImageFolder):
    """``ImageFolder`` restricted to the hierarchy's synsets, labelled by global fine index."""

    def __init__(self, root: str | os.PathLike, hierarchy: Hierarchy, size: int = 224):
        self.hierarchy = hierarchy
        transform = transforms.Compose(
            [transforms.Resize(size * 8 // 7), transforms.CenterCrop(size), transforms.ToTensor()]
        )
        super().__init__(str(root), transform=transform)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        fine_index = {name: i for i, name in enumerate(self.hierarchy.fine_names)}
        present = sorted(
            e.name for e in os.scandir(directory) if e.is_dir() and e.name in fine_index
        )
        if not present:
            raise FileNotFoundError(
                f"no synset folder of the hierarchy under {directory} "
                f"(expected folders such as {self.hierarchy.fine_names[0]}/)"
            )
        return present, {name: fine_index[name] for name in present}


def imagenet(root: str | os.PathLike, hierarchy: Hierarchy | None = None, size: int = 224):
    """ImageNet val (ImageFolder layout) with the shipped superclass grouping by default."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"ImageNet folder {root} does not exist")
    return SynsetFolder(root, imagenet_hierarchy() if hierarchy is None else hierarchy, size)

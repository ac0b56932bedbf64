"""ImageNet validation images in an ImageFolder layout (one folder per synset id, e.g. n01440764).

Only the synsets named by the hierarchy are read (a hierarchy over some classes reads a subset;
other synset folders are skipped and listed in ``.skipped``); targets are the hierarchy's global
fine indices. Images are resized to 256 (bicubic) and centre-cropped to 224.
"""

from __future__ import annotations

import os

from c2f_attacks.data.folder import HierarchyFolder
from c2f_attacks.hierarchies import imagenet_hierarchy
from c2f_attacks.hierarchy import Hierarchy


def imagenet(
    root: str | os.PathLike, hierarchy: Hierarchy | None = None, size: int = 224
) -> HierarchyFolder:
    """ImageNet val (ImageFolder layout); default grouping: the shipped one of all 1000 classes."""
    hierarchy = imagenet_hierarchy() if hierarchy is None else hierarchy
    return HierarchyFolder(root, hierarchy, size, skip_unknown=True)

"""The label groupings that ship with the package (JSON files beside this module).

- CIFAR-10: vehicles / animals.
- CIFAR-100: the 20 official superclasses x 5 classes.
- ImageNet: 11 superclasses over the 398 animal classes (ImageNet-1k indices 0-397), grouped by
  the contiguous index ranges of WordNet's animal subtrees, named by synset id; the ranges are
  fish 0-6, 389-397; bird 7-24, 80-100, 127-146; amphibian 25-32; reptile 33-68; invertebrate
  69-79, 107-126, 327-329; insect 300-326; dog 151-268; wolf_fox 269-280; cat 281-293;
  primate 365-382; other_mammal 101-106, 147-150, 294-299, 330-364, 383-388.
  ``imagenet_wnids.txt`` lists the 1000 synset ids in torchvision's output order.
"""

from __future__ import annotations

from importlib import resources

from c2f_attacks.hierarchy import Hierarchy

_HERE = resources.files(__name__)

CIFAR10_HIERARCHY = Hierarchy.from_dict(
    {
        "vehicle": ["airplane", "automobile", "ship", "truck"],
        "animal": ["bird", "cat", "deer", "dog", "frog", "horse"],
    }
)


def _load(name: str) -> Hierarchy:
    with resources.as_file(_HERE / name) as path:
        return Hierarchy.from_json(path)


def cifar100_hierarchy() -> Hierarchy:
    return _load("cifar100_superclasses.json")


def imagenet_hierarchy() -> Hierarchy:
    """The default grouping of ImageNet classes (synset ids) into superclasses."""
    return _load("imagenet_superclasses.json")


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k synset ids in the order of torchvision's classifier outputs."""
    return (_HERE / "imagenet_wnids.txt").read_text().split()

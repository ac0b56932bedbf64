"""The label groupings that ship with the package (JSON files beside this module).

- CIFAR-10: vehicles / animals.
- CIFAR-100: the 20 official superclasses x 5 classes.
- ImageNet: all 1000 ImageNet-1k classes (named by synset id) in 28 superclasses, derived from
  WordNet 3.0 hypernyms by an ordered cut (``imagenet_grouping.py`` documents and re-derives it:
  each class goes to the first listed synset above it, e.g. dog before mammal before animal).
  ``imagenet_wnids.txt`` lists the 1000 synset ids in torchvision's output order.
"""

from __future__ import annotations

from importlib import resources

from torchvision.models import VGG16_Weights

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


def imagenet_class_names() -> dict[str, str]:
    """Readable name of each ImageNet-1k synset id (torchvision's category names, no download)."""
    return dict(zip(imagenet_wnids(), VGG16_Weights.IMAGENET1K_V1.meta["categories"]))


def imagenet_class_index(hierarchy: Hierarchy) -> list[int]:
    """The ImageNet-1k output index of each fine class of ``hierarchy`` (named by synset id)."""
    return hierarchy.output_index(imagenet_wnids(), "the ImageNet-1k synset ids")

"""The label hierarchies that ship with the package (JSON files beside this module), by name.

- ``cifar10``: vehicles / animals.
- ``cifar100``: the 20 official superclasses x 5 classes.
- ``imagenet-wordnet28``: all 1000 ImageNet-1k classes (named by synset id) in 28 superclasses,
  derived from WordNet 3.0 hypernyms by an ordered cut (``imagenet_grouping.py`` documents and
  re-derives it: each class goes to the first listed synset above it, e.g. dog before mammal
  before animal). The default grouping of the ImageNet models and data.
- ``breeds-entity13`` (13 superclasses x 20 classes), ``breeds-entity30`` (30 x 8),
  ``breeds-living17`` (17 x 4), ``breeds-nonliving26`` (26 x 4): the BREEDS benchmarks
  (Santurkar, Tsipras, Madry, ICLR 2021) over subsets of ImageNet-1k, each with its tree (the
  classes' paths in the BREEDS modified WordNet hierarchy) for mistake severity. Derived by
  ``scripts/derive_breeds.py`` from the published files; each file's ``about`` records the
  source, its SHA-256 and the license note (:func:`hierarchy_about`).

``imagenet_wnids.txt`` lists the 1000 ImageNet synset ids in torchvision's output order.
:func:`resolve_hierarchy` is the one place a hierarchy argument (object, name or JSON path) is
turned into a :class:`Hierarchy`.

Class names stay what the hierarchy calls them (synset ids for ImageNet, so that labels, folders
and records match the data); :func:`readable_name` gives the words people read in figures and
tables ("n07920052" -> "espresso").
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from torchvision.models import VGG16_Weights

from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import Hierarchy

_HERE = resources.files(__name__)

#: file of each BREEDS benchmark beside this module
BREEDS_FILES = {
    "breeds-entity13": "breeds_entity13.json",
    "breeds-entity30": "breeds_entity30.json",
    "breeds-living17": "breeds_living17.json",
    "breeds-nonliving26": "breeds_nonliving26.json",
}

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


#: a WordNet noun synset id as ImageNet spells it: "n" and the 8-digit offset
_SYNSET_ID = re.compile(r"^n\d{8}$")


@functools.cache
def synset_words() -> dict[str, str]:
    """Words for every synset id that ships: the 1000 ImageNet-1k classes (torchvision's
    category names) and their WordNet ancestors (the first lemma, "_" read as a space), so that
    superclasses named by synset read as words too."""
    from c2f_attacks.hierarchies.imagenet_grouping import shipped_hypernyms  # imports this module

    words = {wnid: lemma.replace("_", " ") for wnid, (lemma, _) in shipped_hypernyms().items()}
    return {**words, **imagenet_class_names()}


def readable_name(name: str) -> str:
    """A class name for people: a known synset id becomes its words ("n07920052" ->
    "espresso"); any other name (words already, or an unknown id) is returned unchanged."""
    return synset_words().get(name, name) if _SYNSET_ID.match(name) else name


def readable_names(names: Sequence[str]) -> list[str]:
    """:func:`readable_name` of each name."""
    return [readable_name(name) for name in names]


def imagenet_class_index(hierarchy: Hierarchy) -> list[int]:
    """The ImageNet-1k output index of each fine class of ``hierarchy`` (named by synset id)."""
    return hierarchy.output_index(imagenet_wnids(), "the ImageNet-1k synset ids")


# ------------------------------------------------------------------------ by name
_SHIPPED: dict[str, Callable[[], Hierarchy]] = {
    "cifar10": lambda: CIFAR10_HIERARCHY,
    "cifar100": cifar100_hierarchy,
    "imagenet-wordnet28": imagenet_hierarchy,
    **{name: (lambda file=file: _load(file)) for name, file in BREEDS_FILES.items()},
}


def list_hierarchies() -> list[str]:
    """Names of the shipped hierarchies."""
    return sorted(_SHIPPED)


def get_hierarchy(name: str) -> Hierarchy:
    """The shipped hierarchy ``name`` (:func:`list_hierarchies`)."""
    if name not in _SHIPPED:
        raise UserError(f"unknown hierarchy {name!r}; known: {', '.join(list_hierarchies())}")
    return _SHIPPED[name]()


def hierarchy_about(name: str) -> dict:
    """The ``about`` of a shipped hierarchy's file (source, SHA-256, license); ``{}`` if none."""
    get_hierarchy(name)  # the unknown-name error
    file = BREEDS_FILES.get(name)
    return json.loads((_HERE / file).read_text())["about"] if file else {}


def resolve_hierarchy(value: Hierarchy | str | os.PathLike) -> Hierarchy:
    """A :class:`Hierarchy` from itself, a shipped name (:func:`list_hierarchies`) or a JSON file.

    A name wins over a file of the same name in the working directory. Anything else that is
    not an existing file is refused naming the value and the known names.
    """
    if isinstance(value, Hierarchy):
        return value
    if isinstance(value, str) and value in _SHIPPED:
        return get_hierarchy(value)
    if not isinstance(value, str | os.PathLike):
        raise UserError(
            f"hierarchy must be a Hierarchy, a name or a JSON path, got {type(value).__name__}"
        )
    if not Path(value).exists():
        raise UserError(
            f"unknown hierarchy {str(value)!r}: not a known name ({', '.join(list_hierarchies())}) "
            "and no file at that path"
        )
    return Hierarchy.from_json(value)

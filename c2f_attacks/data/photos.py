"""Real photos that ship offline with scikit-image and matplotlib, preprocessed like ImageNet.

``PHOTOS`` names them; :func:`load_photos` returns a (N, 3, size, size) batch in [0, 1] after the
ImageNet evaluation crop (bicubic resize of the shorter side to 256, centre crop 224). The
scikit-image photos need the optional extra ``c2f-attacks[photos]``.

:func:`write_photo_folder` lays the photos out as an ImageNet-style image folder (one folder per
synset, :data:`PHOTO_SYNSETS`), real 224-px test data for ``--dataset imagefolder:PATH``;
:func:`photo_hierarchy` is the shipped ImageNet grouping cut down to those photos' classes;
:class:`LabelledPhotos` is the same data without files (``--dataset photos``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from c2f_attacks._io import atomic_write
from c2f_attacks.data.folder import center_crop_transform
from c2f_attacks.errors import MissingExtraError, UserError
from c2f_attacks.hierarchies import imagenet_hierarchy
from c2f_attacks.hierarchy import Hierarchy

#: photo name -> where it comes from ("skimage" data function or matplotlib sample file)
PHOTOS: dict[str, str] = {
    "chelsea": "skimage",
    "coffee": "skimage",
    "rocket": "skimage",
    "stereo_motorcycle": "skimage",
    "astronaut": "skimage",
    "grace_hopper": "matplotlib",
}

#: the ImageNet-1k class a person would give each photo (the astronaut portrait has none)
PHOTO_SYNSETS: dict[str, str] = {
    "chelsea": "n02123159",  # tiger cat
    "coffee": "n07920052",  # espresso
    "rocket": "n03773504",  # missile
    "stereo_motorcycle": "n03785016",  # moped
    "grace_hopper": "n03763968",  # military uniform
}


def photo_array(name: str) -> np.ndarray:
    """The photo as an (H, W, 3) uint8 array."""
    if name not in PHOTOS:
        raise UserError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
    if PHOTOS[name] == "matplotlib":
        from matplotlib import cbook

        with cbook.get_sample_data(f"{name}.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    try:
        import skimage.data
    except ImportError:
        raise MissingExtraError(
            f"photo {name!r} ships with scikit-image: pip install 'c2f-attacks[photos]'"
        ) from None
    image = getattr(skimage.data, name)()
    return image[0] if name == "stereo_motorcycle" else image  # (left, right, disparity)


def load_photos(names: Sequence[str] = tuple(PHOTOS), size: int = 224) -> torch.Tensor:
    """Float batch (N, 3, size, size) in [0, 1] of the named photos, centre-cropped."""
    transform = center_crop_transform(size)
    return torch.stack([transform(Image.fromarray(photo_array(n)).convert("RGB")) for n in names])


def _synsets_of(names: Sequence[str]) -> list[str]:
    unlabelled = [n for n in names if n not in PHOTO_SYNSETS]
    if unlabelled:
        raise UserError(
            f"photo {unlabelled[0]!r} has no ImageNet class; choose from {', '.join(PHOTO_SYNSETS)}"
        )
    return [PHOTO_SYNSETS[n] for n in names]


def write_photo_folder(
    root: str | os.PathLike, names: Sequence[str] = tuple(PHOTO_SYNSETS)
) -> Path:
    """Write the named photos as ``root/<synset>/<photo>.png`` (full size, lossless; the
    dataset crops them) and return ``root``: an image folder for ``imagefolder:PATH``."""
    root = Path(root)
    for name, synset in zip(names, _synsets_of(names)):
        image = Image.fromarray(photo_array(name))
        atomic_write(root / synset / f"{name}.png", lambda tmp, im=image: im.save(tmp, "PNG"))
    return root


def photo_hierarchy(names: Sequence[str] = tuple(PHOTO_SYNSETS)) -> Hierarchy:
    """The shipped ImageNet grouping restricted to the classes of the named photos (groups
    that keep none are left out; order as in the grouping)."""
    keep = set(_synsets_of(names))
    groups = {coarse: [f for f in fines if f in keep]
              for coarse, fines in imagenet_hierarchy().to_dict().items()}  # fmt: skip
    return Hierarchy.from_dict({coarse: fines for coarse, fines in groups.items() if fines})


class LabelledPhotos(Dataset):
    """The photos of :data:`PHOTO_SYNSETS` as a dataset (``--dataset photos``): each photo
    centre-cropped to ``size``, labelled with the global fine index of its ImageNet class in
    ``hierarchy`` (a photo whose class the hierarchy lacks is left out)."""

    def __init__(self, hierarchy: Hierarchy, size: int = 224):
        index = {name: i for i, name in enumerate(hierarchy.fine_names)}
        self.names = [name for name, synset in PHOTO_SYNSETS.items() if synset in index]
        if not self.names:
            raise UserError(
                "dataset 'photos': the hierarchy has none of the photos' ImageNet classes "
                f"({', '.join(PHOTO_SYNSETS.values())})"
            )
        self.hierarchy = hierarchy
        self.targets = [index[PHOTO_SYNSETS[name]] for name in self.names]
        self._transform = center_crop_transform(size)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(photo_array(self.names[i])).convert("RGB")
        return self._transform(image), self.targets[i]

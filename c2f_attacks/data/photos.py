"""Real photos that ship offline with scikit-image and matplotlib, preprocessed like ImageNet.

``PHOTOS`` names them; :func:`load_photos` returns a (N, 3, size, size) batch in [0, 1] after the
ImageNet evaluation crop (bicubic resize of the shorter side to 256, centre crop 224). The
scikit-image photos need the optional extra ``c2f-attacks[photos]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from c2f_attacks.data.folder import center_crop_transform

#: photo name -> where it comes from ("skimage" data function or matplotlib sample file)
PHOTOS: dict[str, str] = {
    "chelsea": "skimage",
    "coffee": "skimage",
    "rocket": "skimage",
    "stereo_motorcycle": "skimage",
    "astronaut": "skimage",
    "grace_hopper": "matplotlib",
}


def photo_array(name: str) -> np.ndarray:
    """The photo as an (H, W, 3) uint8 array."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
    if PHOTOS[name] == "matplotlib":
        from matplotlib import cbook

        with cbook.get_sample_data(f"{name}.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    try:
        import skimage.data
    except ImportError:
        raise ImportError(
            f"photo {name!r} ships with scikit-image: pip install 'c2f-attacks[photos]'"
        ) from None
    image = getattr(skimage.data, name)()
    return image[0] if name == "stereo_motorcycle" else image  # (left, right, disparity)


def load_photos(names: Sequence[str] = tuple(PHOTOS), size: int = 224) -> torch.Tensor:
    """Float batch (N, 3, size, size) in [0, 1] of the named photos, centre-cropped."""
    transform = center_crop_transform(size)
    return torch.stack([transform(Image.fromarray(photo_array(n)).convert("RGB")) for n in names])

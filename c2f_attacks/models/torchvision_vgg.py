"""torchvision's ImageNet VGG-16, named by its weights, as an induced C2F classifier."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from c2f_attacks.errors import UserError
from c2f_attacks.hierarchies import imagenet_class_index, imagenet_hierarchy
from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.models.induced import InducedC2F
from c2f_attacks.models.vgg import IMAGENET_MEAN, IMAGENET_STD


def load_torchvision_weights(arch: str, weights: str | None):
    """``torchvision.models.<arch>(weights=...)``, with a readable error when offline."""
    builder = getattr(torchvision.models, arch)
    try:
        return builder(weights=weights)
    except (ValueError, KeyError) as err:
        raise UserError(f"torchvision has no weights {weights!r} for {arch}: {err}") from None
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        cache = torch.hub.get_dir() + "/checkpoints"
        raise RuntimeError(
            f"could not load torchvision weights {weights!r} for {arch}: not in the local cache "
            f"{cache} and the download failed ({err.__class__.__name__}: {err})"
        ) from None


def torchvision_weights_cached(arch: str, weights: str) -> bool:
    """Whether ``torchvision.models.<arch>(weights=...)`` loads from the local torch cache
    (``$TORCH_HOME/hub/checkpoints``) without a download."""
    enum = torchvision.models.get_model_weights(arch)[weights]
    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name).is_file()


def induced_torchvision_vgg16(
    weights: str | None = "IMAGENET1K_V1",
    hierarchy: Hierarchy | None = None,
    batch_norm: bool = False,
) -> InducedC2F:
    """torchvision VGG-16 (ImageNet) as a C2F classifier through ``hierarchy``.

    ``hierarchy`` names its fine classes by ImageNet synset id (default: the shipped grouping);
    classes outside it are ignored. Inputs are 224x224 pixels in [0, 1].
    """
    hierarchy = imagenet_hierarchy() if hierarchy is None else hierarchy
    class_index = imagenet_class_index(hierarchy)  # checked before any weights are read
    flat = load_torchvision_weights("vgg16_bn" if batch_norm else "vgg16", weights).eval()
    return InducedC2F(
        flat,
        hierarchy,
        class_index=class_index,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )

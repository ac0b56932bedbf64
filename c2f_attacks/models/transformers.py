"""Small transformers and a ConvNeXt with random weights, as factories for the command line.

Each factory returns a flat classifier of 32x32 images in [0, 1] (its normalization inside) with
one output per fine class of the shapes data, named in ``class_names``, so that a hierarchy over
those classes induces a coarse-to-fine model of it::

    c2f-bench run --model c2f_attacks.models.transformers:vit --hierarchy shapes.json

(``shapes.json``: ``c2f_attacks.data.SHAPES_HIERARCHY.to_json("shapes.json")``.) Nothing is
downloaded and nothing is registered in the model zoo: the weights are random (seeded), so the
models serve to run LRP, LRPC and LRPF on transformer architectures end to end, not to report
accuracy. The same classes at real size are what ``c2f_attacks.lrp`` explains
(torchvision's ``vit_b_16``, ``swin_t``, ``convnext_tiny``; timm's ViT and DeiT).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.swin_transformer import SwinTransformer

from c2f_attacks.data.shapes import SHAPES_HIERARCHY
from c2f_attacks.models.base import Normalize

#: the images' channel statistics the models normalize with (ImageNet's, as pretrained models)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZE = 32


def _flat(build: Callable[[int], nn.Module], seed: int) -> nn.Module:
    """``Normalize`` then ``build(num_classes)``, built under ``seed`` (the global generator is
    left as it was), with the shapes data's fine classes as ``class_names``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(Normalize(MEAN, STD), build(SHAPES_HIERARCHY.num_fine))
    model.class_names = list(SHAPES_HIERARCHY.fine_names)
    return model.eval()


def _vit(num_classes: int) -> nn.Module:
    model = torchvision.models.VisionTransformer(
        image_size=SIZE, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=num_classes,
    )  # fmt: skip
    with torch.no_grad():  # torchvision starts both at 0: the logits would not depend on x
        model.heads.head.weight.normal_(0.0, 0.1)
        model.class_token.normal_(0.0, 0.02)
    return model


def vit() -> nn.Module:
    """torchvision ``VisionTransformer``: 4x4 patches, 4 blocks of width 64 (4 heads)."""
    return _flat(_vit, seed=0)


def convnext() -> nn.Module:
    """torchvision ``ConvNeXt``: two stages (widths 32, 64; two blocks each); layer scale 0.5,
    so that the random blocks matter next to their residuals."""
    blocks = [CNBlockConfig(32, 64, 2), CNBlockConfig(64, None, 2)]
    return _flat(
        lambda k: torchvision.models.ConvNeXt(blocks, layer_scale=0.5, num_classes=k), seed=1
    )


def swin() -> nn.Module:
    """torchvision ``SwinTransformer`` (V1): 2x2 patches, 4x4 windows, two stages."""
    return _flat(
        lambda k: SwinTransformer(
            patch_size=[2, 2], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
            stochastic_depth_prob=0.0, num_classes=k,
        ),
        seed=2,
    )  # fmt: skip


def deit() -> nn.Module:
    """timm ``VisionTransformer`` in DeiT-tiny's layout at 4 blocks (needs timm: the
    ``imagenet`` extra)."""
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError as err:
        raise ImportError(
            f"deit() needs timm: pip install 'c2f-attacks[imagenet]' ({err})"
        ) from None
    return _flat(lambda k: VisionTransformer(img_size=SIZE, patch_size=4, embed_dim=64, depth=4,
                                             num_heads=4, num_classes=k), seed=3)  # fmt: skip

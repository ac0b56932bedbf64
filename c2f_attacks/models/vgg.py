"""C2F-VGG16: torchvision's VGG-16 (configuration "D") as the coarse and the fine classifiers."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.models.base import C2FClassifier, Normalize

#: torchvision's VGG configuration "D" (VGG-16): conv widths, "M" for 2x2 max-pooling
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VGGConfig:
    """Everything needed to rebuild a C2F-VGG16; stored in checkpoints."""

    width: float = 1.0  #: multiplier on every conv width (and on the head width if not given)
    input_size: int = 224
    batch_norm: bool = False
    shared_backbone: bool = True
    head_width: int | None = None  #: hidden units of the 3-layer heads; default 4096 * width
    dropout: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if not self.width > 0:
            raise UserError(f"width must be positive, got {self.width}")
        if self.input_size < 32 or self.input_size % 32:
            raise UserError(
                f"input_size must be a multiple of 32 (five 2x2 poolings), got {self.input_size}"
            )
        if self.head_width is not None and self.head_width < 1:
            raise UserError(f"head_width must be positive, got {self.head_width}")

    @property
    def hidden(self) -> int:
        return self.head_width if self.head_width is not None else max(1, round(4096 * self.width))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VGGConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"unknown VGG config fields: {sorted(unknown)}")
        d = dict(d)
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def vgg16_features(width: float = 1.0, batch_norm: bool = False) -> nn.Sequential:
    """The VGG-16 conv stack, as torchvision builds it, with every width scaled."""
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out = max(1, round(v * width))
        layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        channels = out
    return nn.Sequential(*layers)


def vgg16_head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """VGG's classifier: Linear-ReLU-Dropout, Linear-ReLU-Dropout, Linear."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class VGG16Trunk(nn.Sequential):
    """Conv stack, average pooling to the final grid, flatten: image -> feature vector."""

    def __init__(self, cfg: VGGConfig):
        grid = cfg.input_size // 32
        super().__init__(
            vgg16_features(cfg.width, cfg.batch_norm), nn.AdaptiveAvgPool2d(grid), nn.Flatten(1)
        )
        self.out_features = max(1, round(512 * cfg.width)) * grid * grid


class C2FVGG16(C2FClassifier):
    """Coarse-to-fine VGG-16.

    ``shared_backbone=True``: one conv trunk feeds a coarse head and one fine head per coarse
    class. ``False``: the paper's literal form, a separate VGG-16 for C and for every F_i.
    """

    def __init__(self, hierarchy: Hierarchy, cfg: VGGConfig | None = None, **overrides):
        super().__init__(hierarchy)
        cfg = VGGConfig(**overrides) if cfg is None else cfg
        self.cfg = cfg
        self.input_size = cfg.input_size
        self.normalize = Normalize(cfg.mean, cfg.std)
        sizes = [hierarchy.num_coarse, *hierarchy.group_sizes]
        if cfg.shared_backbone:
            self.trunk = VGG16Trunk(cfg)
            heads = [vgg16_head(self.trunk.out_features, cfg.hidden, s, cfg.dropout) for s in sizes]
            self.coarse_head = heads[0]
            self.fine_heads = nn.ModuleList(heads[1:])
        else:
            nets = []
            for s in sizes:
                trunk = VGG16Trunk(cfg)
                nets.append(
                    nn.Sequential(trunk, vgg16_head(trunk.out_features, cfg.hidden, s, cfg.dropout))
                )
            self.coarse_net = nets[0]
            self.fine_nets = nn.ModuleList(nets[1:])

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalize(x)
        if self.cfg.shared_backbone:
            h = self.trunk(x)
            coarse = self.coarse_head(h)
            fines = [head(h) for head in self.fine_heads]
        else:
            coarse = self.coarse_net(x)
            fines = [net(x) for net in self.fine_nets]
        # Global fine indices are laid out group by group, so concatenating the heads in coarse
        # order puts every head's logits at its classes' global indices.
        return coarse, torch.cat(fines, dim=1)

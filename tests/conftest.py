"""Shared fixtures: small C2F models and data that build in milliseconds."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from c2f_attacks import Hierarchy
from c2f_attacks.data.shapes import SHAPES_HIERARCHY, SHAPES_SPLITS, ShapesC2F
from c2f_attacks.models import C2FVGG16, VGGConfig, load_model
from c2f_attacks.models.base import C2FClassifier, Normalize

# entity -> animal -> pet -> cat, dog
#                  -> wild -> canid -> wolf          (an unbalanced branch)
#        -> vehicle -> road -> car, bus
#                   -> tram
# heights (the longest way down to a class): pet 1, canid 1, wild 2, animal 3, road 1,
# vehicle 2, entity 4
TOY_TREE = {
    "groups": {"pet": ["cat", "dog"], "wild": ["wolf"], "vehicle": ["car", "bus", "tram"]},
    "ancestors": {
        "cat": ["entity", "animal", "pet"],
        "dog": ["entity", "animal", "pet"],
        "wolf": ["entity", "animal", "wild", "canid"],
        "car": ["entity", "vehicle", "road"],
        "bus": ["entity", "vehicle", "road"],
        "tram": ["entity", "vehicle"],
    },
}

TINY_HIERARCHY = {"animal": ["cat", "dog", "cow"], "vehicle": ["car", "bus"], "plant": ["tree"]}


@pytest.fixture
def tiny_hierarchy() -> Hierarchy:
    return Hierarchy.from_dict(TINY_HIERARCHY)


def tiny_vgg(hierarchy: Hierarchy, seed: int = 0, **cfg) -> C2FVGG16:
    torch.manual_seed(seed)
    cfg = {"width": 0.0625, "input_size": 32, "head_width": 16, **cfg}
    return C2FVGG16(hierarchy, VGGConfig(**cfg)).eval()


def small_cnn(seed: int = 0, batch_norm: bool = False, classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 8, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes)]
    model = nn.Sequential(*layers)
    if batch_norm:  # non-trivial running statistics, so eval mode matters
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


class SmallC2F(C2FClassifier):
    """A shallow C2F CNN whose logits really vary with the input (random deep VGGs are nearly
    constant): a conv trunk, a coarse head and all fine heads as one linear layer."""

    def __init__(self, seed: int, input_size: int = 32, in_channels: int = 3):
        super().__init__(SHAPES_HIERARCHY)
        self.input_size, self.in_channels = input_size, in_channels
        torch.manual_seed(seed)
        self.normalize = Normalize((0.5,) * in_channels, (0.25,) * in_channels)
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )  # fmt: skip
        self.coarse_head = nn.Linear(128, SHAPES_HIERARCHY.num_coarse)
        self.fine_head = nn.Linear(128, SHAPES_HIERARCHY.num_fine)

    def logits(self, x):
        h = self.trunk(self.normalize(x))
        return self.coarse_head(h), self.fine_head(h)


def small_c2f(seed: int = 0, input_size: int = 32, in_channels: int = 3) -> SmallC2F:
    return SmallC2F(seed, input_size, in_channels).eval()


def float64(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """A float64 copy of ``model`` and ``x``, for tests that follow one image through batches
    of other sizes, compositions or memory layouts, or recompute an attack's mask outside it.

    Only the counter-based noise is batch-independent by design. Float32 convolutions and
    matrix products may sum in another order when the batch or layout changes (another kernel
    or BLAS path; it differs between CPUs), and a sign step or a top-k cut turns such a
    last-bit difference into a different pixel or a full step. Float64 rounding (1e-16) is far
    below any gradient or relevance gap of these small models, so image i's path is the same
    in any batch, on any machine."""
    return copy.deepcopy(model).double(), x.double()


def shapes_test(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first n shapes test images, fine labels and object masks."""
    return ShapesC2F(n, SHAPES_SPLITS["test"]).tensors()


@pytest.fixture(scope="session")
def shipped():
    """The shipped shapes-vgg16, loaded once per session: tests must not change it (its mode,
    weights or hooks); a test that does loads its own copy."""
    return load_model("shapes-vgg16")


_SHIPPED_ONNX: dict[str, Path] = {}


def shipped_onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model's FP32 ONNX graph (``export_onnx``), traced once per session for tests/
    and bench/ together (tracing is the slow part of every export test). Read-only: a test that
    changes the graph writes its own copy."""
    if "path" not in _SHIPPED_ONNX:
        from c2f_attacks.exporters import export_onnx

        folder = tmp_path_factory.mktemp("shipped-onnx")
        _SHIPPED_ONNX["path"] = export_onnx(load_model("shapes-vgg16"), folder / "shapes.onnx")
    return _SHIPPED_ONNX["path"]


@pytest.fixture(scope="session")
def shipped_onnx(tmp_path_factory) -> Path:
    return shipped_onnx_file(tmp_path_factory)


@pytest.fixture(scope="module")
def model() -> SmallC2F:
    """The attack tests' small C2F model."""
    return small_c2f(seed=3)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    """Eight random 32x32 RGB images (a module may override the count)."""
    return torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(5))

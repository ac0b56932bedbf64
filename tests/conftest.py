"""Shared fixtures: small C2F models and data that build in milliseconds."""

from __future__ import annotations

import pytest
import torch

from c2f_attacks import Hierarchy
from c2f_attacks.models import C2FVGG16, VGGConfig

TINY_HIERARCHY = {"animal": ["cat", "dog", "cow"], "vehicle": ["car", "bus"], "plant": ["tree"]}


@pytest.fixture
def tiny_hierarchy() -> Hierarchy:
    return Hierarchy.from_dict(TINY_HIERARCHY)


def tiny_vgg(hierarchy: Hierarchy, seed: int = 0, **cfg) -> C2FVGG16:
    torch.manual_seed(seed)
    cfg = {"width": 0.0625, "input_size": 32, "head_width": 16, **cfg}
    return C2FVGG16(hierarchy, VGGConfig(**cfg)).eval()

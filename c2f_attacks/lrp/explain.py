"""Relevance heatmaps of a stage's decision and their top-k pixel regions (shared by the LRP
attacks and the metrics).

A heatmap is the LRP relevance summed over colour channels, one value per pixel (spatial
location): ``H[n, i, j] = sum_c R[n, c, i, j]``.
"""

from __future__ import annotations

import torch
from torch import nn

from c2f_attacks.lrp.composites import DEFAULT_COMPOSITE
from c2f_attacks.lrp.engine import lrp, stage_relevance


def stage_relevance_of(
    model: nn.Module,
    x: torch.Tensor,
    stage: str | None,
    target: torch.Tensor,
    composite: str = DEFAULT_COMPOSITE,
    create_graph: bool = False,
) -> torch.Tensor:
    """LRP relevance (N, C, H, W) of class ``target`` at ``stage`` (None: a flat classifier);
    ``create_graph=True`` makes it differentiable w.r.t. ``x``."""
    # callers validated x once; skip the engine's per-call range check (a device sync)
    options = {"composite": composite, "create_graph": create_graph, "check_range": False}
    if stage is None:
        return lrp(model, x, target, **options)
    return stage_relevance(model, x, stage=stage, target=target, **options)


def heatmap(relevance: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) relevance -> (N, H, W) per-pixel relevance."""
    return relevance.sum(dim=1)


def top_fraction_mask(heat: torch.Tensor, fraction: float) -> torch.Tensor:
    """BoolTensor (N, H, W): each image's ``ceil(fraction * H * W)`` most relevant pixels
    (at least one). Ties are broken by ``topk``, so exactly that many pixels are marked."""
    flat = heat.flatten(1)
    count = max(1, min(flat.shape[1], int(-(-fraction * flat.shape[1] // 1))))
    top = flat.topk(count, dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True)
    return mask.view_as(heat)

"""Figures: attacks (image, perturbation, relevance before and after) and plain explanations."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (CI, servers)
import matplotlib.pyplot as plt
import numpy as np
import torch

from c2f_attacks._io import atomic_write
from c2f_attacks.lrp import stage_relevance
from c2f_attacks.models.base import C2FClassifier, C2FOutput
from c2f_attacks.viz import heatmap, image_to_rgb

Cell = tuple[np.ndarray, str]  # an RGB image and its title


def _names(model: C2FClassifier, out: C2FOutput, i: int) -> str:
    h = model.hierarchy
    return f"{h.coarse_names[out.coarse_pred[i]]} / {h.fine_names[out.fine_pred[i]]}"


def _save_grid(rows: list[list[Cell]], title: str, path: str | os.PathLike) -> None:
    """Draw ``rows`` of titled RGB cells and write them as one PNG (atomically)."""
    ncols = len(rows[0])
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 2.3 * len(rows) + 0.5),
                             squeeze=False)  # fmt: skip
    for row, cells in zip(axes, rows):
        for ax, (rgb, label) in zip(row, cells):
            ax.imshow(rgb)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def attack_figure(
    model: C2FClassifier,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    stage: str,
    path: str | os.PathLike,
    title: str = "",
    examples: int = 4,
) -> None:
    """Write a PNG with ``examples`` rows (fooled images first): clean image, adversarial image,
    perturbation, relevance of the clean ``stage`` decision before and after the attack."""
    device = next(model.parameters()).device
    with torch.no_grad():
        clean, adv = model(x.to(device)), model(x_adv.to(device))
    pred = "coarse_pred" if stage == "coarse" else "fine_pred"
    fooled = getattr(clean, pred) != getattr(adv, pred)
    order = torch.cat([fooled.nonzero().flatten(), (~fooled).nonzero().flatten()])[:examples].cpu()
    target = getattr(clean, pred)[order.to(device)]
    before = stage_relevance(model, x[order].to(device), stage, target)
    after = stage_relevance(model, x_adv[order].to(device), stage, target)
    rows = []
    for row, i in enumerate(order.tolist()):
        delta = x_adv[i] - x[i]
        rows.append([
            (image_to_rgb(x[i]), f"clean: {_names(model, clean, i)}"),
            (image_to_rgb(x_adv[i]), f"adv: {_names(model, adv, i)}"),
            (heatmap(delta.abs().sum(0)), f"|delta| (max {delta.abs().max():.3f})"),
            (heatmap(before[row]), f"relevance ({stage}) before"),
            (heatmap(after[row]), "after (same class)"),
        ])  # fmt: skip
    _save_grid(rows, title, path)


def explanation_figure(
    model: C2FClassifier,
    x: torch.Tensor,
    path: str | os.PathLike,
    composite: str = "epsilon_plus_flat",
) -> None:
    """Write a PNG with one row per image: the image with its predicted coarse / fine labels and
    the relevance of the coarse decision C_c and of the fine decision F_c at f."""
    coarse, out = stage_relevance(model, x, "coarse", composite=composite, return_output=True)
    relevance = {"coarse": coarse, "fine": stage_relevance(model, x, "fine", composite=composite)}
    rows = [
        [
            (image_to_rgb(x[i]), _names(model, out, i)),
            (heatmap(relevance["coarse"][i]), "relevance: coarse"),
            (heatmap(relevance["fine"][i]), "relevance: fine"),
        ]
        for i in range(len(x))
    ]
    _save_grid(rows, f"LRP ({composite})", path)

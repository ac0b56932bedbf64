"""Figures of attacks: image, perturbation, relevance before and after, coarse and fine labels."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (CI, servers)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from c2f_attacks._io import atomic_write  # noqa: E402
from c2f_attacks.lrp import stage_relevance  # noqa: E402
from c2f_attacks.models.base import C2FClassifier  # noqa: E402
from c2f_attacks.viz import heatmap, image_to_rgb  # noqa: E402


def _names(model: C2FClassifier, out, i: int) -> str:
    h = model.hierarchy
    return f"{h.coarse_names[out.coarse_pred[i]]} / {h.fine_names[out.fine_pred[i]]}"


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
    xs, advs = x[order].to(device), x_adv[order].to(device)
    target = getattr(clean, pred)[order.to(device)]
    r_before = stage_relevance(model, xs, stage, target)
    r_after = stage_relevance(model, advs, stage, target)

    fig, axes = plt.subplots(len(order), 5, figsize=(11, 2.3 * len(order) + 0.6), squeeze=False)
    for row, i in enumerate(order.tolist()):
        delta = (x_adv[i] - x[i]).abs().sum(0)
        cells = [
            (image_to_rgb(x[i]), f"clean: {_names(model, clean, i)}"),
            (image_to_rgb(x_adv[i]), f"adv: {_names(model, adv, i)}"),
            (heatmap(delta), f"|delta| (max {(x_adv[i] - x[i]).abs().max():.3f})"),
            (heatmap(r_before[row]), f"relevance ({stage}) before"),
            (heatmap(r_after[row]), "after (same class)"),
        ]
        for ax, (rgb, label) in zip(axes[row], cells):
            ax.imshow(rgb)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)

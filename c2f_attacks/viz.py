"""Heatmaps of relevance for figures: RGB arrays, and drawing them on a caller's axes.

Only colormaps are taken from matplotlib; the process-wide backend is never changed.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps


def _to_numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=np.float64)


def heatmap(relevance, cmap: str = "bwr", percentile: float = 99.5) -> np.ndarray:
    """RGB image (H, W, 3) in [0, 1] of a relevance map (C, H, W) or (H, W).

    Channels are summed; the map is scaled symmetrically by the ``percentile`` of |R| so that
    zero relevance is the colormap's centre (white for ``bwr``: red positive, blue negative).
    """
    r = _to_numpy(relevance)
    if r.ndim == 3:
        r = r.sum(axis=0)
    if r.ndim != 2:
        raise ValueError(f"relevance must be (C, H, W) or (H, W), got shape {r.shape}")
    scale = np.percentile(np.abs(r), percentile) if r.size else 0.0
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    r = np.clip(r / scale, -1.0, 1.0)
    return colormaps[cmap]((r + 1.0) / 2.0)[..., :3]


def image_to_rgb(image) -> np.ndarray:
    """A (3, H, W) or (H, W, 3) image in [0, 1] as an (H, W, 3) array for ``imshow``."""
    img = _to_numpy(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    return np.clip(img, 0.0, 1.0)


def plot_explanation(ax_or_axes, image, relevance, title: str | None = None, overlay: bool = False):
    """Draw an image and its relevance heatmap.

    ``ax_or_axes``: two axes (image, heatmap) side by side, or one axis, which gets the heatmap
    (blended over the grey image when ``overlay``). Returns the axes drawn on.
    """
    axes = list(np.atleast_1d(ax_or_axes).ravel())
    hm = heatmap(relevance)
    if len(axes) >= 2:
        axes[0].imshow(image_to_rgb(image))
        axes[1].imshow(hm)
        if title:
            axes[0].set_title(title)
        axes = axes[:2]
    else:
        if overlay:
            grey = image_to_rgb(image)
            grey = grey.mean(axis=-1, keepdims=True) if grey.ndim == 3 else grey[..., None]
            hm = 0.6 * hm + 0.4 * grey
        axes[0].imshow(hm)
        if title:
            axes[0].set_title(title)
        axes = axes[:1]
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return axes

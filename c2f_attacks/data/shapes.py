"""Procedural coarse-to-fine shapes: 4 coarse x 3 fine classes, generated from (seed, index).

Each image is one filled shape with random colour, position, scale and rotation on a textured,
noisy background (two random colour gratings plus pixel noise), rendered with 4x4 supersampling.
Nothing is read from disk; any number of images; the same (seed, index) always gives the same
image, label and object mask (the pixels at least half covered by the shape).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import Hierarchy

SHAPES_HIERARCHY = Hierarchy.from_dict(
    {
        "round": ["disk", "ring", "crescent"],
        "polygon": ["triangle", "square", "rhombus"],
        "star": ["tri_spoke", "plus", "star5"],
        "stroke": ["bar", "parallel_bars", "corner"],
    }
)

#: seeds of the standard splits; the shipped model was trained on "train" only
SHAPES_SPLITS = {"train": 0, "val": 1, "test": 2}

#: the most images one ShapesC2F holds: ``tensors()`` keeps them all in memory (100,000 images
#: at 32 px are 1.2 GB); larger experiments render chunks with :meth:`ShapesC2F.render`.
SHAPES_MAX_IMAGES = 100_000

_SUPERSAMPLE = 4


def _spokes(u, v, arms: int, half_width: float = 0.2):
    inside = u * u + v * v <= half_width**2
    for j in range(arms):
        a = 2 * math.pi * j / arms
        along = u * math.cos(a) + v * math.sin(a)
        across = -u * math.sin(a) + v * math.cos(a)
        inside |= (along >= 0) & (along <= 1.0) & (np.abs(across) <= half_width)
    return inside


def _regular_polygon(u, v, sides: int, apothem: float):
    inside = np.ones_like(u, dtype=bool)
    for j in range(sides):
        a = 2 * math.pi * j / sides + math.pi / 2
        inside &= u * math.cos(a) + v * math.sin(a) <= apothem
    return inside


def _star(u, v, points: int = 5, inner: float = 0.42):
    # Fold the angle into the wedge between an outer tip (angle 0) and the next inner vertex, then
    # test which side of the tip-to-inner-vertex edge the point lies on.
    rho = np.hypot(u, v)
    wedge = math.pi / points
    phi = np.abs((np.arctan2(v, u) + wedge) % (2 * wedge) - wedge)
    px, py = rho * np.cos(phi), rho * np.sin(phi)
    ax, ay = 1.0, 0.0
    bx, by = inner * math.cos(wedge), inner * math.sin(wedge)
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax) >= 0


def _inside(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r2 = u * u + v * v
    if name == "disk":
        return r2 <= 0.9**2
    if name == "ring":
        return (r2 <= 0.95**2) & (r2 >= 0.55**2)
    if name == "crescent":
        return (r2 <= 0.95**2) & ((u - 0.45) ** 2 + v * v > 0.75**2)
    if name == "triangle":
        return _regular_polygon(u, v, 3, 0.5)
    if name == "square":
        return (np.abs(u) <= 0.72) & (np.abs(v) <= 0.72)
    if name == "rhombus":
        return np.abs(u) / 0.98 + np.abs(v) / 0.5 <= 1
    if name == "tri_spoke":
        return _spokes(u, v, 3)
    if name == "plus":
        return _spokes(u, v, 4)
    if name == "star5":
        return _star(u, v)
    if name == "bar":
        return (np.abs(u) <= 0.95) & (np.abs(v) <= 0.2)
    if name == "parallel_bars":
        return (np.abs(u) <= 0.95) & (np.abs(v) >= 0.22) & (np.abs(v) <= 0.6)
    if name == "corner":
        return ((np.abs(u) <= 0.8) & (v >= -0.8) & (v <= -0.42)) | (
            (u >= -0.8) & (u <= -0.42) & (np.abs(v) <= 0.8)
        )
    raise KeyError(name)


def render_shape(seed: int, index: int, size: int = 32) -> tuple[np.ndarray, int, np.ndarray]:
    """Image (3, size, size) float32 in [0, 1], fine label, object mask (size, size) bool."""
    rng = np.random.default_rng([seed, index])
    label = index % SHAPES_HIERARCHY.num_fine
    name = SHAPES_HIERARCHY.fine_names[label]

    # Background: base colour + two coloured gratings + pixel noise.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(0.0, 1.0, 3)
    bg = np.broadcast_to(base[:, None, None], (3, size, size)).copy()
    for _ in range(2):
        theta = rng.uniform(0, 2 * math.pi)
        freq = rng.uniform(1 / 16, 1 / 3) * 2 * math.pi
        phase = rng.uniform(0, 2 * math.pi)
        wave = np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta)) + phase)
        bg += rng.uniform(0.05, 0.18) * rng.uniform(-1, 1, 3)[:, None, None] * wave

    # Object colour far enough from the background's base colour to be visible.
    colour = rng.uniform(0.0, 1.0, 3)
    while np.linalg.norm(colour - base) < 0.4:
        colour = rng.uniform(0.0, 1.0, 3)

    # Pose: centre, radius, rotation; coverage by supersampling.
    radius = rng.uniform(0.24, 0.38) * size
    cx, cy = rng.uniform(radius * 0.9, size - radius * 0.9, 2)
    angle = rng.uniform(0, 2 * math.pi)
    s = _SUPERSAMPLE
    sub = (np.arange(size * s, dtype=np.float32) + 0.5) / s
    gy, gx = np.meshgrid(sub, sub, indexing="ij")
    dx, dy = gx - cx, gy - cy
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / radius
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / radius
    cover = _inside(name, u, v).reshape(size, s, size, s).mean(axis=(1, 3), dtype=np.float32)

    shade = 1.0 + 0.15 * ((xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)) / radius
    obj = colour[:, None, None] * shade[None]
    img = bg * (1 - cover) + obj * cover
    img += rng.normal(0.0, rng.uniform(0.01, 0.05), img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32), label, cover >= 0.5


class ShapesC2F(Dataset):
    """``n`` procedural shapes images; item ``i`` is ``(image (3, size, size), fine_label)``.

    The standard splits use ``seed=SHAPES_SPLITS[split]``; object masks come from
    :meth:`object_mask`, :meth:`render` or :meth:`tensors`. ``n`` is at most
    :data:`SHAPES_MAX_IMAGES`.
    """

    hierarchy = SHAPES_HIERARCHY

    def __init__(self, n: int, seed: int = 0, size: int = 32):
        if not isinstance(n, int) or n < 1:
            raise UserError(f"n must be a positive integer, got {n!r}")
        if n > SHAPES_MAX_IMAGES:
            raise UserError(
                f"n={n:,} is beyond the limit of {SHAPES_MAX_IMAGES:,} shapes images per dataset "
                "(tensors() holds them all in memory); render chunks with render(range(...))"
            )
        if not isinstance(size, int) or size < 8:
            raise UserError(f"size must be an integer >= 8, got {size!r}")
        self.n, self.seed, self.size = n, seed, size
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.n

    def _check(self, index: int) -> int:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        return index % self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._cache is not None:
            index = self._check(index)
            return self._cache[0][index], int(self._cache[1][index])
        img, label, _ = render_shape(self.seed, self._check(index), self.size)
        return torch.from_numpy(img), label

    def object_mask(self, index: int) -> torch.Tensor:
        """BoolTensor (size, size): pixels at least half covered by the shape."""
        return torch.from_numpy(render_shape(self.seed, self._check(index), self.size)[2])

    @property
    def targets(self) -> torch.Tensor:
        """Fine labels of all images (image ``i`` has label ``i % K``), without rendering."""
        return torch.arange(self.n) % SHAPES_HIERARCHY.num_fine

    def render(
        self, indices: Iterable[int], progress: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (B, 3, S, S), labels (B,) and object masks (B, S, S) of ``indices``.

        Any index of the seed's stream is allowed, beyond ``n`` too (chunks of a larger set).
        ``progress`` shows a tqdm bar on stderr.
        """
        indices = list(indices)
        if any(i < 0 for i in indices):
            raise IndexError(f"indices must be non-negative, got {min(indices)}")
        it = tqdm(indices, desc="rendering shapes", unit="img", disable=not progress)
        rendered = [render_shape(self.seed, i, self.size) for i in it]
        return (
            torch.from_numpy(np.stack([r[0] for r in rendered])),
            torch.tensor([r[1] for r in rendered], dtype=torch.long),
            torch.from_numpy(np.stack([r[2] for r in rendered])),
        )

    def tensors(self, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All images (N, 3, S, S), labels (N,) and object masks (N, S, S), rendered once."""
        if self._cache is None:
            self._cache = self.render(range(self.n), progress)
        return self._cache

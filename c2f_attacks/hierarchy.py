"""Coarse-to-fine label hierarchy: M coarse classes, each owning a group of fine classes.

Fine classes live in one global index space ``0..K-1`` ordered group by group, so the fine
classes of coarse ``i`` are a contiguous block. Validation happens on construction and names the
offending class or group.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from c2f_attacks._io import atomic_write_text


class Hierarchy:
    """M coarse classes, coarse ``i`` owning ``M_i`` fine classes (K = sum M_i in all).

    Build it with :meth:`from_dict` (``{coarse_name: [fine_name, ...]}``) or :meth:`from_json`.
    """

    def __init__(self, groups: Sequence[tuple[str, Sequence[str]]]):
        groups = [(coarse, list(fines)) for coarse, fines in groups]
        if not groups:
            raise ValueError("hierarchy has no coarse classes")
        seen_coarse: set[str] = set()
        owner: dict[str, str] = {}
        for coarse, fines in groups:
            if not isinstance(coarse, str) or not coarse:
                raise ValueError(f"coarse class name must be a non-empty string, got {coarse!r}")
            if coarse in seen_coarse:
                raise ValueError(f"duplicate coarse class {coarse!r}")
            seen_coarse.add(coarse)
            if not fines:
                raise ValueError(f"coarse class {coarse!r} has no fine classes (empty group)")
            for fine in fines:
                if not isinstance(fine, str) or not fine:
                    raise ValueError(
                        f"fine class names must be non-empty strings; coarse class {coarse!r} "
                        f"has {fine!r}"
                    )
                if fine in owner:
                    where = (
                        f"twice in coarse class {coarse!r}"
                        if owner[fine] == coarse
                        else f"in two groups: {owner[fine]!r} and {coarse!r}"
                    )
                    raise ValueError(f"fine class {fine!r} appears {where}")
                owner[fine] = coarse
        self._groups = groups
        self.coarse_names: list[str] = [c for c, _ in groups]
        self.fine_names: list[str] = [f for _, fines in groups for f in fines]
        self.group_sizes: list[int] = [len(fines) for _, fines in groups]
        offsets = [0]
        for size in self.group_sizes:
            offsets.append(offsets[-1] + size)
        #: start of each coarse class's block in the global fine index space, plus K at the end
        self.offsets: list[int] = offsets
        self._fine_to_coarse = torch.repeat_interleave(
            torch.arange(len(groups)), torch.tensor(self.group_sizes)
        )

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_dict(cls, mapping: Mapping[str, Sequence[str]]) -> Hierarchy:
        if not isinstance(mapping, Mapping):
            raise ValueError(
                f"hierarchy must be a mapping {{coarse: [fine, ...]}}, got {type(mapping).__name__}"
            )
        for coarse, fines in mapping.items():
            if isinstance(fines, str) or not isinstance(fines, Sequence):
                raise ValueError(
                    f"coarse class {coarse!r} must map to a list of fine class names, "
                    f"got {type(fines).__name__}"
                )
        return cls(list(mapping.items()))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Hierarchy:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"hierarchy file {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"hierarchy file {path} is not valid JSON: {err}") from None
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"hierarchy file {path}: {err}") from None

    def to_dict(self) -> dict[str, list[str]]:
        return {coarse: list(fines) for coarse, fines in self._groups}

    def to_json(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    # ----------------------------------------------------------------- sizes and maps
    @property
    def num_coarse(self) -> int:
        return len(self.coarse_names)

    @property
    def num_fine(self) -> int:
        return len(self.fine_names)

    @property
    def fine_to_coarse(self) -> torch.Tensor:
        """LongTensor (K,): the coarse index of every fine index."""
        return self._fine_to_coarse.clone()

    def coarse_of(self, fine_idx: torch.Tensor) -> torch.Tensor:
        """Coarse index of each fine index (any shape, any device)."""
        fine_idx = torch.as_tensor(fine_idx)
        if fine_idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise TypeError(f"fine indices must be integers, got dtype {fine_idx.dtype}")
        if fine_idx.numel() and (fine_idx.min() < 0 or fine_idx.max() >= self.num_fine):
            bad = fine_idx[(fine_idx < 0) | (fine_idx >= self.num_fine)].flatten()[0].item()
            raise ValueError(f"fine index {bad} is outside 0..{self.num_fine - 1}")
        return self._fine_to_coarse.to(fine_idx.device)[fine_idx.long()]

    def group_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """BoolTensor (M, K): row i marks the fine classes of coarse i."""
        f2c = self._fine_to_coarse.to(device)
        return f2c.unsqueeze(0) == torch.arange(self.num_coarse, device=device).unsqueeze(1)

    def fines_of(self, coarse: int) -> range:
        """Global fine indices of coarse class ``coarse``."""
        return range(self.offsets[coarse], self.offsets[coarse + 1])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hierarchy) and self._groups == other._groups

    def __hash__(self) -> int:
        return hash(json.dumps(self._groups))

    def __repr__(self) -> str:
        return f"Hierarchy({self.num_coarse} coarse, {self.num_fine} fine)"

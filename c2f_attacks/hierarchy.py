"""Coarse-to-fine label hierarchy: M coarse classes, each owning a group of fine classes.

Fine classes live in one global index space ``0..K-1`` ordered group by group, so the fine
classes of coarse ``i`` are a contiguous block. Validation happens on construction and names the
offending class or group. :func:`hierarchy_difference` says in words how two hierarchies differ
(used wherever a model's hierarchy must match a dataset's or a user's).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from c2f_attacks._io import atomic_write_text

#: the two levels a C2F model decides at, one classifier each: the coarse class, then the fine
#: class within it (the *stages* that attacks target and LRP explains)
STAGES = ("coarse", "fine")


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """``json`` object hook: a repeated key would silently drop the earlier group."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r} (a coarse class listed twice)")
        seen.add(key)
    return dict(pairs)


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
            data = json.loads(path.read_text(), object_pairs_hook=_refuse_duplicate_keys)
        except FileNotFoundError:
            raise FileNotFoundError(f"hierarchy file {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"hierarchy file {path} is not valid JSON: {err}") from None
        except ValueError as err:  # the duplicate-key hook
            raise ValueError(f"hierarchy file {path}: {err}") from None
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

    def output_index(self, output_names: Sequence[str], what: str) -> list[int]:
        """Position in ``output_names`` (a flat model's outputs) of each fine class, in fine
        index order; a ValueError names how many fine classes ``what`` lacks and one of them."""
        position = {name: i for i, name in enumerate(output_names)}
        missing = [f for f in self.fine_names if f not in position]
        if missing:
            raise ValueError(
                f"{len(missing)} fine classes of the hierarchy are not in {what}, "
                f"e.g. {missing[0]!r}"
            )
        return [position[f] for f in self.fine_names]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hierarchy) and self._groups == other._groups

    def __hash__(self) -> int:
        return hash(json.dumps(self._groups))

    def __repr__(self) -> str:
        return f"Hierarchy({self.num_coarse} coarse, {self.num_fine} fine)"


def hierarchy_difference(a: Hierarchy, b: Hierarchy, names: tuple[str, str] = ("a", "b")) -> str:
    """How ``a`` and ``b`` differ, in words; ``""`` when they are equal.

    Names coarse classes and fine classes present in only one of them, fine classes whose coarse
    class differs, and, when the groups agree, the first index where the order differs (an order
    change relabels every index after it). At most three examples per kind.
    """
    if a == b:
        return ""
    na, nb = names

    def some(items) -> str:
        items = list(items)
        more = f" and {len(items) - 3} more" if len(items) > 3 else ""
        return ", ".join(repr(i) for i in items[:3]) + more

    parts = []
    for x, y, nx in ((a, b, na), (b, a, nb)):
        only = [c for c in x.coarse_names if c not in set(y.coarse_names)]
        if only:
            parts.append(f"coarse classes only in {nx}: {some(only)}")
        only = [f for f in x.fine_names if f not in set(y.fine_names)]
        if only:
            parts.append(f"fine classes only in {nx}: {some(only)}")
    coarse_a = {f: a.coarse_names[c] for f, c in zip(a.fine_names, a.fine_to_coarse.tolist())}
    coarse_b = {f: b.coarse_names[c] for f, c in zip(b.fine_names, b.fine_to_coarse.tolist())}
    moved = [
        f"{f!r} ({coarse_a[f]!r} in {na}, {coarse_b[f]!r} in {nb})"
        for f in a.fine_names
        if f in coarse_b and coarse_a[f] != coarse_b[f]
    ]
    if moved:
        more = f" and {len(moved) - 3} more" if len(moved) > 3 else ""
        parts.append("fine classes in another coarse class: " + ", ".join(moved[:3]) + more)
    if not parts:
        # Same classes in the same groups: only the order differs, which changes the indices.
        i = next(i for i, (fa, fb) in enumerate(zip(a.fine_names, b.fine_names)) if fa != fb)
        parts.append(
            f"same groups in another order: fine index {i} is {a.fine_names[i]!r} in {na}, "
            f"{b.fine_names[i]!r} in {nb}"
        )
    return "; ".join(parts)


def check_same_hierarchy(a: Hierarchy, b: Hierarchy, names: tuple[str, str]) -> None:
    """Raise ValueError naming the differences when ``a`` is not ``b``.

    ``names`` say what the two belong to, e.g. ``("model 'shapes-vgg16'", "dataset 'cifar10'")``.
    """
    diff = hierarchy_difference(a, b, names)
    if diff:
        raise ValueError(f"the hierarchies of {names[0]} and {names[1]} differ: {diff}")

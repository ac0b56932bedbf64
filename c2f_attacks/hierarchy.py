"""Coarse-to-fine label hierarchy: M coarse classes, each owning a group of fine classes.

Fine classes live in one global index space ``0..K-1`` ordered group by group, so the fine
classes of coarse ``i`` are a contiguous block. Validation happens on construction and names the
offending class or group. :func:`hierarchy_difference` says in words how two hierarchies differ
(used wherever a model's hierarchy must match a dataset's or a user's).

A hierarchy may carry a deeper **tree** over its fine classes: for every fine class the path of
its ancestors from the root down to its parent (e.g. a WordNet path). Without one, the tree is
the two-level one, root -> coarse class -> fine class. The tree defines :meth:`Hierarchy.severity`,
the height of the lowest common ancestor of two fine classes.

Dict / JSON forms (:meth:`Hierarchy.from_dict`, :meth:`Hierarchy.to_dict`):

- two levels: ``{coarse: [fine, ...], ...}``;
- with a tree: ``{"groups": {coarse: [fine, ...]}, "ancestors": {fine: [root, ..., parent]}}``,
  and optionally ``"about"``: a free-form description of where the hierarchy comes from, read
  and ignored (it is not part of the hierarchy: equality, hashes and ``to_dict`` leave it out).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from c2f_attacks._io import atomic_write_text
from c2f_attacks.errors import UserError

#: the two levels a C2F model decides at, one classifier each: the coarse class, then the fine
#: class within it (the *stages* that attacks target and LRP explains)
STAGES = ("coarse", "fine")


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """``json`` object hook: a repeated key would silently drop the earlier group."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise UserError(f"duplicate key {key!r} (a coarse class listed twice)")
        seen.add(key)
    return dict(pairs)


#: the keys of the dict form with a tree (a two-level hierarchy's lists can never be mappings)
_TREE_FORM_KEYS = ("groups", "ancestors", "about")


class Hierarchy:
    """M coarse classes, coarse ``i`` owning ``M_i`` fine classes (K = sum M_i in all).

    Build it with :meth:`from_dict` (``{coarse_name: [fine_name, ...]}``) or :meth:`from_json`.

    ``ancestors`` (optional): ``{fine: [root, ..., parent]}`` for every fine class, the tree
    above the fine classes. It must be a tree (one root, one parent per node, no fine class
    inside a path) in which every coarse class is a subtree: the lowest common ancestor of a
    group's classes is an ancestor of no other group's class. Then every mistake across coarse
    classes is more severe than every mistake inside the coarse classes involved.
    """

    def __init__(
        self,
        groups: Sequence[tuple[str, Sequence[str]]],
        ancestors: Mapping[str, Sequence[str]] | None = None,
    ):
        groups = [(coarse, list(fines)) for coarse, fines in groups]
        if not groups:
            raise UserError("hierarchy has no coarse classes")
        seen_coarse: set[str] = set()
        owner: dict[str, str] = {}
        for coarse, fines in groups:
            if not isinstance(coarse, str) or not coarse:
                raise UserError(f"coarse class name must be a non-empty string, got {coarse!r}")
            if coarse in seen_coarse:
                raise UserError(f"duplicate coarse class {coarse!r}")
            seen_coarse.add(coarse)
            if not fines:
                raise UserError(f"coarse class {coarse!r} has no fine classes (empty group)")
            for fine in fines:
                if not isinstance(fine, str) or not fine:
                    raise UserError(
                        f"fine class names must be non-empty strings; coarse class {coarse!r} "
                        f"has {fine!r}"
                    )
                if fine in owner:
                    where = (
                        f"twice in coarse class {coarse!r}"
                        if owner[fine] == coarse
                        else f"in two groups: {owner[fine]!r} and {coarse!r}"
                    )
                    raise UserError(f"fine class {fine!r} appears {where}")
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
        self._ancestors = None if ancestors is None else self._check_tree(ancestors)
        self._tree: tuple[torch.Tensor, torch.Tensor] | None = None  # built on first use

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_dict(cls, mapping: Mapping) -> Hierarchy:
        """From ``{coarse: [fine, ...]}`` or the form with a tree (module docstring)."""
        if not isinstance(mapping, Mapping):
            raise UserError(
                f"hierarchy must be a mapping {{coarse: [fine, ...]}}, got {type(mapping).__name__}"
            )
        ancestors = None
        if isinstance(mapping.get("groups"), Mapping):
            unknown = [k for k in mapping if k not in _TREE_FORM_KEYS]
            if unknown:
                raise UserError(
                    f"unknown key {unknown[0]!r} beside 'groups' (a hierarchy with a tree has "
                    f"the keys {', '.join(_TREE_FORM_KEYS)})"
                )
            ancestors = mapping.get("ancestors")
            if ancestors is not None and not isinstance(ancestors, Mapping):
                raise UserError(
                    "'ancestors' must map every fine class to its path [root, ..., parent], "
                    f"got {type(ancestors).__name__}"
                )
            mapping = mapping["groups"]
        for coarse, fines in mapping.items():
            if isinstance(fines, str) or not isinstance(fines, Sequence):
                raise UserError(
                    f"coarse class {coarse!r} must map to a list of fine class names, "
                    f"got {type(fines).__name__}"
                )
        return cls(list(mapping.items()), ancestors)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Hierarchy:
        path = Path(path)
        try:
            data = json.loads(path.read_text(), object_pairs_hook=_refuse_duplicate_keys)
        except FileNotFoundError:
            raise FileNotFoundError(f"hierarchy file {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise UserError(f"hierarchy file {path} is not valid JSON: {err}") from None
        except ValueError as err:  # the duplicate-key hook
            raise UserError(f"hierarchy file {path}: {err}") from None
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise UserError(f"hierarchy file {path}: {err}") from None

    def to_dict(self) -> dict:
        """``{coarse: [fine, ...]}`` for two levels (as it always was: checkpoints and model hashes
        stay the same); with a tree, ``{"groups": ..., "ancestors": ...}``."""
        groups = {coarse: list(fines) for coarse, fines in self._groups}
        if self._ancestors is None:
            return groups
        return {"groups": groups, "ancestors": {f: list(p) for f, p in self._ancestors.items()}}

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
        fine_idx = self._checked_fine(torch.as_tensor(fine_idx))
        return self._fine_to_coarse.to(fine_idx.device)[fine_idx]

    def group_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """BoolTensor (M, K): row i marks the fine classes of coarse i."""
        f2c = self._fine_to_coarse.to(device)
        return f2c.unsqueeze(0) == torch.arange(self.num_coarse, device=device).unsqueeze(1)

    def fines_of(self, coarse: int) -> range:
        """Global fine indices of coarse class ``coarse``."""
        return range(self.offsets[coarse], self.offsets[coarse + 1])

    def output_index(self, output_names: Sequence[str], what: str) -> list[int]:
        """Position in ``output_names`` (a flat model's outputs) of each fine class, in fine
        index order; a ValueError names how many fine classes ``what`` lacks and the first."""
        position = {name: i for i, name in enumerate(output_names)}
        missing = [f for f in self.fine_names if f not in position]
        if missing:
            raise UserError(
                f"{len(missing)} fine classes of the hierarchy are not in {what}; the first is "
                f"{missing[0]!r}"
            )
        return [position[f] for f in self.fine_names]

    # ----------------------------------------------------------------- tree and severity
    @property
    def ancestors(self) -> dict[str, tuple[str, ...]] | None:
        """``{fine: (root, ..., parent)}`` when the hierarchy carries a tree, else None (the
        two-level tree root -> coarse -> fine)."""
        return None if self._ancestors is None else dict(self._ancestors)

    def severity(self, fine_a: torch.Tensor, fine_b: torch.Tensor) -> torch.Tensor:
        """Mistake severity: the height of the lowest common ancestor of fine classes ``fine_a``
        and ``fine_b`` (global fine indices, broadcast together), as a LongTensor on their device.

        The height of a node is the length of the longest path from it down to a fine class of
        this hierarchy (fine classes: 0), so the same class gives 0. Two levels: 1 inside a
        coarse class, 2 across.
        """
        a = self._checked_fine(torch.as_tensor(fine_a))
        b = self._checked_fine(torch.as_tensor(fine_b))
        if self._tree is None:
            self._tree = _path_table(self._tree_paths())
        table, height = (t.to(a.device) for t in self._tree)
        a, b = torch.broadcast_tensors(a, b)
        path_a, path_b = table[a], table[b]  # (..., depth): node ids, -1 past the class
        shared = ((path_a == path_b) & (path_a >= 0)).long().cumprod(dim=-1).sum(dim=-1)
        lca = path_a.gather(-1, (shared - 1).unsqueeze(-1)).squeeze(-1)  # the root is shared
        return height[lca]

    def _checked_fine(self, fine_idx: torch.Tensor) -> torch.Tensor:
        if fine_idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise TypeError(f"fine indices must be integers, got dtype {fine_idx.dtype}")
        if fine_idx.numel() and (fine_idx.min() < 0 or fine_idx.max() >= self.num_fine):
            bad = fine_idx[(fine_idx < 0) | (fine_idx >= self.num_fine)].flatten()[0].item()
            raise ValueError(f"fine index {bad} is outside 0..{self.num_fine - 1}")
        return fine_idx.long()

    def _tree_paths(self) -> list[list[str | int]]:
        """Every fine class's path from the root to itself; the two-level tree when none was
        given (nodes named by position, so no name can clash)."""
        if self._ancestors is None:
            coarse = self._fine_to_coarse.tolist()
            return [[-1, -2 - coarse[i], i] for i in range(self.num_fine)]
        return [[*self._ancestors[f], f] for f in self.fine_names]

    def _check_tree(self, ancestors: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
        """The ancestor paths as tuples in fine index order, or ValueError naming the problem."""
        fines = set(self.fine_names)
        extra = [f for f in ancestors if f not in fines]
        if extra:
            raise UserError(f"ancestor path given for {extra[0]!r}, which is not a fine class")
        paths: dict[str, tuple[str, ...]] = {}
        for fine in self.fine_names:
            if fine not in ancestors:
                raise UserError(f"fine class {fine!r} has no ancestor path")
            path = ancestors[fine]
            if isinstance(path, str) or not isinstance(path, Sequence) or not path:
                raise UserError(
                    f"the ancestor path of {fine!r} must be a non-empty list [root, ..., parent], "
                    f"got {path!r}"
                )
            for node in path:
                if not isinstance(node, str) or not node:
                    raise UserError(
                        f"ancestor nodes must be non-empty strings; the path of {fine!r} has "
                        f"{node!r}"
                    )
                if node in fines:
                    raise UserError(
                        f"fine class {node!r} appears inside the ancestor path of {fine!r} "
                        "(fine classes are the leaves)"
                    )
            if len(set(path)) != len(path):
                twice = next(n for n in path if path.count(n) > 1)
                raise UserError(f"node {twice!r} appears twice in the ancestor path of {fine!r}")
            paths[fine] = tuple(path)
        first = self.fine_names[0]
        parent: dict[str, tuple[str, str]] = {}  # node -> (its parent, the fine class that says so)
        for fine, path in paths.items():
            if path[0] != paths[first][0]:
                raise UserError(
                    f"the ancestor paths have two roots: {paths[first][0]!r} (path of {first!r}) "
                    f"and {path[0]!r} (path of {fine!r})"
                )
            for up, node in itertools.pairwise(path):
                known = parent.setdefault(node, (up, fine))
                if known[0] != up:
                    raise UserError(
                        f"node {node!r} has two parents: {known[0]!r} (path of {known[1]!r}) and "
                        f"{up!r} (path of {fine!r}); the ancestors must form a tree"
                    )
        self._check_groups_are_subtrees(paths)
        return paths

    def _check_groups_are_subtrees(self, paths: Mapping[str, tuple[str, ...]]) -> None:
        groups_under: dict[str, set[int]] = {}  # node -> coarse classes with a fine class below it
        for fine, c in zip(self.fine_names, self._fine_to_coarse.tolist()):
            for node in paths[fine]:
                groups_under.setdefault(node, set()).add(c)
        for c, (coarse, fines) in enumerate(self._groups):
            if len(fines) < 2:
                continue  # the class itself is the group's subtree
            lca = _common_prefix([paths[f] for f in fines])[-1]
            others = groups_under[lca] - {c}
            if others:
                other = self.coarse_names[min(others)]
                example = next(
                    f for f in self.fine_names if lca in paths[f] and f not in set(fines)
                )
                raise UserError(
                    f"coarse class {coarse!r} is not a subtree of the ancestor tree: its lowest "
                    f"common ancestor {lca!r} is also above {example!r} of coarse class {other!r}"
                )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Hierarchy)
            and self._groups == other._groups
            and self._ancestors == other._ancestors
        )

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict()))

    def __repr__(self) -> str:
        return f"Hierarchy({self.num_coarse} coarse, {self.num_fine} fine)"


def _common_prefix(paths: Sequence[Sequence[str]]) -> Sequence[str]:
    """The longest path that starts every path of ``paths``."""
    shortest = min(paths, key=len)
    for i, node in enumerate(shortest):
        if any(p[i] != node for p in paths):
            return shortest[:i]
    return shortest


def _path_table(paths: Sequence[Sequence[str | int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(table, height)`` of a tree given by each leaf's path root -> ... -> leaf: ``table``
    (K, depth) holds node ids along each path (-1 past the leaf), ``height`` each node's longest
    way down to a leaf. Memory grows as K * depth; a severity lookup then costs depth per pair."""
    ids: dict[str | int, int] = {}
    depth = max(len(p) for p in paths)
    rows = [[ids.setdefault(n, len(ids)) for n in p] + [-1] * (depth - len(p)) for p in paths]
    height = [0] * len(ids)
    for path in paths:
        for up, node in enumerate(path):
            height[ids[node]] = max(height[ids[node]], len(path) - 1 - up)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(height, dtype=torch.long)


def hierarchy_difference(a: Hierarchy, b: Hierarchy, names: tuple[str, str] = ("a", "b")) -> str:
    """How ``a`` and ``b`` differ, in words; ``""`` when they are equal.

    Names coarse classes and fine classes present in only one of them, fine classes whose coarse
    class differs, and, when the groups agree, the first index where the order differs (an order
    change relabels every index after it). At most three examples per kind. Then how the
    ancestor trees differ: one has none, or the first shared fine class whose path differs.
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
        # Same classes in the same groups: the order may differ, which changes the indices.
        pairs = enumerate(zip(a.fine_names, b.fine_names))
        i = next((i for i, (fa, fb) in pairs if fa != fb), None)
        if i is not None:
            parts.append(
                f"same groups in another order: fine index {i} is {a.fine_names[i]!r} in {na}, "
                f"{b.fine_names[i]!r} in {nb}"
            )
    return "; ".join(parts + _tree_difference(a, b, names))


def _tree_difference(a: Hierarchy, b: Hierarchy, names: tuple[str, str]) -> list[str]:
    """The ancestor trees' difference in words (at most one part), over the shared fine classes."""
    ta, tb = a.ancestors, b.ancestors
    if ta is None and tb is None:
        return []
    if ta is None or tb is None:
        has, lacks = (names[1], names[0]) if ta is None else names
        return [f"{has} has an ancestor tree, {lacks} has none (two levels)"]
    differ = [f for f in a.fine_names if f in tb and ta[f] != tb[f]]
    if not differ:
        return []
    f = differ[0]
    more = f" ({len(differ)} fine classes in all)" if len(differ) > 1 else ""
    return [
        f"the ancestor path of {f!r} differs: {' > '.join(ta[f])} in {names[0]}, "
        f"{' > '.join(tb[f])} in {names[1]}{more}"
    ]


def check_same_hierarchy(a: Hierarchy, b: Hierarchy, names: tuple[str, str]) -> None:
    """Raise ValueError naming the differences when ``a`` is not ``b``.

    ``names`` say what the two belong to, e.g. ``("model 'shapes-vgg16'", "dataset 'cifar10'")``.
    """
    diff = hierarchy_difference(a, b, names)
    if diff:
        raise UserError(f"the hierarchies of {names[0]} and {names[1]} differ: {diff}")

"""Targets of a targeted attack: checking requested classes, and choosing them by a policy.

A targeted call ``atk(x, target=T)`` asks each image's attacked stage to decide the class
``T[i]``: a coarse index on the coarse stage, a global fine index on the fine stage, a class
index on a flat model. ``T`` may also name a policy (:data:`TARGET_POLICIES`), which chooses
each image's class from its clean predictions, never the clean decision itself:

- ``random``: uniform over the stage's other classes;
- ``least_likely``: the class with the lowest decision logit at the clean image (Kurakin et al.
  2017; the fine stage's decision logits are the consistent view of
  :func:`~c2f_attacks.attacks.stage.consistent_fine_logits`, so its least likely class is the
  last one the C2F decision would reach);
- ``nearest`` / ``farthest``: uniform over the other classes at the smallest / largest
  hierarchical distance from the clean decision. On the fine stage the distance is the
  mistake severity :meth:`~c2f_attacks.Hierarchy.severity` (two levels: ``nearest`` stays in
  the superclass, ``farthest`` leaves it). On the coarse stage it is the height of the lowest
  common ancestor of two coarse classes in the hierarchy's tree (the severity of any pair of
  their fine classes): on a two-level hierarchy every other superclass is equally far, so both
  policies draw exactly as ``random`` does; on a deeper tree (BREEDS) they separate siblings
  from distant branches. Flat models have no hierarchy: these two policies need a C2F model.

Random choices are counter-based (:mod:`~c2f_attacks.attacks.noise`): image i's target is a
function of ``(seed, index[i])`` and its clean predictions only, whatever the batch or the
number of processes. Among ``m`` candidates the draw is ``hash mod m`` of a 32-bit hash (a bias
below ``m / 2**32``).

Every bad target is a :class:`~c2f_attacks.errors.UserError` whose one line names the value.
"""

from __future__ import annotations

import torch

from c2f_attacks.attacks.noise import hash32
from c2f_attacks.attacks.predictions import Predictions
from c2f_attacks.attacks.stage import StageView
from c2f_attacks.errors import UserError
from c2f_attacks.models.base import C2FOutput

TARGET_POLICIES = ("random", "least_likely", "nearest", "farthest")
#: separates the target draws from every other counter-based stream of the same seed
_STREAM = 0x7A76E7


def check_target(target: object, n: int, num_classes: int | None, stage: str | None) -> None:
    """Raise unless ``target`` is an integer tensor (N,) in the stage's label space
    (``0..num_classes-1``; None: unknown yet, a flat model before its first forward), naming the
    first bad image and value."""
    space = {"coarse": "coarse indices", "fine": "global fine indices"}.get(stage, "class indices")
    if not isinstance(target, torch.Tensor):
        raise UserError(f"target must be a policy ({', '.join(TARGET_POLICIES)}) or a tensor of "
                        f"{space}, got {type(target).__name__}")  # fmt: skip
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise UserError(f"target must be an integer tensor of {space}, got dtype {target.dtype}")
    if target.shape != (n,):
        raise UserError(f"target must have shape ({n},), one class per image, got "
                         f"{tuple(target.shape)}")  # fmt: skip
    if num_classes is not None and n:
        outside = ((target < 0) | (target >= num_classes)).nonzero()
        if outside.numel():
            i = int(outside[0])
            raise UserError(f"target of image {i} is {int(target[i])}, outside the "
                             f"{stage or 'flat'} stage's {space} 0..{num_classes - 1}")  # fmt: skip


def check_not_clean(target: torch.Tensor, clean: Predictions, stage: str | None) -> None:
    """Raise when an image's requested class is already its clean decision (nothing to do)."""
    same = (target == clean.stage).nonzero()
    if same.numel():
        i = int(same[0])
        raise UserError(f"target of image {i} is {int(target[i])}, which the {stage or 'flat'} "
                         "stage already decides on the clean image")  # fmt: skip


def choose_targets(
    policy: str,
    view: StageView,
    logits: torch.Tensor,
    out: C2FOutput | None,
    clean: Predictions,
    index: torch.Tensor,
    seed: int,
) -> torch.Tensor:
    """(N,) targets by ``policy`` (module docstring) from the clean ``logits`` (stage logits),
    ``out`` (the C2F output, None on a flat model) and predictions, for the images ``index``."""
    if policy not in TARGET_POLICIES:
        raise UserError(f"unknown target policy {policy!r}; choose from "
                         f"{', '.join(TARGET_POLICIES)}")  # fmt: skip
    n, k = logits.shape
    if k < 2:
        raise UserError(f"the {view.stage or 'flat'} stage has one class: no other to target")
    others = torch.ones(n, k, dtype=torch.bool, device=logits.device)
    others[torch.arange(n, device=logits.device), clean.stage] = False
    if policy == "least_likely":
        scores = view.decision_logits(logits, out).detach()
        return scores.masked_fill(~others, float("inf")).argmin(dim=1)
    if policy == "random":
        return _draw(others, index, seed)
    if not view.is_c2f:
        raise UserError(f"target policy {policy!r} needs a hierarchy: use it on a C2F model")
    distance = _distances(view, clean).masked_fill(~others, -1)
    best = distance.masked_fill(~others, torch.iinfo(torch.long).max).amin(dim=1, keepdim=True)
    if policy == "farthest":
        best = distance.amax(dim=1, keepdim=True)
    return _draw(distance == best, index, seed)


def _distances(view: StageView, clean: Predictions) -> torch.Tensor:
    """(N, K_stage): hierarchical distance of every class of the stage from the clean decision."""
    hierarchy = view.model.hierarchy
    if view.stage == "fine":
        classes = torch.arange(hierarchy.num_fine, device=clean.fine.device)
        return hierarchy.severity(clean.fine[:, None], classes[None, :])
    # a coarse class stands for any of its fine classes: the first one
    first = hierarchy.group_mask(clean.coarse.device).long().argmax(dim=1)
    return hierarchy.severity(first[clean.coarse][:, None], first[None, :])


def _draw(candidates: torch.Tensor, index: torch.Tensor, seed: int) -> torch.Tensor:
    """Per row, one of the True columns of ``candidates`` (N, K), chosen by a counter-based
    hash of ``(seed, index[i])``: the ``hash mod count``-th of them."""
    key = hash32(torch.tensor((seed & 0xFFFFFFFF) ^ _STREAM, dtype=torch.int64))
    bits = hash32(key.to(index.device) ^ hash32(index.to(torch.int64)))
    count = candidates.sum(dim=1)
    rank = bits % count  # count >= 1: a stage has at least two classes
    position = candidates.long().cumsum(dim=1) - 1  # rank of each candidate among its row's
    return (candidates & (position == rank[:, None])).long().argmax(dim=1)

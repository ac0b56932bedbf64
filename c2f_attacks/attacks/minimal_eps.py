"""Per-image search for the smallest l-inf budget at which an eps-bounded attack succeeds.

Bisection on a per-image eps tensor: start from ``[0, eps_max]``; run the attack once at
``eps_max``; then ``search_steps`` times run it at each image's midpoint, keep the adversarial
image of every success and move that image's upper end down, otherwise its lower end up. Every
run is one batched attack call (only images that succeeded at ``eps_max`` take part), so after
``s`` steps each image's eps is within ``eps_max / 2**s`` of the smallest successful budget the
attack finds (bisection assumes success is monotone in eps, as it nearly always is).

Every run starts from the clean image, so what a run computes there before its first step (the
loss gradient and predictions at x, a mask chosen at x) is the same in every run: the first run
keeps it in a :class:`RunStart` and the later ones reuse it instead of calling the model again
(queries count the calls made, so the reused ones count once).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

#: run(rows, eps) -> (x_adv, success, first-success step) for the batch rows ``rows`` at per-row
#: budgets ``eps``
RunAtEps = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def bisect_eps(
    run: RunAtEps, n: int, eps_max: float, search_steps: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_adv (N, ...), eps (N,), first-success step (N,))``: the adversarial image at the
    smallest successful eps found, with its run's step; images that fail even at ``eps_max`` keep
    their ``eps_max`` attempt and ``eps = eps_max``."""
    rows = torch.arange(n, device=device)
    hi = torch.full((n,), float(eps_max), device=device)
    x_adv, success, first = run(rows, hi)
    x_adv, first = x_adv.clone(), first.clone()
    lo = torch.zeros_like(hi)
    searched = success.nonzero().squeeze(1)
    for _ in range(search_steps):
        if searched.numel() == 0:
            break
        mid = (lo[searched] + hi[searched]) / 2
        candidate, ok, step = run(searched, mid)
        won = searched[ok]
        x_adv[won], first[won] = candidate[ok], step[ok]
        hi[won] = mid[ok]
        lo[searched[~ok]] = mid[~ok]
    return x_adv, hi, first


class RunStart:
    """Values computed at the clean batch of one bisection (``n`` caller rows), kept under a key
    by the first run and served to later runs for any subset of the rows it covered.

    A value is a tensor or anything indexable by a row index tensor (predictions), with one
    leading row per kept caller row."""

    def __init__(self, n: int, device: torch.device):
        self._rows = torch.arange(n, device=device)
        self._kept: dict[Hashable, tuple[torch.Tensor, tuple]] = {}

    def get(self, key: Hashable, rows: torch.Tensor | None) -> tuple | None:
        """The values kept under ``key`` for the caller rows ``rows`` (None: all), or None when
        nothing is kept for one of them."""
        if key not in self._kept:
            return None
        position, values = self._kept[key]
        at = position if rows is None else position[rows]
        if bool((at < 0).any()):
            return None
        return tuple(v[at] for v in values)

    def keep(self, key: Hashable, rows: torch.Tensor | None, *values) -> None:
        """Keep ``values`` (one row per caller row of ``rows``; None: all) under ``key``, unless
        a run before kept it."""
        if key in self._kept:
            return
        rows = self._rows if rows is None else rows
        position = torch.full_like(self._rows, -1)
        position[rows] = torch.arange(len(rows), device=rows.device)
        self._kept[key] = (position, values)

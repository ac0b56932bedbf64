"""Per-image search for the smallest l-inf budget at which an eps-bounded attack succeeds.

Bisection on a per-image eps tensor: start from ``[0, eps_max]``; run the attack once at
``eps_max``; then ``search_steps`` times run it at each image's midpoint, keep the adversarial
image of every success and move that image's upper end down, otherwise its lower end up. Every
run is one batched attack call (only images that succeeded at ``eps_max`` take part), so after
``s`` steps each image's eps is within ``eps_max / 2**s`` of the smallest successful budget the
attack finds (bisection assumes success is monotone in eps, as it nearly always is).
"""

from __future__ import annotations

from collections.abc import Callable

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

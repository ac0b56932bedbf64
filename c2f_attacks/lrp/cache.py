"""Rule parameters kept across explanations while the model's parameters are unchanged.

A rule's modified parameters (``W+``, a BatchNorm merged into its convolution, ...) are
functions of the layer's parameters alone. Recomputing them on every call is a pass over every
weight of the model, paid again at every step of an attack that explains the same model.
:func:`cached` keeps them per layer, checked against the rule and a *stamp* of the source
tensors.

What the stamp sees:

* an in-place change through autograd's view of a tensor (a ``torch.optim`` step,
  ``load_state_dict``, ``copy_`` under ``torch.no_grad``): it bumps the tensor's version;
* ``module.to(...)``, ``half()``, a new ``nn.Parameter``: new storage, or a new dtype or
  layout. An entry keeps its sources' storage alive, so no later tensor can take over a freed
  address (and with it a stale entry) while the entry exists;
* any optimizer step (fused optimizers update parameters without bumping their versions): a
  global step count, bumped by a ``torch.optim`` post-step hook;
* BatchNorm running statistics, which the batch-norm kernel updates in place without bumping
  their versions: the caller adds the BatchNorm module's ``num_batches_tracked`` counter, which
  its forward bumps whenever it updates them (a BatchNorm without that counter is not cached).

Not seen: writes through ``tensor.data``, which bypass the version counter by design; write
through the tensor itself under ``torch.no_grad()`` instead. Entries live as long as their layer.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

T = TypeVar("T")

#: layer -> {slot: (stamp of the sources, aliases pinning their storage, value)}
_ENTRIES: weakref.WeakKeyDictionary[nn.Module, dict[Hashable, tuple]] = weakref.WeakKeyDictionary()
_optimizer_steps = 0


def _count_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_step)


def _stamp(t: torch.Tensor | None) -> tuple | None:
    if t is None:
        return None
    return (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape), t.stride())


def cached(
    layer: nn.Module,
    slot: Hashable,
    sources: Sequence[torch.Tensor | None],
    compute: Callable[[], T],
    detail: Hashable = None,
) -> T:
    """``compute()``, a function of the tensors ``sources`` and of ``detail`` alone, reused for
    ``layer`` as long as none of ``sources`` changed (see the module docstring) and ``detail`` is
    the same. A layer keeps one value per ``slot``, so that a caller whose ``detail`` differs
    from call to call (a rule's settings) replaces the entry instead of adding one each time."""
    stamp = (_optimizer_steps, detail, *(_stamp(t) for t in sources))
    entries = _ENTRIES.setdefault(layer, {})
    hit = entries.get(slot)
    if hit is not None and hit[0] == stamp:
        return hit[2]
    with torch.no_grad():
        value = compute()
    entries[slot] = (stamp, tuple(t.detach() for t in sources if t is not None), value)
    return value

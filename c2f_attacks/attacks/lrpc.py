"""LRPC: the LRP-guided attack on the coarse stage.

Explains the clean coarse decision c, perturbs only its top-k relevant pixels (or those of
another mask source, ``mask=``) with signed steps on the coarse margin
``z_c - max_{j != c} z_j`` plus ``lambda`` times the masked relevance of c, refreshes the mask
every ``refresh`` steps, and stops each image when its coarse prediction flips. The scheme, its
modes (unbounded, eps-constrained, minimal eps) and its cost are in
:mod:`c2f_attacks.attacks.lrp_guided`.

Defaults: :data:`LRPC_DEFAULTS` = the shared ``SHARED_DEFAULTS`` of
:mod:`~c2f_attacks.attacks.lrp_guided` (k=0.1, alpha=4/255, steps=20, lambda=0, r=5).
"""

from __future__ import annotations

from torch import nn

from c2f_attacks.attacks.criteria import Criterion
from c2f_attacks.attacks.lrp_guided import SHARED_DEFAULTS, LRPGuidedAttack
from c2f_attacks.attacks.registry import register_attack
from c2f_attacks.lrp.explain import DEFAULT_COMPOSITE

LRPC_DEFAULTS = dict(SHARED_DEFAULTS)


@register_attack
class LRPC(LRPGuidedAttack):
    """``LRPC(model)``: flip the coarse label of a C2F model through its most relevant pixels."""

    name = "lrpc"
    stages = ("coarse",)

    def __init__(
        self,
        model: nn.Module,
        top_k: float = LRPC_DEFAULTS["top_k"],
        alpha: float = LRPC_DEFAULTS["alpha"],
        steps: int = LRPC_DEFAULTS["steps"],
        lam: float = LRPC_DEFAULTS["lam"],
        refresh: int = LRPC_DEFAULTS["refresh"],
        eps: float | None = None,
        minimal_eps: bool = False,
        search_steps: int = 8,
        mask: str = "lrp",
        relevance_grad: str = "refresh",
        composite: str = DEFAULT_COMPOSITE,
        seed: int = 0,
        memory_format: str = "auto",
        criterion: str | Criterion | None = None,
    ):
        super().__init__(
            model, top_k=top_k, alpha=alpha, steps=steps, lam=lam, refresh=refresh, eps=eps,
            minimal_eps=minimal_eps, search_steps=search_steps, mask=mask,
            relevance_grad=relevance_grad, composite=composite, seed=seed,
            memory_format=memory_format, criterion=criterion,
        )  # fmt: skip

"""LRPC: the LRP-guided attack on the coarse stage (design.md section 5).

Explains the clean coarse decision c, perturbs only its top-k relevant pixels with signed steps
on the coarse margin ``z_c - max_{j != c} z_j`` plus ``lambda`` times the masked relevance of c,
refreshes the mask every ``refresh`` steps, and stops each image when its coarse prediction
flips. The scheme and its cost are in :mod:`c2f_attacks.attacks.lrp_guided`.

Defaults: :data:`LRPC_DEFAULTS` = the shared ``SHARED_DEFAULTS`` of
:mod:`~c2f_attacks.attacks.lrp_guided` (k=0.15, alpha=2/255, steps=200, lambda=1, r=20), chosen
by measurement on the shipped ``shapes-vgg16`` (how and why: that module and
results/attacks_shapes.md).
"""

from __future__ import annotations

from torch import nn

from c2f_attacks.attacks.lrp_guided import SHARED_DEFAULTS, LRPGuidedAttack
from c2f_attacks.attacks.relevance import DEFAULT_COMPOSITE

LRPC_DEFAULTS = dict(SHARED_DEFAULTS)


class LRPC(LRPGuidedAttack):
    """``LRPC(model)``: flip the coarse label of a C2F model through its most relevant pixels."""

    attacked_stage = "coarse"

    def __init__(
        self,
        model: nn.Module,
        top_k: float = LRPC_DEFAULTS["top_k"],
        alpha: float = LRPC_DEFAULTS["alpha"],
        steps: int = LRPC_DEFAULTS["steps"],
        lam: float = LRPC_DEFAULTS["lam"],
        refresh: int = LRPC_DEFAULTS["refresh"],
        eps: float | None = None,
        relevance_grad: str = "refresh",
        composite: str = DEFAULT_COMPOSITE,
        seed: int = 0,
    ):
        super().__init__(
            model, top_k=top_k, alpha=alpha, steps=steps, lam=lam, refresh=refresh, eps=eps,
            relevance_grad=relevance_grad, composite=composite, seed=seed,
        )  # fmt: skip

"""Adversarial attacks on flat and coarse-to-fine classifiers, torchattacks style.

``atk = PGD(model, ...)``; ``res = atk(x, y=None, index=None)`` -> :class:`AttackResult` with
``x_adv``, per-image ``success``, clean/adversarial predictions and the cost.
"""

from c2f_attacks.attacks.base import Attack, AttackResult, AttackSanityError
from c2f_attacks.attacks.fgsm import FGSM
from c2f_attacks.attacks.lrpc import LRPC, LRPC_DEFAULTS
from c2f_attacks.attacks.lrpf import LRPF, LRPF_DEFAULTS
from c2f_attacks.attacks.pgd import PGD

__all__ = [
    "FGSM",
    "LRPC",
    "LRPC_DEFAULTS",
    "LRPF",
    "LRPF_DEFAULTS",
    "PGD",
    "Attack",
    "AttackResult",
    "AttackSanityError",
]  # fmt: skip

"""Adversarial attacks on flat and coarse-to-fine classifiers, torchattacks style.

``atk = PGD(model, ...)``; ``res = atk(x, y=None, index=None, object_mask=None)`` ->
:class:`AttackResult` with ``x_adv``, per-image ``success`` (by the attack's criterion against
the clean predictions), ``misclassified``, clean/adversarial predictions, the cost, the eps and
the first-success step. On C2F models ``y`` is the global fine label.
"""

from c2f_attacks.attacks.base import Attack, AttackResult, AttackSanityError
from c2f_attacks.attacks.criteria import (
    Criterion,
    FineChangedCoarseKept,
    StageChanged,
    criterion_for,
)
from c2f_attacks.attacks.external import TorchattacksAttack
from c2f_attacks.attacks.fgsm import FGSM
from c2f_attacks.attacks.layout import MEMORY_FORMATS
from c2f_attacks.attacks.lrpc import LRPC, LRPC_DEFAULTS
from c2f_attacks.attacks.lrpf import LRPF, LRPF_DEFAULTS
from c2f_attacks.attacks.masks import MASKS
from c2f_attacks.attacks.pgd import PGD
from c2f_attacks.attacks.stage import STAGES, Predictions

__all__ = [
    "FGSM", "LRPC", "LRPC_DEFAULTS", "LRPF", "LRPF_DEFAULTS", "MASKS", "MEMORY_FORMATS", "PGD",
    "STAGES", "Attack", "AttackResult", "AttackSanityError", "Criterion", "FineChangedCoarseKept",
    "Predictions", "StageChanged", "TorchattacksAttack", "criterion_for",
]  # fmt: skip

"""Adversarial attacks on flat and coarse-to-fine classifiers, torchattacks style.

``atk = PGD(model, ...)``; ``res = atk(x, y=None, index=None, object_mask=None, target=None)``
-> :class:`AttackResult` with ``x_adv``, per-image ``success`` (by the call's criterion against
the clean predictions), ``misclassified``, clean/adversarial predictions, the cost, the budget
and the first-success step. On C2F models ``y`` is the global fine label. ``target`` (requested
classes in the stage's label space, or a policy of :data:`TARGET_POLICIES`) makes the call
targeted: success is then ``target_reached``.

Every attack is registered by name: ``list_attacks()``, ``attack_info(name)``,
``create_attack(name, model, **settings)``; ``torchattacks:NAME`` and ``adv_lib:NAME`` resolve
through their adapters.
"""

from c2f_attacks.attacks.base import Attack, AttackResult, AttackSanityError
from c2f_attacks.attacks.criteria import (
    CRITERIA,
    Criterion,
    FineChangedCoarseKept,
    StageChanged,
    TargetReached,
    get_criterion,
)
from c2f_attacks.attacks.external import AdvLibAttack, TorchattacksAttack
from c2f_attacks.attacks.fgsm import FGSM
from c2f_attacks.attacks.layout import MEMORY_FORMATS
from c2f_attacks.attacks.lrpc import LRPC, LRPC_DEFAULTS
from c2f_attacks.attacks.lrpf import LRPF, LRPF_DEFAULTS
from c2f_attacks.attacks.masks import MASK_SOURCES
from c2f_attacks.attacks.pgd import PGD
from c2f_attacks.attacks.predictions import Predictions, predict, predictions_of
from c2f_attacks.attacks.registry import (
    NORMS,
    PROTOCOLS,
    AttackInfo,
    Setting,
    attack_info,
    create_attack,
    list_attacks,
)
from c2f_attacks.attacks.stage import STAGES, consistent_fine_logits
from c2f_attacks.attacks.targets import TARGET_POLICIES, choose_targets

__all__ = [
    "CRITERIA", "FGSM", "LRPC", "LRPC_DEFAULTS", "LRPF", "LRPF_DEFAULTS", "MASK_SOURCES",
    "MEMORY_FORMATS", "NORMS", "PGD", "PROTOCOLS", "STAGES", "TARGET_POLICIES", "AdvLibAttack",
    "Attack", "AttackInfo", "AttackResult", "AttackSanityError", "Criterion",
    "FineChangedCoarseKept", "Predictions", "Setting", "StageChanged", "TargetReached",
    "TorchattacksAttack", "attack_info", "choose_targets", "consistent_fine_logits",
    "create_attack", "get_criterion", "list_attacks", "predict", "predictions_of",
]  # fmt: skip

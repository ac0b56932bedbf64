"""External attack libraries through adapters that declare what each attack is:
``torchattacks:NAME`` (:mod:`.torchattacks_adapter`) and ``adv_lib:NAME``
(:mod:`.adv_lib_adapter`), both on the stage view and protocols of :mod:`.base`."""

from c2f_attacks.attacks.external.adv_lib_adapter import ADV_LIB, AdvLibAttack
from c2f_attacks.attacks.external.base import ExternalAttack, ExternalSpec, StageModel
from c2f_attacks.attacks.external.torchattacks_adapter import TORCHATTACKS, TorchattacksAttack

__all__ = ["ADV_LIB", "TORCHATTACKS", "AdvLibAttack", "ExternalAttack", "ExternalSpec",
           "StageModel", "TorchattacksAttack"]  # fmt: skip

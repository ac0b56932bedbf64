"""torchattacks attacks as baselines against one stage of a C2F model (or a flat model).

``TorchattacksAttack(model, "APGD", stage="coarse", eps=8/255)`` builds
``torchattacks.APGD(stage_model, eps=8/255)`` on the stage view of
:mod:`~c2f_attacks.attacks.external.base` and runs it through our :class:`Attack` call (so the
success rule, validation and sanity checks are ours). Registry name: ``torchattacks:APGD``.

:data:`TORCHATTACKS` declares each supported attack: budgeted l-inf attacks (FGSM, PGD, APGD,
Square, AutoAttack, ...: ``eps``), budgeted l2 attacks (PGDL2, ...), minimum-norm attacks (CW and
DeepFool in l2; FAB in its ``norm=``; SparseFool and JSMA in l0) and the sparse attacks
OnePixel and Pixle (l0; they search their own pixel set, so ``minimal`` runs them once).
VANILA and GN (no attack, noise), EADL1/EADEN (l1, a norm we do not measure), MultiAttack
(a combinator) and LGV (needs training data) are left out.

Constructor arguments ``n_classes`` (FAB, APGDT, AutoAttack) default to the stage's number of
classes rather than torchattacks' 10: the registry declares their default None, which the
adapter fills in when it is built (``settings["n_classes"]``; a flat model keeps torchattacks'
default), so a run's row records the count used. A targeted call runs the attack in
``set_mode_targeted_by_function`` with the clean labels and a function returning the requested
classes (``set_mode_targeted_by_label`` would hand FAB the targets as its clean labels, and FAB
then attacks no image); attacks whose ``supported_mode`` lacks "targeted", such as DeepFool,
APGD, AutoAttack and SparseFool, refuse ``target=`` (declared in :data:`TORCHATTACKS`, so
that a run plans no targeted row for them; a test keeps the declarations in step with
torchattacks). The batch is handed over contiguous by default
(``memory_format="contiguous"``): several torchattacks attacks (FAB, SparseFool) ``.view`` their
inputs, which fails on channels-last tensors. torchattacks is an optional extra:
``pip install c2f-attacks[baselines]``.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from importlib import metadata
from types import MappingProxyType
from typing import Any

import torch

from c2f_attacks.attacks.external.base import (
    BUDGET,
    MINIMUM_NORM,
    ExternalAttack,
    ExternalSpec,
    register_adapter,
)
from c2f_attacks.attacks.registry import Setting, settings_of
from c2f_attacks.errors import MissingExtraError, UserError

_LINF, _L2 = ExternalSpec(BUDGET, "linf"), ExternalSpec(BUDGET, "l2")
_NORMED = ExternalSpec(BUDGET, None, norm_setting="norm")
TORCHATTACKS = MappingProxyType({
    **dict.fromkeys(("FGSM", "BIM", "RFGSM", "PGD", "EOTPGD", "FFGSM", "MIFGSM", "UPGD",
                     "DIFGSM", "TIFGSM", "Jitter", "NIFGSM", "PGDRS", "SINIFGSM", "VMIFGSM",
                     "VNIFGSM", "SPSA"), _LINF),
    "TPGD": replace(_LINF, targetable=False),
    "PIFGSM": ExternalSpec(BUDGET, "linf", eps="max_epsilon", targetable=False),
    "PIFGSMPP": ExternalSpec(BUDGET, "linf", eps="max_epsilon"),
    **dict.fromkeys(("PGDL2", "PGDRSL2"), _L2),
    "Square": _NORMED,
    **dict.fromkeys(("APGD", "APGDT", "AutoAttack"), replace(_NORMED, targetable=False)),
    "FAB": ExternalSpec(MINIMUM_NORM, None, norm_setting="norm"),
    "CW": ExternalSpec(MINIMUM_NORM, "l2", eps=None),
    "DeepFool": ExternalSpec(MINIMUM_NORM, "l2", eps=None, targetable=False),
    "SparseFool": ExternalSpec(MINIMUM_NORM, "l0", eps=None, targetable=False, whole_batches=False),
    "JSMA": ExternalSpec(MINIMUM_NORM, "l0", eps=None, whole_batches=False),
    "OnePixel": ExternalSpec(MINIMUM_NORM, "l0", eps=None, whole_batches=False),
    "Pixle": ExternalSpec(MINIMUM_NORM, "l0", eps=None, whole_batches=False),
})  # fmt: skip


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise MissingExtraError(
            "the torchattacks adapter needs the optional torchattacks package: "
            "pip install c2f-attacks[baselines]"
        ) from None
    return torchattacks


def _installed() -> bool:
    try:
        _torchattacks()
    except ImportError:
        return False
    return True


class TorchattacksAttack(ExternalAttack):
    """``TorchattacksAttack(model, name, stage=None, **kwargs)``: ``torchattacks.<name>`` on the
    stage view (module docstring); ``self.name`` is ``"torchattacks:<name>"``."""

    library = "torchattacks"
    SPECS = TORCHATTACKS
    NORM_NAMES = MappingProxyType({"Linf": "linf", "L2": "l2"})

    def _load(self):
        return _torchattacks()

    @staticmethod
    def _class(name: str):
        return getattr(_torchattacks(), name)

    @classmethod
    def external_settings(cls, name: str) -> dict[str, Setting]:
        if not _installed():
            return {}
        settings = settings_of(cls._class(name).__init__, skip=("self", "model"))
        if "n_classes" in settings:  # None: the stage's number of classes, filled in _prepare
            settings["n_classes"] = replace(settings["n_classes"], type="int | None",
                                            default=None)  # fmt: skip
        return settings

    @classmethod
    def default_setting(cls, name: str, setting: str) -> Any:
        if not _installed():
            return None
        return inspect.signature(cls._class(name)).parameters[setting].default

    @staticmethod
    def library_version() -> str:
        try:
            return f"torchattacks {metadata.version('torchattacks')}"
        except metadata.PackageNotFoundError:
            return "torchattacks (not installed)"

    def _prepare(self, module, name: str, settings: dict[str, Any]) -> dict[str, Any]:
        cls = getattr(module, name)
        parameters = inspect.signature(cls).parameters
        if "n_classes" in parameters and settings.get("n_classes") is None:
            settings.pop("n_classes", None)  # a flat model: torchattacks' default
            if self.num_classes() is not None:
                settings["n_classes"] = self.num_classes()
        if "seed" in parameters:  # the run's seed, not torchattacks' fixed default
            settings.setdefault("seed", self.seed)
        self.attack = self._build(settings)  # validates the settings once, before any image
        return settings

    def _build(self, settings: dict[str, Any]):
        cls = self._class(self.attack_name)
        try:
            return cls(self.stage_model, **settings)
        except (TypeError, ValueError) as err:
            raise UserError(f"{self.name} cannot be built with {settings}: {err}") from None

    @property
    def targetable(self) -> bool:
        if self.spec.targetable is not None:
            return self.spec.targetable
        return "targeted" in self.attack.supported_mode

    def _run(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        settings: dict[str, Any],
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        if target is None:
            attack = self.attack if settings is self.settings else self._build(settings)
        else:  # a new object: torchattacks keeps the mode as state of the attack
            attack = self._build(settings)
            attack.set_mode_targeted_by_function(lambda images, labels: target, quiet=True)
        return attack(x, labels)


register_adapter(TorchattacksAttack, _installed)

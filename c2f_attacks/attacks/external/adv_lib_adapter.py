"""adv-lib attacks (Rony et al.; BSD-3) as baselines against one stage of a C2F model.

``AdvLibAttack(model, "fmn", stage="coarse", norm=0)`` runs ``adv_lib.attacks.fmn(stage_model,
x, labels, norm=0)`` on the stage view of :mod:`~c2f_attacks.attacks.external.base` through our
:class:`Attack` call. Registry name: ``adv_lib:fmn``.

:data:`ADV_LIB` declares the supported attacks: the budgeted APGD (``eps``, l-inf or l2 by
``norm=``) and PGD (``ε``, l-inf), both taking a budget per image (one call per bisection
round), and the minimum-norm attacks FMN and FAB (norm by ``norm=``), DeepFool (``df``, by
``norm=``), SuperDeepFool (``sdf``), DDN and Carlini-Wagner (l2, l-inf), sigma-zero, VFGA and
FGA (l0). adv-lib's ``norm=`` takes ``float('inf')`` (the default here where adv-lib has none),
2 or 0 (1 is a norm we do not measure). Attacks whose ``targeted`` argument has no default get
``targeted=False``; a targeted call (``atk(x, target=T)``) runs them with ``targeted=True`` and
the requested classes as labels. FAB, DeepFool, SuperDeepFool and sigma-zero take
``targeted=`` but are untargeted only (adv-lib returns their inputs with a warning): they refuse
``target=``, as an attack without a ``targeted`` argument would.
``targeted=True`` is not a setting: it would aim at the clean decision.

adv-lib is installed without its dependencies (``pip install --no-deps adv-lib``): it declares
visdom, a plotting server whose release cannot be built by current setuptools, and imports it
at import time for an optional logger no attack here uses. While adv-lib is imported, a
placeholder stands in for visdom when it is missing; it is removed right after.
"""

from __future__ import annotations

import inspect
import math
import sys
import types
import warnings
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

#: the norm chosen by ``norm=``, l-inf where adv-lib has no default
_NORM = {"norm_setting": "norm", "norm": None, "defaults": MappingProxyType({"norm": math.inf})}
ADV_LIB = MappingProxyType({
    "apgd": ExternalSpec(BUDGET, eps="eps", per_image_eps=True, **_NORM),
    "pgd_linf": ExternalSpec(BUDGET, "linf", eps="ε", per_image_eps=True),
    "fmn": ExternalSpec(MINIMUM_NORM, eps=None, **_NORM),
    "fab": ExternalSpec(MINIMUM_NORM, eps="ε", targetable=False, **_NORM),
    "df": ExternalSpec(MINIMUM_NORM, eps=None, norm_setting="norm", norm=None, targetable=False),
    "sdf": ExternalSpec(MINIMUM_NORM, "l2", eps=None, targetable=False),
    "ddn": ExternalSpec(MINIMUM_NORM, "l2", eps=None),
    "carlini_wagner_l2": ExternalSpec(MINIMUM_NORM, "l2", eps=None),
    "carlini_wagner_linf": ExternalSpec(MINIMUM_NORM, "linf", eps=None),
    "sigma_zero": ExternalSpec(MINIMUM_NORM, "l0", eps=None, targetable=False),
    "vfga": ExternalSpec(MINIMUM_NORM, "l0", eps=None, whole_batches=False),
    "fga": ExternalSpec(MINIMUM_NORM, "l0", eps=None, whole_batches=False),
})  # fmt: skip


def _adv_lib():
    if "adv_lib.attacks" in sys.modules:
        return sys.modules["adv_lib.attacks"]
    placeholder = None
    try:
        import visdom  # noqa: F401  (only to learn whether it is there)
    except ImportError:
        placeholder = sys.modules.setdefault("visdom", types.ModuleType("visdom"))
    try:
        with warnings.catch_warnings():  # its own distutils version check, at import
            warnings.simplefilter("ignore", DeprecationWarning)
            import adv_lib.attacks
    except ImportError:
        raise MissingExtraError(
            "the adv_lib adapter needs adv-lib: pip install --no-deps 'adv-lib>=0.2.8'"
        ) from None
    finally:
        if placeholder is not None and sys.modules.get("visdom") is placeholder:
            del sys.modules["visdom"]
    return adv_lib.attacks


def _installed() -> bool:
    try:
        _adv_lib()
    except ImportError:
        return False
    return True


class AdvLibAttack(ExternalAttack):
    """``AdvLibAttack(model, name, stage=None, **kwargs)``: ``adv_lib.attacks.<name>`` on the
    stage view (module docstring); ``self.name`` is ``"adv_lib:<name>"``."""

    library = "adv_lib"
    SPECS = ADV_LIB
    NORM_NAMES = MappingProxyType({math.inf: "linf", 2: "l2", 0: "l0"})

    def _load(self):
        return _adv_lib()

    @staticmethod
    def _function(name: str):
        return getattr(_adv_lib(), name)

    @classmethod
    def external_settings(cls, name: str) -> dict[str, Setting]:
        if not _installed():
            return {}
        return settings_of(cls._function(name), skip=("model", "inputs", "labels", "callback"))

    @classmethod
    def default_setting(cls, name: str, setting: str) -> Any:
        if not _installed():
            return None
        default = inspect.signature(cls._function(name)).parameters[setting].default
        return None if default is inspect.Parameter.empty else default

    @staticmethod
    def library_version() -> str:
        try:
            return f"adv-lib {metadata.version('adv-lib')}"
        except metadata.PackageNotFoundError:
            return "adv-lib (not installed)"

    def _prepare(self, module, name: str, settings: dict[str, Any]) -> dict[str, Any]:
        parameters = {p: v for p, v in inspect.signature(getattr(module, name)).parameters.items()
                      if p not in ("model", "inputs", "labels", "callback")}  # fmt: skip
        unknown = sorted(set(settings) - set(parameters))
        if unknown:
            raise UserError(f"{self.name} has no setting {unknown[0]!r}; its settings: "
                             f"{', '.join(parameters)}")  # fmt: skip
        if settings.get("targeted"):
            raise UserError(f"{self.name}: targeted=True is not a setting; call the attack with "
                            "target= (c2f-bench run --target) to make it targeted")  # fmt: skip
        if "targeted" in parameters and parameters["targeted"].default is inspect.Parameter.empty:
            settings.setdefault("targeted", False)
        if "seed" in parameters:
            settings.setdefault("seed", self.seed)
        missing = [p for p, v in parameters.items()
                   if v.default is inspect.Parameter.empty and p not in settings]  # fmt: skip
        if missing:
            raise UserError(f"{self.name} needs {missing[0]}= (adv-lib gives it no default)")
        return settings

    @property
    def targetable(self) -> bool:
        if self.spec.targetable is not None:
            return self.spec.targetable
        return "targeted" in inspect.signature(self._function(self.attack_name)).parameters

    def _run(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        settings: dict[str, Any],
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        if target is not None:  # adv-lib's labels are the targets in its targeted mode
            labels, settings = target, {**settings, "targeted": True}
        return self._function(self.attack_name)(self.stage_model, x, labels, **settings)


register_adapter(AdvLibAttack, _installed)

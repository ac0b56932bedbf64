"""The attack registry: every attack says what it is, and is built by name with one call.

``list_attacks()`` names them, ``attack_info(name)`` describes one (:class:`AttackInfo`: the
stages it attacks, the norm of its budget, the protocols it can follow, its default success
rule, its settings with their types and defaults, its library) and ``create_attack(name, model,
**settings)`` builds it. Our attacks register themselves (:func:`register_attack` on the class,
which declares the facts as class attributes); ``torchattacks:NAME`` and ``adv_lib:NAME`` resolve
through adapters that declare the same facts for each external attack. The runner, transfer,
the CLI's options and the documentation's attack table are derived from here.

Protocols (how a run compares attacks; every attack of a run follows the same one):

- ``minimal``: each image's smallest budget, in the attack's norm, at which the attack succeeds:
  the batched per-image bisection of :mod:`~c2f_attacks.attacks.minimal_eps` for attacks with a
  budget (each trial stops an image at its first success), the attack's own search for
  minimum-norm attacks (DeepFool, FAB, FMN, ...);
- ``fixed``: one budget for every attack, each image stopped at its first success;
- ``first_success``: no budget, each image stopped at its first success (LRPC/LRPF only): a
  diagnostic, never a headline.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from c2f_attacks.errors import UserError
from c2f_attacks.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from c2f_attacks.attacks.base import Attack

PROTOCOLS = ("minimal", "fixed", "first_success")
NORMS = ("linf", "l2", "l0")
#: constructor parameters that are not settings: what is attacked, not how
_NOT_SETTINGS = ("self", "model", "stage")


@dataclass(frozen=True)
class Setting:
    """One constructor setting of an attack: its name, type (as annotated) and default
    (``inspect.Parameter.empty`` when it has none)."""

    name: str
    type: str
    default: Any

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True)
class AttackInfo:
    """What an attack is. ``settings`` are its constructor settings; ``criterion`` the name of
    its default success rule (:mod:`~c2f_attacks.attacks.criteria`); ``minimum_norm``: it
    searches the smallest perturbation itself (the ``minimal`` protocol runs it once);
    ``masked``: it takes a mask source (``mask=``); ``first_success``: it stops each image at
    its first success inside a budget (ours do; external attacks follow their own stopping
    rule); ``targetable``: it takes ``target=`` (:mod:`~c2f_attacks.attacks.targets`)."""

    name: str
    stages: tuple[str, ...]
    norm: str
    protocols: tuple[str, ...]
    criterion: str
    settings: Mapping[str, Setting]
    library: str
    masked: bool = False
    minimum_norm: bool = False
    first_success: bool = True
    targetable: bool = True
    description: str = ""
    factory: Callable[..., Attack] = field(default=None, repr=False, compare=False)
    #: ``configure(protocol, budget, search_bound, settings) -> settings`` (see
    #: :meth:`protocol_settings`)
    configure: Callable[..., dict[str, Any]] = field(default=None, repr=False, compare=False)
    #: ``norm_of(settings) -> norm`` where a setting chooses the norm (APGD's ``norm=``)
    norm_of: Callable[[Mapping[str, Any]], str] | None = field(default=None, repr=False,
                                                               compare=False)  # fmt: skip

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"attack {self.name!r}: norm must be one of {NORMS}, "
                             f"got {self.norm!r}")  # fmt: skip
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise ValueError(f"attack {self.name!r}: protocols must be some of {PROTOCOLS}, "
                             f"got {self.protocols!r}")  # fmt: skip

    def protocol_settings(
        self, protocol: str, budget: float, search_bound: float, settings: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The settings that make the attack follow ``protocol`` at ``budget`` (``fixed``) or
        searching in ``(0, search_bound]`` (``minimal``), given its other ``settings``; they win
        over ``settings``. A protocol it cannot follow is a ValueError."""
        return self.configure(protocol, budget, search_bound, settings)

    def norm_for(self, settings: Mapping[str, Any]) -> str:
        """The norm with these settings (``norm`` unless a setting chooses another)."""
        return self.norm if self.norm_of is None else self.norm_of(settings)

    def create(self, model: nn.Module, stage: str | None = None, **settings: Any) -> Attack:
        """The attack on ``model`` at ``stage`` (None: a flat model, or the one stage an attack
        like LRPC has) with ``settings`` (unknown ones are a ValueError naming them)."""
        unknown = sorted(set(settings) - set(self.settings))
        if unknown:
            raise UserError(f"attack {self.name!r} has no setting {unknown[0]!r}; its settings: "
                             f"{', '.join(self.settings)}")  # fmt: skip
        if len(self.stages) == 1 and stage in (None, *self.stages):
            return self.factory(model, **settings)  # its stage is its own
        if stage is not None and stage not in self.stages:
            raise UserError(f"attack {self.name!r} attacks the {' and '.join(self.stages)} "
                             f"stage, not {stage!r}")  # fmt: skip
        return self.factory(model, stage=stage, **settings)


def settings_of(function: Callable, skip: tuple[str, ...] = _NOT_SETTINGS) -> dict[str, Setting]:
    """The keyword settings of ``function``'s signature (``skip`` and ``*args/**kwargs`` left
    out), with their annotations as text and their defaults."""
    settings = {}
    for name, p in inspect.signature(function).parameters.items():
        if name in skip or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        annotation = p.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        settings[name] = Setting(name, "" if annotation is p.empty else str(text), p.default)
    return settings


ATTACKS: Registry[AttackInfo] = Registry("attack")


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: register ``cls`` under ``cls.name`` with the facts it declares as class
    attributes (``stages``, ``norm``, ``protocols``, ``default_criterion``, ``masked``)."""
    info = AttackInfo(
        name=cls.name, stages=tuple(cls.stages), norm=cls.norm, protocols=tuple(cls.protocols),
        criterion=cls.default_criterion, settings=MappingProxyType(settings_of(cls.__init__)),
        library="c2f-attacks", masked=cls.masked, targetable=cls.targetable,
        description=(inspect.getdoc(cls) or "").split("\n\n")[0], factory=cls,
        configure=cls.protocol_settings,
    )  # fmt: skip
    ATTACKS.register(cls.name, info)
    return cls


def list_attacks(library: str | None = None) -> list[str]:
    """Every attack name: ours in registration order, then the external ones whose library is
    installed (``torchattacks:NAME``, ``adv_lib:NAME``). ``library``: only that library's
    ("c2f-attacks", "torchattacks", "adv_lib")."""
    names = ATTACKS.names(resolved=True)
    if library is None:
        return names
    if library == "c2f-attacks":
        return [n for n in names if ":" not in n]
    return [n for n in names if n.startswith(f"{library}:")]


def attack_info(name: str) -> AttackInfo:
    """What the attack ``name`` is (:class:`AttackInfo`); an unknown name is a ValueError listing
    the known ones."""
    return ATTACKS.get(name)


def create_attack(name: str, model: nn.Module, stage: str | None = None, **settings: Any) -> Attack:
    """The attack ``name`` on ``model``, e.g.
    ``create_attack("pgd", model, stage="fine", eps=4/255)``."""
    return attack_info(name).create(model, stage, **settings)


def attack_table(names: list[str] | None = None) -> list[dict[str, str]]:
    """One row per attack (default: every :func:`list_attacks` name) with what it is: name,
    stages, norm, protocols, default success rule, kind (minimum-norm search or budget, masked),
    library. ``c2f-bench attacks`` prints it; the attack table in the docs is its markdown."""
    rows = []
    for name in list_attacks() if names is None else names:
        info = attack_info(name)
        kind = "minimum-norm" if info.minimum_norm else "budget"
        rows.append({
            "attack": info.name, "stages": " ".join(info.stages), "norm": info.norm,
            "protocols": " ".join(info.protocols), "success_rule": info.criterion,
            "kind": f"{kind}, masked" if info.masked else kind, "library": info.library,
        })  # fmt: skip
    return rows

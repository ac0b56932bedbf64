"""Attack settings given as text (``--set top_k=0.2 lrpc.lam=0``), typed by the attack registry.

Each item is ``NAME=VALUE`` (for every attack of the run that has the setting) or
``ATTACK.NAME=VALUE`` (for that attack only). The value is read by the setting's annotated type
in :func:`~c2f_attacks.attacks.attack_info`: ``bool`` (true/false, 1/0, yes/no), ``int``,
``float`` (also fractions like ``8/255``), ``str``, and ``none`` where the setting may be None;
a setting without an annotation (some external libraries') takes the first of int, number, bool
that reads, else the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from c2f_attacks.attacks import Setting, attack_info
from c2f_attacks.errors import UserError
from c2f_attacks.registry import UnknownNameError
from c2f_attacks.runner.plan import ATTACKS
from c2f_attacks.validation import parse_number

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_settings(
    items: Sequence[tuple[str, str]], attacks: Sequence[str] | None = None
) -> dict[str, Any]:
    """``RunConfig.settings`` from ``(name, text)`` items; ``attacks`` are the run's (default:
    the default run's), whose settings give the types (then ours'). An unknown attack, or a
    setting that none of them has, is a UserError naming it."""
    attacks = list(ATTACKS if attacks is None else attacks)
    settings: dict[str, Any] = {}
    for name, text in items:
        attack, _, setting = name.rpartition(".")
        if attack:
            try:
                info = attack_info(attack)
            except UnknownNameError as err:
                raise UserError(f"--set {name}: {err}") from None
            if setting not in info.settings:
                raise UserError(f"--set {name}: attack {attack!r} has no setting {setting!r}; "
                                 f"its settings: {', '.join(info.settings)}")  # fmt: skip
            settings.setdefault(attack, {})[setting] = parse_value(text, info.settings[setting])
            continue
        candidates = [*attacks, *(a for a in ATTACKS if a not in attacks)]
        having = [attack_info(a).settings[setting] for a in candidates
                  if setting in attack_info(a).settings]  # fmt: skip
        if not having:
            raise UserError(f"--set {name}: no attack of the run ({', '.join(attacks)}) or of "
                            f"this library has a setting {setting!r}")  # fmt: skip
        settings[setting] = parse_value(text, having[0])
    return settings


def parse_value(text: str, setting: Setting) -> Any:
    """``text`` read as ``setting``'s type (module docstring); a ValueError naming the setting
    and the value when it does not read."""
    kinds = setting.type.replace(" ", "").split("|") if setting.type else []
    low = text.strip().lower()
    if low == "none" and (not kinds or "None" in kinds):
        return None
    number = lambda text: parse_number(text, f"--set {setting.name}")  # noqa: E731
    readers = {"bool": _bool, "int": int, "float": number, "str": str}
    order = [readers[k] for k in kinds if k in readers] or [int, number, _bool, str]
    for read in order:
        try:
            return read(text.strip())
        except (ValueError, ZeroDivisionError):
            continue
    raise UserError(f"--set {setting.name}={text!r}: expected {setting.type or 'a value'}")


def _bool(text: str) -> bool:
    low = text.lower()
    if low in _TRUE or low in _FALSE:
        return low in _TRUE
    raise ValueError(text)

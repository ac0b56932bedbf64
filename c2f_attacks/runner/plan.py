"""What a run does: :class:`RunConfig` (every option of ``c2f-bench run``), its :class:`Plan` s
(one per leaderboard row), config files and sweeps.

Which modes an attack runs:

- FGSM, PGD and ``torchattacks:NAME``: ``fixed`` (l-inf budget ``eps``) and, FGSM/PGD only,
  ``minimal`` (per image the smallest successful eps, bisected up to ``eps_max``);
- LRPC (coarse stage) and LRPF (fine stage): ``first_success`` (each image stops at its first
  success, no budget), ``fixed`` (eps-constrained) and ``minimal`` (bisection up to ``eps_max``).

``modes=None`` (the default) runs each attack's default modes: FGSM/PGD fixed and minimal,
LRPC/LRPF first_success, torchattacks fixed. Explicit ``modes`` run, per attack, the given modes
it supports. The LRP-guided attacks run once per mask in ``masks`` (default ``lrp`` plus the
``gradient`` and ``random`` controls); dense attacks have mask ``none``.

Config files (TOML) use the option names of ``c2f-bench run`` as keys (``num-images``,
``eps-max``; ``_`` may stand for ``-``). A list for a single-valued option expands to a sweep:
the runs are the cartesian product of all such lists, in file order. ``attacks``, ``masks``,
``stages`` and ``modes`` take lists as their value; ``figures = false`` and ``progress =
false`` stand for ``--no-figures`` and ``--quiet``. Tables ``[torchattacks.NAME]`` hold the
constructor arguments of ``torchattacks:NAME``.

Models: a :class:`RunConfig` runs one model. :func:`expand` (behind ``c2f-bench run``) makes one
RunConfig per model: ``--model A B`` or a config file's ``model = ["A", "B"]`` list them, and
without either the run covers :data:`DEFAULT_MODELS`, the two shipped models (the plain and the
adversarially trained one), so the default leaderboard compares them row for row.

Defaults: ``n = 32`` images keeps the default run over both shipped models (28 rows: per model
FGSM and PGD fixed and minimal at both stages, LRPC and LRPF with three masks, per-image LRP
metrics, saved adversarial images and figures) within 90 s on 2 CPU cores (75 s measured); larger
runs take ``-n``. ``eps_max = 64/255`` bounds the minimal-eps search above the l-inf norms the
LRP-guided attacks reach on the shipped model, so a minimal row stops short of 100% only where
the model resists at the bound.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from c2f_attacks.attacks import FGSM, LRPC, LRPF, MASKS, MEMORY_FORMATS, PGD, STAGES, Attack
from c2f_attacks.leaderboard import FORMATS, config_string

ATTACKS = ("fgsm", "pgd", "lrpc", "lrpf")
TORCHATTACKS = "torchattacks:"
MODES = ("fixed", "minimal", "first_success")
BACKENDS = ("torch", "onnxruntime")
DEFAULT_MASKS = ("lrp", "gradient", "random")
#: the models of ``c2f-bench run`` without ``--model``: the shipped ones, plain and defended
DEFAULT_MODELS = ("shapes-vgg16", "shapes-vgg16-at")

_GUIDED = {"lrpc": ("coarse", LRPC), "lrpf": ("fine", LRPF)}
_DENSE = {"fgsm": FGSM, "pgd": PGD}
_SUPPORTED_MODES = {"fgsm": ("fixed", "minimal"), "pgd": ("fixed", "minimal"),
                    "lrpc": MODES, "lrpf": MODES, TORCHATTACKS: ("fixed",)}  # fmt: skip
_DEFAULT_MODES = {"fgsm": ("fixed", "minimal"), "pgd": ("fixed", "minimal"),
                  "lrpc": ("first_success",), "lrpf": ("first_success",),
                  TORCHATTACKS: ("fixed",)}  # fmt: skip
# RunConfig fields whose CLI option has another name.
OPTION_NAMES = {"n": "num-images"}


@dataclass(frozen=True)
class Plan:
    """One leaderboard row: an attack at one stage, in one mode, with one mask.

    ``params`` are the attack's constructor arguments (sorted name/value pairs, every default
    filled in), so that the row's ``config`` names every setting that changes the numbers.
    """

    attack: str  #: "fgsm", "pgd", "lrpc", "lrpf" or "torchattacks:NAME"
    stage: str
    mode: str
    mask: str  #: "none" for dense attacks
    params: tuple[tuple[str, Any], ...]

    @property
    def name(self) -> str:
        """The leaderboard's ``attack`` value: ``pgd``, ``torchattacks.APGD``, ..."""
        return self.attack.replace(":", ".")

    @property
    def label(self) -> str:
        mask = "" if self.mask == "none" else f"/{self.mask}"
        return f"{self.name}/{self.stage}/{self.mode}{mask}"

    def build(self, model) -> Attack:
        """The attack object (its constructor validates the settings)."""
        kwargs = dict(self.params)
        if self.attack.startswith(TORCHATTACKS):
            from c2f_attacks.attacks import TorchattacksAttack

            return TorchattacksAttack(
                model, self.attack[len(TORCHATTACKS) :], stage=self.stage, **kwargs
            )
        if self.attack in _GUIDED:
            return _GUIDED[self.attack][1](model, **kwargs)
        return _DENSE[self.attack](model, stage=self.stage, **kwargs)

    def key(self, attack: Attack) -> dict[str, Any]:
        """The plan's leaderboard key columns: attack, stage, mode, mask, norm (the built
        ``attack``'s, l-inf unless it says otherwise), eps, steps, config (every other setting,
        ``name=value`` pairs)."""
        params = dict(self.params)
        eps = params.get("eps")
        shown = {k: v for k, v in params.items() if k not in ("eps", "steps", "seed")}
        return {
            "attack": self.name,
            "stage": self.stage,
            "mode": self.mode,
            "mask": self.mask,
            "norm": str(getattr(attack, "norm", "linf")).lower(),
            "eps": math.nan if eps is None else float(eps),
            "steps": params.get("steps", 1 if self.attack == "fgsm" else None),
            "config": config_string(**shown),
        }


@dataclass
class RunConfig:
    """Every option of ``c2f-bench run``; the CLI option of field ``f`` is ``--f`` with ``-``
    for ``_`` (``n`` is ``-n/--num-images``). ``None`` for an attack hyperparameter means the
    attack's own default (recorded in the row's config).

    One RunConfig is one model (``model``: a registered name, a checkpoint path or
    ``package.module:factory``); :func:`expand` makes one per model of ``--model A B``."""

    model: str = DEFAULT_MODELS[0]
    hierarchy: str | None = None
    dataset: str = "shapes"
    split: str = "test"
    root: str | None = None
    n: int = 32
    attacks: Sequence[str] = ATTACKS
    masks: Sequence[str] = DEFAULT_MASKS
    stages: Sequence[str] = STAGES
    modes: Sequence[str] | None = None
    eps: float = 8 / 255
    eps_max: float = 64 / 255
    search_steps: int | None = None
    top_k: float | None = None
    alpha: float | None = None
    steps: int | None = None
    lam: float | None = None
    refresh: int | None = None
    kappa: float | None = None
    composite: str | None = None
    pgd_alpha: float | None = None
    pgd_steps: int | None = None
    random_start: bool | None = None
    loss: str | None = None
    memory_format: str = "auto"
    backend: str = "torch"
    seed: int = 0
    out: str = "c2f-results"
    allow_results_dir: bool = False
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    batch_size: int = 64
    figures: bool = True
    progress: bool = True
    format: str = "table"
    torchattacks_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        for name, typ in (("n", int), ("batch_size", int), ("seed", int), ("eps", float),
                          ("eps_max", float)):  # fmt: skip
            _check_type(_option(name), getattr(self, name), typ)
        for name in ("n", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{_option(name)} must be a positive integer, "
                                 f"got {getattr(self, name)}")  # fmt: skip
        for name in ("eps", "eps_max"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{_option(name)} must be in (0, 1] (pixel scale), "
                                 f"got {getattr(self, name)}")  # fmt: skip
        if not isinstance(self.model, (str, os.PathLike)) or not str(self.model).strip():
            raise TypeError(
                f"model must be one model name or path, got {self.model!r} (a run "
                "over several models is one RunConfig per model: see expand())"
            )
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out).strip():
            raise ValueError("out must name a folder (got an empty path)")
        for name in ("attacks", "masks", "stages", "modes"):
            value = getattr(self, name)
            if (value is not None or name != "modes") and (isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty list, got {value!r}")
        for name, given, known in (("backend", [self.backend], BACKENDS),
                                   ("memory-format", [self.memory_format], MEMORY_FORMATS),
                                   ("format", [self.format], FORMATS),
                                   ("mask", self.masks, MASKS), ("stage", self.stages, STAGES),
                                   ("mode", self.modes or (), MODES)):  # fmt: skip
            _check_choices(name, given, known)
        if not self.plans():
            raise ValueError(
                f"nothing to run: no attack of {list(self.attacks)} runs at the stages "
                f"{list(self.stages)} in the modes {list(self.modes or ['default'])} (LRPC "
                "attacks the coarse stage only, LRPF the fine stage only; FGSM and PGD have no "
                "first_success mode)"
            )

    def plans(self) -> list[Plan]:
        """The rows of this run, in the order they are run and shown."""
        plans = []
        for attack in self.attacks:
            kind = _kind(attack)
            modes = _DEFAULT_MODES[kind] if self.modes is None else self.modes
            modes = [m for m in modes if m in _SUPPORTED_MODES[kind]]
            if kind in _GUIDED:
                stage, cls = _GUIDED[kind]
                if stage not in self.stages:
                    continue
                plans += [Plan(kind, stage, mode, mask, self._params(cls, mode, mask=mask))
                          for mode in modes for mask in self.masks]  # fmt: skip
            elif kind == TORCHATTACKS:
                args = {"seed": self.seed,
                        **self.torchattacks_args.get(attack[len(TORCHATTACKS) :], {})}  # fmt: skip
                plans += [Plan(attack, stage, "fixed", "none", tuple(sorted(args.items())))
                          for stage in self.stages if "fixed" in modes]  # fmt: skip
            else:
                plans += [Plan(kind, stage, mode, "none", self._params(_DENSE[kind], mode))
                          for stage in self.stages for mode in modes]  # fmt: skip
        return plans

    def _params(self, cls: type, mode: str, **fixed: Any) -> tuple[tuple[str, Any], ...]:
        """The constructor arguments of ``cls`` for ``mode``: the options given, the class's
        defaults for the rest (read from its signature, so nothing is restated here)."""
        given = {
            "seed": self.seed, "memory_format": self.memory_format, "top_k": self.top_k,
            "lam": self.lam, "refresh": self.refresh, "kappa": self.kappa,
            "composite": self.composite, "random_start": self.random_start, "loss": self.loss,
            "search_steps": self.search_steps,
            "alpha": self.pgd_alpha if cls is PGD else self.alpha,
            "steps": self.pgd_steps if cls is PGD else self.steps,
            "eps": {"fixed": self.eps, "minimal": self.eps_max, "first_success": None}[mode],
            "minimal_eps": mode == "minimal", **fixed,
        }  # fmt: skip
        params = {}
        for name, p in inspect.signature(cls).parameters.items():
            if name in ("self", "model", "stage") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            value = given.get(name)
            if value is None and name != "eps":
                value = p.default
            if value is not inspect.Parameter.empty:
                params[name] = value
        if mode != "minimal":
            params.pop("search_steps", None)  # only the bisection uses it
        elif cls is PGD:
            # PGD's bisection scales alpha with each image's eps as alpha / eps_max; keep the
            # step-to-budget ratio of the fixed-eps row (2/255 at 8/255), or a search up to
            # 64/255 would take steps 8x too small and report inflated minimal norms.
            params["alpha"] = params["alpha"] * self.eps_max / self.eps
            # The search asks, at each budget, whether some iterate fools the image: keep the
            # first one that does, as the LRP-guided attacks do. A success is then never lost
            # by a later step, so the search is at least as strong and needs fewer queries.
            params["early_stop"] = True
        return tuple(sorted(params.items()))


def _kind(attack: str) -> str:
    if attack.startswith(TORCHATTACKS) and len(attack) > len(TORCHATTACKS):
        return TORCHATTACKS
    if attack not in ATTACKS:
        raise ValueError(
            f"unknown attack {attack!r}; choose from {', '.join(ATTACKS)} or torchattacks:NAME"
        )
    return attack


def _option(name: str) -> str:
    return OPTION_NAMES.get(name, name.replace("_", "-"))


def _check_type(name: str, value: Any, typ: type) -> None:
    ok = isinstance(value, (int, float) if typ is float else typ) and not isinstance(value, bool)
    if not ok:
        raise TypeError(f"{name} must be {'a number' if typ is float else 'an integer'}, "
                        f"got {value!r}")  # fmt: skip


def _check_choices(name: str, given: Sequence[str], known: Sequence[str]) -> None:
    for value in given:
        if value not in known:
            raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(known)}")


# ----------------------------------------------------------------------------- config files
_FIELDS = {_option(f.name): f.name for f in dataclasses.fields(RunConfig)
           if f.name != "torchattacks_args"}  # fmt: skip
_LIST_OPTIONS = ("attacks", "masks", "stages", "modes")


def read_config(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The runs a TOML file describes: one dict of RunConfig fields per point of its sweep.

    Raises ValueError naming the file and the key for an unknown key or an unreadable file.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"config file {path} cannot be read: {err}") from None
    fixed: dict[str, Any] = {}
    swept: list[tuple[str, list]] = []
    for key, value in data.items():
        option = key.replace("_", "-")
        if option == "torchattacks":
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise ValueError(f"config file {path}: [torchattacks.NAME] tables expected")
            fixed["torchattacks_args"] = value
            continue
        if option not in _FIELDS:
            raise ValueError(
                f"config file {path}: unknown key {key!r}; keys are the options of "
                "c2f-bench run without '--' (e.g. num-images, eps-max)"
            )
        name = _FIELDS[option]
        if isinstance(value, list) and option not in _LIST_OPTIONS:
            if not value:
                raise ValueError(f"config file {path}: key {key!r} is an empty list")
            swept.append((name, value))
        else:
            fixed[name] = value
    names = [name for name, _ in swept]
    return [
        {**fixed, **dict(zip(names, point))}
        for point in itertools.product(*(values for _, values in swept))
    ]


def expand(config: str | os.PathLike | None, overrides: Mapping[str, Any]) -> list[RunConfig]:
    """The RunConfigs of a run: the config file's sweep (or one run without a file), each with
    ``overrides`` (the options given on the command line) taking precedence, once per model.

    The models: ``overrides["model"]`` (one name or a list), else the config point's ``model``,
    else :data:`DEFAULT_MODELS`; each sweep point runs every model, in the order given.
    """
    points = read_config(config) if config is not None else [{}]
    overrides = dict(overrides)
    given = overrides.pop("model", None)
    if given is not None:  # they replace a file's models: its points that differ only there merge
        rest = []
        for point in points:
            point = {k: v for k, v in point.items() if k != "model"}
            if point not in rest:
                rest.append(point)
        points = [{**point, "model": given} for point in rest]
    runs = []
    for point in points:
        models = point.get("model", DEFAULT_MODELS)
        try:
            for model in _model_list(models):
                runs.append(RunConfig(**{**point, **overrides, "model": model}))
        except (TypeError, ValueError) as err:
            where = f"config file {config}: " if config is not None else ""
            raise type(err)(f"{where}{err}") from None
    return runs


def _model_list(models: Any) -> list[Any]:
    """``models`` as a list (one name stands for itself); an empty list or a model named twice
    is refused, since it would run nothing or overwrite its own rows."""
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    if not models:
        raise ValueError("model: give at least one model")
    repeated = next((m for i, m in enumerate(models) if m in models[:i]), None)
    if repeated is not None:
        raise ValueError(f"model {repeated!r} is given twice")
    return models


__all__ = [
    "ATTACKS",
    "BACKENDS",
    "DEFAULT_MASKS",
    "DEFAULT_MODELS",
    "MODES",
    "OPTION_NAMES",
    "STAGES",
    "TORCHATTACKS",
    "Plan",
    "RunConfig",
    "expand",
    "read_config",
]

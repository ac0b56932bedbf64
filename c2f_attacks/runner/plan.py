"""What a run does: :class:`RunConfig` (every option of ``c2f-bench run``), its :class:`Plan` s
(one per leaderboard row), config files and sweeps.

A run names its *protocols* (:data:`~c2f_attacks.attacks.PROTOCOLS`), and every attack in it
follows each of them: ``minimal`` (per image the smallest budget, in the attack's norm, at which
it succeeds, searched up to ``eps_max``), ``fixed`` (every attack at the budget ``eps``, each
image stopped at its first success) and, as a diagnostic only, ``first_success`` (unbounded;
LRPC/LRPF). What an attack is (its stages, norm, protocols, settings) comes from the attack
registry (:func:`~c2f_attacks.attacks.attack_info`); nothing here knows one attack from another.
A row is made for every attack, stage it attacks (of ``stages``), protocol it can follow (of
``protocols``) and, for masked attacks, mask source (of ``masks``); an attack that can follow
none of the run's protocols is an error.

Budgets are per norm: ``eps`` and ``eps_max`` map a norm (``linf``, ``l2``, ``l0``) to the fixed
budget and to the minimal search's upper bound; a norm left out keeps its default
(:data:`DEFAULT_EPS`, :data:`DEFAULT_EPS_MAX`); a norm given that no attack of the run
measures its budget in is an error. ``budgets`` replaces the grid of ``budget_curves.csv`` for
the norms it names (``{"linf": "1/255, 4/255"}``;
:data:`~c2f_attacks.evaluation.budget.BUDGET_GRIDS` otherwise). ``search_steps`` is the
bisection's number of halvings, the same for every attack: its resolution is
``eps_max / 2**search_steps``, 1/255 by default (64/255 halved 6 times), the quantisation step
of an 8-bit image.

Success rule: one per stage for every attack of a run: the coarse stage's prediction changed;
on the fine stage ``fine_rule`` (default ``fine_changed_coarse_kept``, LRPF's: the fine
prediction changed and the coarse one was kept; ``stage_changed``: any fine change). It is each
row's ``success_rule`` key column; the records keep both fine-stage verdicts for every image.

Targets: ``targets`` (``--target``, a list like ``masks``; default ``["none"]``: untargeted) are
the target policies every row is made with: ``none``, or a policy of
:data:`~c2f_attacks.attacks.TARGET_POLICIES` (``random``, ``least_likely``, ``nearest``,
``farthest``: :mod:`~c2f_attacks.attacks.targets`, seeded by the run's seed and each image's
index, so the same image gets the same target in every row and batch). A targeted row asks each
image's stage to decide the chosen class: its success rule is ``target_reached`` and its
``config`` names the policy (``target=random``), so it has a key of its own beside the
untargeted row, and ``--target none random`` runs both. An attack without a targeted form
(DeepFool, APGD, ...) gets the untargeted rows only, like an unmasked attack gets the mask
``none``; with no ``none`` in ``targets`` it is an error.

Settings: ``settings`` maps a setting name to a value for every attack of the run that has that
setting (``top_k = 0.2``), or an attack name to a mapping of its own settings (``{"lrpc":
{"lam": 0}}``, applied when the attack is in the run); a setting that no attack has is an
error. The run's ``seed`` goes to every attack, its ``memory_format`` to ours (the external
adapters need contiguous batches). The rest are each attack's own defaults, recorded in the
row's ``config``.

Config files (TOML) use the option names of ``c2f-bench run`` as keys (``num-images``,
``eps-max``; ``_`` may stand for ``-``); ``[eps]`` / ``[eps-max]`` tables give budgets per norm,
``[settings]`` the settings (a sub-table per attack, e.g. ``[settings.lrpc]``). A list for a
single-valued option or a setting expands to a sweep: the runs are the cartesian product of all
such lists, in file order. ``attacks``, ``masks``, ``stages`` and ``protocols`` take lists as
their value; ``figures = false`` and ``progress = false`` stand for ``--no-figures`` and
``--quiet``.

Models: a :class:`RunConfig` runs one model. :func:`expand` (behind ``c2f-bench run``) makes one
RunConfig per model: ``--model A B`` or a config file's ``model = ["A", "B"]`` list them, and
without either the run covers :data:`DEFAULT_MODELS`, the two shipped models (the plain and the
adversarially trained one), so the default leaderboard compares them row for row.

Defaults: ``n = 16`` images: the default run is a smoke run over both shipped models; claims
rest on the larger studies. It is :data:`DEFAULT_RUN`, two parts per model into one output
folder: RunConfig's defaults (FGSM and PGD at both stages, LRPC and LRPF with three masks, each
under ``minimal`` and ``fixed`` at 8/255: 20 rows) and beside them targeted rows (random
targets, ``minimal`` only: PGD at both stages, LRPC and LRPF with the ``lrp`` mask: 4 rows).
:func:`expand` makes it when the run names neither a config file nor any option that chooses
rows (:data:`ROW_OPTIONS`: attacks, masks, stages, protocols, targets); every other option
(models, images, budgets, settings, ...) applies to both parts. Once the run chooses its rows,
it is those rows only, RunConfig's defaults filling in the rest: ``--attacks fgsm pgd lrpc lrpf``
is the untargeted part alone. ``eps_max = 64/255`` bounds the minimal search above the l-inf
norms the LRP-guided attacks reach on the shipped models, so a minimal row stops short of 100%
only where the model resists at the bound.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from c2f_attacks.attacks import (
    MASK_SOURCES,
    MEMORY_FORMATS,
    NORMS,
    PROTOCOLS,
    STAGES,
    TARGET_POLICIES,
    Attack,
    AttackInfo,
    attack_info,
    get_criterion,
)
from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.budget import parse_budget_grid
from c2f_attacks.leaderboard import FORMATS, config_string
from c2f_attacks.models.zoo import SHIPPED
from c2f_attacks.registry import UnknownNameError
from c2f_attacks.runner.memory import parse_size
from c2f_attacks.validation import parse_number

ATTACKS = ("fgsm", "pgd", "lrpc", "lrpf")
BACKENDS = ("torch", "onnxruntime")
DEFAULT_MASKS = ("lrp", "gradient", "random")
DEFAULT_PROTOCOLS = ("minimal", "fixed")
#: the fixed budget and the minimal search's upper bound per norm (l2 for 32x32 RGB images:
#: an l-inf ball of 8/255 holds l2 up to 1.74 there)
DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}
DEFAULT_EPS_MAX = {"linf": 64 / 255, "l2": 4.0}
FINE_RULES = ("fine_changed_coarse_kept", "stage_changed")
#: ``--target``: untargeted, or a target policy
TARGETS = ("none", *TARGET_POLICIES)
#: the models of ``c2f-bench run`` without ``--model``: the shipped ones, plain and defended
DEFAULT_MODELS = tuple(SHIPPED)
#: the default run (``c2f-bench run`` with no config file and no option of
#: :data:`ROW_OPTIONS`): its parts, each a RunConfig's fields over its defaults, every part run
#: once per model into the same output folder: the untargeted smoke run, and targeted rows
#: beside it (random targets, minimal protocol: PGD at both stages, LRPC and LRPF with the lrp
#: mask); configs/targeted.toml is the second part alone
DEFAULT_RUN: tuple[Mapping[str, Any], ...] = (
    {},
    {"attacks": ("pgd", "lrpc", "lrpf"), "masks": ("lrp",), "protocols": ("minimal",),
     "targets": ("random",)},
)  # fmt: skip
#: the RunConfig fields that choose a run's rows: a run that gives any of them is not the
#: default run but the rows it chose (RunConfig's defaults for the others)
ROW_OPTIONS = ("attacks", "masks", "stages", "protocols", "targets")
# RunConfig fields whose CLI option has another name (a config file takes either).
OPTION_NAMES = {"n": "num-images", "protocols": "protocol", "settings": "set",
                "targets": "target"}  # fmt: skip
#: run options handed to the attacks (every one: seed; the budgeted ones: search_steps; ours:
#: memory_format)
_RUN_SETTINGS = ("seed", "memory_format", "search_steps")


@dataclass(frozen=True)
class Plan:
    """One leaderboard row: an attack at one stage, under one protocol, with one mask and one
    target policy ("none": untargeted).

    ``params`` are the attack's constructor settings (sorted name/value pairs, every default
    filled in), so that the row's ``config`` names every setting that changes the numbers.
    """

    attack: str  #: the registry name: "pgd", "torchattacks:APGD", ...
    stage: str
    protocol: str
    mask: str  #: "none" for attacks without a mask source
    success_rule: str
    norm: str
    eps: float | None  #: the budget (fixed), the search bound (minimal) or None
    params: tuple[tuple[str, Any], ...]
    target: str = "none"  #: the target policy, "none" for an untargeted row

    @property
    def info(self) -> AttackInfo:
        return attack_info(self.attack)

    @property
    def label(self) -> str:
        mask = "" if self.mask == "none" else f"/{self.mask}"
        target = "" if self.target == "none" else f"/target={self.target}"
        return f"{self.attack}/{self.stage}/{self.protocol}{mask}{target}"

    @property
    def call_target(self) -> str | None:
        """What the attack's call takes as ``target=``: the policy, None when untargeted."""
        return None if self.target == "none" else self.target

    def build(self, model) -> Attack:
        """The attack object (its constructor validates the settings; a targeted row's attack
        must have a targeted form; its rule, ``target_reached``, gets the targets with each
        call)."""
        atk = self.info.create(model, stage=self.stage, criterion=self.success_rule,
                               **dict(self.params))  # fmt: skip
        if self.target != "none" and not atk.targetable:
            raise UserError(f"--target {self.target}: attack {self.attack!r} has no targeted "
                            "mode")  # fmt: skip
        return atk

    def as_built(self, atk: Attack) -> Plan:
        """The plan with each setting it leaves None that ``atk``, built from it, fills in from
        the model (an external attack's ``n_classes``: the stage's number of classes) set to the
        value ``atk`` runs with, so that the row's ``config`` shows it."""
        used = getattr(atk, "settings", None) or {}  # the external adapters' settings
        params = {k: used.get(k) if v is None and used.get(k) is not None else v
                  for k, v in self.params}  # fmt: skip
        return dataclasses.replace(self, params=tuple(sorted(params.items())))

    def key(self) -> dict[str, Any]:
        """The plan's leaderboard key columns: attack, stage, protocol, mask, norm,
        success_rule, eps, steps, config (every other setting, ``name=value`` pairs, and a
        targeted row's ``target=POLICY``)."""
        params = dict(self.params)
        shown = {k: v for k, v in params.items() if k not in ("eps", "steps", "seed")}
        if self.target != "none":
            shown["target"] = self.target
        return {
            "attack": self.attack,
            "stage": self.stage,
            "protocol": self.protocol,
            "mask": self.mask,
            "norm": self.norm,
            "success_rule": self.success_rule,
            "eps": math.nan if self.eps is None else float(self.eps),
            "steps": params.get("steps"),
            "config": config_string(**shown),
        }


@dataclass
class RunConfig:
    """Every option of ``c2f-bench run``; the CLI option of field ``f`` is ``--f`` with ``-``
    for ``_`` (``n`` is ``-n/--num-images``). See the module docstring for protocols, budgets,
    success rules and settings.

    One RunConfig is one model (``model``: a registered name, a checkpoint path or
    ``package.module:factory``); :func:`expand` makes one per model of ``--model A B``."""

    model: str = DEFAULT_MODELS[0]
    hierarchy: str | None = None
    dataset: str = "shapes"
    split: str = "test"
    root: str | None = None
    n: int = 16
    attacks: Sequence[str] = ATTACKS
    masks: Sequence[str] = DEFAULT_MASKS
    stages: Sequence[str] = STAGES
    protocols: Sequence[str] = DEFAULT_PROTOCOLS
    targets: Sequence[str] = ("none",)
    eps: Mapping[str, float] = field(default_factory=dict)
    eps_max: Mapping[str, float] = field(default_factory=dict)
    fine_rule: str = FINE_RULES[0]
    search_steps: int = 6
    budgets: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    memory_format: str = "auto"
    backend: str = "torch"
    seed: int = 0
    out: str = "c2f-results"
    allow_results_dir: bool = False
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    #: images per batch; None: per row the largest that fits ``max_memory`` (at most 64)
    batch_size: int | None = None
    #: the memory the run may use (``4G``, ``512M``); None: a safe share of what is available
    max_memory: str | None = None
    #: continue the interrupted run with the same settings in ``out``
    resume: bool = False
    figures: bool = True
    progress: bool = True
    format: str = "table"

    def __post_init__(self):
        for name, typ in (("n", int), ("batch_size", int), ("seed", int), ("search_steps", int)):
            if name != "batch_size" or self.batch_size is not None:  # None: from max_memory
                _check_type(_option(name), getattr(self, name), typ)
        if self.max_memory is not None:
            parse_size(self.max_memory)
        for name in ("n", "batch_size", "search_steps"):
            if (name != "batch_size" or self.batch_size is not None) and getattr(self, name) < 1:
                raise UserError(f"{_option(name)} must be a positive integer, "
                                 f"got {getattr(self, name)}")  # fmt: skip
        explicit = {"eps": _budgets("eps", self.eps), "eps-max": _budgets("eps-max", self.eps_max)}
        self.eps = {**DEFAULT_EPS, **explicit["eps"]}
        self.eps_max = {**DEFAULT_EPS_MAX, **explicit["eps-max"]}
        if not isinstance(self.budgets, Mapping):
            raise UserError(f"budgets must map a norm to its budgets, got {self.budgets!r}")
        for norm in self.budgets:
            if norm not in NORMS:
                raise UserError(f"--budgets: unknown norm {norm!r}; choose from "
                                f"{', '.join(NORMS)}")  # fmt: skip
        self.budgets = {n: parse_budget_grid(g, n) for n, g in self.budgets.items()}
        if not isinstance(self.model, (str, os.PathLike)) or not str(self.model).strip():
            raise UserError(
                f"model must be one model name or path, got {self.model!r} (a run "
                "over several models is one RunConfig per model: see expand())"
            )
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out).strip():
            raise UserError("out must name a folder (got an empty path)")
        for name in ("attacks", "masks", "stages", "protocols", "targets"):
            value = getattr(self, name)
            if isinstance(value, str) or not value:
                raise UserError(f"{name} must be a non-empty list, got {value!r}")
        for name, given, known in (("backend", [self.backend], BACKENDS),
                                   ("memory-format", [self.memory_format], MEMORY_FORMATS),
                                   ("format", [self.format], FORMATS),
                                   ("fine-rule", [self.fine_rule], FINE_RULES),
                                   ("mask", self.masks, MASK_SOURCES.names()),
                                   ("stage", self.stages, STAGES),
                                   ("protocol", self.protocols, PROTOCOLS),
                                   ("target", self.targets, TARGETS)):  # fmt: skip
            _check_choices(name, given, known)
        if not isinstance(self.settings, Mapping):
            raise UserError(f"settings must be a mapping, got {type(self.settings).__name__}")
        self._plans = self._make_plans()
        used = {plan.norm for plan in self._plans if not plan.info.minimum_norm}
        for option, budgets in explicit.items():
            unused = [norm for norm in budgets if norm not in used]
            if unused:
                raise UserError(f"--{option} {unused[0]}={budgets[unused[0]]:g}: no attack of the "
                                f"run has an {unused[0]} budget (their norms: "
                                f"{', '.join(sorted(used)) or 'none'})")  # fmt: skip

    def plans(self) -> list[Plan]:
        """The rows of this run, in the order they are run and shown."""
        return list(self._plans)

    def _make_plans(self) -> list[Plan]:
        infos = {}
        for name in self.attacks:
            try:
                infos[name] = attack_info(name)
            except UnknownNameError as err:
                raise UserError(f"--attacks: {err}") from None
        shared, own = self._split_settings(infos)
        plans = []
        for name, info in infos.items():
            protocols = [p for p in self.protocols if p in info.protocols]
            if not protocols:
                raise UserError(f"--protocol: attack {name!r} cannot follow "
                                 f"{', '.join(self.protocols)} (it follows "
                                 f"{', '.join(info.protocols)})")  # fmt: skip
            given = {k: v for k, v in shared.items() if k in info.settings}
            given.update(own.get(name, {}))
            given["seed"] = self.seed
            if "search_steps" in info.settings:
                given["search_steps"] = self.search_steps
            if info.library == "c2f-attacks":  # the adapters hand over contiguous batches
                given["memory_format"] = self.memory_format
            masks = self.masks if info.masked else ["none"]
            targets = [t for t in self.targets if t == "none" or info.targetable]
            if not targets:
                raise UserError(f"--target {' '.join(self.targets)}: attack {name!r} has no "
                                "targeted mode (add 'none' to run it untargeted)")  # fmt: skip
            for stage in (s for s in self.stages if s in info.stages):
                untargeted = "stage_changed" if stage == "coarse" else self.fine_rule
                get_criterion(untargeted, stage)
                for protocol, mask, target in itertools.product(protocols, masks, targets):
                    rule = untargeted if target == "none" else "target_reached"
                    plans.append(self._plan(info, stage, protocol, mask, rule, given, target))
        if not plans:
            raise UserError(
                f"nothing to run: no attack of {list(self.attacks)} attacks the stages "
                f"{list(self.stages)} (LRPC attacks the coarse stage only, LRPF the fine stage "
                "only)"
            )
        return plans

    def _plan(self, info: AttackInfo, stage: str, protocol: str, mask: str, rule: str,
              given: Mapping[str, Any], target: str = "none") -> Plan:  # fmt: skip
        params = {name: s.default for name, s in info.settings.items()
                  if not s.required and name not in ("stage", "criterion")}  # fmt: skip
        params.update(given)
        if mask != "none":
            params["mask"] = mask
        norm = info.norm_for(params)
        budget, bound = self.eps.get(norm), self.eps_max.get(norm)
        needed = {"fixed": ("eps", budget), "minimal": ("eps-max", bound)}.get(protocol)
        if needed is not None and needed[1] is None and not info.minimum_norm:
            raise UserError(f"--{needed[0]}: attack {info.name!r} needs an {norm} budget "
                             f"(e.g. --{needed[0]} {norm}=VALUE)")  # fmt: skip
        params.update(info.protocol_settings(protocol, budget, bound, params))
        # a minimum-norm attack's own search has no budget of the protocol's
        eps = None if info.minimum_norm else {"fixed": budget, "minimal": bound}.get(protocol)
        return Plan(info.name, stage, protocol, mask, rule, norm, eps,
                    tuple(sorted(params.items())), target)  # fmt: skip

    def _split_settings(
        self, infos: Mapping[str, AttackInfo]
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """(settings for every attack that has them, settings per attack), checked: a shared
        setting must be one of an attack of the run or of ours, an attack's own must be one it
        has (a config file's settings for an attack the run leaves out are kept for another)."""
        shared, own = {}, {}
        known = {**{n: attack_info(n) for n in ATTACKS}, **infos}
        for name, value in self.settings.items():
            if isinstance(value, Mapping):
                try:
                    info = infos.get(name) or attack_info(name)
                except UnknownNameError as err:
                    raise UserError(f"settings: {err}") from None
                unknown = sorted(set(value) - set(info.settings))
                if unknown:
                    raise UserError(f"attack {name!r} has no setting {unknown[0]!r}; its "
                                     f"settings: {', '.join(info.settings)}")  # fmt: skip
                own[name] = dict(value)
            elif any(name in info.settings for info in known.values()):
                shared[name] = value
            else:
                raise UserError(f"setting {name!r}: no attack of the run or of this library "
                                 "has it")  # fmt: skip
        for name in (*_RUN_SETTINGS, "eps", "minimal_eps", "mask", "stage", "criterion"):
            if name in shared or any(name in v for v in own.values()):
                raise UserError(f"setting {name!r} is set by the run itself (its own option or "
                                 "the protocol), not by --set")  # fmt: skip
        return shared, own


def _budgets(option: str, given: Any) -> dict[str, float]:
    """``{norm: budget}`` from a mapping (or a bare number: an l-inf budget), each budget a
    number (or a fraction like "8/255") in (0, inf) and at most 1 in l-inf and l0 (pixel and
    pixel-share scales)."""
    if not isinstance(given, Mapping):
        given = {"linf": given}
    budgets = {}
    for norm, value in given.items():
        if norm not in NORMS:
            raise UserError(f"--{option}: unknown norm {norm!r}; choose from {', '.join(NORMS)}")
        number = parse_number(value, f"--{option} {norm}")
        if not 0 < number < math.inf or (norm != "l2" and number > 1):
            scale = "(0, inf)" if norm == "l2" else "(0, 1]"
            raise UserError(f"--{option} {norm} must be in {scale}, got {value!r}")
        budgets[norm] = number
    return budgets


def _option(name: str) -> str:
    return OPTION_NAMES.get(name, name.replace("_", "-"))


def _check_type(name: str, value: Any, typ: type) -> None:
    if not isinstance(value, typ) or isinstance(value, bool):
        raise UserError(f"{name} must be an integer, got {value!r}")


def _check_choices(name: str, given: Sequence[str], known: Sequence[str]) -> None:
    for value in given:
        if value not in known:
            raise UserError(f"unknown {name} {value!r}; choose from {', '.join(known)}")


# ----------------------------------------------------------------------------- config files
_FIELDS = {name: f.name for f in dataclasses.fields(RunConfig)
           for name in (_option(f.name), f.name.replace("_", "-"))}  # fmt: skip
_LIST_OPTIONS = ("attacks", "masks", "stages", "protocols", "protocol", "targets", "target")
_TABLE_OPTIONS = ("eps", "eps-max", "settings", "set")


def read_config(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The runs a TOML file describes: one dict of RunConfig fields per point of its sweep.

    Raises ValueError naming the file and the key for an unknown key or an unreadable file.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise UserError(f"config file {path} cannot be read: {err}") from None
    fixed: dict[str, Any] = {}
    swept: list[tuple[tuple[str, ...], list]] = []  # (path of the value, its values)
    for key, value in data.items():
        option = key.replace("_", "-")
        if option == "modes":
            raise UserError(f"config file {path}: 'modes' is now 'protocols' (minimal, fixed)")
        if option not in _FIELDS:
            raise UserError(
                f"config file {path}: unknown key {key!r}; keys are the options of "
                "c2f-bench run without '--' (e.g. num-images, eps-max)"
            )
        name = _FIELDS[option]
        if option == "budgets":  # norm -> a list of budgets: the lists are values, not sweeps
            fixed[name] = value
        elif option in _TABLE_OPTIONS and isinstance(value, dict):
            fixed[name] = {}
            for sub, sub_value in value.items():
                if isinstance(sub_value, dict):
                    fixed[name][sub] = {}
                    for leaf, leaf_value in sub_value.items():
                        _collect(path, (name, sub, leaf), leaf_value, fixed, swept)
                else:
                    _collect(path, (name, sub), sub_value, fixed, swept)
        elif isinstance(value, list) and option not in _LIST_OPTIONS:
            _collect(path, (name,), value, fixed, swept)
        else:
            fixed[name] = value
    runs = []
    for point in itertools.product(*(values for _, values in swept)):
        run = _deep_copy(fixed)
        for (where, _), value in zip(swept, point):
            _put(run, where, value)
        runs.append(run)
    return runs


def _collect(path: Path, where: tuple[str, ...], value: Any, fixed: dict, swept: list) -> None:
    """Keep a value at ``where``: a list is a sweep dimension, anything else fixed."""
    if isinstance(value, list):
        if not value:
            raise UserError(f"config file {path}: key {'.'.join(where)!r} is an empty list")
        swept.append((where, value))
    else:
        _put(fixed, where, value)


def _put(target: dict, where: tuple[str, ...], value: Any) -> None:
    for part in where[:-1]:
        target = target.setdefault(part, {})
    target[where[-1]] = value


def _deep_copy(value: Any) -> Any:
    return {k: _deep_copy(v) for k, v in value.items()} if isinstance(value, dict) else value


def expand(config: str | os.PathLike | None, overrides: Mapping[str, Any]) -> list[RunConfig]:
    """The RunConfigs of a run: the config file's sweep (without a file: the parts of
    :data:`DEFAULT_RUN`, or one run when ``overrides`` choose the rows, :data:`ROW_OPTIONS`),
    each with ``overrides`` (the options given on the command line) taking precedence, once per
    model. Mapping options (``eps``, ``eps_max``, ``settings``) merge with the file's, the
    command line winning per entry.

    The models: ``overrides["model"]`` (one name or a list), else the config point's ``model``,
    else :data:`DEFAULT_MODELS`; each sweep point (or part) runs every model, in the order
    given: the default run is its untargeted part for every model, then its targeted part.
    """
    if config is not None:
        points = read_config(config)
    elif any(name in overrides for name in ROW_OPTIONS):
        points = [{}]
    else:
        points = [{k: list(v) for k, v in part.items()} for part in DEFAULT_RUN]
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
        merged = {**point, **overrides}
        for name in ("eps", "eps_max", "settings"):
            if name in point and name in overrides:
                merged[name] = _merge_mapping(point[name], overrides[name])
        try:
            for model in _model_list(models):
                runs.append(RunConfig(**{**merged, "model": model}))
        except (TypeError, ValueError) as err:
            where = f"config file {config}: " if config is not None else ""
            raise type(err)(f"{where}{err}") from None
    return runs


def _merge_mapping(base: Any, update: Any) -> Any:
    if not isinstance(base, Mapping) or not isinstance(update, Mapping):
        return update
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _merge_mapping(merged.get(key), value)
    return merged


def _model_list(models: Any) -> list[Any]:
    """``models`` as a list (one name stands for itself); an empty list or a model named twice
    is refused, since it would run nothing or overwrite its own rows."""
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    if not models:
        raise UserError("model: give at least one model")
    repeated = next((m for i, m in enumerate(models) if m in models[:i]), None)
    if repeated is not None:
        raise UserError(f"model {repeated!r} is given twice")
    return models


__all__ = [
    "ATTACKS",
    "BACKENDS",
    "DEFAULT_EPS",
    "DEFAULT_EPS_MAX",
    "DEFAULT_MASKS",
    "DEFAULT_MODELS",
    "DEFAULT_PROTOCOLS",
    "DEFAULT_RUN",
    "FINE_RULES",
    "OPTION_NAMES",
    "STAGES",
    "TARGETS",
    "Plan",
    "ROW_OPTIONS",
    "RunConfig",
    "expand",
    "parse_number",
    "read_config",
]

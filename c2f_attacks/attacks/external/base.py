"""What every adapter of an external attack library shares: the stage as a flat classifier,
counted model calls, the protocols, and one-line errors.

An external attack sees one stage of a C2F model as a flat classifier (:class:`StageModel`):

- coarse stage: the coarse logits C(x), (N, M);
- fine stage, setting ``fine_view="consistent"`` (the default): the consistent fine logits of
  :func:`~c2f_attacks.attacks.stage.consistent_fine_logits`, (N, K), whose argmax is the C2F
  fine decision exactly: a minimum-norm attack (DeepFool, FAB, ...) that stops once the argmax
  leaves the label stops exactly when the C2F decision changes;
- fine stage, ``fine_view="flat"``: the full fine logits as the model returns them, every fine
  head's logits at their global indices. Their argmax may lie outside the predicted coarse class
  (the C2F fine prediction is the argmax inside it), so an attack that stops once the flat
  argmax leaves the label may stop where the C2F prediction did not change (kept for
  comparison);
- flat model (``stage=None``): the model itself (``fine_view`` is ignored, as on the coarse
  stage).

``fine_view`` is a setting of every external attack, so it is in every external row's
``config``. Success is always judged by the C2F model's predictions with the attack's
criterion, never by the view. Labels: the attack gets the clean stage prediction (on C2F
models; y on flat models, as in our own attacks), so it pushes away from what the model
decides.

l-inf cap: the setting ``linf_cap=c`` (taken by l0 attacks only) keeps an l0 attack inside the
l-inf ball of radius c, so a sparse attack can be held to the same l-inf policy as a budgeted
one. The library never sees the cap: it attacks the box coordinates z in [0, 1]^d of
``x' = lo + z * (hi - lo)``, ``lo = max(x - c, 0)``, ``hi = min(x + c, 1)``, through a view that
maps z back to x' before the model. Its box [0, 1] is then exactly the ball within the image
range, and a pixel changes in z exactly where it changes in x' (hi > lo for c > 0), so the l0
the library minimises is the l0 we measure. The map is per image: it needs an attack that calls
the model on whole batches: adv-lib's sigma-zero and FMN do; adv-lib's VFGA and FGA and
torchattacks' SparseFool, JSMA, OnePixel and Pixle, which call it on single images, on the
images still to attack or on candidates made from them, refuse the cap (``whole_batches``), and
a library call on other images than the batch fails with a line that says so.

Targets: a targeted call (``atk(x, target=T)``) hands the library T in its targeted mode
(torchattacks' ``set_mode_targeted_by_function``, adv-lib's ``targeted=True``); an attack
without one refuses it before any model call (``targetable``). The call goes through
:class:`~c2f_attacks.attacks.base.Attack`: validation, eval mode, memory layout, success by the
criterion against the clean predictions, ``misclassified`` for a given y, and the sanity checks
(the budget in the attack's norm, when it has one).

Protocols. An attack with a budget (:attr:`ExternalSpec.kind` ``"budget"``: APGD, PGD, Square,
...) follows ``fixed`` (run at the budget) and ``minimal`` (the same per-image bisection as our
attacks: in each round, images with the same trial budget share one call, or all share one when
the library takes a budget per image). It runs its own iterations to the end: external attacks
do not stop an image at its first success (``AttackInfo.first_success`` is False). A
minimum-norm attack (``"minimum_norm"``: DeepFool, FAB, FMN, sigma-zero, ...) searches the
smallest perturbation itself: it follows ``minimal`` only, run once; its per-image budget is the
norm of what it returns (the records' norms), failures count as such.

Cost: the stage model counts every forward it runs (one per image in the batch it is given) and
every backward through its logits. External libraries do not say which images a call concerns,
so per-image counts are the batch totals spread evenly over the call's images (their mean is
exact). ``first_success_step`` is not tracked (-1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import nn

from c2f_attacks.attacks.base import Attack, Batch, CallCounter, Perturbed
from c2f_attacks.attacks.criteria import Criterion
from c2f_attacks.attacks.registry import ATTACKS, AttackInfo, settings_of
from c2f_attacks.attacks.stage import consistent_fine_logits
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import STAGES
from c2f_attacks.registry import UnknownNameError

BUDGET, MINIMUM_NORM = "budget", "minimum_norm"
#: how an external attack sees the fine stage (module docstring)
FINE_VIEWS = ("consistent", "flat")


@dataclass(frozen=True)
class ExternalSpec:
    """What an adapter declares about one external attack.

    ``kind``: ``"budget"`` or ``"minimum_norm"`` (module docstring); ``norm``: its norm, or None
    when a setting chooses it (``norm_setting``, values mapped by the adapter's ``NORM_NAMES``);
    ``eps``: the name of its budget argument (a minimum-norm attack's optional search bound);
    ``per_image_eps``: the library takes one budget per image (a tensor (N,)); ``targetable``:
    False where the library has no targeted mode or it does nothing (adv-lib's DeepFool returns
    its inputs with a warning), None to ask the library (the registry then counts it
    targetable); ``whole_batches``: the library calls the model on whole batches only (what
    ``linf_cap`` needs)."""

    kind: str
    norm: str | None = "linf"
    eps: str | None = "eps"
    norm_setting: str | None = None
    per_image_eps: bool = False
    targetable: bool | None = None
    #: False where the library calls the model on parts of a batch or on copies of its images
    #: (VFGA's candidates): the l-inf cap's per-image map cannot follow those calls
    whole_batches: bool = True
    #: settings the adapter fills where the library has no default (adv-lib's ``norm=``)
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class StageModel(nn.Module):
    """A stage of a C2F model as a flat classifier (module docstring; ``fine_view`` chooses the
    fine stage's logits), counting the images it runs forward and backward."""

    def __init__(self, model: nn.Module, stage: str | None, fine_view: str = "consistent"):
        super().__init__()
        if fine_view not in FINE_VIEWS:
            raise UserError(f"fine_view must be one of {', '.join(FINE_VIEWS)}, got "
                            f"{fine_view!r}")  # fmt: skip
        self.model, self.stage, self.fine_view = model, stage, fine_view
        self.image_forwards = self.image_backwards = 0
        #: (lo, hi) of the l-inf cap's box coordinates during a capped call (module docstring)
        self.box: tuple[torch.Tensor, torch.Tensor] | None = None
        # torchattacks puts a model that was in training mode back into it after an attack
        # (model.train() reaches every submodule): a wrapper in eval mode is left alone
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.box is not None:
            lo, hi = self.box
            if x.shape != lo.shape:
                raise RuntimeError(f"linf_cap: the attack called the model on {x.shape[0]} "
                                   f"images of a batch of {lo.shape[0]}; the cap's map needs "
                                   "whole batches")  # fmt: skip
            x = lo + x * (hi - lo)
        out = self.model(x)
        if self.stage is None:
            logits = out
        elif self.stage == "coarse":
            logits = out.coarse_logits
        elif self.fine_view == "flat":
            logits = out.fine_logits
        else:
            logits = consistent_fine_logits(
                out.coarse_logits, out.fine_logits, self.model.fine_to_coarse, out.fine_pred
            )
        n = x.shape[0]
        self.image_forwards += n
        if logits.requires_grad:
            logits.register_hook(lambda grad: self._count_backward(n))
        return logits

    def _count_backward(self, n: int) -> None:
        self.image_backwards += n


def _spread(total: int, rows: torch.Tensor) -> torch.Tensor:
    """``total`` image-passes over the images ``rows``: ``total // n`` each, one more for the
    first ``total % n``."""
    n = rows.numel()
    counts = torch.full((n,), total // n, dtype=torch.long, device=rows.device)
    counts[: total % n] += 1
    return counts


class ExternalAttack(Attack):
    """Base of the adapters: ``Adapter(model, name, stage=None, *, minimal_eps=False,
    search_steps=8, seed=0, memory_format="contiguous", criterion=None,
    fine_view="consistent", linf_cap=None, **settings)`` runs the library's attack ``name``
    with ``settings`` on the stage view (``fine_view``, ``linf_cap``: module docstring).

    Subclasses set ``library`` (the prefix of their registry names), ``SPECS`` (name ->
    :class:`ExternalSpec`), ``NORM_NAMES`` (a norm setting's value -> our norm name) and
    implement :meth:`_load`, :meth:`_prepare`, :meth:`_run` and :attr:`targetable`."""

    library: ClassVar[str]
    SPECS: ClassVar[Mapping[str, ExternalSpec]]
    NORM_NAMES: ClassVar[Mapping[Any, str]] = MappingProxyType({})

    def __init__(
        self, model: nn.Module, name: str, stage: str | None = None, *,
        minimal_eps: bool = False, search_steps: int = 8, seed: int = 0,
        memory_format: str = "contiguous", criterion: str | Criterion | None = None,
        fine_view: str = "consistent", linf_cap: float | None = None, **settings: Any,
    ):  # fmt: skip
        super().__init__(model, stage, seed, memory_format, criterion)
        module = self._load()
        if not isinstance(name, str) or name not in self.SPECS:
            raise UnknownNameError(f"unknown {self.library} attack {name!r}; known: "
                                   f"{', '.join(self.SPECS)}")  # fmt: skip
        self.attack_name, self.spec = name, self.SPECS[name]
        self.name = f"{self.library}:{name}"
        self.norm = norm_of(type(self), name, settings)
        self._check_search_steps(search_steps)
        if minimal_eps and self.spec.kind != BUDGET:
            raise UserError(f"{self.name} searches its own minimal perturbation: it has no "
                             "minimal_eps mode")  # fmt: skip
        if minimal_eps and settings.get(self.spec.eps) is None:
            raise UserError(f"{self.name}: minimal_eps needs {self.spec.eps}=, the search's "
                             "upper bound")  # fmt: skip
        self.minimal_eps, self.search_steps = minimal_eps, search_steps
        if linf_cap is not None:
            self._check_eps("linf_cap", linf_cap)
            if self.norm != "l0":
                raise UserError(f"{self.name}: linf_cap is for l0 attacks; this one measures "
                                f"{self.norm}")  # fmt: skip
            if not self.spec.whole_batches:
                raise UserError(f"{self.name} calls the model on parts of a batch: it cannot "
                                "take linf_cap")  # fmt: skip
        self.stage_model = StageModel(model, stage, fine_view)
        self.fine_view, self.linf_cap = fine_view, linf_cap
        self.settings = self._prepare(module, name, {**self.spec.defaults, **settings})

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in sorted(self.settings.items()))
        args += "" if self.linf_cap is None else f", linf_cap={self.linf_cap!r}"
        return (f"{type(self).__name__}({self.attack_name!r}, stage={self.stage!r}{args}, "
                f"fine_view={self.fine_view!r}, memory_format={self.memory_format!r})")  # fmt: skip

    # -- what subclasses provide
    def _load(self):
        """Import the library (an ImportError naming the extra to install when missing)."""
        raise NotImplementedError

    def _prepare(self, module, name: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Check ``settings`` against the attack (building it once where the library builds
        objects), fill stage-dependent defaults; return the settings to run with."""
        raise NotImplementedError

    def _run(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        settings: dict[str, Any],
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        """The library's adversarial images for ``x``: away from ``labels`` (the stage's clean
        predictions), or, in the library's targeted mode, toward ``target`` (the requested
        classes; None: untargeted)."""
        raise NotImplementedError

    @property
    def targetable(self) -> bool:
        """Whether the library's attack has a targeted mode."""
        raise NotImplementedError

    # -- shared
    def num_classes(self) -> int | None:
        """The stage's number of classes (None for a flat model: its own)."""
        if self.stage == "coarse":
            return self.model.hierarchy.num_coarse
        if self.stage == "fine":
            return self.model.hierarchy.num_fine
        return None

    def _budget(self) -> float | None:
        """The budget the result must stay within (sanity check), None where there is none."""
        if self.spec.kind != BUDGET:
            return None
        value = self.settings.get(self.spec.eps)
        return None if value is None else float(value)

    def _call(self, batch: Batch, rows: torch.Tensor, eps, counter: CallCounter) -> torch.Tensor:
        """One library call on the batch rows ``rows`` (``eps``: a budget for all of them, a
        per-image tensor, or None for the settings' own), counting its model calls."""
        view = self.stage_model
        view.image_forwards = view.image_backwards = 0
        settings = self.settings if eps is None else {**self.settings, self.spec.eps: eps}
        x = batch.x[rows]
        target = None if batch.target is None else batch.target[rows].clone()
        box, inputs = None, x
        if self.linf_cap is not None:  # the library attacks the box coordinates z
            box = ((x - self.linf_cap).clamp(0, 1), (x + self.linf_cap).clamp(0, 1))
            inputs = (x - box[0]) / (box[1] - box[0])
        view.box = box
        try:
            # copies: some libraries write into their inputs
            x_adv = self._run(inputs.clone(), batch.label[rows].clone(), settings, target)
        except Exception as err:  # any failure inside the library: one line that says where
            classes = self.num_classes() or "its"
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise UserError(
                f"{self.name} cannot run on {type(self.model).__name__} (stage {self.stage!r}, "
                f"{classes} classes): {type(err).__name__}: {first_line}"
            ) from err
        finally:
            view.box = None
        if box is not None:  # back to images, inside the ball whatever the rounding, and
            # exactly x where z was not changed (the round trip may move it by an ulp)
            lo, hi = box
            z = x_adv.to(lo)
            x_adv = torch.where(z == inputs, x, (lo + z * (hi - lo)).clamp(lo, hi))
        counter.forwards[rows] += _spread(view.image_forwards, rows)
        counter.backwards[rows] += _spread(view.image_backwards, rows)
        return x_adv.detach().to(device=x.device, dtype=x.dtype)

    def _perturb(self, batch: Batch, counter: CallCounter) -> Perturbed:
        n, device = batch.x.shape[0], batch.x.device
        every = torch.arange(n, device=device)
        if not self.minimal_eps:
            budget = self._budget()
            eps = None if budget is None else torch.full((n,), budget, device=device)
            return Perturbed(self._call(batch, every, None, counter), eps)

        def attack_rows(sub: Batch, eps: torch.Tensor, rows: torch.Tensor):
            del sub  # the rows of the caller's batch say it all
            x_adv = torch.empty_like(batch.x[rows])
            if self.spec.per_image_eps:
                x_adv[:] = self._call(batch, rows, eps, counter)
            else:  # one call per distinct trial budget
                for value in torch.unique(eps):
                    same = (eps == value).nonzero().squeeze(1)
                    x_adv[same] = self._call(batch, rows[same], float(value), counter)
            return x_adv, torch.full((rows.numel(),), -1, dtype=torch.long, device=device)

        return self._minimal_eps(batch, counter, self._budget(), self.search_steps, attack_rows,
                                 frozen_at_success=False)  # fmt: skip


def norm_of(adapter: type[ExternalAttack], name: str, settings: Mapping[str, Any]) -> str:
    """The norm of ``adapter``'s attack ``name`` with ``settings``: the spec's, or the one its
    norm setting (given, else its default) names; a norm we do not measure is a ValueError."""
    spec = adapter.SPECS[name]
    if spec.norm is not None:
        return spec.norm
    value = settings.get(spec.norm_setting, spec.defaults.get(spec.norm_setting))
    if value is None:
        value = adapter.default_setting(name, spec.norm_setting)
    if value not in adapter.NORM_NAMES:
        raise UserError(
            f"{adapter.library}:{name}: {spec.norm_setting}={value!r} is not a norm "
            f"this library supports here ({', '.join(map(str, adapter.NORM_NAMES))})"
        )
    return adapter.NORM_NAMES[value]


def external_info(adapter: type[ExternalAttack], name: str) -> AttackInfo:
    """The :class:`AttackInfo` of ``adapter``'s attack ``name`` (the registry's resolver)."""
    if name not in adapter.SPECS:
        raise UnknownNameError(f"unknown {adapter.library} attack {name!r}; known: "
                               f"{', '.join(adapter.SPECS)}")  # fmt: skip
    spec = adapter.SPECS[name]
    settings = {
        **adapter.external_settings(name),
        **settings_of(adapter.__init__, skip=("self", "model", "name")),
    }
    budget = spec.kind == BUDGET

    def configure(protocol: str, budget_value: float, bound: float, given: Mapping[str, Any]):
        if protocol not in info.protocols:
            raise UserError(f"attack {info.name!r} cannot follow protocol {protocol!r} (it "
                             f"follows {', '.join(info.protocols)})")  # fmt: skip
        if not budget:  # its own search, bounded where it takes a bound
            return {spec.eps: bound} if spec.eps is not None else {}
        if protocol == "fixed":
            return {spec.eps: budget_value, "minimal_eps": False}
        return {spec.eps: bound, "minimal_eps": True}

    info = AttackInfo(
        name=f"{adapter.library}:{name}", stages=STAGES, norm=norm_of(adapter, name, {}),
        protocols=("minimal", "fixed") if budget else ("minimal",),
        criterion="stage_changed", settings=MappingProxyType(settings),
        library=adapter.library_version(), minimum_norm=not budget, first_success=False,
        targetable=spec.targetable is not False,
        description=f"{adapter.library}'s {name}",
        factory=lambda model, **s: adapter(model, name, **s),
        configure=configure, norm_of=lambda s: norm_of(adapter, name, s),
    )  # fmt: skip
    return info


def register_adapter(adapter: type[ExternalAttack], installed: Callable[[], bool]) -> None:
    """Resolve ``<library>:NAME`` through ``adapter``; ``list_attacks`` lists its attacks when
    ``installed()``."""
    ATTACKS.add_resolver(
        adapter.library,
        lambda name: external_info(adapter, name),
        lambda: list(adapter.SPECS) if installed() else [],
    )

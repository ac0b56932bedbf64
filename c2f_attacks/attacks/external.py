"""Any torchattacks attack as a baseline against one stage of a C2F model (or a flat model).

``TorchattacksAttack(model, "APGD", stage="coarse", eps=8/255)`` builds
``torchattacks.APGD(stage_model, eps=8/255)`` where ``stage_model`` is the stage as a flat
classifier:

- coarse stage: the coarse logits C(x), (N, M);
- fine stage: the full fine logits, (N, K): every fine head's logits at their global indices,
  as the model returns them. Its argmax may lie outside the predicted coarse class (the C2F
  fine prediction is the argmax inside it), so an attack that stops once the flat argmax leaves
  the label may stop where the C2F prediction did not change; success is always judged by the
  C2F model's predictions (below), never by the flat view;
- flat model (``stage=None``): the model itself.

Labels: the attack gets the clean stage prediction (on C2F models; y on flat models, as in our
own attacks), so it pushes away from what the model decides. The call goes through
:class:`~c2f_attacks.attacks.base.Attack`: validation, eval mode, memory layout, ``success`` by
the stage's criterion against the clean predictions, ``misclassified`` for a given y, and the
sanity checks (the eps bound for the l-inf attacks with a budget).

Cost: the stage model counts every forward it runs (one per image in the batch it is given)
and every backward through its logits. torchattacks does not say which images a call concerns
(DeepFool, for one, runs image by image), so per-image counts are the batch totals spread
evenly over the N images (their mean is exact). ``first_success_step`` is not tracked (-1).

The batch is handed over contiguous by default (``memory_format="contiguous"``): several
torchattacks attacks (FAB, SparseFool) ``.view`` their inputs, which fails on channels-last
tensors.

Constructor arguments ``n_classes`` (FAB, APGDT, AutoAttack) default to the stage's number of
classes rather than torchattacks' 10. torchattacks is an optional extra:
``pip install c2f-attacks[baselines]``.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from c2f_attacks.attacks.base import Attack, Batch, CallCounter, Perturbed

#: torchattacks attacks whose output stays within ``eps`` in l-inf (with ``norm="Linf"`` where
#: they take a norm): the sanity check enforces that bound
LINF_BUDGETED = frozenset({
    "FGSM", "BIM", "RFGSM", "PGD", "EOTPGD", "FFGSM", "TPGD", "MIFGSM", "UPGD", "APGD", "APGDT",
    "DIFGSM", "TIFGSM", "Jitter", "NIFGSM", "PGDRS", "SINIFGSM", "VMIFGSM", "VNIFGSM", "Square",
    "AutoAttack",
})  # fmt: skip
_NOT_ATTACKS = frozenset({"MultiAttack", "LGV"})  # combinators and attacks needing training data


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise ImportError(
            "TorchattacksAttack needs the optional torchattacks package: "
            "pip install c2f-attacks[baselines]"
        ) from None
    return torchattacks


class StageModel(nn.Module):
    """A stage of a C2F model as a flat classifier (see the module docstring), counting the
    images it runs forward and backward."""

    def __init__(self, model: nn.Module, stage: str | None):
        super().__init__()
        self.model, self.stage = model, stage
        self.image_forwards = self.image_backwards = 0
        # torchattacks puts a model that was in training mode back into it after an attack
        # (model.train() reaches every submodule): a wrapper in eval mode is left alone
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        logits = out if self.stage is None else (
            out.coarse_logits if self.stage == "coarse" else out.fine_logits
        )  # fmt: skip
        n = x.shape[0]
        self.image_forwards += n
        if logits.requires_grad:
            logits.register_hook(lambda grad: self._count_backward(n))
        return logits

    def _count_backward(self, n: int) -> None:
        self.image_backwards += n


def _spread(total: int, n: int, device: torch.device) -> torch.Tensor:
    """``total`` image-passes over n images: ``total // n`` each, one more for the first
    ``total % n``."""
    counts = torch.full((n,), total // n, dtype=torch.long, device=device)
    counts[: total % n] += 1
    return counts


class TorchattacksAttack(Attack):
    """``TorchattacksAttack(model, name, stage=None, **kwargs)``: ``torchattacks.<name>`` run on
    the stage view; see the module docstring. ``self.name`` is ``"torchattacks.<name>"``."""

    def __init__(
        self, model: nn.Module, name: str, stage: str | None = None, *,
        seed: int = 0, memory_format: str = "contiguous", **kwargs,
    ):  # fmt: skip
        super().__init__(model, stage, seed, memory_format)
        torchattacks = _torchattacks()
        cls = getattr(torchattacks, name, None) if isinstance(name, str) else None
        if (
            name not in getattr(torchattacks, "__all__", ())
            or name in _NOT_ATTACKS
            or not (isinstance(cls, type) and issubclass(cls, torchattacks.attack.Attack))
        ):
            known = sorted(set(torchattacks.__all__) - _NOT_ATTACKS)
            raise ValueError(f"unknown torchattacks attack {name!r}; known: {', '.join(known)}")
        self.stage_model = StageModel(model, stage)
        num_classes = self._num_classes()
        if "n_classes" in inspect.signature(cls).parameters and num_classes is not None:
            kwargs.setdefault("n_classes", num_classes)
        try:
            self.attack = cls(self.stage_model, **kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(f"torchattacks.{name} cannot be built with {kwargs}: {err}") from None
        self.name, self.attack_name, self.kwargs = f"torchattacks.{name}", name, kwargs

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in sorted(self.kwargs.items()))
        return (
            f"TorchattacksAttack({self.attack_name!r}, stage={self.stage!r}{args}, "
            f"memory_format={self.memory_format!r})"
        )

    def _num_classes(self) -> int | None:
        if self.stage == "coarse":
            return self.model.hierarchy.num_coarse
        if self.stage == "fine":
            return self.model.hierarchy.num_fine
        return None  # flat: the model's own

    def _linf_budget(self) -> float | None:
        norm = getattr(self.attack, "norm", "Linf")
        if self.attack_name in LINF_BUDGETED and norm == "Linf":
            return float(self.attack.eps)
        return None

    def _perturb(self, batch: Batch, counter: CallCounter) -> Perturbed:
        view = self.stage_model
        view.image_forwards = view.image_backwards = 0
        try:
            # copies: some torchattacks attacks write into their inputs
            x_adv = self.attack(batch.x.clone(), batch.target.clone())
        except Exception as err:  # any failure inside torchattacks: one line that says where
            classes = self._num_classes() or "its"
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ValueError(
                f"torchattacks.{self.attack_name} cannot run on {type(self.model).__name__} "
                f"(stage {self.stage!r}, {classes} classes): {type(err).__name__}: {first_line}"
            ) from err
        n, device = batch.x.shape[0], batch.x.device
        counter.forwards += _spread(view.image_forwards, n, device)
        counter.backwards += _spread(view.image_backwards, n, device)
        budget = self._linf_budget()
        eps = None if budget is None else torch.full((n,), budget, device=device)
        x_adv = x_adv.detach().to(device=device, dtype=batch.x.dtype)
        return Perturbed(x_adv, eps)

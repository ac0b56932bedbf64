"""Adversarial training of C2F classifiers on the shapes data (``c2f-bench train --adversarial``).

Each training batch x (fine labels y) is replaced by x' = x + delta before the update, where
delta maximizes an attack loss inside the l-inf ball ||delta||_inf <= eps (and x' in [0, 1]):

- random start delta_0 ~ U(-eps, eps)^d, then ``steps`` signed-gradient ascent steps
  delta_{t+1} = clip_eps(delta_t + alpha * sign(grad_delta L_attack(x + delta_t, y))),
  each followed by the box projection delta <- clip(x + delta, 0, 1) - x.
- ``method="pgd"``: Madry et al. (2018), ``steps`` steps (default 7) of alpha = 2.5 eps / steps.
- ``method="fgsm_rs"``: Wong et al. (2020) "fast" training, one step of alpha = 1.25 eps.
- ``target="both"``: L_attack = CE(C(x'), y_coarse) + CE(F(x'), y) (the training loss, both
  stages); ``target="coarse"``: L_attack = CE(C(x'), y_coarse) only (coarse adversarial
  training: the fine heads see perturbations crafted against the coarse classifier).

The update then minimizes the standard C2F training loss (``train.c2f_loss``: coarse CE plus the
true coarse class's fine CE) on x'. Model, data, optimizer, one-cycle schedule and augmentation
are those of ``train.train_shapes``; every random draw comes from seeded generators, so the same
machine and thread count give the same weights. The checkpoint's metadata records the training
and adversarial settings, the seed, per-epoch validation accuracies (clean and under PGD-10 at
the training eps) and the clean accuracies on a fixed test-split sample, which the shipped
checkpoint's test recomputes.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.errors import UserError
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.models.zoo import save_checkpoint
from c2f_attacks.modes import eval_mode
from c2f_attacks.train import (
    TrainConfig,
    accuracy,
    c2f_loss,
    fit,
    init_record,
    initial_model,
    seed_everything,
)

METHODS = ("pgd", "fgsm_rs")
TARGETS = ("both", "coarse")

#: the fixed test-split sample whose clean accuracies the checkpoint records
SAMPLE_N = 512
#: PGD used to watch robustness per epoch on the validation split (catastrophic overfitting of
#: FGSM training shows as a collapse of this number while clean accuracy stays high)
VAL_PGD_STEPS = 10
VAL_ROBUST_N = 256


@dataclass(frozen=True)
class AdversarialConfig:
    """How training batches are perturbed (see the module docstring for the formulas)."""

    method: str = "fgsm_rs"
    target: str = "both"
    eps: float = 8 / 255
    steps: int | None = None  #: ascent steps; None: 1 for fgsm_rs, 7 for pgd
    alpha: float | None = None  #: step size; None: 1.25 eps (fgsm_rs), 2.5 eps / steps (pgd)

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"adversarial method {self.method!r}: expected one of {METHODS}")
        if self.target not in TARGETS:
            raise UserError(f"adversarial target {self.target!r}: expected one of {TARGETS}")
        if not 0 < self.eps <= 1:
            raise UserError(f"adversarial eps {self.eps!r}: expected 0 < eps <= 1")
        if self.steps is not None and self.steps < 1:
            raise UserError(f"adversarial steps {self.steps!r}: expected a positive integer")
        if self.method == "fgsm_rs" and self.steps not in (None, 1):
            raise UserError(f"fgsm_rs takes exactly one step, got steps={self.steps}")
        if self.alpha is not None and self.alpha <= 0:
            raise UserError(f"adversarial alpha {self.alpha!r}: expected alpha > 0")

    def resolved(self) -> AdversarialConfig:
        """The same settings with the defaults of ``steps`` and ``alpha`` filled in."""
        steps = self.steps or (1 if self.method == "fgsm_rs" else 7)
        alpha = self.alpha or (
            1.25 * self.eps if self.method == "fgsm_rs" else 2.5 * self.eps / steps
        )
        return replace(self, steps=steps, alpha=alpha)


def attack_loss(model: C2FClassifier, x: torch.Tensor, fine: torch.Tensor, target: str):
    """The loss the perturbation ascends: both stages' training loss, or the coarse CE only."""
    if target == "both":
        return c2f_loss(model, x, fine)
    return F.cross_entropy(model(x).coarse_logits, model.fine_to_coarse[fine])


def perturb(
    model: C2FClassifier,
    x: torch.Tensor,
    fine: torch.Tensor,
    adv: AdversarialConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """x' = x + delta: random start in the eps-ball, then ``adv.steps`` projected signed-gradient
    steps on ``attack_loss`` (the model's mode is left as the caller set it)."""
    adv = adv.resolved()
    delta = (torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1).to(x.device) * adv.eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(adv.steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(attack_loss(model, x + delta, fine, adv.target), delta)
        delta = (delta.detach() + adv.alpha * grad.sign()).clamp(-adv.eps, adv.eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def robust_accuracy(
    model: C2FClassifier,
    x: torch.Tensor,
    fine: torch.Tensor,
    eps: float,
    steps: int = VAL_PGD_STEPS,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[float, float]:
    """(coarse, fine) accuracy under PGD (true labels, random start, alpha = 2.5 eps / steps) in
    eval mode: the coarse accuracy against PGD on the coarse CE, the fine accuracy against PGD
    on both stages' loss (a fine prediction needs the right coarse class too). A quick
    robustness monitor, not the benchmark."""
    accs = []
    for target, stage in (("coarse", 0), ("both", 1)):
        pgd = AdversarialConfig("pgd", target, eps, steps)
        gen = torch.Generator().manual_seed(seed)
        with eval_mode(model):
            x_adv = torch.cat([
                perturb(model, x[i : i + batch_size], fine[i : i + batch_size], pgd, gen)
                for i in range(0, len(x), batch_size)
            ])  # fmt: skip
        accs.append(accuracy(model, x_adv, fine)[stage])
    return accs[0], accs[1]


def sample_accuracy(model: C2FClassifier, n: int = SAMPLE_N, input_size: int = 32) -> dict:
    """Clean accuracies on the first ``n`` test-split images (what the shipped test rechecks)."""
    x, y, _ = ShapesC2F(n, SHAPES_SPLITS["test"], input_size).tensors()
    coarse, fine = accuracy(model, x, y)
    return {"split": "test", "seed": SHAPES_SPLITS["test"], "n": n, "coarse": coarse, "fine": fine}


def train_adversarial(
    cfg: TrainConfig,
    adv: AdversarialConfig,
    out: str | os.PathLike,
    init: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Adversarially train on the shapes train split, watch clean and PGD accuracy on the val
    split, save the checkpoint (with every setting and the test-sample accuracies) to ``out``.

    ``init``: a checkpoint to fine-tune (:func:`~c2f_attacks.train.initial_model`: its
    architecture replaces ``cfg``'s; its SHA-256 is recorded); None trains from scratch."""
    adv = adv.resolved()
    seed_everything(cfg.seed)
    model, cfg = initial_model(cfg, init)
    train = ShapesC2F(cfg.n_train, SHAPES_SPLITS["train"], cfg.input_size).tensors()[:2]
    val = ShapesC2F(cfg.n_val, SHAPES_SPLITS["val"], cfg.input_size).tensors()[:2]
    val_robust = (val[0][:VAL_ROBUST_N], val[1][:VAL_ROBUST_N])

    def watch(m: C2FClassifier) -> dict:
        coarse, fine = robust_accuracy(m, *val_robust, eps=adv.eps, seed=cfg.seed)
        return {"val_pgd_coarse_acc": coarse, "val_pgd_fine_acc": fine}

    history = fit(
        model,
        cfg,
        train,
        val,
        perturb_batch=lambda m, x, y, gen: perturb(m, x, y, adv, gen),
        epoch_metrics=watch,
        progress=progress,
    )
    meta = {
        "train_config": asdict(cfg),
        "adversarial": asdict(adv),
        "history": history,
        "dataset": "shapes",
        "init": init_record(init),
        "torch_threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),  # TorchVersion does not load weights-only
        "sample_accuracy": sample_accuracy(model, input_size=cfg.input_size),
    }
    save_checkpoint(model, out, meta=meta)
    return meta

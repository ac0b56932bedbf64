"""Reproducible training of a C2F-VGG16 on the procedural shapes data (``c2f-bench train``).

Loss: cross-entropy of the coarse head on the coarse label plus cross-entropy of the true coarse
class's fine head on the fine label (each F_i learns only its own classes, as in a C2F cascade).
Training starts from a fresh model, or fine-tunes a checkpoint (``init``; its architecture
replaces the config's, and the checkpoint's name and SHA-256 are recorded).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.hierarchy import check_same_hierarchy
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.models.vgg import C2FVGG16, VGGConfig
from c2f_attacks.models.zoo import load_checkpoint, save_checkpoint
from c2f_attacks.modes import eval_mode

#: the shapes images' per-channel statistics, measured on the train split (rounded)
SHAPES_MEAN = (0.5, 0.5, 0.5)
SHAPES_STD = (0.25, 0.25, 0.25)


@dataclass
class TrainConfig:
    n_train: int = 40_000
    n_val: int = 2_000
    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    width: float = 0.25
    head_width: int = 256
    input_size: int = 32
    batch_norm: bool = True
    seed: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def c2f_loss(model: C2FClassifier, x: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    out = model(x)
    coarse = model.fine_to_coarse[fine]
    own_group = model.group_mask[coarse]
    fine_logits = out.fine_logits.masked_fill(~own_group, float("-inf"))
    return F.cross_entropy(out.coarse_logits, coarse) + F.cross_entropy(fine_logits, fine)


@torch.no_grad()
def accuracy(model: C2FClassifier, x: torch.Tensor, fine: torch.Tensor, batch_size: int = 500):
    """(coarse accuracy, fine accuracy) of ``model`` on images ``x`` with fine labels, in eval
    mode; every submodule's train/eval flag is restored afterwards."""
    device = next(model.parameters()).device
    hits_c = hits_f = 0
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            out = model(x[i : i + batch_size].to(device))
            y = fine[i : i + batch_size].to(device)
            hits_c += (out.coarse_pred == model.fine_to_coarse[y]).sum().item()
            hits_f += (out.fine_pred == y).sum().item()
    return hits_c / len(x), hits_f / len(x)


#: ``perturb_batch(model, x, fine, generator) -> x_adv``: adversarial training's batch change
Perturb = Callable[[C2FClassifier, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def build_model(cfg: TrainConfig) -> C2FClassifier:
    """The C2F-VGG16 that ``cfg`` describes, for the shapes hierarchy."""
    return C2FVGG16(
        ShapesC2F.hierarchy,
        VGGConfig(
            width=cfg.width,
            input_size=cfg.input_size,
            batch_norm=cfg.batch_norm,
            head_width=cfg.head_width,
            mean=SHAPES_MEAN,
            std=SHAPES_STD,
        ),
    )


def initial_model(
    cfg: TrainConfig, init: str | os.PathLike | None = None
) -> tuple[C2FClassifier, TrainConfig]:
    """The model training starts from, in train mode, and the config that describes it: a fresh
    :func:`build_model` (``init`` None), or the checkpoint ``init`` to fine-tune, whose
    architecture (width, head width, input size, BatchNorm) replaces ``cfg``'s. A checkpoint of
    another hierarchy than the shapes data's is a UserError naming the differences."""
    if init is None:
        return build_model(cfg).train(), cfg
    model = load_checkpoint(init).train()
    check_same_hierarchy(
        model.hierarchy, ShapesC2F.hierarchy, (f"checkpoint {init}", "the shapes data")
    )
    arch = model.cfg
    cfg = replace(cfg, width=arch.width, head_width=arch.head_width,
                  input_size=arch.input_size, batch_norm=arch.batch_norm)  # fmt: skip
    return model, cfg


def init_record(init: str | os.PathLike | None) -> dict | None:
    """What a checkpoint's metadata says about its start: the ``init`` file's name and SHA-256
    (None: trained from scratch)."""
    if init is None:
        return None
    return {"path": Path(init).name, "sha256": hashlib.sha256(Path(init).read_bytes()).hexdigest()}


def fit(
    model: C2FClassifier,
    cfg: TrainConfig,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    perturb_batch: Perturb | None = None,
    epoch_metrics: Callable[[C2FClassifier], dict] | None = None,
    progress: bool = True,
) -> list[dict]:
    """The training loop (SGD + Nesterov, one-cycle lr, random flips), optionally with each
    batch replaced by ``perturb_batch(model, x, y, gen)`` after the flip (adversarial training).
    Returns the per-epoch history (val accuracies plus ``epoch_metrics(model)``)."""
    x_train, y_train = train
    n_train = len(x_train)
    steps_per_epoch = (n_train + cfg.batch_size - 1) // cfg.batch_size
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n_train, generator=gen)
        bar = tqdm(
            range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress
        )
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            xb = x_train[idx]
            # Shapes are symmetric classes under reflection: flips preserve the label.
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            if perturb_batch is not None:
                xb = perturb_batch(model, xb, y_train[idx], gen)
            loss = c2f_loss(model, xb, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        acc_c, acc_f = accuracy(model, *val)
        row = {"epoch": epoch + 1, "val_coarse_acc": acc_c, "val_fine_acc": acc_f}
        if epoch_metrics is not None:
            row.update(epoch_metrics(model))
        history.append(row)
        if progress:
            tqdm.write(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in row.items()))  # fmt: skip
    model.eval()
    return history


def train_shapes(
    cfg: TrainConfig,
    out: str | os.PathLike,
    init: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Train on the shapes train split, validate on the val split, save the checkpoint to
    ``out``. ``init``: a checkpoint to fine-tune (:func:`initial_model`); None trains from
    scratch."""
    seed_everything(cfg.seed)
    model, cfg = initial_model(cfg, init)
    train = ShapesC2F(cfg.n_train, SHAPES_SPLITS["train"], cfg.input_size).tensors()[:2]
    val = ShapesC2F(cfg.n_val, SHAPES_SPLITS["val"], cfg.input_size).tensors()[:2]
    history = fit(model, cfg, train, val, progress=progress)
    meta = {"train_config": asdict(cfg), "history": history, "dataset": "shapes"}
    if init is not None:
        meta["init"] = init_record(init)
    save_checkpoint(model, out, meta=meta)
    return meta

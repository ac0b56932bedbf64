"""Predictions of one batch, and the one batched way to get them from a model.

A *stage* is ``"coarse"`` (the coarse classifier C of a C2F model), ``"fine"`` (the fine
classifier F_c of the predicted coarse class c) or ``None`` for a flat classifier (any
``nn.Module`` returning logits ``(N, K)``). :class:`Predictions` holds the attacked stage's
predictions and, on C2F models, both levels; the success criteria
(:mod:`c2f_attacks.attacks.criteria`) compare two of them.

Everything that turns model outputs into a verdict goes through here: :func:`predictions_of`
(one output: a :class:`~c2f_attacks.models.base.C2FOutput` from PyTorch or onnxruntime, or flat
logits) and :func:`predict` (a model over any number of images, in chunks).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from c2f_attacks.errors import UserError
from c2f_attacks.models.base import C2FOutput
from c2f_attacks.modes import eval_mode


@dataclass
class Predictions:
    """Predictions of one batch: ``stage`` always; ``coarse``/``fine`` on C2F models, else None."""

    stage: torch.Tensor
    coarse: torch.Tensor | None = None
    fine: torch.Tensor | None = None

    def __getitem__(self, rows) -> Predictions:
        """The predictions of the batch rows ``rows`` (index tensor, mask or slice)."""
        return Predictions(
            self.stage[rows],
            None if self.coarse is None else self.coarse[rows],
            None if self.fine is None else self.fine[rows],
        )

    def cpu(self) -> Predictions:
        return Predictions(*(None if t is None else t.cpu() for t in (self.stage, self.coarse,
                                                                       self.fine)))  # fmt: skip

    @staticmethod
    def cat(parts: list[Predictions]) -> Predictions:
        """The predictions of consecutive batches as one."""

        def join(field: str) -> torch.Tensor | None:
            values = [getattr(p, field) for p in parts]
            return None if values[0] is None else torch.cat(values)

        return Predictions(join("stage"), join("coarse"), join("fine"))


def predictions_of(out: C2FOutput | torch.Tensor, stage: str | None) -> Predictions:
    """The :class:`Predictions` of one model output with ``stage`` as the attacked one: a
    C2F output (PyTorch's or onnxruntime's; its logits are not needed) or flat logits (N, K)."""
    if stage is None:
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise UserError(f"a flat model must return logits (N, classes), got "
                            f"{type(out).__name__}")  # fmt: skip
        return Predictions(out.argmax(dim=1))
    pred = out.coarse_pred if stage == "coarse" else out.fine_pred
    return Predictions(pred, out.coarse_pred, out.fine_pred)


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, stage: str | None, batch_size: int = 256
) -> Predictions:
    """``model``'s predictions for the images ``x``, ``batch_size`` at a time (memory bounded
    whatever N is), in eval mode, on the CPU. ``model`` is a C2F model (``stage`` "coarse" or
    "fine") or a flat one (``stage=None``); anything called like a model works, an onnxruntime
    session (:class:`~c2f_attacks.exporters.OrtC2F`) included."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = model_device(model, x.device)
    parts = []
    with eval_mode(model) if isinstance(model, nn.Module) else nullcontext():
        for start in range(0, x.shape[0], batch_size):
            out = model(x[start : start + batch_size].to(device))
            parts.append(predictions_of(out, stage).cpu())
    if not parts:
        empty = torch.zeros(0, dtype=torch.long)
        return Predictions(empty, *((None, None) if stage is None else (empty, empty)))
    return Predictions.cat(parts)


def model_device(model: object, default: torch.device) -> torch.device:
    """Where a module's tensors live: ``default`` for a module without any; the CPU for a
    callable that is no module (an onnxruntime session takes CPU tensors)."""
    if not isinstance(model, nn.Module):
        return torch.device("cpu")
    tensor = next(iter((*model.parameters(), *model.buffers())), None)
    return default if tensor is None else tensor.device

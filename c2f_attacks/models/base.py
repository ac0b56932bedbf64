"""The coarse-to-fine classifier interface shared by every C2F model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.validation import check_image_batch


@dataclass
class C2FOutput:
    """What a C2F model returns for a batch of N images."""

    coarse_logits: torch.Tensor  #: (N, M)
    fine_logits: torch.Tensor  #: (N, K), every head's logits at its global fine indices
    coarse_pred: torch.Tensor  #: (N,) argmax of the coarse logits
    fine_pred: torch.Tensor  #: (N,) global fine index chosen inside the predicted coarse class


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, so that callers work in pixel space [0, 1]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def fine_prediction(fine_logits: torch.Tensor, coarse_pred: torch.Tensor, group_mask: torch.Tensor):
    """argmax of the fine logits restricted to the fine classes of each predicted coarse class."""
    allowed = group_mask[coarse_pred]
    return fine_logits.masked_fill(~allowed, float("-inf")).argmax(dim=1)


class C2FClassifier(nn.Module):
    """Coarse classifier C(x) in R^M plus one fine classifier F_i(x) in R^{M_i} per coarse class.

    Subclasses implement :meth:`logits`, returning ``(coarse_logits (N, M), fine_logits (N, K))``.
    ``model(x)`` adds the predictions: ``c = argmax C(x)``, then ``f = argmax F_c(x)``.
    """

    #: the input side length the model expects, or None for any size
    input_size: int | None = None
    #: the number of image channels the model expects (1 for grayscale), or None for any
    in_channels: int | None = 3

    def __init__(self, hierarchy: Hierarchy):
        super().__init__()
        if not isinstance(hierarchy, Hierarchy):
            raise TypeError(f"hierarchy must be a Hierarchy, got {type(hierarchy).__name__}")
        self.hierarchy = hierarchy
        self.register_buffer("group_mask", hierarchy.group_mask(), persistent=False)
        self.register_buffer("fine_to_coarse", hierarchy.fine_to_coarse, persistent=False)

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> C2FOutput:
        # Layout only: a range check would cost a reduction on every attack step; the library's
        # entry points (attacks, LRP, evaluation) check the values once.
        check_image_batch(x, channels=self.in_channels, size=self.input_size, check_range=False)
        coarse_logits, fine_logits = self.logits(x)
        coarse_pred = coarse_logits.argmax(dim=1)
        fine_pred = fine_prediction(fine_logits, coarse_pred, self.group_mask)
        return C2FOutput(coarse_logits, fine_logits, coarse_pred, fine_pred)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> C2FOutput:
        """Validated inference: checks the values are pixels in [0, 1], then runs ``forward``."""
        check_image_batch(x, channels=self.in_channels, size=self.input_size)
        return self(x)

    def relevance_seed(
        self, x: torch.Tensor, stage: str, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The output to explain for ``stage`` and the relevance that starts there.

        Returns ``(logits, seed)`` with ``seed`` shaped like ``logits``: the one-hot delta on the
        explained class. Coarse explains C_c, fine explains F_c at f (the
        fine logits hold F_c at f's global index). Subclasses whose coarse logits are not the
        output of a linear layer override this.
        """
        coarse_logits, fine_logits = self.logits(x)
        logits = coarse_logits if stage == "coarse" else fine_logits
        return logits, nn.functional.one_hot(target, logits.shape[1]).to(logits.dtype)

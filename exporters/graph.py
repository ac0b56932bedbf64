"""The module that is exported: a C2F model's forward with the predictions inside the graph.

The exported graph has one input, ``images`` (N, C, H, W) float32 in [0, 1] with a dynamic N,
and four named outputs. The predictions are part of the graph so that an ONNX consumer needs no
knowledge of the hierarchy to get ``c = argmax C(x)``, ``f = argmax F_c(x)``.
"""

from __future__ import annotations

import torch
from torch import nn

from c2f_attacks.models.base import C2FClassifier, fine_prediction

INPUT_NAME = "images"
OUTPUT_NAMES = ("coarse_logits", "fine_logits", "coarse_pred", "fine_pred")
BATCH_AXIS = "batch"


class C2FGraph(nn.Module):
    """``images -> (coarse_logits, fine_logits, coarse_pred, fine_pred)``.

    Calls ``model.logits`` rather than ``model(x)``: the forward's Python layout check is not
    traceable and the dataclass output is not an ONNX output. The wrapper changes no mode: the
    exporter traces it inside :func:`c2f_attacks.modes.eval_mode`.
    """

    def __init__(self, model: C2FClassifier):
        super().__init__()
        if not isinstance(model, C2FClassifier):
            raise TypeError(f"model must be a C2FClassifier, got {type(model).__name__}")
        self.model = model

    def forward(self, images: torch.Tensor):
        coarse_logits, fine_logits = self.model.logits(images)
        coarse_pred = coarse_logits.argmax(dim=1)
        fine_pred = fine_prediction(fine_logits, coarse_pred, self.model.group_mask)
        return coarse_logits, fine_logits, coarse_pred, fine_pred

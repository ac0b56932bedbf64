"""Evaluation backends: onnxruntime next to PyTorch.

With ``--backend onnxruntime`` the model is exported to ONNX once per run (parity-checked by the
exporter) into ``<out>/onnx/<model hash>.onnx``, a file the user can reuse (nothing is left in
the system's temporary folder), and every clean and adversarial batch also goes through the
onnxruntime session. Per image the backend reports whether the deployed graph is fooled (the
row's own success rule applied to onnxruntime's predictions) and whether its clean and
adversarial coarse/fine predictions all agree with PyTorch's.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from c2f_attacks.attacks.criteria import Criterion
from c2f_attacks.attacks.predictions import predictions_of
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.runner.distributed import Ranks


class OrtBackend:
    """An onnxruntime session over ``model``'s exported graph, shared by the ranks of a run."""

    def __init__(self, model: C2FClassifier, out: Path, model_hash: str, ranks: Ranks):
        from c2f_attacks.exporters import OrtC2F, export_onnx

        self.path = out / "onnx" / f"{model_hash}.onnx"
        if ranks.is_main:
            export_onnx(model, self.path)
        ranks.barrier()
        self.session = OrtC2F(self.path)

    def evaluate(
        self, x: torch.Tensor, x_adv: torch.Tensor, records: pd.DataFrame, criterion: Criterion
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(fooled, agrees), bool (N,) each, for one batch and its PyTorch ``records``;
        ``criterion``: the row's success rule."""
        clean, adv = self.session(x), self.session(x_adv)
        stage = criterion.stage
        fooled = criterion(predictions_of(clean, stage).cpu(), predictions_of(adv, stage).cpu())
        torch_preds = torch.tensor(
            records[["clean_coarse", "clean_fine", "adv_coarse", "adv_fine"]].to_numpy()
        )
        ort_preds = torch.stack(
            [clean.coarse_pred, clean.fine_pred, adv.coarse_pred, adv.fine_pred], dim=1
        ).cpu()
        return fooled.cpu(), (torch_preds == ort_preds).all(dim=1)

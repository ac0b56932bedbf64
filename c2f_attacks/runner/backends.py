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

from c2f_attacks.attacks import criterion_for
from c2f_attacks.attacks.stage import Predictions
from c2f_attacks.models.base import C2FClassifier, C2FOutput
from c2f_attacks.runner.distributed import Ranks


def stage_predictions(out: C2FOutput, stage: str) -> Predictions:
    """The :class:`Predictions` (on the CPU) of a C2F output with ``stage`` as the attacked one."""
    coarse, fine = out.coarse_pred.cpu(), out.fine_pred.cpu()
    return Predictions(coarse if stage == "coarse" else fine, coarse, fine)


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
        self, x: torch.Tensor, x_adv: torch.Tensor, records: pd.DataFrame, stage: str,
        keep_coarse: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """(fooled, agrees), bool (N,) each, for one batch and its PyTorch ``records``."""
        clean, adv = self.session(x), self.session(x_adv)
        fooled = criterion_for(stage, keep_coarse)(
            stage_predictions(clean, stage), stage_predictions(adv, stage)
        )
        torch_preds = torch.tensor(
            records[["clean_coarse", "clean_fine", "adv_coarse", "adv_fine"]].to_numpy()
        )
        ort_preds = torch.stack(
            [clean.coarse_pred, clean.fine_pred, adv.coarse_pred, adv.fine_pred], dim=1
        ).cpu()
        return fooled.cpu(), (torch_preds == ort_preds).all(dim=1)

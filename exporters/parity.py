"""How closely two backends agree on the same images: predictions and logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from c2f_attacks.models.base import C2FClassifier, C2FOutput
from c2f_attacks.modes import eval_mode


@dataclass(frozen=True)
class Parity:
    """Agreement of a candidate backend's outputs with a reference (PyTorch) on N images."""

    n: int
    coarse_agreement: float  #: share of images with the same coarse prediction
    fine_agreement: float  #: share of images with the same fine prediction
    agreement: float  #: share of images with both predictions the same
    max_abs_diff: float  #: largest |difference| over the coarse and fine logits
    logits_close: bool  #: every logit within ``atol + rtol * |reference|``

    def summary(self) -> str:
        return (
            f"agreement {self.agreement:.4%} on {self.n} images "
            f"(coarse {self.coarse_agreement:.4%}, fine {self.fine_agreement:.4%}), "
            f"max |logit diff| {self.max_abs_diff:.3g}"
        )


def compare_outputs(
    reference: C2FOutput, candidate: C2FOutput, rtol: float = 1e-3, atol: float = 1e-5
) -> Parity:
    n = reference.coarse_pred.shape[0]
    if candidate.coarse_pred.shape[0] != n:
        raise ValueError(
            f"cannot compare outputs for {n} and {candidate.coarse_pred.shape[0]} images"
        )
    coarse_same = reference.coarse_pred.cpu() == candidate.coarse_pred.cpu()
    fine_same = reference.fine_pred.cpu() == candidate.fine_pred.cpu()
    diffs, close = [], True
    for name in ("coarse_logits", "fine_logits"):
        ref = getattr(reference, name).detach().float().cpu()
        cand = getattr(candidate, name).detach().float().cpu()
        diffs.append((ref - cand).abs().max().item())
        close = close and torch.allclose(cand, ref, rtol=rtol, atol=atol)
    return Parity(
        n=n,
        coarse_agreement=coarse_same.float().mean().item(),
        fine_agreement=fine_same.float().mean().item(),
        agreement=(coarse_same & fine_same).float().mean().item(),
        max_abs_diff=max(diffs),
        logits_close=bool(close),
    )


@torch.no_grad()
def torch_outputs(model: C2FClassifier, x: torch.Tensor, batch_size: int = 256) -> C2FOutput:
    """The PyTorch reference: ``model``'s outputs on ``x`` in eval mode (every submodule; each
    flag given back after), ``batch_size`` images at a time, gathered on the CPU."""
    device = next(model.parameters()).device
    with eval_mode(model):
        chunks = [model(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    return C2FOutput(
        *(torch.cat([getattr(c, f) for c in chunks]).cpu() for f in C2FOutput.__dataclass_fields__)
    )

"""Fooling ratios measured in onnxruntime from saved clean and adversarial images.

Saved-pair format (``save_pair`` / ``load_pair``, read by ``c2f-bench evaluate``): a
``torch.save`` dict with ``"clean"`` and ``"adv"``, float tensors (N, 3, H, W) in [0, 1] of the
same shape, image i of ``"adv"`` being the perturbed image i of ``"clean"``. Other keys (labels,
attack settings) are allowed and ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from c2f_attacks._io import atomic_write
from c2f_attacks.models.base import C2FClassifier, C2FOutput
from c2f_attacks.validation import check_image_batch
from exporters.parity import Parity, compare_outputs
from exporters.runtime import OrtC2F

STAGES = ("coarse", "fine")


@dataclass(frozen=True)
class FoolingReport:
    """Fooling ratio of one stage (design.md section 6) and how well ORT agrees with PyTorch."""

    stage: str
    fine_within_coarse: bool  #: fine stage counts only images whose coarse prediction was kept
    n: int
    fooling_ratio: float  #: share of images fooled under the definition above
    fooled: torch.Tensor = field(repr=False)  #: (N,) bool, per image
    coarse_changed: float  #: share with a different coarse prediction
    fine_changed: float  #: share with a different fine prediction
    fine_changed_coarse_kept: float  #: share with a different fine and the same coarse prediction
    providers: list[str]
    torch_fooling_ratio: float | None = None  #: the same ratio from PyTorch (when a model is given)
    clean_parity: Parity | None = None  #: ORT vs PyTorch on the clean images
    adv_parity: Parity | None = None  #: ORT vs PyTorch on the adversarial images

    @property
    def agreement(self) -> float | None:
        """Share of the 2N images (clean and adversarial) where ORT and PyTorch predict the same
        coarse and fine class; None without a model."""
        if self.clean_parity is None or self.adv_parity is None:
            return None
        return (self.clean_parity.agreement + self.adv_parity.agreement) / 2

    def to_dict(self) -> dict:
        """Plain numbers, for JSON and the leaderboard."""
        keys = ("stage", "fine_within_coarse", "n", "fooling_ratio", "coarse_changed",
                "fine_changed", "fine_changed_coarse_kept", "providers",
                "torch_fooling_ratio")  # fmt: skip
        return {**{k: getattr(self, k) for k in keys}, "agreement": self.agreement}


def fooled_mask(
    clean: C2FOutput, adv: C2FOutput, stage: str, fine_within_coarse: bool = False
) -> torch.Tensor:
    """(N,) bool: the stage's prediction changed (and, for ``fine_within_coarse``, the coarse
    prediction did not: LRPF's success criterion)."""
    coarse_changed = clean.coarse_pred != adv.coarse_pred
    if stage == "coarse":
        return coarse_changed
    fine_changed = clean.fine_pred != adv.fine_pred
    return fine_changed & ~coarse_changed if fine_within_coarse else fine_changed


def evaluate_fooling(
    ort_or_path: OrtC2F | str | os.PathLike,
    x_clean: torch.Tensor,
    x_adv: torch.Tensor,
    stage: str = "coarse",
    model: C2FClassifier | None = None,
    *,
    fine_within_coarse: bool = False,
    providers=None,
    batch_size: int = 256,
) -> FoolingReport:
    """Fooling ratio of ``stage`` on (clean, adversarial) pairs, predicted by onnxruntime.

    With ``model``, the same images also go through PyTorch: the report then carries the
    agreement of ORT's predictions with PyTorch's and PyTorch's own fooling ratio.
    ``providers``/``batch_size`` are used when a path is given.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if fine_within_coarse and stage != "fine":
        raise ValueError("fine_within_coarse applies to stage='fine' only")
    _check_pair(x_clean, x_adv)
    session = (
        ort_or_path
        if isinstance(ort_or_path, OrtC2F)
        else OrtC2F(ort_or_path, providers, batch_size=batch_size)
    )
    clean, adv = session(x_clean), session(x_adv)
    fooled = fooled_mask(clean, adv, stage, fine_within_coarse).cpu()
    coarse_changed = fooled_mask(clean, adv, "coarse").cpu()
    fine_changed = fooled_mask(clean, adv, "fine").cpu()
    extra = {}
    if model is not None:
        t_clean, t_adv = (
            _torch_outputs(model, x_clean, batch_size),
            _torch_outputs(model, x_adv, batch_size),
        )
        extra = {
            "torch_fooling_ratio": _ratio(fooled_mask(t_clean, t_adv, stage, fine_within_coarse)),
            "clean_parity": compare_outputs(t_clean, clean),
            "adv_parity": compare_outputs(t_adv, adv),
        }
    return FoolingReport(
        stage=stage,
        fine_within_coarse=fine_within_coarse,
        n=x_clean.shape[0],
        fooling_ratio=_ratio(fooled),
        fooled=fooled,
        coarse_changed=_ratio(coarse_changed),
        fine_changed=_ratio(fine_changed),
        fine_changed_coarse_kept=_ratio(fine_changed & ~coarse_changed),
        providers=session.providers,
        **extra,
    )


def _ratio(mask: torch.Tensor) -> float:
    return mask.float().mean().item()


@torch.no_grad()
def _torch_outputs(model: C2FClassifier, x: torch.Tensor, batch_size: int) -> C2FOutput:
    device = next(model.parameters()).device
    chunks = [model(x[i : i + batch_size].to(device)) for i in range(0, x.shape[0], batch_size)]
    return C2FOutput(
        *(torch.cat([getattr(c, f) for c in chunks]).cpu() for f in C2FOutput.__dataclass_fields__)
    )


def _check_pair(x_clean: torch.Tensor, x_adv: torch.Tensor) -> None:
    check_image_batch(x_clean, channels=None, name="clean images")
    check_image_batch(x_adv, channels=None, name="adversarial images")
    if x_clean.shape != x_adv.shape:
        raise ValueError(
            f"clean images {tuple(x_clean.shape)} and adversarial images {tuple(x_adv.shape)} "
            "must have the same shape (one adversarial image per clean image)"
        )


def save_pair(path: str | os.PathLike, x_clean: torch.Tensor, x_adv: torch.Tensor, **extra) -> Path:
    """Write the saved-pair format (see the module docstring), atomically."""
    _check_pair(x_clean, x_adv)
    payload = {"clean": x_clean.detach().cpu(), "adv": x_adv.detach().cpu(), **extra}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_pair(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``(clean, adv)`` from a saved-pair file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"saved tensors {path} do not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, pickle errors, not a torch file
        raise ValueError(f"{path} cannot be read as a torch file: {type(err).__name__}") from None
    if not isinstance(payload, dict) or not {"clean", "adv"} <= set(payload):
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{path} must hold a dict with tensors 'clean' and 'adv' (N, 3, H, W); found {found}"
        )
    clean, adv = payload["clean"], payload["adv"]
    try:
        _check_pair(clean, adv)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
    return clean, adv

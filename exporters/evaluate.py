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
from c2f_attacks.attacks.criteria import get_criterion
from c2f_attacks.attacks.predictions import predictions_of
from c2f_attacks.errors import UserError
from c2f_attacks.exporters.parity import Parity, compare_outputs, torch_outputs
from c2f_attacks.exporters.runtime import OrtC2F
from c2f_attacks.hierarchy import STAGES
from c2f_attacks.models.base import C2FClassifier, C2FOutput
from c2f_attacks.validation import check_image_batch


@dataclass(frozen=True)
class FoolingReport:
    """Fooling ratio of one stage and how well ORT agrees with PyTorch.

    An image is fooled by the success rule ``success_rule`` (a name of
    :data:`c2f_attacks.attacks.CRITERIA`): by default the stage's prediction on the adversarial
    image differs from the one on the clean image."""

    stage: str
    success_rule: str
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
        keys = ("stage", "success_rule", "n", "fooling_ratio", "coarse_changed",
                "fine_changed", "fine_changed_coarse_kept", "providers",
                "torch_fooling_ratio")  # fmt: skip
        return {**{k: getattr(self, k) for k in keys}, "agreement": self.agreement}


def fooled_mask(
    clean: C2FOutput, adv: C2FOutput, stage: str, success_rule: str = "stage_changed"
) -> torch.Tensor:
    """(N,) bool on the CPU: the success rule applied to two outputs' predictions."""
    criterion = get_criterion(success_rule, stage)
    return criterion(predictions_of(clean, stage).cpu(), predictions_of(adv, stage).cpu())


def evaluate_fooling(
    ort_or_path: OrtC2F | str | os.PathLike,
    x_clean: torch.Tensor,
    x_adv: torch.Tensor,
    stage: str = "coarse",
    model: C2FClassifier | None = None,
    *,
    success_rule: str = "stage_changed",
    providers=None,
    batch_size: int = 256,
) -> FoolingReport:
    """Fooling ratio of ``stage`` on (clean, adversarial) pairs, predicted by onnxruntime.

    With ``model``, the same images also go through PyTorch: the report then carries the
    agreement of ORT's predictions with PyTorch's and PyTorch's own fooling ratio.
    ``providers``/``batch_size`` are used when a path is given.
    """
    if stage not in STAGES:
        raise UserError(f"stage must be one of {STAGES}, got {stage!r}")
    get_criterion(success_rule, stage)  # a rule the stage does not have fails before any image
    _check_pair(x_clean, x_adv)
    session = (
        ort_or_path
        if isinstance(ort_or_path, OrtC2F)
        else OrtC2F(ort_or_path, providers, batch_size=batch_size)
    )
    clean, adv = session(x_clean), session(x_adv)
    fooled = fooled_mask(clean, adv, stage, success_rule)
    extra = {}
    if model is not None:
        t_clean, t_adv = (
            torch_outputs(model, x_clean, batch_size),
            torch_outputs(model, x_adv, batch_size),
        )
        extra = {
            "torch_fooling_ratio": _ratio(fooled_mask(t_clean, t_adv, stage, success_rule)),
            "clean_parity": compare_outputs(t_clean, clean),
            "adv_parity": compare_outputs(t_adv, adv),
        }
    return FoolingReport(
        stage=stage,
        success_rule=success_rule,
        n=x_clean.shape[0],
        fooling_ratio=_ratio(fooled),
        fooled=fooled,
        coarse_changed=_ratio(fooled_mask(clean, adv, "coarse")),
        fine_changed=_ratio(fooled_mask(clean, adv, "fine")),
        fine_changed_coarse_kept=_ratio(
            fooled_mask(clean, adv, "fine", "fine_changed_coarse_kept")
        ),
        providers=session.providers,
        **extra,
    )


def _ratio(mask: torch.Tensor) -> float:
    return mask.float().mean().item()


def _check_pair(x_clean: torch.Tensor, x_adv: torch.Tensor) -> None:
    check_image_batch(x_clean, channels=None, name="clean images")
    check_image_batch(x_adv, channels=None, name="adversarial images")
    if x_clean.shape != x_adv.shape:
        raise UserError(
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
        raise UserError(f"{path} cannot be read as a torch file: {type(err).__name__}") from None
    if not isinstance(payload, dict) or not {"clean", "adv"} <= set(payload):
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise UserError(
            f"{path} must hold a dict with tensors 'clean' and 'adv' (N, 3, H, W); found {found}"
        )
    clean, adv = payload["clean"], payload["adv"]
    try:
        _check_pair(clean, adv)
    except (TypeError, ValueError) as err:  # the checks of the file's tensors
        raise UserError(f"{path}: {err}") from None
    return clean, adv

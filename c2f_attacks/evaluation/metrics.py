"""Per-image values of an attack run, recomputable from saved clean and adversarial tensors.

``per_image_records(model, x, x_adv, y, stage, ...)`` runs the model on ``batch_size`` images at
a time (memory bounded whatever N is) and returns one row per image (``RECORD_COLUMNS``):

- labels ``y_fine``, ``y_coarse`` (the dataset's fine label and its coarse class) and the clean
  and adversarial predictions ``clean_coarse``, ``clean_fine``, ``adv_coarse``, ``adv_fine``.
  A flat model's classes live in the fine columns; its coarse columns are -1.
- ``success``: the row's success rule (``criterion``, a name or a
  :class:`~c2f_attacks.attacks.criteria.Criterion`; default ``stage_changed``: the stage
  prediction changed from the clean one; ``fine_changed_coarse_kept``, LRPF's: the fine one
  changed and the coarse one did not; a targeted call's ``res.criterion``, ``target_reached``
  holding the requested classes: the stage decides them). Never judged against ``y``.
- ``target_class``: the class a targeted row asked each image's stage to decide (the targets of
  a ``target_reached`` criterion, in the stage's label space); -1 on untargeted rows.
- ``severity``: the mistake severity of the fine prediction, the height in the hierarchy's tree
  of the lowest common ancestor of the clean and the adversarial fine predictions
  (:meth:`~c2f_attacks.Hierarchy.severity`; 0 where the fine prediction did not change; two
  levels: 1 inside a coarse class, 2 across), on both stages of a C2F model; -1 on flat
  models (no hierarchy).
- ``fine_flipped`` (f' != f), ``coarse_flipped`` (c' != c), ``fine_flipped_coarse_kept``
  (f' != f and c' == c): both fine-stage rules on every row (flat: the class changed; no coarse).
- ``correct``: the clean stage prediction equals the stage label of ``y``; ``misclassified`` is
  its negation, a flag and never a success.
- ``linf``, ``l2`` (over all C*H*W values of ``delta = x_adv - x``) and ``l0``: the fraction of
  pixels changed, where a pixel is a spatial location that counts as changed when any channel
  moved by more than ``L0_TOLERANCE`` = 1e-6 (above float32 rounding of values in [0, 1], about
  6e-8, below the smallest step any attack here takes).
- Explanation values (``relevance=True``), with ``H``/``H'`` the LRP heatmaps of the *clean*
  stage class at ``x``/``x_adv`` and ``|delta|_p`` summed over channels:
  ``relevance_shift = 1 - pearson(H, H')``;
  ``perturbation_in_relevance = sum_{p in T} |delta|_p / sum_p |delta|_p`` with T the top
  ``top_k`` fraction of the pixels of ``H``. This one is circular for LRP-masked attacks: they
  perturb exactly the top of the LRP map of the model under attack, so it is high by
  construction and says nothing about whether the explanation is right. ``object_share`` is the
  explanation metric to read.
- ``object_share`` (with ``masks``, the ground-truth object masks (N, H, W)):
  ``sum_{p in mask} |delta|_p / sum_p |delta|_p``.
- ``queries``, ``first_success_step``, ``eps`` as the attack reported them.

Unavailable values are -1 (integers) or NaN (floats). A zero perturbation has shares 0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from c2f_attacks.attacks.base import model_channels
from c2f_attacks.attacks.criteria import Criterion, get_criterion
from c2f_attacks.attacks.predictions import Predictions, model_device, predictions_of
from c2f_attacks.attacks.stage import check_stage
from c2f_attacks.evaluation.records import RECORD_COLUMNS
from c2f_attacks.lrp.explain import (
    DEFAULT_COMPOSITE,
    heatmap,
    stage_relevance_of,
    top_fraction_mask,
)
from c2f_attacks.modes import eval_mode
from c2f_attacks.validation import check_image_batch, check_labels

L0_TOLERANCE = 1e-6
DEFAULT_TOP_K = 0.1


def perturbation_norms(delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image ``linf``, ``l2`` and ``l0`` (fraction of pixels changed) of ``delta`` (N,C,H,W)."""
    flat = delta.flatten(1)
    changed = delta.abs().amax(dim=1) > L0_TOLERANCE
    return {
        "linf": flat.abs().amax(dim=1),
        "l2": flat.norm(dim=1),
        "l0": changed.flatten(1).float().mean(dim=1),
    }


def share_inside(delta: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per image: ``sum_{p in region} |delta|_p / sum_p |delta|_p`` (0 for a zero delta)."""
    per_pixel = delta.abs().sum(dim=1)
    total = per_pixel.flatten(1).sum(dim=1)
    inside = (per_pixel * region.to(per_pixel.dtype)).flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Pearson correlation of two (N, ...) tensors (0 where one is constant)."""
    a = a.flatten(1) - a.flatten(1).mean(dim=1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(dim=1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(
        denom > 0, (a * b).sum(dim=1) / denom.clamp_min(1e-30), torch.zeros_like(denom)
    )


def _per_image_vector(value, n: int, name: str, dtype: torch.dtype, fill) -> torch.Tensor:
    """``value`` as an (n,) CPU tensor: None -> ``fill``, a scalar -> repeated."""
    if value is None:
        return torch.full((n,), fill, dtype=dtype)
    value = torch.as_tensor(value).detach().cpu()
    if value.dim() == 0:
        value = value.expand(n)
    if value.shape != (n,):
        raise ValueError(
            f"{name} must have shape ({n},) (one value per image), got {tuple(value.shape)}"
        )
    return value.to(dtype)


def _predict(model: nn.Module, x: torch.Tensor, stage: str | None) -> tuple[Predictions, int]:
    """Predictions and the number of classes of the finest level."""
    out = model(x)
    pred = predictions_of(out, stage)
    return pred, (out.fine_logits if stage is not None else out).shape[1]


@torch.no_grad()
def per_image_records(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    stage: str | None,
    *,
    criterion: str | Criterion = "stage_changed",
    masks: torch.Tensor | None = None,
    queries: torch.Tensor | None = None,
    first_success_step: torch.Tensor | None = None,
    eps: float | torch.Tensor | None = None,
    index: torch.Tensor | None = None,
    relevance: bool = True,
    top_k: float = DEFAULT_TOP_K,
    composite: str = DEFAULT_COMPOSITE,
    batch_size: int = 256,
    clean_heatmap: torch.Tensor | None = None,
) -> pd.DataFrame:
    """One row per image of an attack run (columns ``RECORD_COLUMNS``; see the module docstring).

    ``y``: global fine labels on a C2F model (the coarse label is derived through the
    hierarchy), class indices on a flat one. ``stage``: "coarse"/"fine" (C2F) or None (flat).
    ``index``: the images' global indices (default 0..N-1; read it back as ``records["index"]``:
    ``records.index`` is the frame's own index). ``eps``: a number or one per image.
    ``clean_heatmap``: :func:`clean_stage_heatmap` of ``x`` with the same ``composite``, when the
    caller already has it (it does not depend on the attack, so a run of many attacks on one
    batch computes it once); computed here otherwise.
    """
    check_stage(model, stage)
    c2f = stage is not None
    channels = model_channels(model)
    x = check_image_batch(x, channels=channels, name="x")
    x_adv = check_image_batch(x_adv, channels=channels, name="x_adv")
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv has shape {tuple(x_adv.shape)}, x {tuple(x.shape)}")
    criterion = get_criterion(criterion, stage)
    n = x.shape[0]
    if c2f:
        y = check_labels(y, n, model.hierarchy.num_fine, name="y (global fine labels)")
    else:  # the class count is known after a forward: checked on the first chunk
        y = check_labels(y, n, torch.iinfo(torch.long).max, name="y (class indices)")
    if masks is not None and tuple(masks.shape) != (n, *x.shape[2:]):
        raise ValueError(f"masks must have shape {(n, *x.shape[2:])}, got {tuple(masks.shape)}")
    if clean_heatmap is not None and tuple(clean_heatmap.shape) != (n, *x.shape[2:]):
        raise ValueError(f"clean_heatmap must have shape {(n, *x.shape[2:])}, "
                         f"got {tuple(clean_heatmap.shape)}")  # fmt: skip
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if relevance and not 0 < top_k <= 1:
        raise ValueError(f"top_k must lie in (0, 1], got {top_k!r}")
    given = {
        "index": torch.arange(n)
        if index is None
        else _per_image_vector(index, n, "index", torch.long, 0),
        "queries": _per_image_vector(queries, n, "queries", torch.long, -1),
        "first_success_step": _per_image_vector(
            first_success_step, n, "first_success_step", torch.long, -1
        ),
        "eps": _per_image_vector(eps, n, "eps", torch.float64, math.nan),
    }
    device = model_device(model, x.device)
    chunks = []
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        chunks.append(
            _chunk(
                model, criterion[part], c2f, stage, x[part].to(device), x_adv[part].to(device),
                y[part].to(device), None if masks is None else masks[part].to(device),
                relevance, top_k, composite,
                None if clean_heatmap is None else clean_heatmap[part].to(device),
            )
        )  # fmt: skip
    columns = {**given, **{k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}}
    return pd.DataFrame(
        {name: _column(columns[name]) for name in RECORD_COLUMNS}, index=pd.RangeIndex(n)
    )


@torch.no_grad()
def clean_stage_heatmap(
    model: nn.Module,
    x: torch.Tensor,
    stage: str | None,
    composite: str = DEFAULT_COMPOSITE,
    batch_size: int = 256,
) -> torch.Tensor:
    """(N, H, W): the LRP heatmap ``H`` of the records' explanation values, the relevance of the
    clean ``stage`` prediction at ``x``, summed over channels; on ``x``'s device."""
    check_stage(model, stage)
    x = check_image_batch(x, channels=model_channels(model), name="x")
    device = model_device(model, x.device)
    parts = []
    with eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start : start + batch_size].to(device)
            clean, _ = _predict(model, chunk, stage)
            target = clean.stage
            with torch.enable_grad():
                parts.append(heatmap(stage_relevance_of(model, chunk, stage, target, composite)))
    return torch.cat(parts).to(x.device)


def _column(values: torch.Tensor) -> np.ndarray:
    array = values.numpy()
    if values.dtype == torch.bool:
        return array
    return array.astype(np.float64 if values.is_floating_point() else np.int64)


def _chunk(
    model, criterion, c2f, stage, x, x_adv, y, masks, relevance, top_k, composite, h_clean
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Per-image values of one chunk of images (CPU tensors)."""
    with eval_mode(model):
        clean, classes = _predict(model, x, stage)
        adv, _ = _predict(model, x_adv, stage)
    check_labels(y, len(y), classes, name="y")
    minus_one = torch.full_like(y, -1)
    if c2f:
        y_coarse = model.fine_to_coarse[y]
        stage_label = y_coarse if stage == "coarse" else y
        coarse_flipped = adv.coarse != clean.coarse
        per = {"clean_coarse": clean.coarse, "adv_coarse": adv.coarse, "clean_fine": clean.fine,
               "adv_fine": adv.fine}  # fmt: skip
    else:
        y_coarse, stage_label = minus_one, y
        coarse_flipped = torch.zeros_like(y, dtype=torch.bool)
        per = {"clean_coarse": minus_one, "adv_coarse": minus_one, "clean_fine": clean.stage,
               "adv_fine": adv.stage}  # fmt: skip
    fine_flipped = per["adv_fine"] != per["clean_fine"]
    per["target_class"] = criterion.target.to(y.device) if criterion.targeted else minus_one
    per["severity"] = model.hierarchy.severity(clean.fine, adv.fine) if c2f else minus_one
    correct = clean.stage == stage_label
    per.update(
        y_fine=y, y_coarse=y_coarse, correct=correct, misclassified=~correct,
        success=criterion(clean, adv), fine_flipped=fine_flipped, coarse_flipped=coarse_flipped,
        fine_flipped_coarse_kept=fine_flipped & ~coarse_flipped,
    )  # fmt: skip
    delta = x_adv - x
    per.update(perturbation_norms(delta))
    nan = torch.full((len(x),), math.nan, device=x.device)
    per["relevance_shift"] = per["perturbation_in_relevance"] = nan
    if relevance:
        with eval_mode(model), torch.enable_grad():
            if h_clean is None:
                h_clean = heatmap(stage_relevance_of(model, x, stage, clean.stage, composite))
            h_adv = heatmap(stage_relevance_of(model, x_adv, stage, clean.stage, composite))
        per["relevance_shift"] = 1 - pearson(h_clean, h_adv)
        per["perturbation_in_relevance"] = share_inside(delta, top_fraction_mask(h_clean, top_k))
    per["object_share"] = nan if masks is None else share_inside(delta, masks.bool())
    return {k: v.detach().cpu() for k, v in per.items()}

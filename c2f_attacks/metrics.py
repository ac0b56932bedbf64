"""Attack metrics (design.md section 6), recomputable from saved clean and adversarial tensors.

``attack_metrics(model, x_clean, x_adv, labels, stage, masks=None)`` predicts both batches and
returns a dict. Definitions (N images; "fooled" = the stage prediction on ``x_adv`` differs from
the one on ``x_clean``, and with ``keep_coarse=True`` (LRPF) the coarse prediction is unchanged):

- ``fooling_ratio`` = #fooled / N; ``success_rate`` = #fooled / #correct over the images whose
  clean stage prediction equals the true label; ``clean_acc`` (stage) and, on C2F models,
  ``clean_acc_coarse`` / ``clean_acc_fine``.
- Norms of ``delta = x_adv - x_clean`` over the fooled images: ``linf_mean``, ``linf_median``,
  ``l2_mean`` (over all C*H*W values) and ``l0_mean``: the fraction of pixels changed, where a
  pixel is a spatial location and counts as changed when any channel moved by more than
  ``L0_TOLERANCE`` = 1e-6 (above float32 rounding of values in [0, 1], about 6e-8, below the
  smallest step any attack here takes).
- With ``relevance=True`` (needs :mod:`c2f_attacks.lrp`), over the fooled images, with
  ``H_clean``/``H_adv`` the heatmaps of the *clean* stage class at ``x_clean``/``x_adv``:
  ``relevance_shift`` = mean of ``1 - pearson(H_clean, H_adv)``;
  ``perturbation_in_relevance`` = mean of ``sum_{p in T} |delta|_p / sum_p |delta|_p`` with T the
  top-``top_k`` fraction of pixels of ``H_clean`` and ``|delta|_p`` summed over channels.
- ``object_share`` (with ``masks`` (N, H, W)) = mean over the fooled images of
  ``sum_{p in mask} |delta|_p / sum_p |delta|_p``.
- ``queries_per_image`` when ``queries`` (per-image forward+backward counts) are given.

Means over an empty set of fooled images are NaN.
"""

from __future__ import annotations

import torch
from torch import nn

from c2f_attacks.attacks.base import eval_mode
from c2f_attacks.attacks.relevance import (
    DEFAULT_COMPOSITE,
    heatmap,
    stage_relevance_of,
    top_fraction_mask,
)
from c2f_attacks.attacks.stage import Predictions, StageView
from c2f_attacks.validation import check_image_batch, check_labels

L0_TOLERANCE = 1e-6
DEFAULT_TOP_K = 0.1


def _mean(values: torch.Tensor) -> float:
    return values.float().mean().item() if values.numel() else float("nan")


def _median(values: torch.Tensor) -> float:
    # torch.median returns the lower of the two middle values; quantile gives the usual median
    return values.float().quantile(0.5).item() if values.numel() else float("nan")


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


def fooled(
    view: StageView, clean: Predictions, adv: Predictions, keep_coarse: bool
) -> torch.Tensor:
    """Per image: the stage prediction changed (and with ``keep_coarse`` the coarse did not)."""
    changed = adv.stage != clean.stage
    if keep_coarse:
        changed &= adv.coarse == clean.coarse
    return changed


@torch.no_grad()
def attack_metrics(
    model: nn.Module,
    x_clean: torch.Tensor,
    x_adv: torch.Tensor,
    labels: torch.Tensor,
    stage: str | None,
    masks: torch.Tensor | None = None,
    *,
    keep_coarse: bool = False,
    relevance: bool = True,
    top_k: float = DEFAULT_TOP_K,
    composite: str = DEFAULT_COMPOSITE,
    queries: torch.Tensor | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """The section-6 metrics of one attack run; see the module docstring.

    ``labels`` are the ground truth: class indices for a flat model, global fine indices for a C2F
    model (the coarse truth is derived through the hierarchy). ``keep_coarse=True`` for LRPF.
    The model sees ``batch_size`` images at a time (per-image values are gathered, then summed
    up), so N is bounded by the host memory only.
    """
    view = StageView(model, stage)
    x_clean = check_image_batch(x_clean, name="x_clean")
    x_adv = check_image_batch(x_adv, name="x_adv")
    if x_adv.shape != x_clean.shape:
        raise ValueError(f"x_adv has shape {tuple(x_adv.shape)}, x_clean {tuple(x_clean.shape)}")
    if keep_coarse and stage != "fine":
        raise ValueError("keep_coarse applies to the fine stage of a C2F model only")
    n = x_clean.shape[0]
    if masks is not None and masks.shape != (n, *x_clean.shape[2:]):
        raise ValueError(
            f"masks must have shape {(n, *x_clean.shape[2:])}, got {tuple(masks.shape)}"
        )
    if view.is_c2f:
        labels = check_labels(labels, n, model.hierarchy.num_fine)

    chunks = [
        _per_image(
            view,
            model,
            x_clean[i : i + batch_size],
            x_adv[i : i + batch_size],
            labels[i : i + batch_size],
            stage,
            None if masks is None else masks[i : i + batch_size],
            keep_coarse,
            relevance,
            top_k,
            composite,
        )
        for i in range(0, n, batch_size)
    ]
    per = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    hit, correct = per.pop("hit"), per.pop("correct")
    out: dict[str, float] = {"n": n}
    for name in ("clean_acc_coarse", "clean_acc_fine"):
        if name in per:
            out[name] = _mean(per.pop(name))
    out["clean_acc"] = _mean(correct)
    out["fooling_ratio"] = _mean(hit)
    out["success_rate"] = _mean(hit[correct])
    for name, values in per.items():  # per-image values, summarized over the fooled images
        out[f"{name}_mean" if name in ("linf", "l2", "l0") else name] = _mean(values[hit])
        if name == "linf":
            out["linf_median"] = _median(values[hit])
    if queries is not None:
        out["queries_per_image"] = _mean(queries)
    return out


def _per_image(
    view: StageView, model, x_clean, x_adv, labels, stage, masks, keep_coarse, relevance, top_k,
    composite,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Per-image values of one chunk: ``hit``, ``correct``, accuracies, norms, explanation."""
    device = next(model.parameters()).device
    x_clean, x_adv, labels = x_clean.to(device), x_adv.to(device), labels.to(device)
    with eval_mode(model):
        clean_logits, clean, _ = view.forward(x_clean)
        _, adv, _ = view.forward(x_adv)
    per: dict[str, torch.Tensor] = {}
    if view.is_c2f:
        coarse_truth = model.fine_to_coarse[labels]
        stage_truth = coarse_truth if stage == "coarse" else labels
        per["clean_acc_coarse"] = clean.coarse == coarse_truth
        per["clean_acc_fine"] = clean.fine == labels
    else:
        stage_truth = check_labels(labels, len(labels), clean_logits.shape[1])
    per["correct"] = clean.stage == stage_truth
    per["hit"] = fooled(view, clean, adv, keep_coarse)
    delta = x_adv - x_clean
    per.update(perturbation_norms(delta))
    if relevance:
        with eval_mode(model), torch.enable_grad():
            target = clean.stage
            h_clean = heatmap(stage_relevance_of(model, x_clean, stage, target, composite))
            h_adv = heatmap(stage_relevance_of(model, x_adv, stage, target, composite))
        per["relevance_shift"] = 1 - pearson(h_clean, h_adv)
        per["perturbation_in_relevance"] = share_inside(delta, top_fraction_mask(h_clean, top_k))
    if masks is not None:
        per["object_share"] = share_inside(delta, masks.to(device).bool())
    return {k: v.cpu() for k, v in per.items()}

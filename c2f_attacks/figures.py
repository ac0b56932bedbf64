"""Figures: attacks (image, perturbation, relevance before and after), plain explanations,
fooling ratio against budget, and transfer heatmaps (source rows against targets).

Drawn on :class:`matplotlib.figure.Figure` with the Agg canvas: nothing here touches pyplot or
the process-wide backend, so importing this module changes nothing for a caller's own plots.
Every model pass runs in chunks of ``batch_size`` images.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from c2f_attacks._io import atomic_write
from c2f_attacks.attacks.criteria import Criterion
from c2f_attacks.attacks.predictions import Predictions, predict
from c2f_attacks.evaluation import fr_curve
from c2f_attacks.hierarchies import readable_name
from c2f_attacks.lrp import DEFAULT_COMPOSITE, stage_relevance
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.viz import heatmap, image_to_rgb

Cell = tuple[np.ndarray, str]  # an RGB (H, W, 3) or grayscale (H, W) image and its title
NORM_LABELS = {"linf": "l-inf", "l2": "l2", "l0": "l0 (changed pixels)"}


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write ``fig`` as a PNG at ``path`` (atomically)."""
    FigureCanvasAgg(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def _grid(rows: list[list[Cell]], title: str) -> Figure:
    """``rows`` of titled RGB cells in one figure. Every cell is an image on one shared axes
    whose data coordinates are the figure's inches, placed with an explicit extent: an axes per
    cell, or matplotlib's automatic titles and layouts, cost ~10x the drawing itself."""
    ncols, nrows = len(rows[0]), len(rows)
    lines = max(label.count("\n") + 1 for cells in rows for _, label in cells)
    # inches; each label line of 8 pt text takes about 0.14
    cell_w, cell_h, label_h, top = 2.2, 2.0, 0.16 + 0.14 * lines, 0.5
    width, height = cell_w * ncols, (cell_h + label_h) * nrows + top
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    for r, cells in enumerate(rows):
        y = height - top - (r + 1) * (cell_h + label_h)
        for c, (rgb, label) in enumerate(cells):
            box_w, box_h = cell_w - 0.2, cell_h  # the image keeps its aspect inside this box
            scale = min(box_w / rgb.shape[1], box_h / rgb.shape[0])
            w, h = rgb.shape[1] * scale, rgb.shape[0] * scale
            x0, y0 = c * cell_w + 0.1 + (box_w - w) / 2, y + (box_h - h) / 2
            # the map only colours grayscale cells
            ax.imshow(rgb, cmap="gray", vmin=0, vmax=1, extent=(x0, x0 + w, y0, y0 + h),
                      aspect="auto")  # fmt: skip
            ax.text((c + 0.5) * cell_w, y + cell_h + 0.05, label, ha="center", va="bottom",
                    fontsize=8)  # fmt: skip
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    fig.text(0.5, 1 - 0.15 / height, title, ha="center", va="top", fontsize=10)
    return fig


def _names(model: C2FClassifier, pred: Predictions, i: int) -> str:
    """The "coarse / fine" prediction of image ``i`` in words (synset ids read as their names)."""
    h = model.hierarchy
    coarse, fine = h.coarse_names[pred.coarse[i]], h.fine_names[pred.fine[i]]
    return f"{readable_name(coarse)} / {readable_name(fine)}"


def _relevance(
    model: C2FClassifier, x: torch.Tensor, stage: str, target: torch.Tensor, batch_size: int,
    composite: str = DEFAULT_COMPOSITE,
) -> torch.Tensor:  # fmt: skip
    """LRP relevance of ``target`` at ``stage``, in chunks, on the CPU."""
    device = next(model.parameters()).device
    parts = [
        stage_relevance(model, x[i : i + batch_size].to(device), stage,
                        target[i : i + batch_size].to(device), composite).cpu()
        for i in range(0, len(x), batch_size)
    ]  # fmt: skip
    return torch.cat(parts)


def attack_figure(
    model: C2FClassifier,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    criterion: Criterion,
    path: str | os.PathLike,
    title: str = "",
    examples: int = 4,
    batch_size: int = 256,
) -> None:
    """Write a PNG with ``examples`` rows (fooled images first, by the row's success rule
    ``criterion``): clean image, adversarial image, perturbation, relevance of the clean decision
    of the attacked stage before and after the attack."""
    stage = criterion.stage
    clean, adv = predict(model, x, stage, batch_size), predict(model, x_adv, stage, batch_size)
    fooled = criterion(clean, adv)
    order = torch.cat([fooled.nonzero().flatten(), (~fooled).nonzero().flatten()])[:examples]
    target = clean.stage[order]
    before = _relevance(model, x[order], stage, target, batch_size)
    after = _relevance(model, x_adv[order], stage, target, batch_size)
    rows = []
    for row, i in enumerate(order.tolist()):
        delta = x_adv[i] - x[i]
        rows.append([
            (image_to_rgb(x[i]), f"clean: {_names(model, clean, i)}"),
            (image_to_rgb(x_adv[i]), f"adv: {_names(model, adv, i)}"),
            (heatmap(delta.abs().sum(0)), f"|delta| (max {delta.abs().max():.3f})"),
            (heatmap(before[row]), f"relevance ({stage}) before"),
            (heatmap(after[row]), "after (same class)"),
        ])  # fmt: skip
    save_figure(_grid(rows, title), path)


def explanation_figure(
    model: C2FClassifier,
    x: torch.Tensor,
    path: str | os.PathLike,
    composite: str = DEFAULT_COMPOSITE,
    batch_size: int = 256,
) -> None:
    """Write a PNG with one row per image: the image with its predicted coarse / fine labels and
    the relevance of the coarse decision C_c and of the fine decision F_c at f."""
    out = predict(model, x, "fine", batch_size)
    coarse_rel = _relevance(model, x, "coarse", out.coarse, batch_size, composite)
    fine_rel = _relevance(model, x, "fine", out.fine, batch_size, composite)
    rows = [
        [
            (image_to_rgb(x[i]), _names(model, out, i)),
            (heatmap(coarse_rel[i]), "relevance: coarse"),
            (heatmap(fine_rel[i]), "relevance: fine"),
        ]
        for i in range(len(x))
    ]
    save_figure(_grid(rows, f"LRP ({composite})"), path)


def budget_figure(
    rows: Sequence[tuple[str, pd.DataFrame]],
    path: str | os.PathLike,
    stage: str = "",
    l0_rows: Collection[str] = (),
) -> None:
    """Write a PNG of the fooling ratio against the budget, ``FR(b) = #{success and norm <= b}
    / N``, one line per ``(label, records)``: a panel for l-inf and one for l2 with every row,
    and one for l0 with the rows named in ``l0_rows`` (the masked attacks) when there are any."""
    norms = ["linf", "l2"] + (["l0"] if any(label in l0_rows for label, _ in rows) else [])
    fig = Figure(figsize=(4.2 * len(norms), 4.0))
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    for ax, norm in zip(axes, norms):
        for label, records in rows:
            if norm == "l0" and label not in l0_rows:
                continue
            curve = fr_curve(records, norm)
            ax.step(curve["budget"], curve["fooling_ratio"], where="post", label=label)
        ax.set_xlabel(f"budget ({NORM_LABELS[norm]})")
        ax.set_ylabel("fooling ratio")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="lower right")
    fig.suptitle(f"Fooling ratio against budget{f' ({stage} stage)' if stage else ''}")
    fig.tight_layout()
    save_figure(fig, path)


def transfer_row_labels(table: pd.DataFrame) -> list[str]:
    """A readable label per row of a transfer table, unique per source row: ``model
    attack/protocol[/mask][ eps=k/255]`` (the row_id appended where two source rows would share
    one)."""
    labels = []
    for row in table.to_dict("records"):
        mask = "" if row["mask"] == "none" else f"/{row['mask']}"
        eps = "" if pd.isna(row["eps"]) else f" eps={255 * row['eps']:.3g}/255"
        labels.append(f"{row['model']} {row['attack']}/{row['protocol']}{mask}{eps}")
    by_label = pd.Series(list(table["row_id"])).groupby(labels).nunique()
    return [
        f"{lab} {rid}" if by_label[lab] > 1 else lab for lab, rid in zip(labels, table["row_id"])
    ]


def transfer_matrix(table: pd.DataFrame, column: str = "transfer_fooling_ratio") -> pd.DataFrame:
    """``column`` of a transfer table as a matrix: one row per source row (its
    :func:`transfer_row_labels` label), one column per target, both in the table's order; NaN
    where a pair is missing."""
    labelled = table.assign(label=transfer_row_labels(table))
    matrix = labelled.pivot(index="label", columns="target", values=column)
    return matrix.reindex(index=labelled["label"].unique(), columns=labelled["target"].unique())


def transfer_heatmap(ratios: pd.DataFrame, path: str | os.PathLike, stage: str = "") -> None:
    """Write a PNG of transfer fooling ratios: one row per source row (``ratios.index``, its
    label), one column per target (``ratios.columns``), each cell coloured by and annotated with
    its ratio in [0, 1] (blank where a pair was not evaluated)."""
    values = ratios.to_numpy(dtype=float)
    rows, cols = values.shape
    label_width = 0.06 * max([len(str(r)) for r in ratios.index], default=0)  # inches at 7 pt
    fig = Figure(figsize=(2.0 + label_width + 1.0 * cols, 1.6 + 0.3 * rows))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (r, c), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 else "white")  # fmt: skip
    ax.set_xticks(range(cols), [str(c) for c in ratios.columns], rotation=30, ha="right",
                  fontsize=7)  # fmt: skip
    ax.set_yticks(range(rows), [str(r) for r in ratios.index], fontsize=7)
    ax.set_xlabel("target")
    fig.colorbar(image, ax=ax, label="transfer fooling ratio", fraction=0.05)
    fig.suptitle(f"Transfer fooling ratio{f' ({stage} stage)' if stage else ''}")
    fig.tight_layout()
    save_figure(fig, path)

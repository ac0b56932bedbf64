"""The paper's setting in miniature: LRPC, LRPF and PGD on real photos, on the CPU.

:func:`run_photo_demo` attacks the offline photos
(:data:`c2f_attacks.data.PHOTOS`: scikit-image's chelsea, coffee, rocket, stereo_motorcycle,
astronaut and matplotlib's grace_hopper) at 224 px against ``imagenet-efficientnet-lite0`` (an
induced C2F classifier over the 1000 ImageNet classes in 28 superclasses) and writes

- ``photo-<name>.png``: one row per attack: the clean image with its coarse/fine prediction, the
  adversarial image with its prediction, the perturbation (scaled to the eps), and the LRP
  relevance of the attacked stage's decision before and after;
- ``demo_photos.csv``: one row per (attack, photo): predictions before and after, success,
  ``linf``, ``l2``, ``l0`` (fraction of pixels changed), queries, seconds per image;
- ``demo_photos.md``: per attack FR (success share), median norms over successful images,
  queries and seconds per image.

Every attack runs within the same l-inf budget ``eps`` from the clean prediction (``y=None``:
success is a change of the attacked stage's prediction; LRPF must keep the coarse class). The
controls (``masks=("lrp", "random", "gradient")``) run LRPC with a random or gradient pixel mask
of the same size instead of the LRP mask.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from c2f_attacks._io import atomic_write_text
from c2f_attacks.attacks import LRPC, LRPF, PGD, Attack
from c2f_attacks.data import PHOTOS, load_photos
from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.metrics import perturbation_norms
from c2f_attacks.figures import _grid, save_figure
from c2f_attacks.hierarchies import readable_names
from c2f_attacks.lrp.explain import stage_relevance_of
from c2f_attacks.models import C2FClassifier, load_model
from c2f_attacks.viz import heatmap, image_to_rgb

DEMO_MODEL = "imagenet-efficientnet-lite0"
DEMO_ATTACKS = ("lrpc", "lrpf", "pgd")


def _attacks(
    model: C2FClassifier, attacks: Sequence[str], masks: Sequence[str], eps: float, steps: int,
    alpha: float, top_k: float, refresh: int,
) -> dict[str, tuple[Attack, str]]:  # fmt: skip
    """label -> (attack, attacked stage)."""
    lrp_args = {"eps": eps, "steps": steps, "alpha": alpha, "top_k": top_k, "refresh": refresh}
    built: dict[str, tuple[Attack, str]] = {}
    for name in attacks:
        if name == "lrpc":
            for mask in masks:
                label = "LRPC" if mask == "lrp" else f"LRPC[{mask}]"
                built[label] = (LRPC(model, mask=mask, **lrp_args), "coarse")
        elif name == "lrpf":
            built["LRPF"] = (LRPF(model, **lrp_args), "fine")
        elif name == "pgd":
            for stage in ("coarse", "fine"):
                # no random start: like LRPC/LRPF, PGD starts at the image and stops at its first
                # success, so its l-inf is what the attack needed, not the start's amplitude
                pgd = PGD(model, eps=eps, alpha=alpha, steps=steps, stage=stage, early_stop=True,
                          random_start=False)  # fmt: skip
                built[f"PGD-{stage}"] = (pgd, stage)
        else:
            raise UserError(f"unknown demo attack {name!r}; choose from {', '.join(DEMO_ATTACKS)}")
    return built


def _class_namer(model: C2FClassifier):
    """The "coarse / fine" label in words (synset ids read as their names)."""
    coarse, fine = (readable_names(names) for names in
                    (model.hierarchy.coarse_names, model.hierarchy.fine_names))  # fmt: skip
    return lambda c, f: f"{coarse[int(c)]} / {fine[int(f)]}"


def run_photo_demo(
    out_dir: str | os.PathLike,
    photos: Sequence[str] = tuple(PHOTOS),
    model: str | C2FClassifier = DEMO_MODEL,
    attacks: Sequence[str] = DEMO_ATTACKS,
    masks: Sequence[str] = ("lrp",),
    eps: float = 8 / 255,
    steps: int = 40,
    alpha: float = 1 / 255,
    top_k: float = 0.15,
    refresh: int = 10,
    size: int = 224,
    device: str = "cpu",
) -> pd.DataFrame:
    """Attack the photos, write the figures and tables to ``out_dir``, return the per-image rows.

    ``model``: a zoo name or a ready C2F model (e.g. a small stand-in); ``masks``: the LRPC masks
    to run ("lrp" plus controls such as "random", "gradient"). Settings are validated (the
    attacks are built) before any photo is attacked.
    """
    out = Path(out_dir)
    model = (load_model(model) if isinstance(model, str) else model).to(device).eval()
    built = _attacks(model, attacks, masks, eps, steps, alpha, top_k, refresh)
    x = load_photos(photos, size=size).to(device)
    name_of = _class_namer(model)
    rows, panels = [], {}
    for label, (attack, stage) in built.items():
        start = time.perf_counter()
        res = attack(x)
        seconds = (time.perf_counter() - start) / len(x)
        norms = perturbation_norms((res.x_adv - x).detach())
        clean_target = res.clean.coarse if stage == "coarse" else res.clean.fine
        adv_target = res.adv.coarse if stage == "coarse" else res.adv.fine
        before = stage_relevance_of(model, x, stage, clean_target).detach().cpu()
        after = stage_relevance_of(model, res.x_adv, stage, adv_target).detach().cpu()
        panels[label] = (res, before, after)
        for i, photo in enumerate(photos):
            rows.append({
                "attack": label, "photo": photo, "stage": stage,
                "clean": name_of(res.clean.coarse[i], res.clean.fine[i]),
                "adversarial": name_of(res.adv.coarse[i], res.adv.fine[i]),
                "success": bool(res.success[i]), "linf": norms["linf"][i].item(),
                "l2": norms["l2"][i].item(), "l0": norms["l0"][i].item(),
                "queries": int(res.queries[i]), "seconds_per_image": seconds,
            })  # fmt: skip
    records = pd.DataFrame(rows)
    atomic_write_text(out / "demo_photos.csv", records.to_csv(index=False))
    atomic_write_text(out / "demo_photos.md", summary_markdown(records, eps, steps, device))
    for i, photo in enumerate(photos):
        _figure(out / f"photo-{photo}.png", x[i].cpu(), i, panels, name_of, eps)
    return records


def summary_markdown(records: pd.DataFrame, eps: float, steps: int, device: str) -> str:
    """One line per attack: FR, median norms over successful images, queries, seconds."""
    lines = [
        f"Photos: {records['photo'].nunique()}; l-inf budget {eps * 255:.0f}/255, {steps} steps, "
        f"device {device} ({os.cpu_count()} cores). Norms: medians over successful images.",
        "",
        "| attack | stage | FR | linf | l2 | l0 | queries/img | s/img |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, group in records.groupby("attack", sort=False):
        ok = group[group["success"]]
        med = {k: (f"{ok[k].median():.4f}" if len(ok) else "-") for k in ("linf", "l2", "l0")}
        lines.append(
            f"| {label} | {group['stage'].iloc[0]} | {group['success'].mean():.2f} "
            f"({int(group['success'].sum())}/{len(group)}) | {med['linf']} | {med['l2']} | "
            f"{med['l0']} | {group['queries'].mean():.0f} | "
            f"{group['seconds_per_image'].iloc[0]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _figure(path: Path, image: torch.Tensor, i: int, panels: dict, name_of, eps: float) -> None:
    """One row per attack: the clean and the adversarial photo with their predictions, the
    perturbation (grey = none, black/white = -eps/+eps) and the relevance of the attacked stage's
    decision before and after."""
    rows = []
    for label, (res, before, after) in panels.items():
        x_adv = res.x_adv[i].detach().cpu()
        verdict = "fooled" if res.success[i] else "not fooled"
        rows.append([
            (image_to_rgb(image), f"clean\n{name_of(res.clean.coarse[i], res.clean.fine[i])}"),
            (image_to_rgb(x_adv),
             f"{label} ({verdict})\n{name_of(res.adv.coarse[i], res.adv.fine[i])}"),
            (image_to_rgb((x_adv - image) / (2 * eps) + 0.5), "perturbation\n(range +-eps)"),
            (heatmap(before[i]), "relevance before"),
            (heatmap(after[i]), "relevance after"),
        ])  # fmt: skip
    save_figure(_grid(rows, f"{path.stem}, l-inf budget {eps * 255:.0f}/255"), path, dpi=80)

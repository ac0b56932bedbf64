"""The main job, ``c2f-bench run``: pre-flight, attacks, per-image records, leaderboard, figures.

One pass over the images in batches of ``batch_size``: each batch is loaded once and every plan
attacks it, so memory holds one batch of images (plus a few figure examples, the per-image
records and the compacted adversarial images) whatever the number of images. Per plan, the
per-image records are written under ``<out>/records/``, the adversarial images under
``<out>/adversarial/`` (compacted, every outcome kept: :mod:`c2f_attacks.evaluation.adversarial`)
and the records' aggregate becomes the plan's leaderboard row, upserted by its full key (model
and model hash, dataset, split, n, seed, attack and settings, protocol, mask, success rule,
backend, device), and its budget curves (FR(b) with exact intervals at the budgets of
:data:`~c2f_attacks.evaluation.budget.BUDGET_GRIDS`, l2 scaled to the image size) replace its
block of ``<out>/budget_curves.csv``.
Figures are drawn after the leaderboard is written, under ``<out>/figures/<model>/``; a figure
that fails is a warning. :func:`run_all` runs several configs (models, sweep points) after
pre-flighting all of them.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from c2f_attacks.attacks import FGSM, MASK_SOURCES, Attack
from c2f_attacks.attacks.base import model_channels
from c2f_attacks.data import classes_from_hierarchy, get_dataset, load_batch
from c2f_attacks.evaluation import (
    AdversarialRow,
    aggregate,
    budget_curves,
    budget_grids_for,
    clean_stage_heatmap,
    per_image_records,
    save_adversarial,
    write_class_names,
    write_records,
)
from c2f_attacks.leaderboard import environment_columns, row_id, upsert_rows
from c2f_attacks.leaderboard.curves import upsert_budget_curves
from c2f_attacks.models import C2FClassifier, load_model
from c2f_attacks.runner import preflight
from c2f_attacks.runner.backends import OrtBackend
from c2f_attacks.runner.distributed import Ranks, local_device
from c2f_attacks.runner.plan import Plan, RunConfig
from c2f_attacks.validation import check_image_batch

#: figure rows per attack: successful images first (lowest indices), then the others
EXAMPLES = 4


class FigureWarning(UserWarning):
    """A figure could not be drawn after the leaderboard was written."""


def model_hash(model: torch.nn.Module) -> str:
    """First 12 hex digits of SHA-256 over the hierarchy (when the model has one) and every
    state_dict entry (name, dtype, shape, bytes) in name order: equal weights, equal hash."""
    digest = hashlib.sha256()
    hierarchy = getattr(model, "hierarchy", None)
    if hierarchy is not None:
        digest.update(json.dumps(hierarchy.to_dict()).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


@dataclass
class Examples:
    """The first few successful and unsuccessful images of a plan, for its figure."""

    hits: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    misses: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def offer(self, index: torch.Tensor, x: torch.Tensor, x_adv: torch.Tensor, success) -> None:
        for i, ok in enumerate(success):
            kept = self.hits if ok else self.misses
            if len(kept) < EXAMPLES:
                kept.append((int(index[i]), x[i].cpu(), x_adv[i].cpu()))

    @staticmethod
    def merge(parts: list[Examples]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(x, x_adv) of the figure rows over every rank's examples (None if there are none)."""
        hits = sorted((e for p in parts for e in p.hits), key=lambda e: e[0])
        misses = sorted((e for p in parts for e in p.misses), key=lambda e: e[0])
        chosen = (hits + misses)[:EXAMPLES]
        if not chosen:
            return None
        return torch.stack([e[1] for e in chosen]), torch.stack([e[2] for e in chosen])


@dataclass
class PlanResult:
    """One rank's share of one plan: records, attack seconds, backend counts, examples, and the
    adversarial images (compacted)."""

    records: list[pd.DataFrame] = field(default_factory=list)
    adversarial: AdversarialRow = field(default_factory=AdversarialRow)
    seconds: float = 0.0
    backend_fooled: int = 0
    backend_agree: int = 0
    examples: Examples = field(default_factory=Examples)


def _attack(plan: Plan, atk: Attack, x, y, index, masks):
    needs_object = plan.mask != "none" and MASK_SOURCES.get(plan.mask).needs == "object"
    return atk(x, y=y, index=index, **({"object_mask": masks} if needs_object else {}))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load_model_and_data(
    model_spec: str, dataset_name: str, split: str, n: int, root: str | None,
    hierarchy: str | None, device: str, seed: int = 0,
) -> tuple[C2FClassifier, Dataset]:  # fmt: skip
    """The model (loaded, weights finite) and the ``n`` images it runs on, checked together.

    The model's hierarchy labels data that takes its classes from one (an image folder's
    sub-folders, ImageNet's synsets), read at the model's input size: a model that carries its
    hierarchy needs no ``hierarchy``. A given ``hierarchy`` (a name or JSON path) groups a flat
    factory model's classes or regroups an induced ImageNet model; any other model's own
    hierarchy wins and a different one is refused, naming the first differences. Data with a
    grouping of its own (shapes, CIFAR) must have the model's."""
    preflight.check_num_images(n, None, dataset_name, split)
    model = load_model(model_spec, map_location=device, hierarchy=hierarchy)  # weights finite
    labels = model.hierarchy if classes_from_hierarchy(dataset_name) else hierarchy
    dataset = get_dataset(dataset_name, split, n=n, root=root, hierarchy=labels,
                          size=model.input_size, seed=seed)  # fmt: skip
    preflight.check_num_images(n, dataset, dataset_name, split)
    preflight.check_hierarchy(model.hierarchy, dataset.hierarchy, model_spec, dataset_name)
    return model, dataset


def _prepare(cfg: RunConfig, ranks: Ranks):
    """Pre-flight of one run (output folder, device, images, model: loaded, finite, its
    hierarchy the dataset's; every attack built): ``(out, device, dataset, model, plans,
    attacks)``, or the error of the first check that fails."""
    out = Path(cfg.out).expanduser().resolve()
    ranks.check_same(str(out), "--out")
    if ranks.is_main:
        preflight.check_out_dir(cfg.out, cfg.allow_results_dir)
        preflight.check_outputs(out, cfg.figures)
    device = str(preflight.check_device(local_device(cfg.device)))
    model, dataset = load_model_and_data(cfg.model, cfg.dataset, cfg.split, cfg.n, cfg.root,
                                         cfg.hierarchy, device, cfg.seed)  # fmt: skip
    # the images' channels and size are the model's (a grayscale model on RGB data, say)
    check_image_batch(load_batch(dataset, range(1))[0], channels=model_channels(model),
                      size=model.input_size, name=f"images of {cfg.dataset} for model "
                      f"{cfg.model}")  # fmt: skip
    plans = cfg.plans()
    attacks = [plan.build(model) for plan in plans]  # constructors validate every setting
    return out, device, dataset, model, plans, attacks


def run_all(configs: Sequence[RunConfig]) -> pd.DataFrame:
    """Run several configs (the models and sweep points of one ``c2f-bench run``) in order and
    return their rows. Every config is pre-flighted first, so a bad second model fails in
    seconds instead of after the first model's attacks; each model is loaded again for its
    run, so that memory holds one model at a time."""
    for cfg in configs:
        _prepare(cfg, Ranks.from_env(cfg.device))
    return pd.concat([run(cfg) for cfg in configs], ignore_index=True)


def run(cfg: RunConfig) -> pd.DataFrame:
    """Run every plan of ``cfg``; on rank 0 write records, upsert the leaderboard, draw figures
    and return this run's rows (an empty frame on the other ranks)."""
    ranks = Ranks.from_env(cfg.device)
    out, device, dataset, model, plans, attacks = _prepare(cfg, ranks)
    digest = model_hash(model)
    backend = OrtBackend(model, out, digest, ranks) if cfg.backend == "onnxruntime" else None

    results = _attack_all(cfg, model, dataset, plans, attacks, backend, ranks, device)
    if not ranks.is_main:
        return pd.DataFrame()
    env = environment_columns(device)
    common = {"model": cfg.model, "model_hash": digest, "dataset": cfg.dataset,
              "split": cfg.split, "n": cfg.n, "seed": cfg.seed,
              "eval_backend": cfg.backend, "device": env["device"]}  # fmt: skip
    write_class_names(out, digest, model.hierarchy)  # the records' indices in words
    rows, curves, figures = [], [], []
    for plan, atk, parts in zip(plans, attacks, results):
        records = pd.concat([r for p in parts for r in p.records]).sort_values("index")
        records = records.reset_index(drop=True)
        key = {**common, **plan.key()}
        write_records(out, key, records)
        save_adversarial(out, key, AdversarialRow.merge([p.adversarial for p in parts]))
        seconds = max(p.seconds for p in parts)  # ranks attack in parallel
        row = {**key, **aggregate(records),
               "ms_per_image": 1000 * seconds / cfg.n, "images_per_s": cfg.n / seconds,
               **env}  # fmt: skip
        if backend is not None:
            row["backend_fooling_ratio"] = sum(p.backend_fooled for p in parts) / cfg.n
            row["backend_agreement"] = sum(p.backend_agree for p in parts) / cfg.n
        rows.append(row)
        curves.append((plan, records))
        figures.append(((plan, atk), Examples.merge([p.examples for p in parts])))
    written = upsert_rows(out / "leaderboard.csv", rows)
    grids = {**budget_grids_for(load_batch(dataset, range(1))[0].shape[1:]), **cfg.budgets}
    upsert_budget_curves(out / "budget_curves.csv", pd.concat(
        [budget_curves(records.assign(row_id=row_id(row)), grids)
         for row, (_, records) in zip(rows, curves)], ignore_index=True))  # fmt: skip
    if cfg.figures:
        _draw_figures(cfg, model, figure_folder(out, cfg.model), curves, figures)
    ids = [row_id(row) for row in rows]
    return written.set_index("row_id").loc[ids].reset_index()


def _attack_all(cfg, model, dataset, plans, attacks, backend, ranks, device) -> list[list]:
    """Every plan on this rank's batches; per plan, every rank's :class:`PlanResult`."""
    mine = ranks.batches(cfg.n, cfg.batch_size)
    results = [PlanResult() for _ in plans]
    bar = tqdm(total=len(mine) * len(plans), desc="attacks", unit="batch",
               disable=not (cfg.progress and ranks.is_main))  # fmt: skip
    warmed = False
    for batch in mine:
        x, y, masks = load_batch(dataset, batch)
        x, y = x.to(device), y.to(device)
        masks = masks.to(device) if masks is not None else None
        index = torch.as_tensor(list(batch), device=device)
        if not warmed:  # one-time set-up (kernel choice, allocator) is not billed to a row
            FGSM(model, stage="coarse", memory_format=cfg.memory_format)(x)
            warmed = True
        clean_heatmaps = {}  # by stage: the records' clean LRP map, the same for every attack
        for plan, atk, result in zip(plans, attacks, results):
            bar.set_postfix_str(plan.label)
            # Global RNG state per (seed, batch): third-party attacks that draw from it give
            # the same numbers whatever the number of ranks.
            torch.manual_seed(cfg.seed * 1_000_003 + batch.start)
            start = time.perf_counter()
            res = _attack(plan, atk, x, y, index, masks)
            _sync(device)
            result.seconds += time.perf_counter() - start
            if plan.stage not in clean_heatmaps:
                clean_heatmaps[plan.stage] = clean_stage_heatmap(
                    model, x, plan.stage, batch_size=cfg.batch_size
                )
            records = per_image_records(
                model, x, res.x_adv, y, plan.stage, criterion=atk.criterion, masks=masks,
                queries=res.queries, first_success_step=res.first_success_step, eps=res.eps,
                index=index, batch_size=cfg.batch_size, clean_heatmap=clean_heatmaps[plan.stage],
            )  # fmt: skip
            result.records.append(records)
            result.adversarial.add(model, x, res.x_adv, y, records, plan.stage,
                                   atk.criterion, batch_size=cfg.batch_size)  # fmt: skip
            result.examples.offer(index, x, res.x_adv, records["success"].to_numpy())
            if backend is not None:
                fooled, agrees = backend.evaluate(x, res.x_adv, records, atk.criterion)
                result.backend_fooled += int(fooled.sum())
                result.backend_agree += int(agrees.sum())
            bar.update()
    bar.close()
    gathered = ranks.gather(results)
    return [[rank_results[j] for rank_results in gathered] for j in range(len(plans))]


def file_name(text: str) -> str:
    """``text`` as one portable file name: runs of other characters than letters, digits,
    ``.``, ``_`` and ``-`` become ``_`` (``runs/m.pt`` -> ``runs_m.pt``,
    ``torchattacks:APGD/coarse`` -> ``torchattacks_APGD_coarse``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "model"


def figure_folder(out: Path, model: str) -> Path:
    """``<out>/figures/<model>/``: each model's figures apart, so that the runs of several models
    into one ``--out`` keep all of them. A path or ``module:factory`` becomes one readable folder
    name (:func:`file_name`)."""
    return out / "figures" / file_name(model)


def _draw_figures(cfg: RunConfig, model, folder: Path, curves, figures) -> None:
    """Attack figures (fixed and first-success rows) and one budget-curve figure per stage, in
    ``folder``; failures become warnings."""
    from c2f_attacks import figures as draw

    jobs = []
    for (plan, atk), chosen in figures:
        if chosen is not None and plan.protocol != "minimal":
            jobs.append((draw.attack_figure, folder / f"{file_name(plan.label)}.png",
                         dict(model=model, x=chosen[0], x_adv=chosen[1], criterion=atk.criterion,
                              title=f"{plan.label} on {cfg.model}",
                              batch_size=cfg.batch_size)))  # fmt: skip
    masked = {plan.label for plan, _ in curves if plan.mask != "none"}
    for stage in dict.fromkeys(plan.stage for plan, _ in curves):
        rows = [(plan.label, records) for plan, records in curves if plan.stage == stage]
        jobs.append((draw.budget_figure, folder / f"budget_{stage}.png",
                     dict(rows=rows, stage=stage, l0_rows=masked)))  # fmt: skip
    for function, path, kwargs in jobs:
        try:
            function(path=path, **kwargs)
        except Exception as err:  # the leaderboard is written: a figure must not undo that
            warnings.warn(f"figure {path} not written: {err}", FigureWarning, stacklevel=2)

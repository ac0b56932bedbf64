"""The main job, ``c2f-bench run``: pre-flight, attacks, per-image records, leaderboard, figures.

Data flow, with memory flat in the number of images:

1. Every config (model, sweep point) is pre-flighted (:mod:`~c2f_attacks.runner.preflight`),
   then the run's state on disk is opened (:mod:`~c2f_attacks.runner.shards`): a new one, or
   with ``resume`` the interrupted run with the same settings.
2. Batch sizes (:class:`~c2f_attacks.runner.shards.Layout`): the interrupted run's, an explicit
   ``batch_size``, or per row the largest that fits ``max_memory``
   (:mod:`~c2f_attacks.runner.memory`).
3. The images are loaded a block at a time; every plan (leaderboard row) attacks the block in
   batches of its own size, and each batch's per-image records and compacted adversarial images
   (:mod:`c2f_attacks.evaluation.adversarial`) go to a shard on disk at once. Nothing per image
   stays in memory; a batch whose shard exists (``resume``) is not attacked again.
4. Once every rank is done, rank 0 writes per plan the records under ``<out>/records/`` (read
   back from the shards: 22 numbers per image), the adversarial images under
   ``<out>/adversarial/`` (streamed from the shards) and the records' aggregate, the plan's
   leaderboard row, upserted by its full key (model and model hash, dataset, split, n, seed,
   attack and settings, protocol, mask, success rule, backend, device), and its budget curves
   (FR(b) with exact intervals at the budgets of
   :data:`~c2f_attacks.evaluation.budget.BUDGET_GRIDS`, l2 scaled to the image size) replace its
   block of ``<out>/budget_curves.csv``. Figures are drawn after the leaderboard is written,
   under ``<out>/figures/<model>/``, from examples read back from the shards; a figure that
   fails is a warning. Then the state is removed.

:func:`run_all` runs several configs (models, sweep points) after pre-flighting all of them.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from c2f_attacks.attacks import FGSM, MASK_SOURCES, Attack
from c2f_attacks.attacks.base import model_channels
from c2f_attacks.data import classes_from_hierarchy, get_dataset, load_batch
from c2f_attacks.evaluation import (
    AdversarialBatch,
    aggregate,
    budget_curves,
    budget_grids_for,
    clean_stage_heatmap,
    per_image_records,
    save_adversarial,
    write_class_names,
    write_records,
)
from c2f_attacks.evaluation.adversarial import read_back
from c2f_attacks.evaluation.records import KEY, canonical_key
from c2f_attacks.leaderboard import environment_columns, row_id, upsert_rows
from c2f_attacks.leaderboard.curves import upsert_budget_curves
from c2f_attacks.leaderboard.environment import device_name
from c2f_attacks.models import C2FClassifier, load_model
from c2f_attacks.runner import memory, preflight
from c2f_attacks.runner.backends import OrtBackend
from c2f_attacks.runner.distributed import Ranks, local_device
from c2f_attacks.runner.plan import Plan, RunConfig
from c2f_attacks.runner.shards import ConfigShards, Layout, RunState
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


def figure_examples(records: pd.DataFrame) -> list[int]:
    """The image indices of a plan's figure rows: successful images first (lowest indices),
    then the others, :data:`EXAMPLES` in all."""
    ordered = records.sort_values("index")
    hits = ordered.loc[ordered["success"], "index"].tolist()
    misses = ordered.loc[~ordered["success"], "index"].tolist()
    return (hits + misses)[:EXAMPLES]


def _attack(plan: Plan, atk: Attack, x, y, index, masks):
    needs_object = plan.mask != "none" and MASK_SOURCES.get(plan.mask).needs == "object"
    return atk(x, y=y, index=index, target=plan.call_target,
               **({"object_mask": masks} if needs_object else {}))  # fmt: skip


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


@dataclass
class _Job:
    """One config, pre-flighted: what its batches need."""

    cfg: RunConfig
    out: Path
    device: str
    dataset: object
    model: torch.nn.Module
    plans: list[Plan]
    attacks: list[Attack]
    digest: str

    @property
    def common(self) -> dict:
        """The key columns every plan of the config shares."""
        cfg = self.cfg
        return {"model": cfg.model, "model_hash": self.digest, "dataset": cfg.dataset,
                "split": cfg.split, "n": cfg.n, "seed": cfg.seed, "eval_backend": cfg.backend,
                "device": device_name(self.device)}  # fmt: skip

    def keys(self) -> list[dict]:
        """Each plan's full leaderboard key."""
        return [{**self.common, **plan.key()} for plan in self.plans]

    def fingerprint(self) -> dict:
        """Everything that changes a number of this config (the run state's identity): the
        shared key columns, the data's hierarchy and root, an explicit batch size, and each
        row's own key columns (canonical text)."""
        cfg, common = self.cfg, self.common
        shared = dict(zip(KEY, canonical_key(common)))
        fingerprint = {c: shared[c] for c in KEY if c in common}
        fingerprint.update(hierarchy=str(cfg.hierarchy or ""), root=str(cfg.root or ""),
                           batch_size=str(cfg.batch_size or ""))  # fmt: skip
        fingerprint["rows"] = {
            plan.label: {c: v for c, v in zip(KEY, canonical_key(key)) if c not in common}
            for plan, key in zip(self.plans, self.keys())
        }
        return fingerprint


def _prepare(cfg: RunConfig, ranks: Ranks) -> _Job:
    """Pre-flight of one run (output folder, device, images, model: loaded, finite, its
    hierarchy the dataset's; every attack built), or the error of the first check that fails."""
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
    # the rows' config: with the settings the attacks filled in from the model
    plans = [plan.as_built(atk) for plan, atk in zip(plans, attacks)]
    return _Job(cfg, out, device, dataset, model, plans, attacks, model_hash(model))


def run_all(configs: Sequence[RunConfig]) -> pd.DataFrame:
    """Run several configs (the models and sweep points of one ``c2f-bench run``) in order and
    return their rows. Every config is pre-flighted first, so a bad second model fails in
    seconds instead of after the first model's attacks; each model is loaded again for its
    run, so that memory holds one model at a time. The run's state (``resume``) covers every
    config that writes into the same ``out``. Memory freed by a batch goes back to the system
    (:func:`~c2f_attacks.runner.memory.hand_back_freed_memory`), so a long run stays flat."""
    memory.hand_back_freed_memory()
    fingerprints: dict[Path, list[dict]] = {}
    for cfg in configs:
        job = _prepare(cfg, Ranks.from_env(cfg.device))
        fingerprints.setdefault(job.out, []).append(job.fingerprint())
        del job  # one model in memory at a time
    ranks = Ranks.from_env(configs[0].device)
    states = {out: RunState.open(out, prints, configs[0].resume, ranks)
              for out, prints in fingerprints.items()}  # fmt: skip
    position = dict.fromkeys(states, 0)
    bar = tqdm(total=sum(c.n for c in configs), desc="run", unit="img", smoothing=0.1,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} img "
               "[{elapsed}<{remaining}, {rate_fmt}]",
               disable=not (configs[0].progress and ranks.is_main))  # fmt: skip
    rows = []
    try:
        for cfg in configs:
            job = _prepare(cfg, Ranks.from_env(cfg.device))
            shards = states[job.out].config(position[job.out])
            position[job.out] += 1
            rows.append(_run_job(job, shards, Ranks.from_env(cfg.device), bar))
            del job
        for state in states.values():
            state.finish()
    finally:
        bar.close()
        for state in states.values():
            state.close()
    return pd.concat(rows, ignore_index=True)


def run(cfg: RunConfig) -> pd.DataFrame:
    """Run every plan of ``cfg``; on rank 0 write records, upsert the leaderboard, draw figures
    and return this run's rows (an empty frame on the other ranks)."""
    return run_all([cfg])


def _layout(job: _Job, shards: ConfigShards, ranks: Ranks) -> Layout:
    """The batch sizes: the interrupted run's, ``--batch-size``, or from the ``--max-memory``
    budget (:mod:`~c2f_attacks.runner.memory`); decided on rank 0."""
    if shards.layout is not None:
        return shards.layout
    cfg, labels = job.cfg, [plan.label for plan in job.plans]
    layout = None
    if cfg.batch_size is not None and cfg.max_memory is None:
        layout = Layout(cfg.batch_size, dict.fromkeys(labels, cfg.batch_size))
    elif ranks.is_main:
        layout = _sized_layout(job)
    layout = ranks.share(layout)
    shards.set_layout(layout)
    return layout


def _sized_layout(job: _Job) -> Layout:
    """Batch sizes that fit the budget: the largest batch for every row when a generous bound
    fits; else per attack from its measured cost (probe on one image)."""
    cfg, device = job.cfg, torch.device(job.device)
    budget = memory.budget(cfg.max_memory, device)
    x, y, masks = (t if t is None else t.to(device) for t in load_batch(job.dataset, range(1)))
    cap = min(memory.DEFAULT_BATCH_SIZE, cfg.n)
    wanted = cfg.batch_size or cap
    if budget.fits(memory.activation_bound(job.model, x), wanted):
        return Layout(wanted, {plan.label: wanted for plan in job.plans})
    costs: dict[str, memory.RowCost] = {}
    for plan in job.plans:
        if plan.attack not in costs:  # one probe per attack: its rows differ by little
            probe = memory.probe_plan(plan)
            atk = probe.build(job.model)
            index = torch.zeros(1, dtype=torch.long, device=device)

            def step(probe=probe, atk=atk, index=index):
                _step(job, probe, atk, x, y, index, masks, 1, None, None)

            costs[plan.attack] = memory.RowCost.measured(
                plan.attack, memory.measure_peak(step, device)
            )
    sizes = {}
    for plan in job.plans:
        cost = costs[plan.attack]
        if cfg.batch_size is not None:
            budget.check(cost, cfg.batch_size)
            sizes[plan.label] = cfg.batch_size
        else:
            sizes[plan.label] = budget.batch_size(cost, cap)
    return Layout(max(sizes.values()), sizes)


def _step(job: _Job, plan, atk, x, y, index, masks, batch_size, clean_heatmap, backend):
    """One plan on one batch: (records, compacted adversarial images, meta)."""
    # Global RNG state per (seed, batch): third-party attacks that draw from it give the same
    # numbers whatever the number of ranks.
    torch.manual_seed(job.cfg.seed * 1_000_003 + int(index[0]))
    start = time.perf_counter()
    res = _attack(plan, atk, x, y, index, masks)
    _sync(job.device)
    meta = {"seconds": time.perf_counter() - start}
    # the call's rule: a targeted row's holds the batch's targets
    records = per_image_records(
        job.model, x, res.x_adv, y, plan.stage, criterion=res.criterion, masks=masks,
        queries=res.queries, first_success_step=res.first_success_step, eps=res.eps,
        index=index, batch_size=batch_size, clean_heatmap=clean_heatmap,
    )  # fmt: skip
    adversarial = AdversarialBatch.compact(job.model, x, res.x_adv, y, records, plan.stage,
                                           res.criterion, batch_size=batch_size)  # fmt: skip
    if backend is not None:
        fooled, agrees = backend.evaluate(x, res.x_adv, records, res.criterion)
        meta.update(backend_fooled=int(fooled.sum()), backend_agree=int(agrees.sum()))
    return records, adversarial, meta


def _run_job(job: _Job, shards: ConfigShards, ranks: Ranks, bar) -> pd.DataFrame:
    cfg, out = job.cfg, job.out
    backend = (
        OrtBackend(job.model, out, job.digest, ranks) if cfg.backend == "onnxruntime" else None
    )
    layout = _layout(job, shards, ranks)
    keys = job.keys()
    ids = [row_id(key) for key in keys]
    _attack_all(job, layout, shards, ids, backend, ranks, bar)
    ranks.barrier()
    if not ranks.is_main:
        return pd.DataFrame()
    env = environment_columns(job.device)
    write_class_names(out, job.digest, job.model.hierarchy)  # the records' indices in words
    grids = {**budget_grids_for(load_batch(job.dataset, range(1))[0].shape[1:]), **cfg.budgets}
    rows, examples, curves = [], [], []
    for plan, key, rid in zip(job.plans, keys, ids):
        batches = _row_batches(layout, plan.label, cfg.n)
        records = shards.records(rid, batches)
        write_records(out, key, records)
        save_adversarial(out, key, shards.adversarial(rid, batches))
        metas = shards.meta(rid, batches)
        per_rank: dict[int, float] = {}
        for meta in metas:
            per_rank[meta["rank"]] = per_rank.get(meta["rank"], 0.0) + meta["seconds"]
        seconds = max(per_rank.values())  # ranks attack in parallel
        row = {**key, **aggregate(records),
               "ms_per_image": 1000 * seconds / cfg.n, "images_per_s": cfg.n / seconds,
               **env}  # fmt: skip
        if backend is not None:
            row["backend_fooling_ratio"] = sum(m["backend_fooled"] for m in metas) / cfg.n
            row["backend_agreement"] = sum(m["backend_agree"] for m in metas) / cfg.n
        rows.append(row)
        examples.append(figure_examples(records))
        curves.append(budget_curves(records.assign(row_id=rid), grids))
        del records
    written = upsert_rows(out / "leaderboard.csv", rows)
    upsert_budget_curves(out / "budget_curves.csv", pd.concat(curves, ignore_index=True))
    if cfg.figures:
        _draw_figures(job, layout, shards, ids, examples, figure_folder(out, cfg.model))
    return written.set_index("row_id").loc[ids].reset_index()


def _row_batches(layout: Layout, label: str, n: int) -> list[range]:
    return [b for block in layout.blocks(n) for b in layout.batches(label, block)]


def _attack_all(job: _Job, layout: Layout, shards: ConfigShards, ids, backend, ranks, bar):
    """Every plan on this rank's blocks, each batch written to its shard; batches whose shard
    exists are skipped (a resumed run)."""
    cfg, plans, device = job.cfg, job.plans, job.device
    blocks = [b for i, b in enumerate(layout.blocks(cfg.n)) if i % ranks.world == ranks.rank]
    # the bar counts this rank's images (rank 0's is shown): its share of this config's n
    bar.total += sum(len(b) for b in blocks) - cfg.n
    # the clean LRP maps of the records, per stage in batches of the stage's smallest batch
    # size: the same batches whichever plan asks first (a resumed run included)
    map_batch = {}
    for plan in plans:
        size = layout.batch[plan.label]
        map_batch[plan.stage] = min(map_batch.get(plan.stage, size), size)
    warmed = False
    for block in blocks:
        todo = []
        for j, plan in enumerate(plans):
            for batch in layout.batches(plan.label, block):
                if shards.done(ids[j], batch):  # attacked before the run was interrupted
                    bar.update(len(batch) / len(plans))
                else:
                    todo.append((j, batch))
        if not todo:
            continue
        x, y, masks = load_batch(job.dataset, block)
        x, y = x.to(device), y.to(device)
        masks = masks.to(device) if masks is not None else None
        index = torch.as_tensor(list(block), device=device)
        if not warmed:  # one-time set-up (kernel choice, allocator) is not billed to a row
            FGSM(job.model, stage="coarse", memory_format=cfg.memory_format)(
                x[: min(layout.batch.values())]
            )
            warmed = True
        clean_heatmaps = {}  # by stage: the records' clean LRP map, the same for every attack
        for j, batch in todo:
            plan = plans[j]
            bar.set_postfix_str(plan.label)
            if plan.stage not in clean_heatmaps:
                clean_heatmaps[plan.stage] = clean_stage_heatmap(
                    job.model, x, plan.stage, batch_size=map_batch[plan.stage]
                )
            part = slice(batch.start - block.start, batch.stop - block.start)
            records, adversarial, meta = _step(
                job, plan, job.attacks[j], x[part], y[part], index[part],
                None if masks is None else masks[part], layout.batch[plan.label],
                clean_heatmaps[plan.stage][part], backend,
            )  # fmt: skip
            shards.write(ids[j], batch, records, adversarial, {**meta, "rank": ranks.rank})
            del records, adversarial
            memory.release_freed_memory()
            bar.update(len(batch) / len(plans))


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


def budget_figure_name(stage: str, target: str = "none") -> str:
    """The budget-curve figure of a stage's rows with one target policy, without ``.png``:
    ``budget_coarse`` (untargeted), ``budget_coarse_target_random``."""
    return file_name(f"budget_{stage}" + ("" if target == "none" else f"/target={target}"))


def _draw_figures(job: _Job, layout: Layout, shards: ConfigShards, ids, examples, folder):
    """Attack figures (fixed and first-success rows: the images ``examples`` as saved) and one
    budget-curve figure per stage and target policy (records read back per stage,
    :func:`budget_figure_name`), in ``folder``; failures become warnings."""
    from c2f_attacks import figures as draw

    cfg, plans = job.cfg, job.plans

    def attack_figure(j: int, path: Path) -> None:
        x = load_batch(job.dataset, examples[j])[0]
        batches = _row_batches(layout, plans[j].label, cfg.n)
        x_adv = read_back(shards.adversarial(ids[j], batches), examples[j], x)
        criterion = job.attacks[j].criterion
        if criterion.targeted:  # the examples' targets, as recorded
            recorded = shards.records(ids[j], batches).set_index("index")["target_class"]
            criterion = criterion.aimed_at(torch.tensor(recorded.loc[examples[j]].to_numpy()))
        draw.attack_figure(model=job.model, x=x, x_adv=x_adv, criterion=criterion,
                           title=f"{plans[j].label} on {cfg.model}", path=path,
                           batch_size=layout.batch[plans[j].label])  # fmt: skip

    def budget_figure(part: tuple[str, str], path: Path) -> None:
        rows = [(plan.label, shards.records(rid, _row_batches(layout, plan.label, cfg.n)))
                for plan, rid in zip(plans, ids) if (plan.stage, plan.target) == part]  # fmt: skip
        masked = {plan.label for plan in plans if plan.mask != "none"}
        draw.budget_figure(rows=rows, stage=part[0], l0_rows=masked, path=path)

    drawn = [j for j, plan in enumerate(plans) if examples[j] and plan.protocol != "minimal"]
    jobs = [(attack_figure, j, folder / f"{file_name(plans[j].label)}.png") for j in drawn]
    # one budget figure per stage and target policy: a targeted row's fooling ratio counts the
    # images sent to their target, not comparable with an untargeted one's
    jobs += [(budget_figure, (stage, target), folder / f"{budget_figure_name(stage, target)}.png")
             for stage, target in dict.fromkeys((p.stage, p.target) for p in plans)]  # fmt: skip
    for function, what, path in jobs:
        try:
            function(what, path)
        except Exception as err:  # the leaderboard is written: a figure must not undo that
            warnings.warn(f"figure {path} not written: {err}", FigureWarning, stacklevel=2)

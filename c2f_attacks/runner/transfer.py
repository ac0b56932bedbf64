"""The job behind ``c2f-bench transfer``: do a run's adversarial images fool other models, and
the deployed (ONNX FP32 / FP16 / INT8) variants of the attacked model?

1. Sources (:func:`load_sources`): the selected leaderboard rows of a run folder, each with its
   per-image records and its saved adversarial images (``adversarial/<row_id>.npz``). The clean
   images are reloaded from the dataset of the row key (dataset, split, n, seed) as the run read
   them, and checked against the records: per image, ``linf(x_adv - x)`` must equal the recorded
   ``linf`` within the storage error.
2. Targets (:func:`evaluate_transfer`): a model as :func:`~c2f_attacks.models.load_model` takes
   it (registered name, checkpoint, ``module:factory``), run in PyTorch on ``device``; or
   ``onnx:fp32`` / ``onnx:fp16`` / ``onnx:int8``: that deployment variant of each source row's
   own model (:func:`~c2f_attacks.exporters.variant_files.cached_variants`, cached as
   ``<out>/onnx/<model hash>[.<variant>].onnx``), run by onnxruntime on the CPU; an INT8
   target's input quantization is read from its graph
   (:mod:`~c2f_attacks.exporters.input_quantization`). Every target's hierarchy must be the
   source model's.
3. Evaluation, batch by batch (each clean batch loaded and predicted once per target), into
   per-image transfer records; written under ``<out>/transfer_records/``, their aggregates
   upserted into ``<out>/transfer.csv`` by (source row, target), one heatmap per stage in
   ``<out>/figures/transfer_<stage>.png``. :mod:`c2f_attacks.evaluation.transfer` defines every
   record and every aggregate.

Every input is checked before anything is written: the run folder, the rows, their records and
images, the target names and hierarchies, the output folder, ``transfer.csv`` and the transfer
records already there.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch

from c2f_attacks.attacks.criteria import Criterion, get_criterion
from c2f_attacks.attacks.predictions import Predictions, predict
from c2f_attacks.data import load_batch
from c2f_attacks.errors import UserError
from c2f_attacks.evaluation import KEY, load_adversarial, read_records_file
from c2f_attacks.evaluation.adversarial import ENCODING_ERROR, SavedAdversarial, adversarial_path
from c2f_attacks.evaluation.records import records_path
from c2f_attacks.evaluation.transfer import (
    FOLDER,
    TRANSFER_KEY,
    load_transfer_records,
    recorded_predictions,
    stopping_rule,
    transfer_records,
    transfer_table,
    write_transfer_records,
)
from c2f_attacks.evaluation.typed_csv import read_records
from c2f_attacks.exporters.input_quantization import InputQuantization, input_quantization
from c2f_attacks.exporters.quantize import CALIBRATION_IMAGES
from c2f_attacks.exporters.runtime import CPU, OrtC2F
from c2f_attacks.exporters.variant_files import cached_variants
from c2f_attacks.exporters.variants import CHECK_IMAGES, VARIANTS
from c2f_attacks.figures import transfer_heatmap, transfer_matrix
from c2f_attacks.hierarchy import check_same_hierarchy
from c2f_attacks.leaderboard import check_leaderboard, read_leaderboard, upsert_rows
from c2f_attacks.leaderboard.select import select_many
from c2f_attacks.models import load_model
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.runner import preflight
from c2f_attacks.runner.execute import FigureWarning, load_model_and_data, model_hash

ONNX_PREFIX = "onnx:"
#: the targets that stand for a deployment variant of each source row's own model
ONNX_TARGETS = tuple(f"{ONNX_PREFIX}{v}" for v in VARIANTS)


@dataclass(frozen=True)
class SourceRow:
    """One leaderboard row of a run with its records (sorted by image) and adversarial images."""

    key: dict[str, Any]
    row_id: str
    records: pd.DataFrame
    adversarial: SavedAdversarial

    @property
    def criterion(self) -> Criterion:
        """The row's success rule, as the run applied it (a targeted row's with the recorded
        targets)."""
        return get_criterion(self.key["success_rule"], self.key["stage"],
                             target=self.records["target_class"].to_numpy())  # fmt: skip

    @property
    def model(self) -> tuple[str, str]:
        """What names the attacked model: (model, model_hash)."""
        return self.key["model"], self.key["model_hash"]

    @property
    def data(self) -> tuple:
        """What names its clean images: (model, dataset, split, n, seed); the model reads them."""
        return tuple(self.key[c] for c in ("model", "dataset", "split", "n", "seed"))


# ------------------------------------------------------------------------------------ sources
def load_sources(run_dir: str | os.PathLike, rows: Sequence[str] | None = None) -> list[SourceRow]:
    """The selected rows (:func:`~c2f_attacks.leaderboard.select.select_many`) of the run folder
    ``run_dir`` with their records and adversarial images, checked to belong together. One clear
    error for a missing folder, leaderboard, records or adversarial file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--from {run_dir}: no such folder (give a c2f-bench run --out)")
    board_path = run_dir / "leaderboard.csv"
    if not board_path.is_file():
        raise FileNotFoundError(
            f"--from {run_dir} has no leaderboard.csv: not the --out folder of a c2f-bench run"
        )
    board = select_many(_read_board(board_path), rows, str(board_path))
    if not len(board):
        raise UserError(f"--from {run_dir}: the leaderboard {board_path} has no rows")
    missing = [rid for rid in board["row_id"] if not adversarial_path(run_dir, rid).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(board)} rows of {run_dir} have no saved adversarial "
            f"images (e.g. {adversarial_path(run_dir, missing[0])}): they were written before "
            f"runs saved them; rerun `c2f-bench run --out {run_dir}` with the run's options "
            "(or pick rows with --rows)"
        )
    return [_source(run_dir, row) for row in board.to_dict("records")]


def _read_board(path: Path) -> pd.DataFrame:
    """The run's leaderboard; a board of an older run (before the key columns protocol and
    success_rule) is an error that says so and what to do."""
    try:
        return read_leaderboard(path)
    except ValueError as err:
        header = read_records(path, "leaderboard")[0]
        absent = [c for c in ("protocol", "success_rule") if c not in header]
        if not absent:
            raise
        raise UserError(
            f"{err}: the run was written before leaderboard rows carried {' and '.join(absent)}; "
            f"rerun `c2f-bench run --out {path.parent}` with the run's options to transfer it"
        ) from None


def _source(run_dir: Path, row: dict[str, Any]) -> SourceRow:
    key = {c: row[c] for c in KEY}
    path = records_path(run_dir, key)
    if not path.is_file():
        raise FileNotFoundError(f"row {row['row_id']} of {run_dir} has no records file {path}")
    records = read_records_file(path).sort_values("index", kind="stable").reset_index(drop=True)
    adversarial = load_adversarial(run_dir, row["row_id"])
    same_images = np.array_equal(records["index"].to_numpy(), adversarial.index)
    if not same_images or len(records) != int(row["n"]):
        raise UserError(
            f"row {row['row_id']} of {run_dir}: its records ({len(records)} images) and its "
            f"adversarial images ({len(adversarial)}) are not the same {row['n']} images"
        )
    source = SourceRow(key, row["row_id"], records, adversarial)
    try:  # the row's attack and success rule must be known before anything is evaluated
        stopping_rule(key["attack"])
        criterion = source.criterion
    except ValueError as err:
        raise UserError(f"row {row['row_id']} of {run_dir}: {err}") from None
    stage = key["stage"]
    recorded = (recorded_predictions(records, w, stage) for w in ("clean", "adv"))
    if not np.array_equal(criterion(*recorded).numpy(), records["success"].to_numpy(bool)):
        raise UserError(
            f"row {row['row_id']} of {run_dir}: its records' success is not its success rule "
            f"{criterion.name!r} ({path})"
        )
    return source


# ------------------------------------------------------------------------------------ targets
@dataclass(frozen=True)
class Target:
    """A model the adversarial images are replayed on: ``model`` is called like a model by
    :func:`~c2f_attacks.attacks.predictions.predict` (a PyTorch C2F model or an onnxruntime
    session); ``digest``: the PyTorch model's hash, or SHA-256 (12 hex) of the ONNX file."""

    spec: str
    digest: str
    model: Any
    quantization: InputQuantization | None = None

    @property
    def quantizes_input(self) -> bool:
        return self.quantization is not None and self.quantization.session is not None


def _torch_target(spec: str, device: str, hierarchy, sources: dict) -> Target:
    model = load_model(spec, map_location=device, hierarchy=hierarchy)
    for (name, _), source_model in sources.items():
        check_same_hierarchy(model.hierarchy, source_model.hierarchy,
                             (f"target {spec!r}", f"source model {name!r}"))  # fmt: skip
    return Target(spec, model_hash(model), model)


def _onnx_target(spec: str, path: Path, batch_size: int) -> Target:
    data = path.read_bytes()
    quantization = None
    if spec == f"{ONNX_PREFIX}int8":
        quantization = input_quantization(onnx.load_from_string(data))
    session = OrtC2F.from_bytes(data, [CPU], batch_size=batch_size)
    return Target(spec, hashlib.sha256(data).hexdigest()[:12], session, quantization)


# ------------------------------------------------------------------------------------ evaluation
def evaluate_transfer(
    sources: Sequence[SourceRow],
    targets: Sequence[str],
    *,
    onnx_dir: str | os.PathLike,
    device: str = "cpu",
    batch_size: int = 256,
    root: str | os.PathLike | None = None,
    hierarchy: str | os.PathLike | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    check_images: int = CHECK_IMAGES,
) -> pd.DataFrame:
    """The transfer records (:mod:`c2f_attacks.evaluation.transfer`) of every source row on
    every target, (row, target) by (row, target).

    Checked before any image is evaluated: the target names, every target's hierarchy against
    each source model's, the reloaded clean images of each source's first batch; ONNX variants
    are then built (or reused from ``onnx_dir``). ``root``/``hierarchy`` as for ``c2f-bench
    run``.
    """
    targets = list(dict.fromkeys(targets))
    if not targets:
        raise UserError("--targets: give at least one target")
    unknown = [t for t in targets if t.startswith(ONNX_PREFIX) and t not in ONNX_TARGETS]
    if unknown:
        raise UserError(f"unknown target {unknown[0]!r}: the ONNX targets are "
                         f"{', '.join(ONNX_TARGETS)}")  # fmt: skip
    device = str(preflight.check_device(device))
    models: dict[tuple, C2FClassifier] = {}  # the source models (CPU): hierarchies, ONNX export
    datasets: dict[tuple, Any] = {}  # the clean images, read as the run read them
    for s in sources:
        if s.data not in datasets:
            name, dataset, split, n, seed = s.data
            model, datasets[s.data] = load_model_and_data(
                name, dataset, split, int(n), root, hierarchy, "cpu", int(seed))  # fmt: skip
            models.setdefault(s.model, model)
    resolved: dict[tuple, Target] = {}  # (spec, source model) -> target; PyTorch: model None
    for spec in (t for t in targets if not t.startswith(ONNX_PREFIX)):
        resolved[spec, None] = _torch_target(spec, device, hierarchy, models)
    first = slice(0, batch_size)
    for s in sources:
        _check_clean(s, first, _clean_images(datasets[s.data], s.adversarial.index[first]))
    variants = [t.removeprefix(ONNX_PREFIX) for t in targets if t.startswith(ONNX_PREFIX)]
    for (name, digest), model in models.items() if variants else ():
        if (now := model_hash(model)) != digest:
            raise UserError(
                f"model {name!r} now has weights of hash {now}, the run attacked "
                f"{digest}: its ONNX variants would not be the attacked model's"
            )
        dataset = next(s.key["dataset"] for s in sources if s.model == (name, digest))
        paths = cached_variants(
            model, Path(onnx_dir) / f"{digest}.onnx", variants, dataset, root=root,
            hierarchy=hierarchy, check_images=check_images,
            calibration_images=calibration_images, batch_size=batch_size,
        )  # fmt: skip
        for variant, path in paths.items():
            spec = f"{ONNX_PREFIX}{variant}"
            resolved[spec, (name, digest)] = _onnx_target(spec, path, batch_size)

    def target_of(s: SourceRow, spec: str) -> Target:
        return resolved[spec, None if (spec, None) in resolved else s.model]

    outputs = _predict_all(sources, targets, target_of, datasets, batch_size)
    frames = []
    for s in sources:
        for spec in targets:
            target = target_of(s, spec)
            clean, adv, same = outputs[s.row_id, spec]
            q = target.quantization
            frames.append(transfer_records(
                s.key, s.records, spec, target.digest, clean, adv, same_input=same,
                input_quantization=None if q is None else q.description,
            ))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _clean_images(dataset, index: np.ndarray) -> torch.Tensor:
    return load_batch(dataset, index)[0]


def _check_clean(source: SourceRow, positions: slice, x: torch.Tensor) -> None:
    """The reloaded clean images are the attacked ones: per image, the l-inf distance to its
    saved adversarial image (read back alone, every value within the encoding's error) is the
    recorded one, within that error."""
    x_adv = source.adversarial.x_adv(positions)
    linf = (x_adv - x).abs().flatten(1).amax(dim=1).double().numpy()
    recorded = source.records["linf"].to_numpy()[positions]
    tolerance = ENCODING_ERROR[source.adversarial.meta["encoding"]] + 1e-6
    bad = np.flatnonzero(np.abs(linf - recorded) > tolerance)
    if bad.size:
        i = bad[0]
        _, name, split, n, seed = source.data
        raise UserError(
            f"the clean images reloaded from {name}/{split} (n={n}, seed={seed}) are not the "
            f"ones row {source.row_id} attacked: image {source.adversarial.index[positions][i]} "
            f"is {linf[i]:.4g} (l-inf) from its saved adversarial image, the records say "
            f"{recorded[i]:.4g} (dataset changed since the run, or another --root?)"
        )


def _predict_all(sources, targets, target_of, datasets, batch_size) -> dict[tuple, tuple]:
    """Per (row_id, target): the target's clean and adversarial predictions and, for a target
    that quantizes its input, per image whether it quantizes x_adv to x (else None); batch by
    batch, each clean batch loaded once and predicted once per target."""
    parts: dict[tuple, list] = defaultdict(list)
    for data, dataset in datasets.items():
        group = [s for s in sources if s.data == data]
        for start in range(0, max(len(s.adversarial) for s in group), batch_size):
            positions = slice(start, start + batch_size)
            loaded: dict[bytes, torch.Tensor] = {}
            clean: dict[tuple, Predictions] = {}
            for s in group:
                index = s.adversarial.index[positions]
                images = index.tobytes()
                if images not in loaded:
                    loaded[images] = _clean_images(dataset, index)
                x = loaded[images]
                _check_clean(s, positions, x)
                x_adv = s.adversarial.x_adv(positions, clean=x)
                for spec in targets:
                    target = target_of(s, spec)
                    if (id(target), images) not in clean:
                        clean[id(target), images] = predict(target.model, x, "fine", batch_size)
                    adv = predict(target.model, x_adv, "fine", batch_size)
                    same = target.quantization.same(x, x_adv) if target.quantizes_input else None
                    parts[s.row_id, spec].append((clean[id(target), images], adv, same))
    joined = {}
    for ident, chunks in parts.items():
        clean_pred, adv_pred = (Predictions.cat([c[k] for c in chunks]) for k in (0, 1))
        same = None if chunks[0][2] is None else np.concatenate([c[2] for c in chunks])
        joined[ident] = clean_pred, adv_pred, same
    return joined


# ------------------------------------------------------------------------------------ the job
def transfer(
    source: str | os.PathLike,
    targets: Sequence[str],
    *,
    rows: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    allow_results_dir: bool = False,
    figures: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """``c2f-bench transfer``: load the sources of run folder ``source``, check the outputs
    (``out``, default ``source``: never the committed results/ unless allowed; transfer.csv and
    the transfer records there strict, transfer.csv lockable; figures/ writable), evaluate
    (``options``: those of :func:`evaluate_transfer` but ``onnx_dir``), write the transfer
    records, upsert their aggregates into ``<out>/transfer.csv`` by (source row, target), draw
    ``<out>/figures/transfer_<stage>.png`` (a failure is a :class:`FigureWarning`) and return
    this call's rows of transfer.csv as written."""
    sources = load_sources(source, rows)
    out = preflight.check_out_dir(source if out is None else out, allow_results_dir)
    table_path = out / "transfer.csv"
    check_leaderboard(table_path, key=TRANSFER_KEY)
    load_transfer_records(out)  # a damaged file there stops the job before it computes
    _check_folder(out / FOLDER, "transfer records folder")
    if figures:
        _check_folder(out / "figures", "figures folder")
    records = evaluate_transfer(sources, targets, onnx_dir=out / "onnx", **options)
    write_transfer_records(out, records)
    table = transfer_table(records)
    written = upsert_rows(table_path, table.to_dict("records"), key=TRANSFER_KEY)
    if figures:
        draw_transfer_figures(written, out / "figures")
    mine = set(zip(table["row_id"], table["target"]))
    chosen = [(r, t) in mine for r, t in zip(written["row_id"], written["target"])]
    return written[chosen].reset_index(drop=True)


def _check_folder(folder: Path, what: str) -> None:
    """``folder`` can be written into, without creating it before there is something to write
    (its parent, the output folder, is checked writable)."""
    if folder.exists() or folder.is_symlink():  # a file there, or a read-only folder, fails
        preflight.check_writable(folder, f"{what} {folder}")


def draw_transfer_figures(table: pd.DataFrame, folder: Path) -> list[Path]:
    """One :func:`~c2f_attacks.figures.transfer_heatmap` per stage of ``table`` (source row x
    target), written to ``folder/transfer_<stage>.png``; a figure that fails is a warning."""
    written = []
    for stage, part in table.groupby("stage", sort=False):
        path = folder / f"transfer_{stage}.png"
        try:
            transfer_heatmap(transfer_matrix(part), path, stage=stage)
            written.append(path)
        except Exception as err:  # transfer.csv is written: a figure must not undo that
            warnings.warn(f"figure {path} not written: {err}", FigureWarning, stacklevel=2)
    return written

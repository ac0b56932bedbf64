"""Transfer evaluation behind ``c2f-bench transfer``: do a run's adversarial images fool other
models, and the deployed (ONNX FP32 / FP16 / INT8) variants of the attacked model?

Sources (:func:`load_sources`): the selected leaderboard rows of a run folder, each with its
per-image records and its saved adversarial images (``adversarial/<row_id>.npz``,
:mod:`c2f_attacks.evaluation.adversarial`). The clean images are reloaded from the dataset of
the row key (dataset, split, n, seed) by image index and checked against the records: per
image, ``linf(x_adv - x)`` must equal the recorded ``linf`` within the storage error. The
adversarial images are read back with them, so values the attack left alone are exact.

Targets (:func:`evaluate_transfer`): a model as :func:`~c2f_attacks.models.load_model` takes it
(registered name, checkpoint, ``module:factory``), run in PyTorch on ``device``; or
``onnx:fp32`` / ``onnx:fp16`` / ``onnx:int8``: the deployment variant of each source row's own
model, built by :func:`~c2f_attacks.exporters.export_variants` (checked on
:data:`CHECK_IMAGES` test-split images; INT8 calibrated on :data:`CALIBRATION_IMAGES`
training-split images), cached as ``<out>/onnx/<model hash>[.<variant>].onnx`` and run by
onnxruntime on the CPU. Every target's hierarchy must equal the source model's.

Per (source row, target), over the row's N images, with the target's clean coarse/fine
predictions (c, f) and adversarial ones (c', f') (docs/metrics.md has the full definitions):

- ``transfer_fooling_ratio``: share of images fooled under the source row's own success rule
  (its ``success_rule``: the stage prediction changed, or f' != f and c' == c), judged against
  the *target's* clean predictions;
- ``coarse_flipped`` / ``fine_flipped``: share with c' != c / f' != f;
- ``source_fooling_ratio``: the row's fooling ratio on its own model (from the records);
- ``survival``: share of the source's successes that also fool the target (NaN without any);
- ``clean_agreement``: share of images whose target clean predictions (c, f) equal the source
  model's;
- every share with a seeded 95% percentile bootstrap interval (``_lo``/``_hi``);
- INT8 targets: ``quantized_away``, the number of images whose adversarial input equals the
  clean input once the INT8 graph has quantized its input (its own QuantizeLinear, run by
  onnxruntime), and ``input_quantization``, which says what that quantization is, or that the
  graph has none (``quantized_away`` then empty).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
import pandas as pd
import torch
from onnx import numpy_helper

from c2f_attacks.attacks.predictions import Predictions, predict
from c2f_attacks.data import get_dataset
from c2f_attacks.evaluation import KEY, bootstrap_ci, load_adversarial, read_records_file
from c2f_attacks.evaluation.adversarial import ENCODING_ERROR, SavedAdversarial, adversarial_path
from c2f_attacks.evaluation.records import records_path
from c2f_attacks.exporters.evaluate import fooled_mask
from c2f_attacks.exporters.quantize import CALIBRATION_IMAGES
from c2f_attacks.exporters.runtime import CPU, OrtC2F
from c2f_attacks.exporters.variants import CHECK_IMAGES, VARIANTS, export_variants, variant_path
from c2f_attacks.hierarchy import check_same_hierarchy
from c2f_attacks.leaderboard import check_leaderboard, read_leaderboard, upsert_rows
from c2f_attacks.leaderboard.select import select_many
from c2f_attacks.models import load_model
from c2f_attacks.models.base import C2FClassifier, C2FOutput
from c2f_attacks.runner import preflight
from c2f_attacks.runner.execute import FigureWarning, load_batch, model_hash

ONNX_PREFIX = "onnx:"
#: the targets that stand for a deployment variant of each source row's own model
ONNX_TARGETS = tuple(f"{ONNX_PREFIX}{v}" for v in VARIANTS)
#: a transfer.csv row is one source row (its leaderboard key) and one target
TRANSFER_KEY: tuple[str, ...] = (*KEY, "target")
#: what the printed table shows, and its short headers
TABLE_COLUMNS = ("attack", "protocol", "mask", "target", "transfer_fooling_ratio",
                 "transfer_fooling_ratio_lo", "transfer_fooling_ratio_hi", "source_fooling_ratio",
                 "survival", "quantized_away")  # fmt: skip
HEADERS = {"transfer_fooling_ratio": "tFR", "transfer_fooling_ratio_lo": "lo",
           "transfer_fooling_ratio_hi": "hi", "source_fooling_ratio": "src FR",
           "survival": "surv", "quantized_away": "q-away"}  # fmt: skip


@dataclass(frozen=True)
class SourceRow:
    """One leaderboard row of a run with its records (sorted by image) and adversarial images."""

    key: dict[str, Any]
    row_id: str
    records: pd.DataFrame
    adversarial: SavedAdversarial

    @property
    def stage(self) -> str:
        return self.key["stage"]

    @property
    def success_rule(self) -> str:
        """The row's success rule, as the run applied it."""
        return self.key["success_rule"]

    @property
    def data(self) -> tuple:
        """What names its clean images: (dataset, split, n, seed)."""
        return tuple(self.key[c] for c in ("dataset", "split", "n", "seed"))


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
    board = select_many(read_leaderboard(board_path), rows, str(board_path))
    if not len(board):
        raise ValueError(f"--from {run_dir}: the leaderboard {board_path} has no rows")
    missing = [rid for rid in board["row_id"] if not adversarial_path(run_dir, rid).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(board)} rows of {run_dir} have no saved adversarial "
            f"images (e.g. {adversarial_path(run_dir, missing[0])}): they were written before "
            f"runs saved them; rerun `c2f-bench run --out {run_dir}` with the run's options "
            "(or pick rows with --rows)"
        )
    return [_source(run_dir, row) for row in board.to_dict("records")]


def _source(run_dir: Path, row: dict[str, Any]) -> SourceRow:
    key = {c: row[c] for c in KEY}
    path = records_path(run_dir, key)
    if not path.is_file():
        raise FileNotFoundError(f"row {row['row_id']} of {run_dir} has no records file {path}")
    records = read_records_file(path).sort_values("index", kind="stable").reset_index(drop=True)
    adversarial = load_adversarial(run_dir, row["row_id"])
    same_images = np.array_equal(records["index"].to_numpy(), adversarial.index)
    if not same_images or len(records) != int(row["n"]):
        raise ValueError(
            f"row {row['row_id']} of {run_dir}: its records ({len(records)} images) and its "
            f"adversarial images ({len(adversarial)}) are not the same {row['n']} images"
        )
    source = SourceRow(key, row["row_id"], records, adversarial)
    recorded = _outputs(records, "clean"), _outputs(records, "adv")
    if not np.array_equal(
        fooled_mask(*recorded, source.stage, source.success_rule).numpy(),
        records["success"].to_numpy(bool),
    ):
        raise ValueError(
            f"row {row['row_id']} of {run_dir}: its records' success is not its success rule "
            f"{source.success_rule!r}"
        )
    return source


def _outputs(records: pd.DataFrame, which: str) -> C2FOutput:
    """The recorded ``which`` ("clean"/"adv") predictions as a logit-less C2FOutput."""
    coarse, fine = (torch.tensor(records[f"{which}_{s}"].to_numpy()) for s in ("coarse", "fine"))
    return C2FOutput(None, None, coarse, fine)


# ------------------------------------------------------------------------------------ targets
@dataclass(frozen=True)
class InputQuantization:
    """How an INT8 graph quantizes its input: ``description`` in words and, when it does, a
    session computing the quantized input (the graph's own nodes up to its QuantizeLinear)."""

    description: str
    session: ort.InferenceSession | None = None
    input_name: str = ""

    def same(self, x: torch.Tensor, x_adv: torch.Tensor) -> np.ndarray:
        """Per image: whether ``x`` and ``x_adv`` quantize to the same input."""
        if self.session is None:
            raise ValueError(f"the graph has no input quantization ({self.description})")
        a, b = (
            self.session.run(None, {self.input_name: t.float().cpu().numpy()}) for t in (x, x_adv)
        )
        same = np.ones(len(x), dtype=bool)
        for qa, qb in zip(a, b):
            same &= (qa == qb).reshape(len(x), -1).all(axis=1)
        return same


def input_quantization(proto: onnx.ModelProto) -> InputQuantization:
    """Read the input quantization of an INT8 graph: the QuantizeLinear nodes that every path
    from the image input passes through (after value-preserving pre-processing such as the
    normalization's Sub and Div). Nothing is guessed: a path that reaches an output without
    one, or a scale that is not a constant, gives an ``InputQuantization`` without session."""
    graph = proto.graph
    constants = {i.name for i in graph.initializer}
    source = next(i.name for i in graph.input if i.name not in constants)
    outputs = {o.name for o in graph.output}
    readers = defaultdict(list)
    for position, node in enumerate(graph.node):
        for name in dict.fromkeys(node.input):
            readers[name].append((position, node))
    quantizers, before, frontier, seen = {}, [], [source], set()
    while frontier:
        name = frontier.pop()
        if name in outputs:
            return InputQuantization(
                f"none: output {name!r} is computed from the unquantized input"
            )
        for position, node in readers[name]:
            if node.op_type == "QuantizeLinear" and node.input[0] == name:
                quantizers[position] = node
            elif node.op_type not in ("Shape", "Size") and position not in seen:
                seen.add(position)  # shape ops read the input's shape, not its values
                before.append(node.op_type)
                frontier.extend(node.output)
    quantizers = list(quantizers.values())
    if not quantizers:
        return InputQuantization("none: the graph has no QuantizeLinear")
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    parts = []
    for q in quantizers:
        scale, zero = init.get(q.input[1]), init.get(q.input[2]) if len(q.input) > 2 else None
        if scale is None or (len(q.input) > 2 and zero is None):
            return InputQuantization(f"none readable: QuantizeLinear {q.name!r} has no constant "
                                     "scale / zero point")  # fmt: skip
        zero = np.zeros((), np.uint8) if zero is None else zero
        parts.append(f"scale {np.array2string(scale, precision=4)} zero point "
                     f"{np.array2string(zero)} ({zero.dtype})")  # fmt: skip
    where = f"after {'/'.join(before)}" if before else "on the raw input"
    inferred = onnx.shape_inference.infer_shapes(proto)
    head = onnx.utils.Extractor(inferred).extract_model([source], [q.output[0] for q in quantizers])
    session = ort.InferenceSession(head.SerializeToString(), providers=[CPU])
    return InputQuantization(f"QuantizeLinear {where}: {'; '.join(parts)}", session, source)


@dataclass
class Target:
    """A model the adversarial images are evaluated on: ``predict(x) -> C2FOutput`` (CPU)."""

    spec: str
    digest: str  #: model_hash of a PyTorch model, SHA-256 (12 hex) of an ONNX file
    predict: Callable[[torch.Tensor], C2FOutput]
    quantization: InputQuantization | None = None


def _torch_target(spec: str, device: str, hierarchy, batch_size: int) -> tuple[Target, Any]:
    model = load_model(spec, map_location=device, hierarchy=hierarchy)
    return Target(
        spec, model_hash(model), lambda x: _as_output(predict(model, x, "fine", batch_size))
    ), model


def _as_output(pred: Predictions) -> C2FOutput:
    """Predictions as a logit-less C2F output, the form the ONNX sessions return."""
    return C2FOutput(None, None, pred.coarse, pred.fine)


def onnx_variants(
    model: C2FClassifier,
    digest: str,
    folder: Path,
    data: tuple[str, Any, Any],
    variants: Sequence[str],
    *,
    batch_size: int = 256,
    calibration_images: int = CALIBRATION_IMAGES,
    check_images: int = CHECK_IMAGES,
) -> dict[str, Path]:
    """The files of ``variants`` of ``model`` (hash ``digest``) under ``folder``: reused when
    present (INT8 when calibrated on as many images), else exported by ``export_variants``
    with check images from the test split and INT8 calibration images from the training split
    of ``data`` = (dataset, root, hierarchy)."""
    path = folder / f"{digest}.onnx"
    missing = [v for v in variants if not _cached(variant_path(path, v), v, calibration_images)]
    if missing:
        name, root, hierarchy = data
        check = get_dataset(name, "test", n=check_images, root=root, hierarchy=hierarchy)
        images, labels, _ = load_batch(check, range(len(check)))
        calibration = None
        if "int8" in missing:
            train = get_dataset(name, "train", n=calibration_images, root=root, hierarchy=hierarchy)
            calibration = load_batch(train, range(len(train)))[0]
        export_variants(model, path, calibration, images, labels, variants=missing,
                        batch_size=batch_size)  # fmt: skip
    return {v: variant_path(path, v) for v in variants}


def _cached(path: Path, variant: str, calibration_images: int) -> bool:
    if not path.is_file():
        return False
    if variant != "int8":
        return True
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get("c2f.calibration_images") == str(calibration_images)


def _onnx_target(spec: str, path: Path, batch_size: int) -> Target:
    session = OrtC2F(path, [CPU], batch_size=batch_size)
    data = path.read_bytes()
    quantization = None
    if spec == f"{ONNX_PREFIX}int8":
        quantization = input_quantization(onnx.load_from_string(data))
    return Target(spec, hashlib.sha256(data).hexdigest()[:12], session, quantization)


# ------------------------------------------------------------------------------------ evaluation
def evaluate_transfer(
    sources: Sequence[SourceRow],
    targets: Sequence[str],
    *,
    onnx_dir: str | os.PathLike,
    device: str = "cpu",
    batch_size: int = 256,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    hierarchy: str | os.PathLike | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    check_images: int = CHECK_IMAGES,
) -> pd.DataFrame:
    """One row per (source row, target) with the module docstring's columns, after the
    source row's key, ``target`` and ``row_id`` (the source's).

    Checked before any image is evaluated: the target names, every target's hierarchy against
    each source model's, the reloaded clean images of each dataset's first batch; ONNX variants
    are then built (or reused from ``onnx_dir``). ``root``/``hierarchy`` as for ``c2f-bench
    run``; ``seed`` seeds the bootstrap.
    """
    targets = list(dict.fromkeys(targets))
    if not targets:
        raise ValueError("--targets: give at least one target")
    unknown = [t for t in targets if t.startswith(ONNX_PREFIX) and t not in ONNX_TARGETS]
    if unknown:
        raise ValueError(f"unknown target {unknown[0]!r}: the ONNX targets are "
                         f"{', '.join(ONNX_TARGETS)}")  # fmt: skip
    device = str(preflight.check_device(device))
    models: dict[tuple, C2FClassifier] = {}  # the source models: hierarchies, ONNX export (CPU)
    for s in sources:
        ident = (s.key["model"], s.key["model_hash"])
        if ident not in models:
            models[ident] = load_model(s.key["model"], hierarchy=hierarchy)
    resolved: dict[tuple, Target] = {}  # (spec, source model) -> target; PyTorch: model None
    for spec in (t for t in targets if not t.startswith(ONNX_PREFIX)):
        resolved[spec, None], target_model = _torch_target(spec, device, hierarchy, batch_size)
        for (name, _), model in models.items():
            check_same_hierarchy(target_model.hierarchy, model.hierarchy,
                                 (f"target {spec!r}", f"source model {name!r}"))  # fmt: skip
    datasets, first = {}, slice(0, batch_size)
    for s in sources:
        if s.data not in datasets:
            name, split, n, data_seed = s.data
            preflight.check_num_images(int(n), None, name, split)
            datasets[s.data] = get_dataset(name, split, n=int(n), root=root, hierarchy=hierarchy,
                                           seed=int(data_seed))  # fmt: skip
        _check_clean(s, first, _clean_images(datasets[s.data], s.adversarial.index[first]))
    variants = [t.removeprefix(ONNX_PREFIX) for t in targets if t.startswith(ONNX_PREFIX)]
    for (name, digest), model in models.items() if variants else ():
        if (now := model_hash(model)) != digest:
            raise ValueError(
                f"model {name!r} now has weights of hash {now}, the run attacked "
                f"{digest}: its ONNX variants would not be the attacked model's"
            )
        dataset = next(s.key["dataset"] for s in sources if s.key["model"] == name)
        paths = onnx_variants(
            model, digest, Path(onnx_dir), (dataset, root, hierarchy), variants,
            batch_size=batch_size, calibration_images=calibration_images,
            check_images=check_images,
        )  # fmt: skip
        for variant, path in paths.items():
            spec = f"{ONNX_PREFIX}{variant}"
            resolved[spec, (name, digest)] = _onnx_target(spec, path, batch_size)

    def target_of(s: SourceRow, spec: str) -> Target:
        ident = None if (spec, None) in resolved else (s.key["model"], s.key["model_hash"])
        return resolved[spec, ident]

    outputs = _predict_all(sources, targets, target_of, datasets, batch_size)
    rows = []
    for s in sources:
        for spec in targets:
            target = target_of(s, spec)
            clean, adv, same = outputs[s.row_id, spec]
            row = {**s.key, "target": spec, "row_id": s.row_id, "target_hash": target.digest}
            row.update(_metrics(s, clean, adv, seed))
            row["quantized_away"] = np.nan if same is None else int(same.sum())
            q = target.quantization
            row["input_quantization"] = "" if q is None else q.description
            rows.append(row)
    return pd.DataFrame(rows)


def _clean_images(dataset, index: np.ndarray) -> torch.Tensor:
    return load_batch(dataset, [int(i) for i in index])[0]


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
        name, split, n, seed = source.data
        raise ValueError(
            f"the clean images reloaded from {name}/{split} (n={n}, seed={seed}) are not the "
            f"ones row {source.row_id} attacked: image {source.adversarial.index[positions][i]} "
            f"is {linf[i]:.4g} (l-inf) from its saved adversarial image, the records say "
            f"{recorded[i]:.4g} (dataset changed since the run, or another --root?)"
        )


def _predict_all(sources, targets, target_of, datasets, batch_size) -> dict[tuple, tuple]:
    """Per (row_id, target): clean and adversarial outputs and, for a target with input
    quantization, per image whether it quantizes x_adv to x (else None); batch by batch, each
    clean batch loaded and predicted once per target."""
    parts: dict[tuple, list] = defaultdict(list)
    for data, dataset in datasets.items():
        group = [s for s in sources if s.data == data]
        for start in range(0, max(len(s.adversarial) for s in group), batch_size):
            positions = slice(start, start + batch_size)
            loaded: dict[bytes, torch.Tensor] = {}
            clean: dict[tuple, C2FOutput] = {}
            for s in group:
                index = s.adversarial.index[positions]
                if index.tobytes() not in loaded:
                    loaded[index.tobytes()] = _clean_images(dataset, index)
                x = loaded[index.tobytes()]
                _check_clean(s, positions, x)
                x_adv = s.adversarial.x_adv(positions, clean=x)
                for spec in targets:
                    target = target_of(s, spec)
                    if (id(target), index.tobytes()) not in clean:
                        clean[id(target), index.tobytes()] = target.predict(x)
                    q = target.quantization
                    same = q.same(x, x_adv) if q is not None and q.session is not None else None
                    parts[s.row_id, spec].append((clean[id(target), index.tobytes()],
                                                  target.predict(x_adv), same))  # fmt: skip
    joined = {}
    for ident, chunks in parts.items():
        clean_out, adv_out = (_predictions([c[k] for c in chunks]) for k in (0, 1))
        same = None if chunks[0][2] is None else np.concatenate([c[2] for c in chunks])
        joined[ident] = clean_out, adv_out, same
    return joined


def _predictions(outputs: Sequence[C2FOutput]) -> C2FOutput:
    """The coarse and fine predictions of consecutive batches as one logit-less output."""
    coarse, fine = (torch.cat([getattr(o, f) for o in outputs]).cpu()
                    for f in ("coarse_pred", "fine_pred"))  # fmt: skip
    return C2FOutput(None, None, coarse, fine)


def _share_with_ci(name: str, values: np.ndarray, seed: int) -> dict[str, float]:
    """``name`` = mean of the non-NaN ``values`` (NaN if none) and its 95% bootstrap CI."""
    kept = values[~np.isnan(values)]
    lo, hi = bootstrap_ci(values, np.nanmean, seed=seed)
    return {name: float(kept.mean()) if kept.size else np.nan, f"{name}_lo": lo, f"{name}_hi": hi}


def _metrics(source: SourceRow, clean: C2FOutput, adv: C2FOutput, seed: int) -> dict[str, Any]:
    fooled = fooled_mask(clean, adv, source.stage, source.success_rule).numpy()
    success = source.records["success"].to_numpy(bool)
    flips = {
        "transfer_fooling_ratio": fooled,
        "coarse_flipped": (adv.coarse_pred != clean.coarse_pred).numpy(),
        "fine_flipped": (adv.fine_pred != clean.fine_pred).numpy(),
    }
    out: dict[str, Any] = {"n": len(fooled)}
    for name, values in flips.items():
        out.update(_share_with_ci(name, values.astype(np.float64), seed))
    out["source_fooling_ratio"] = float(success.mean())
    out.update(_share_with_ci("survival", np.where(success, fooled, np.nan), seed))
    recorded = _outputs(source.records, "clean")
    agree = (clean.coarse_pred == recorded.coarse_pred) & (clean.fine_pred == recorded.fine_pred)
    out.update(_share_with_ci("clean_agreement", agree.numpy().astype(np.float64), seed))
    return out


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
    (``out``, default ``source``: never the committed results/ unless allowed; transfer.csv
    strict and lockable; figures/ writable), evaluate (``options``: those of
    :func:`evaluate_transfer` but ``onnx_dir``), upsert ``<out>/transfer.csv`` by (source row,
    target), draw ``<out>/figures/transfer_<stage>.png`` (a failure is a
    :class:`FigureWarning`) and return this call's rows as written."""
    sources = load_sources(source, rows)
    out = preflight.check_out_dir(source if out is None else out, allow_results_dir)
    table_path = out / "transfer.csv"
    check_leaderboard(table_path, key=TRANSFER_KEY)
    if figures:
        preflight.check_writable(out / "figures", f"figures folder {out / 'figures'}")
    frame = evaluate_transfer(sources, targets, onnx_dir=out / "onnx", **options)
    written = upsert_rows(table_path, frame.to_dict("records"), key=TRANSFER_KEY)
    if figures:
        draw_transfer_figures(written, out / "figures")
    mine = set(zip(frame["row_id"], frame["target"]))
    chosen = [(r, t) in mine for r, t in zip(written["row_id"], written["target"])]
    return written[chosen].reset_index(drop=True)


def row_labels(table: pd.DataFrame) -> list[str]:
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


def draw_transfer_figures(table: pd.DataFrame, folder: Path) -> list[Path]:
    """One :func:`~c2f_attacks.figures.transfer_heatmap` per stage of ``table`` (source row x
    target), written to ``folder/transfer_<stage>.png``; a figure that fails is a warning."""
    from c2f_attacks.figures import transfer_heatmap

    written = []
    for stage, part in table.groupby("stage", sort=False):
        part = part.assign(label=row_labels(part))
        ratios = part.pivot(index="label", columns="target", values="transfer_fooling_ratio")
        ratios = ratios.reindex(index=part["label"].unique(), columns=part["target"].unique())
        path = folder / f"transfer_{stage}.png"
        try:
            transfer_heatmap(ratios, path, stage=stage)
            written.append(path)
        except Exception as err:  # transfer.csv is written: a figure must not undo that
            warnings.warn(f"figure {path} not written: {err}", FigureWarning, stacklevel=2)
    return written

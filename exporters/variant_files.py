"""The deployment variants of a model built from a dataset, and kept as files.

:func:`variant_images` takes from a dataset what :func:`~.variants.export_variants` needs:
``check_images`` images of its test split with their labels (accuracy and agreement) and, for
INT8, ``calibration_images`` images of its training split (never the images a variant is
evaluated on), as :func:`~c2f_attacks.data.get_dataset` picks ``n`` images (shapes: the first
ones; file datasets: spread evenly over the classes). The dataset is read as a run reads it: at
the model's input size, labelled by the model's hierarchy where it takes its classes from one
(image folders, ImageNet); its hierarchy must be the model's.

:func:`cached_variants` keeps the variants of one model under one FP32 path (the others beside
it, :func:`~.variants.variant_path`) and reuses the files already there: FP32 and FP16 whenever
present, INT8 only when calibrated on as many images (its ``c2f.calibration_images``
property). The missing ones are exported, checked and written by
:func:`~.variants.export_variants` (nothing written when a check fails).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch

from c2f_attacks.data import classes_from_hierarchy, get_dataset, load_batch
from c2f_attacks.exporters.quantize import CALIBRATION_IMAGES
from c2f_attacks.exporters.variants import (
    CHECK_IMAGES,
    MIN_AGREEMENT,
    VariantReport,
    export_variants,
    variant_path,
)
from c2f_attacks.hierarchy import check_same_hierarchy
from c2f_attacks.models.base import C2FClassifier


def split_images(
    model: C2FClassifier,
    dataset: str,
    split: str,
    n: int,
    *,
    root: str | os.PathLike | None = None,
    hierarchy: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, global fine labels) of ``n`` images of ``dataset``'s ``split``, read for
    ``model`` (module docstring). ``hierarchy``: as given to ``c2f-bench run``."""
    labels = model.hierarchy if classes_from_hierarchy(dataset) else hierarchy
    data = get_dataset(dataset, split, n=n, root=root, hierarchy=labels, size=model.input_size)
    check_same_hierarchy(model.hierarchy, data.hierarchy, ("the model", f"dataset {dataset!r}"))
    images, fine_labels, _ = load_batch(data, range(len(data)))
    return images, fine_labels


def variant_images(
    model: C2FClassifier,
    dataset: str,
    *,
    root: str | os.PathLike | None = None,
    hierarchy: str | os.PathLike | None = None,
    check_images: int = CHECK_IMAGES,
    calibration_images: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(check images, their labels, calibration images or None): ``check_images`` of the test
    split and, when ``calibration_images`` is given, that many of the training split."""
    where = {"root": root, "hierarchy": hierarchy}
    images, labels = split_images(model, dataset, "test", check_images, **where)
    calibration = None
    if calibration_images is not None:
        calibration = split_images(model, dataset, "train", calibration_images, **where)[0]
    return images, labels, calibration


def write_variants(
    model: C2FClassifier,
    path: str | os.PathLike,
    variants: Sequence[str],
    dataset: str,
    *,
    root: str | os.PathLike | None = None,
    hierarchy: str | os.PathLike | None = None,
    check_images: int = CHECK_IMAGES,
    calibration_images: int = CALIBRATION_IMAGES,
    min_agreement: float = MIN_AGREEMENT,
    batch_size: int = 256,
    dynamo: bool | None = None,
) -> list[VariantReport]:
    """:func:`~.variants.export_variants` of ``model`` to ``path`` with its check and (INT8)
    calibration images from ``dataset`` (:func:`variant_images`)."""
    images, labels, calibration = variant_images(
        model, dataset, root=root, hierarchy=hierarchy, check_images=check_images,
        calibration_images=calibration_images if "int8" in variants else None,
    )  # fmt: skip
    return export_variants(model, path, calibration, images, labels, variants=variants,
                           min_agreement=min_agreement, batch_size=batch_size,
                           dynamo=dynamo)  # fmt: skip


def cached_variants(
    model: C2FClassifier,
    path: str | os.PathLike,
    variants: Sequence[str],
    dataset: str,
    *,
    root: str | os.PathLike | None = None,
    hierarchy: str | os.PathLike | None = None,
    check_images: int = CHECK_IMAGES,
    calibration_images: int = CALIBRATION_IMAGES,
    batch_size: int = 256,
) -> dict[str, Path]:
    """The files of ``variants`` of ``model`` with the FP32 graph at ``path``: reused when
    present (module docstring), else built by :func:`write_variants`."""
    missing = [v for v in variants if not _reusable(variant_path(path, v), v, calibration_images)]
    if missing:
        write_variants(model, path, missing, dataset, root=root, hierarchy=hierarchy,
                       check_images=check_images, calibration_images=calibration_images,
                       batch_size=batch_size)  # fmt: skip
    return {v: variant_path(path, v) for v in variants}


def _reusable(path: Path, variant: str, calibration_images: int) -> bool:
    if not path.is_file():
        return False
    if variant != "int8":
        return True
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get("c2f.calibration_images") == str(calibration_images)

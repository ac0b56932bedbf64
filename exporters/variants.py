"""Deployment variants of one C2F model: FP32, FP16 and INT8 ONNX graphs, each checked on load.

``export_variants`` exports the FP32 graph once (:func:`to_onnx`, parity-checked), derives the
FP16 graph (:mod:`.fp16`) and the INT8 graph (:mod:`.quantize`, calibrated on training-split
images) from it, and loads every graph in onnxruntime from memory to check it on held-out
images with labels:

- ``coarse_acc`` / ``fine_acc``: share of images whose coarse prediction is the coarse class of
  the label (``fine_to_coarse[y]``) / whose fine prediction is the label ``y`` (global fine
  label); the same for the PyTorch FP32 model alongside;
- ``agreement``: share of images where the variant's coarse AND fine predictions both equal
  PyTorch FP32's (``coarse_agreement`` / ``fine_agreement`` for each stage alone).

A variant whose agreement is below ``min_agreement`` fails the export with
:class:`AgreementError`; files are written (atomically) only after every variant passed, so a
failed export writes nothing. File names: the FP32 graph goes to ``path``, the others next to
it as ``<stem>.<variant><suffix>`` (``shapes.onnx`` -> ``shapes.fp16.onnx``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
import torch

from c2f_attacks._io import atomic_write
from c2f_attacks.exporters.export import to_onnx
from c2f_attacks.exporters.fp16 import to_fp16
from c2f_attacks.exporters.parity import Parity, compare_outputs, torch_outputs
from c2f_attacks.exporters.quantize import to_int8
from c2f_attacks.exporters.runtime import OrtC2F
from c2f_attacks.models.base import C2FClassifier, C2FOutput
from c2f_attacks.validation import check_image_batch, check_labels

VARIANTS = ("fp32", "fp16", "int8")
#: the default floor: below it a variant no longer stands in for the PyTorch model
MIN_AGREEMENT = 0.99
#: the held-out (test-split) images each variant is checked on by default
CHECK_IMAGES = 512


class AgreementError(ValueError):
    """A deployment variant agrees with PyTorch FP32 on fewer images than the floor allows."""


@dataclass(frozen=True)
class VariantReport:
    """How one variant behaves on the check images (see the module docstring)."""

    variant: str
    path: Path | None  #: where it was written (None until then)
    n: int  #: number of check images
    coarse_acc: float
    fine_acc: float
    torch_coarse_acc: float  #: the PyTorch FP32 model's accuracy on the same images
    torch_fine_acc: float
    agreement: float
    coarse_agreement: float
    fine_agreement: float
    max_abs_logit_diff: float
    size_bytes: int  #: size of the serialized graph

    def summary(self) -> str:
        return (
            f"{self.variant}: agreement with PyTorch FP32 {self.agreement:.2%} on {self.n} images "
            f"(coarse {self.coarse_agreement:.2%}, fine {self.fine_agreement:.2%}); accuracy "
            f"coarse {self.coarse_acc:.2%} / fine {self.fine_acc:.2%} (PyTorch "
            f"{self.torch_coarse_acc:.2%} / {self.torch_fine_acc:.2%}); "
            f"{self.size_bytes / 2**20:.2f} MiB"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "path": None if self.path is None else str(self.path)}


def variant_path(path: str | os.PathLike, variant: str) -> Path:
    """Where ``export_variants`` writes ``variant`` when the FP32 graph goes to ``path``."""
    path = Path(path)
    return path if variant == "fp32" else path.with_name(f"{path.stem}.{variant}{path.suffix}")


def check_variant(
    session: OrtC2F,
    reference: C2FOutput,
    fine_to_coarse: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    variant: str,
    size_bytes: int,
) -> VariantReport:
    """Accuracy and agreement of ``session`` against PyTorch's ``reference`` outputs on
    ``images`` (labels: global fine labels)."""
    out = session(images)
    parity: Parity = compare_outputs(reference, out)
    coarse_labels = fine_to_coarse.cpu()[labels]
    return VariantReport(
        variant=variant,
        path=None,
        n=len(labels),
        coarse_acc=_share(out.coarse_pred == coarse_labels),
        fine_acc=_share(out.fine_pred == labels),
        torch_coarse_acc=_share(reference.coarse_pred == coarse_labels),
        torch_fine_acc=_share(reference.fine_pred == labels),
        agreement=parity.agreement,
        coarse_agreement=parity.coarse_agreement,
        fine_agreement=parity.fine_agreement,
        max_abs_logit_diff=parity.max_abs_diff,
        size_bytes=size_bytes,
    )


def export_variants(
    model: C2FClassifier,
    path: str | os.PathLike,
    calibration_images: torch.Tensor | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    variants: Sequence[str] = VARIANTS,
    min_agreement: float = MIN_AGREEMENT,
    batch_size: int = 256,
    dynamo: bool | None = None,
) -> list[VariantReport]:
    """Export, check and write ``variants`` of ``model``; one report per variant, in order.

    ``calibration_images`` (training split; needed for ``"int8"`` only) calibrate the INT8
    activation ranges; ``images`` / ``labels`` (held-out images and their global fine labels,
    e.g. the test split) measure accuracy and agreement. Raises :class:`AgreementError` (nothing
    written) when a variant's agreement is below ``min_agreement``. ``dynamo`` picks the
    exporter as in :func:`to_onnx`.
    """
    variants = _check_arguments(model, variants, min_agreement, calibration_images)
    check_image_batch(images, channels=None, name="check images")
    labels = check_labels(labels, len(images), model.hierarchy.num_fine, "check labels").cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # also the quantizer's working folder
    reference = torch_outputs(model, images, batch_size)
    fp32 = to_onnx(model, dynamo=dynamo)
    props = {p.key: p.value for p in fp32.metadata_props}
    build = {
        "fp32": lambda: fp32,
        "fp16": lambda: to_fp16(fp32),
        "int8": lambda: to_int8(fp32, calibration_images, workdir=path.parent),
    }
    checked = []
    for variant in variants:
        proto = build[variant]()
        data = proto.SerializeToString()
        session = OrtC2F.from_bytes(data, ["CPUExecutionProvider"], batch_size=batch_size)
        report = check_variant(
            session, reference, model.fine_to_coarse, images, labels, variant, len(data)
        )
        if report.agreement < min_agreement:
            raise AgreementError(
                f"the {variant} variant agrees with PyTorch FP32 on {report.agreement:.2%} of "
                f"{report.n} check images, below the minimum agreement {min_agreement:.2%} "
                f"({report.summary()}); no file was written"
            )
        extra = {"c2f.variant": variant, "c2f.check": report.summary()}
        if variant == "int8":
            extra["c2f.calibration_images"] = str(len(calibration_images))
        onnx.helper.set_model_props(proto, {**props, **extra})
        checked.append((proto, report))
    return [_write(proto, report, variant_path(path, report.variant)) for proto, report in checked]


def _write(proto: onnx.ModelProto, report: VariantReport, path: Path) -> VariantReport:
    atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)))
    return VariantReport(**{**asdict(report), "path": path})


def _check_arguments(model, variants, min_agreement, calibration_images) -> tuple[str, ...]:
    if not isinstance(model, C2FClassifier):
        raise TypeError(f"model must be a C2FClassifier, got {type(model).__name__}")
    variants = tuple(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants or len(set(variants)) != len(variants):
        raise ValueError(
            f"variants must be distinct names from {', '.join(VARIANTS)}; got {list(variants)}"
        )
    if not 0.0 <= min_agreement <= 1.0:
        raise ValueError(f"min_agreement must lie in [0, 1], got {min_agreement}")
    if "int8" in variants:
        if calibration_images is None:
            raise ValueError("the int8 variant needs calibration images (training split)")
        check_image_batch(calibration_images, channels=None, name="calibration images")
    return variants


def _share(mask: torch.Tensor) -> float:
    return mask.float().mean().item()

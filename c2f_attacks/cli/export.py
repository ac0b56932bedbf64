"""``c2f-bench export``: a C2F model to ONNX, parity-checked against PyTorch before writing;
with ``--variants``, its FP16 / INT8 deployment variants, each checked on the test split."""

from __future__ import annotations

import argparse

from c2f_attacks.cli.options import positive_int, share


def _variant_list(text: str) -> tuple[str, ...]:
    from c2f_attacks.exporters.variants import VARIANTS

    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct names from {','.join(VARIANTS)}, got {text!r}"
        )
    return names


def add_parser(subparsers) -> None:
    from c2f_attacks.exporters.quantize import CALIBRATION_IMAGES
    from c2f_attacks.exporters.variants import CHECK_IMAGES, MIN_AGREEMENT, VARIANTS
    from c2f_attacks.runner import RunConfig

    p = subparsers.add_parser(
        "export",
        help="export a C2F model to ONNX (verified against PyTorch before writing)",
        description="Without --variants: the FP32 graph, parity-checked, to --out. With "
        "--variants: each variant checked on the dataset's test split (accuracy, agreement with "
        "PyTorch FP32) and written only if every one agrees on at least --min-agreement of the "
        "images; fp32 goes to --out, the others to <stem>.<variant>.onnx next to it.",
    )
    p.add_argument("--model", default=RunConfig.model,
                   help=f"registered name or checkpoint path [{RunConfig.model}]")  # fmt: skip
    p.add_argument("--out", required=True, help="the .onnx file to write (FP32)")
    p.add_argument(
        "--variants", type=_variant_list,
        help=f"comma-separated deployment variants to export and check ({','.join(VARIANTS)})",
    )  # fmt: skip
    p.add_argument(
        "--min-agreement", type=share, default=MIN_AGREEMENT,
        help="with --variants: fail (writing nothing) when a variant agrees with PyTorch FP32 "
        f"on fewer check images than this share [{MIN_AGREEMENT}]",
    )  # fmt: skip
    p.add_argument(
        "--calibration-images", type=positive_int, default=CALIBRATION_IMAGES,
        help=f"int8: calibration images, taken from the training split [{CALIBRATION_IMAGES}]",
    )  # fmt: skip
    p.add_argument(
        "--check-images", type=positive_int, default=CHECK_IMAGES,
        help=f"test-split images each variant is checked on [{CHECK_IMAGES}]",
    )  # fmt: skip
    p.add_argument("--dataset", default=RunConfig.dataset,
                   help=f"dataset of the check and calibration images "
                   f"[{RunConfig.dataset}]")  # fmt: skip
    p.add_argument("--root", help="dataset folder (datasets other than shapes)")
    p.add_argument(
        "--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
        help="auto: torch.export-based, TorchScript if tracing fails",
    )  # fmt: skip
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    import onnx

    from c2f_attacks.exporters.export import export_onnx
    from c2f_attacks.models.zoo import load_model

    dynamo = {"auto": None, "dynamo": True, "torchscript": False}[args.exporter]
    model = load_model(args.model)
    if args.variants:
        return _export_variants(model, args, dynamo)
    path = export_onnx(model, args.out, dynamo=dynamo)
    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    print(f"wrote {path} (IR {proto.ir_version}, opset {opset}); {props.get('c2f.export_parity')}")
    return 0


def _export_variants(model, args: argparse.Namespace, dynamo: bool | None) -> int:
    from c2f_attacks.exporters.variant_files import write_variants

    reports = write_variants(
        model, args.out, args.variants, args.dataset, root=args.root,
        check_images=args.check_images, calibration_images=args.calibration_images,
        min_agreement=args.min_agreement, dynamo=dynamo,
    )  # fmt: skip
    for report in reports:
        print(f"wrote {report.path}: {report.summary()}")
    return 0

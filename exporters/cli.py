"""``c2f-bench export`` and ``c2f-bench evaluate``: argparse subcommands for c2f_attacks.cli.

``add_export_parser(subparsers)`` / ``add_evaluate_parser(subparsers)`` register them; each sets
``func(args) -> int`` (0 on success). User errors are raised, and ``c2f_attacks.cli.main``
reports them in one line with exit status 2, as for every subcommand.
"""

from __future__ import annotations

import argparse
import json

from c2f_attacks.cli_types import positive_int
from c2f_attacks.exporters.quantize import CALIBRATION_IMAGES
from c2f_attacks.exporters.variants import CHECK_IMAGES, MIN_AGREEMENT, VARIANTS
from c2f_attacks.hierarchy import STAGES


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a C2F model to ONNX (verified against PyTorch before writing)",
        description="Without --variants: the FP32 graph, parity-checked, to --out. With "
        "--variants: each variant checked on the dataset's test split (accuracy, agreement with "
        "PyTorch FP32) and written only if every one agrees on at least --min-agreement of the "
        "images; fp32 goes to --out, the others to <stem>.<variant>.onnx next to it.",
    )
    p.add_argument("--model", default="shapes-vgg16", help="registered name or checkpoint path")
    p.add_argument("--out", required=True, help="the .onnx file to write (FP32)")
    p.add_argument(
        "--variants", type=_variant_list,
        help=f"comma-separated deployment variants to export and check ({','.join(VARIANTS)})",
    )  # fmt: skip
    p.add_argument(
        "--min-agreement", type=_fraction, default=MIN_AGREEMENT,
        help="with --variants: fail (writing nothing) when a variant agrees with PyTorch FP32 "
        f"on fewer check images than this share (default {MIN_AGREEMENT})",
    )  # fmt: skip
    p.add_argument(
        "--calibration-images", type=positive_int, default=CALIBRATION_IMAGES,
        help="int8: calibration images, taken from the training split "
        f"(default {CALIBRATION_IMAGES})",
    )  # fmt: skip
    p.add_argument(
        "--check-images", type=positive_int, default=CHECK_IMAGES,
        help=f"test-split images each variant is checked on (default {CHECK_IMAGES})",
    )  # fmt: skip
    p.add_argument("--dataset", default="shapes", help="dataset of the check/calibration images")
    p.add_argument("--root", help="dataset folder (datasets other than shapes)")
    p.add_argument(
        "--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
        help="auto: torch.export-based, TorchScript if tracing fails",
    )  # fmt: skip
    p.set_defaults(func=_cmd_export)
    return p


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="fooling ratio in onnxruntime from saved clean/adversarial tensors",
        description="TENSORS is a torch.save file holding a dict {'clean': (N,3,H,W), "
        "'adv': (N,3,H,W)} of float images in [0, 1] (exporters.save_pair writes it).",
    )
    p.add_argument("--onnx", required=True, help="model exported by `c2f-bench export`")
    p.add_argument("--tensors", required=True, help=".pt file with {'clean': ..., 'adv': ...}")
    p.add_argument("--stage", choices=STAGES, default="coarse")
    p.add_argument(
        "--success-rule", default="stage_changed",
        help="stage_changed, or on the fine stage fine_changed_coarse_kept (LRPF's rule: the "
        "coarse prediction must be kept) [stage_changed]",
    )  # fmt: skip
    p.add_argument("--model", help="torch model (name or path) to report agreement with")
    p.add_argument("--providers", nargs="+", help="execution providers (default: TRT, CUDA, CPU)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_evaluate)
    return p


def _cmd_export(args: argparse.Namespace) -> int:
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


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from c2f_attacks.exporters.evaluate import evaluate_fooling, load_pair
    from c2f_attacks.models.zoo import load_model

    clean, adv = load_pair(args.tensors)
    model = load_model(args.model) if args.model else None
    report = evaluate_fooling(
        args.onnx, clean, adv, args.stage, model,
        success_rule=args.success_rule, providers=args.providers, batch_size=args.batch_size,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"fooling ratio ({report.stage} stage, {report.success_rule}): "
          f"{report.fooling_ratio:.4f} on {report.n} images")  # fmt: skip
    print(f"providers: {', '.join(report.providers)}")
    if report.agreement is not None:
        print(f"agreement with PyTorch: {report.agreement:.4%} "
              f"(PyTorch fooling ratio {report.torch_fooling_ratio:.4f})")  # fmt: skip
    return 0


def _variant_list(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct names from {','.join(VARIANTS)}, got {text!r}"
        )
    return names


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}")
    return value

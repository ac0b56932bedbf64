"""``c2f-bench export`` and ``c2f-bench evaluate``: argparse subcommands for c2f_attacks.cli.

``add_export_parser(subparsers)`` / ``add_evaluate_parser(subparsers)`` register them; each sets
``func(args) -> int`` (0 on success, 2 on a user error, reported on stderr without a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys

from exporters.errors import ProviderUnavailableError

_USER_ERRORS = (FileNotFoundError, ValueError, TypeError, ProviderUnavailableError)


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="export a C2F model to ONNX (verified against PyTorch before writing)"
    )
    p.add_argument("--model", default="shapes-vgg16", help="registered name or checkpoint path")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--fp16", action="store_true", help="half-precision weights (float32 I/O)")
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
    p.add_argument("--stage", choices=("coarse", "fine"), default="coarse")
    p.add_argument(
        "--fine-within-coarse", action="store_true",
        help="fine stage: count an image only if its coarse prediction is unchanged (LRPF)",
    )  # fmt: skip
    p.add_argument("--model", help="torch model (name or path) to report agreement with")
    p.add_argument("--providers", nargs="+", help="execution providers (default: TRT, CUDA, CPU)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_evaluate)
    return p


def _cmd_export(args: argparse.Namespace) -> int:
    import onnx

    from c2f_attacks.models.zoo import load_model
    from exporters.export import export_onnx

    dynamo = {"auto": None, "dynamo": True, "torchscript": False}[args.exporter]
    try:
        path = export_onnx(load_model(args.model), args.out, fp16=args.fp16, dynamo=dynamo)
    except _USER_ERRORS as err:
        return _fail(err)
    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    print(f"wrote {path} (IR {proto.ir_version}, opset {opset}); {props.get('c2f.export_parity')}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from c2f_attacks.models.zoo import load_model
    from exporters.evaluate import evaluate_fooling, load_pair

    try:
        clean, adv = load_pair(args.tensors)
        model = load_model(args.model) if args.model else None
        report = evaluate_fooling(
            args.onnx, clean, adv, args.stage, model,
            fine_within_coarse=args.fine_within_coarse, providers=args.providers,
            batch_size=args.batch_size,
        )  # fmt: skip
    except _USER_ERRORS as err:
        return _fail(err)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    definition = (
        "fine changed, coarse kept" if report.fine_within_coarse else f"{report.stage} changed"
    )
    print(f"fooling ratio ({definition}): {report.fooling_ratio:.4f} on {report.n} images")
    print(f"providers: {', '.join(report.providers)}")
    if report.agreement is not None:
        print(f"agreement with PyTorch: {report.agreement:.4%} "
              f"(PyTorch fooling ratio {report.torch_fooling_ratio:.4f})")  # fmt: skip
    return 0


def _fail(err: Exception) -> int:
    print(f"c2f-bench: error: {err}", file=sys.stderr)
    return 2

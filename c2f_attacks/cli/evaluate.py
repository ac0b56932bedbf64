"""``c2f-bench evaluate``: the fooling ratio in onnxruntime of saved clean/adversarial images,
with its agreement with PyTorch."""

from __future__ import annotations

import argparse
import json

from c2f_attacks.cli.options import default_of, positive_int


def add_parser(subparsers) -> None:
    from c2f_attacks.exporters.evaluate import evaluate_fooling
    from c2f_attacks.hierarchy import STAGES

    default = {name: default_of(evaluate_fooling, name)
               for name in ("stage", "success_rule", "batch_size")}  # fmt: skip

    p = subparsers.add_parser(
        "evaluate",
        help="fooling ratio in onnxruntime from saved clean/adversarial tensors",
        description="TENSORS is a torch.save file holding a dict {'clean': (N,3,H,W), "
        "'adv': (N,3,H,W)} of float images in [0, 1] (exporters.save_pair writes it).",
    )
    p.add_argument("--onnx", required=True, help="model exported by `c2f-bench export`")
    p.add_argument("--tensors", required=True, help=".pt file with {'clean': ..., 'adv': ...}")
    p.add_argument("--stage", choices=STAGES, default=default["stage"])
    p.add_argument(
        "--success-rule", default=default["success_rule"],
        help="stage_changed, or on the fine stage fine_changed_coarse_kept (LRPF's rule: the "
        f"coarse prediction must be kept) [{default['success_rule']}]",
    )  # fmt: skip
    p.add_argument("--model", help="torch model (name or path) to report agreement with")
    p.add_argument("--providers", nargs="+", help="execution providers (default: TRT, CUDA, CPU)")
    p.add_argument("--batch-size", type=positive_int, default=default["batch_size"])
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
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

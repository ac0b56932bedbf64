"""``c2f-bench transfer``: a run's saved adversarial images evaluated on other models and ONNX
deployment variants (:func:`c2f_attacks.runner.transfer.transfer`)."""

from __future__ import annotations

import argparse
import sys

from c2f_attacks.cli.options import (
    add_allow_results_dir,
    add_format_option,
    list_option,
    positive_int,
    reported_warnings,
)

#: what the printed table shows, and its short headers
TABLE_COLUMNS = ("attack", "protocol", "mask", "target", "transfer_fooling_ratio",
                 "transfer_fooling_ratio_lo", "transfer_fooling_ratio_hi", "source_fooling_ratio",
                 "survival", "n_source_success", "quantized_away")  # fmt: skip
HEADERS = {"transfer_fooling_ratio": "tFR", "transfer_fooling_ratio_lo": "lo",
           "transfer_fooling_ratio_hi": "hi", "source_fooling_ratio": "src FR",
           "survival": "surv", "n_source_success": "of", "quantized_away": "q-away"}  # fmt: skip


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "transfer",
        help="evaluate a run's saved adversarial images on other models and ONNX variants",
        description="For every row of the run in --from and every target: per-image transfer "
        "records in <out>/transfer_records/ and their aggregates upserted into "
        "<out>/transfer.csv: the transfer fooling ratio (the row's own success rule on the "
        "target), coarse/fine flips, survival (the share of the source's successes that also "
        "fool the target), clean agreement, each with its exact (Clopper-Pearson) 95% interval; "
        "one heatmap per stage in <out>/figures/transfer_<stage>.png. Lists take spaces or "
        "commas.",
    )
    p.add_argument("--from", dest="source", required=True, metavar="DIR",
                   help="the --out folder of a c2f-bench run")  # fmt: skip
    p.add_argument("--targets", nargs="+", required=True, metavar="TARGET",
                   help="registered model name, checkpoint or module:factory; onnx:fp32, "
                        "onnx:fp16, onnx:int8: that deployment variant of each row's own "
                        "model (built once, cached in <out>/onnx/, run on the CPU)")  # fmt: skip
    p.add_argument("--rows", nargs="+", metavar="ROW",
                   help="only these rows: row_id or "
                        "[MODEL/]attack[:mask[:stage[:protocol[:target]]]] (e.g. lrpc:lrp; "
                        "the target, e.g. random, names targeted rows; left out: untargeted) "
                        "[every row]")  # fmt: skip
    p.add_argument("--out", help="folder for transfer.csv, figures/ and onnx/ [--from]")
    p.add_argument("--root", help="dataset folder (datasets other than shapes)")
    p.add_argument("--hierarchy", help="hierarchy JSON, as given to the run (flat models)")
    p.add_argument("--device", help="device of the PyTorch targets [cuda when available]")
    p.add_argument("--batch-size", type=positive_int, help="images per batch [the run's default]")
    add_allow_results_dir(p)
    add_format_option(p, help="how rows are printed")
    p.set_defaults(func=_transfer)


def _transfer(args: argparse.Namespace) -> int:
    from c2f_attacks.leaderboard import render_table
    from c2f_attacks.runner import RunConfig
    from c2f_attacks.runner.memory import DEFAULT_BATCH_SIZE
    from c2f_attacks.runner.transfer import transfer

    defaults = RunConfig()
    with reported_warnings("transfer"):
        rows = transfer(
            args.source, list_option(args.targets),
            rows=list_option(args.rows) if args.rows else None,
            out=args.out,
            allow_results_dir=args.allow_results_dir, device=args.device or defaults.device,
            batch_size=args.batch_size or DEFAULT_BATCH_SIZE, root=args.root,
            hierarchy=args.hierarchy,
        )  # fmt: skip
    out = args.out or args.source
    info = sys.stdout if args.format == "table" else sys.stderr
    if args.format == "table":
        shown = [c for c in TABLE_COLUMNS if rows[c].notna().any()]
        groups = rows.groupby(["model", "dataset", "split", "n", "stage"], sort=False)
        for (model, dataset, split, n, stage), part in groups:
            print(f"adversarial images of {model} on {dataset}/{split}, {n} images, {stage} "
                  "stage:")  # fmt: skip
            view = part.loc[:, shown].rename(columns=HEADERS)
            print(render_table(view, list(view.columns)))
        print("; ".join(f"{HEADERS[c]} = {c}" for c in shown if c in HEADERS))
    else:
        print(render_table(rows, fmt=args.format))
    print(f"transfer table: {out}/transfer.csv; figures: {out}/figures/transfer_<stage>.png",
          file=info)  # fmt: skip
    return 0

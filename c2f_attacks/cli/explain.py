"""``c2f-bench explain``: LRP heatmaps of the coarse and fine decisions of a model."""

from __future__ import annotations

import argparse
from pathlib import Path

from c2f_attacks.cli.options import (
    add_allow_results_dir,
    add_data_options,
    model_and_data,
    set_data_defaults,
)

#: images drawn without -n
DEFAULT_IMAGES = 6


def add_parser(subparsers) -> None:
    from c2f_attacks.lrp import COMPOSITES, DEFAULT_COMPOSITE
    from c2f_attacks.runner import RunConfig

    p = subparsers.add_parser("explain", help="heatmaps of the coarse and fine decisions (LRP)")
    add_data_options(p)
    set_data_defaults(p, n=DEFAULT_IMAGES)
    p.add_argument("--composite", default=DEFAULT_COMPOSITE, choices=COMPOSITES.names(),
                   help=f"LRP rules per layer [{DEFAULT_COMPOSITE}]")  # fmt: skip
    p.add_argument("--out", default=f"{RunConfig.out}/explanations.png", help="PNG to write")
    add_allow_results_dir(p)
    p.set_defaults(func=_explain)


def _explain(args: argparse.Namespace) -> int:
    from c2f_attacks.figures import explanation_figure
    from c2f_attacks.runner.execute import load_batch
    from c2f_attacks.runner.preflight import check_out_dir

    out = Path(args.out)
    check_out_dir(out.parent, args.allow_results_dir)
    model, dataset = model_and_data(args)
    x, _, _ = load_batch(dataset, range(args.n))
    explanation_figure(model, x, out, composite=args.composite, batch_size=args.batch_size)
    print(f"wrote {out}")
    return 0

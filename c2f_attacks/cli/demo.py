"""``c2f-bench demo photos``: LRPC, LRPF and PGD on the offline photos against an ImageNet model
(:func:`c2f_attacks.demo.run_photo_demo`); the defaults are that function's."""

from __future__ import annotations

import argparse
from pathlib import Path

from c2f_attacks.cli.options import add_allow_results_dir, default_of, number, positive_int

#: the LRPC masks of --controls, beside the LRP mask
CONTROL_MASKS = ("random", "gradient")


def add_parser(subparsers) -> None:
    from c2f_attacks.data import PHOTOS
    from c2f_attacks.demo import DEMO_ATTACKS, run_photo_demo
    from c2f_attacks.runner import RunConfig

    default = {name: default_of(run_photo_demo, name)
               for name in ("model", "masks", "eps", "steps", "device")}  # fmt: skip
    demo = subparsers.add_parser("demo", help="demonstrations on real data")
    targets = demo.add_subparsers(dest="demo", required=True)
    p = targets.add_parser(
        "photos", help="LRPC, LRPF and PGD on offline photos vs EfficientNet-Lite0 (ImageNet)"
    )
    p.add_argument("--out", default=f"{RunConfig.out}/demo-photos", help="output folder")
    add_allow_results_dir(p)
    p.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=list(PHOTOS))
    p.add_argument("--model", default=default["model"],
                   help=f"zoo name (an ImageNet-grouped model) [{default['model']}]")  # fmt: skip
    p.add_argument("--attacks", nargs="+", default=list(DEMO_ATTACKS), choices=DEMO_ATTACKS)
    p.add_argument("--controls", action="store_true",
                   help=f"also LRPC with {' and '.join(CONTROL_MASKS)} masks of the same "
                   "size")  # fmt: skip
    p.add_argument("--eps", type=number, default=default["eps"],
                   help=f"l-inf budget, e.g. 8/255 [{default['eps'] * 255:g}/255]")  # fmt: skip
    p.add_argument("--steps", type=positive_int, default=default["steps"],
                   help=f"[{default['steps']}]")  # fmt: skip
    p.add_argument("--device", default=default["device"], help=f"[{default['device']}]")
    p.set_defaults(func=_demo_photos, masks=default["masks"])


def _demo_photos(args: argparse.Namespace) -> int:
    from c2f_attacks.demo import run_photo_demo
    from c2f_attacks.runner.preflight import check_out_dir

    check_out_dir(args.out, args.allow_results_dir)
    masks = (*args.masks, *CONTROL_MASKS) if args.controls else args.masks
    run_photo_demo(args.out, args.photos, args.model, args.attacks, masks, args.eps, args.steps,
                   device=args.device)  # fmt: skip
    print((Path(args.out) / "demo_photos.md").read_text(), end="")
    print(f"figures and tables written to {args.out}")
    return 0

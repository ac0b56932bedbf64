"""``c2f-bench``: run the benchmark, train, export, evaluate, explain, show the leaderboard.

User errors (a bad argument, a missing or corrupt file, an unknown name) end the command with
one line on stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from c2f_attacks.attacks.base import AttackSanityError
from c2f_attacks.models.zoo import load_model, shipped_checkpoint
from exporters.cli import add_evaluate_parser, add_export_parser
from exporters.errors import ProviderUnavailableError

USER_ERRORS = (ValueError, TypeError, OSError, ProviderUnavailableError, AttackSanityError)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage stays available under --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _cmd_train(args: argparse.Namespace) -> int:
    from c2f_attacks.train import TrainConfig, train_shapes

    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    meta = train_shapes(cfg, args.out, progress=not args.quiet)
    last = meta["history"][-1]
    print(
        f"saved {args.out}: val coarse acc {last['val_coarse_acc']:.4f}, "
        f"fine acc {last['val_fine_acc']:.4f}"
    )
    return 0


def _add_model_data_args(p: argparse.ArgumentParser, n: int) -> None:
    """Which model sees which images: --model --dataset --split --root --n --device."""
    p.add_argument("--model", default="shapes-vgg16", help="registered name or checkpoint path")
    p.add_argument("--dataset", default="shapes", help="shapes, cifar10, cifar100 or imagenet")
    p.add_argument("--split", default="test", help="dataset split (imagenet: val)")
    p.add_argument("--root", default=None, help="dataset folder (not needed for shapes)")
    # --num-images: under torchrun, whose parser takes "--n" for an abbreviation of its own
    # --nnodes / --nproc-per-node and stops.
    p.add_argument("--n", "--num-images", dest="n", type=_positive_int, default=n,
                   help="number of images (spell it --num-images after torchrun)")  # fmt: skip
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")


def _model_and_images(args: argparse.Namespace):
    """(model, images, fine labels) on ``args.device``, from the _add_model_data_args options."""
    from c2f_attacks.runner import load_images

    model = load_model(args.model, map_location=args.device)
    x, y, _, _ = load_images(args.dataset, args.split, args.n, args.root)
    return model, x.to(args.device), y.to(args.device)


def _cmd_accuracy(args: argparse.Namespace) -> int:
    from c2f_attacks.train import accuracy

    model, x, y = _model_and_images(args)
    coarse, fine = accuracy(model, x, y)
    print(f"{args.model} on {args.dataset}/{args.split}, {len(x)} images: "
          f"coarse accuracy {coarse:.4f}, fine accuracy {fine:.4f}")  # fmt: skip
    return 0


def _add_accuracy_parser(sub) -> None:
    p = sub.add_parser("accuracy", help="clean coarse and fine accuracy of a model")
    _add_model_data_args(p, n=10_000)
    p.set_defaults(func=_cmd_accuracy)


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a C2F-VGG16 on the shapes data (seeded)")
    p.add_argument("--out", default=str(shipped_checkpoint("shapes-vgg16")), help="checkpoint path")
    for name, typ in (("n-train", _positive_int), ("epochs", _positive_int),
                      ("batch-size", _positive_int), ("lr", float), ("width", float),
                      ("head-width", _positive_int), ("seed", int)):  # fmt: skip
        p.add_argument(f"--{name}", type=typ, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)


def _cmd_run(args: argparse.Namespace) -> int:
    from c2f_attacks.runner import TABLE, RunConfig, format_table, run

    cfg = RunConfig(
        model=args.model, dataset=args.dataset, split=args.split, root=args.root, n=args.n,
        attacks=args.attacks, stages=args.stages, modes=args.modes, eps=args.eps,
        backend=args.backend, seed=args.seed, out=args.out, device=args.device,
        batch_size=args.batch_size, figures=not args.no_figures, progress=not args.quiet,
    )  # fmt: skip
    rows = run(cfg)
    if len(rows):  # rank 0 under torchrun
        print(f"{cfg.model} on {cfg.dataset}/{cfg.split}:")
        print(format_table(rows, TABLE))
        print(
            f"leaderboard: {cfg.out}/leaderboard.csv"
            + ("" if args.no_figures else f"; figures: {cfg.out}/figures/")
        )
    return 0


def _add_run_parser(sub) -> None:
    from c2f_attacks.runner import ATTACKS, BACKENDS, MODES, STAGES

    p = sub.add_parser("run", help="the benchmark: attacks, metrics, leaderboard, figures")
    _add_model_data_args(p, n=256)
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS), metavar="ATTACK",
                   help=f"any of {', '.join(ATTACKS)}")  # fmt: skip
    p.add_argument("--stages", nargs="+", default=list(STAGES), metavar="STAGE",
                   help="coarse and/or fine (LRPC is coarse-only, LRPF fine-only)")  # fmt: skip
    p.add_argument("--modes", nargs="+", default=list(MODES), metavar="MODE",
                   help="FGSM/PGD: fixed eps and/or minimal "
                        "(per-image smallest eps up to --eps)")  # fmt: skip
    p.add_argument("--eps", type=float, default=8 / 255, help="l-inf budget in pixel scale")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                   help="where fooling ratios are evaluated "
                        "(onnxruntime also reports agreement)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results", help="folder for leaderboard.csv and figures/")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from c2f_attacks.leaderboard import format_table, read_leaderboard
    from c2f_attacks.runner import TABLE

    board = read_leaderboard(args.path)
    if not len(board):
        raise FileNotFoundError(f"no leaderboard rows in {args.path}")
    columns = ("model", "dataset", *TABLE) if args.columns is None else args.columns
    print(format_table(board, columns))
    return 0


def _add_leaderboard_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="print a leaderboard CSV as a table")
    p.add_argument("path", nargs="?", default="results/leaderboard.csv")
    p.add_argument("--columns", nargs="+", default=None, help="columns to show")
    p.set_defaults(func=_cmd_leaderboard)


def _cmd_explain(args: argparse.Namespace) -> int:
    from c2f_attacks.figures import explanation_figure

    model, x, _ = _model_and_images(args)
    explanation_figure(model, x, args.out, composite=args.composite)
    print(f"wrote {args.out}")
    return 0


def _add_explain_parser(sub) -> None:
    from c2f_attacks.lrp import COMPOSITES

    p = sub.add_parser("explain", help="heatmaps of the coarse and fine decisions (LRP)")
    _add_model_data_args(p, n=6)
    p.add_argument("--composite", default="epsilon_plus_flat", choices=sorted(COMPOSITES))
    p.add_argument("--out", default="results/figures/explanations.png")
    p.set_defaults(func=_cmd_explain)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="c2f-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _add_run_parser(sub)
    _add_train_parser(sub)
    _add_accuracy_parser(sub)
    _add_explain_parser(sub)
    _add_leaderboard_parser(sub)
    add_export_parser(sub)
    add_evaluate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"c2f-bench {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``c2f-bench``: run the benchmark, compare rows, train, export, evaluate, explain, show the
leaderboard, run the photo demo.

User errors (a bad argument, a missing or corrupt file, an unknown name) end the command with
one line on stderr, ``c2f-bench <command>: error: ...``, and exit status 2; Ctrl-C ends it with
one line and status 130, SIGTERM with status 143; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from fractions import Fraction
from pathlib import Path

from c2f_attacks.attacks import AttackSanityError
from c2f_attacks.cli_types import list_option
from c2f_attacks.cli_types import positive_int as _positive_int
from c2f_attacks.demo import add_demo_parser
from c2f_attacks.exporters.cli import add_evaluate_parser, add_export_parser
from c2f_attacks.exporters.errors import ProviderUnavailableError
from c2f_attacks.interrupts import Interrupted, handle_interrupts
from c2f_attacks.report.cli import add_report_parser
from c2f_attacks.transfer_cli import add_transfer_parser

#: what a user can cause and fix: reported in one line, never with a traceback
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, ProviderUnavailableError,
               AttackSanityError)  # fmt: skip


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage stays available under --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(text: str) -> float:
    """``0.03`` or ``8/255``."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a number or a fraction like 8/255, got {text!r}"
        ) from None


# ----------------------------------------------------------------------------- run
def _add_data_args(p: argparse.ArgumentParser, models: str | None = None) -> None:
    """Which model sees which images; defaults come from RunConfig or the caller's
    ``set_defaults``. ``models``: the default of a ``--model`` that takes a list (one run per
    model); None: it takes one model."""
    what = "registered name, checkpoint path or package.module:factory"
    if models is None:
        p.add_argument("--model", help=what)
    else:
        p.add_argument("--model", "--models", nargs="+", metavar="MODEL",
                       help=f"{what}; several run one after the other [{models}]")  # fmt: skip
    p.add_argument("--hierarchy", help="hierarchy name (e.g. breeds-living17) or JSON {coarse: "
                   "[fine, ...]}: groups a flat model's classes or regroups an induced ImageNet "
                   "model; any other model's own hierarchy wins (a different one is refused); "
                   "the model's hierarchy labels imagefolder data")  # fmt: skip
    p.add_argument("--dataset", help="shapes, cifar10, cifar100, imagenet or imagefolder:PATH")
    p.add_argument("--split", help="dataset split (shapes: train, val, test; imagenet: val)")
    p.add_argument("--root", help="dataset folder (not needed for shapes)")
    # -n/--num-images, never --n: torchrun's parser takes "--n" for its --nnodes / --nproc-per-node
    p.add_argument("-n", "--num-images", dest="n", type=_positive_int, help="number of images")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        help="images per batch [64; run: per row the largest that fits --max-memory, <= 64]",
    )


def _budget_items(text: str) -> dict[str, str]:
    """``8/255`` (l-inf) or ``NORM=VALUE`` (``l2=0.5``, ``linf=1/255,4/255`` for a grid): one
    norm's budget(s); checked by RunConfig."""
    norm, _, value = text.rpartition("=")
    return {norm.strip() or "linf": value.strip()}


def _setting_item(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` or ``ATTACK.NAME=VALUE`` (ATTACK as listed by --attacks)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE or ATTACK.NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _add_run_parser(sub) -> None:
    from c2f_attacks.attacks import MASK_SOURCES, MEMORY_FORMATS, PROTOCOLS
    from c2f_attacks.leaderboard import FORMATS
    from c2f_attacks.runner import BACKENDS, DEFAULT_MODELS, STAGES, RunConfig
    from c2f_attacks.runner.plan import DEFAULT_EPS, DEFAULT_EPS_MAX, FINE_RULES

    d = RunConfig.__dataclass_fields__
    p = sub.add_parser(
        "run", help="the benchmark: attacks, metrics, records, leaderboard, figures",
        argument_default=argparse.SUPPRESS,  # only given options override RunConfig/--config
        description="Defaults: RunConfig's (shown in brackets); a --config file's values; "
        "options given here override both. Lists take spaces or commas. Attack names and "
        "settings: c2f-bench attacks.",
    )  # fmt: skip
    _add_data_args(p, models=" ".join(DEFAULT_MODELS))
    p.add_argument(
        "--attacks",
        nargs="+",
        metavar="ATTACK",
        help="registered attacks (c2f-bench attacks lists them) [fgsm pgd lrpc lrpf]",
    )
    p.add_argument("--masks", "--mask", nargs="+", metavar="MASK",
                   help=f"mask sources of masked attacks: {', '.join(MASK_SOURCES.names())} "
                   "[lrp gradient random]")  # fmt: skip
    p.add_argument("--stages", nargs="+", metavar="STAGE", help=f"{', '.join(STAGES)} [both]")
    p.add_argument("--protocol", "--protocols", dest="protocols", nargs="+", metavar="PROTOCOL",
                   help=f"{', '.join(PROTOCOLS)} (a diagnostic) [minimal fixed]")  # fmt: skip
    budgets = lambda d: " ".join(f"{k}={v:.4g}" for k, v in d.items())  # noqa: E731
    p.add_argument("--eps", nargs="+", type=_budget_items, metavar="[NORM=]BUDGET",
                   help=f"fixed protocol's budget per norm; a bare value is l-inf "
                   f"[{budgets(DEFAULT_EPS)}]")  # fmt: skip
    p.add_argument(
        "--eps-max",
        nargs="+",
        type=_budget_items,
        metavar="[NORM=]BOUND",
        help=f"minimal protocol's search bound per norm [{budgets(DEFAULT_EPS_MAX)}]",
    )
    p.add_argument(
        "--budgets",
        nargs="+",
        type=_budget_items,
        metavar="NORM=B1,B2,...",
        help="the budgets of budget_curves.csv for a norm (e.g. linf=1/255,4/255,8/255) "
        "[docs/metrics.md's grids]",
    )
    p.add_argument(
        "--search-steps",
        type=_positive_int,
        help="halvings of the minimal protocol's bisection, the same for every attack "
        "(resolution eps-max / 2**steps) [6]",
    )
    p.add_argument(
        "--fine-rule",
        choices=FINE_RULES,
        help="success rule of every attack on the fine stage [fine_changed_coarse_kept]",
    )
    p.add_argument("--set", dest="settings", nargs="+", type=_setting_item,
                   metavar="[ATTACK.]NAME=VALUE",
                   help="an attack setting, for every attack that has it or for ATTACK only "
                   "(e.g. top_k=0.2 lrpc.lam=0)")  # fmt: skip
    p.add_argument("--memory-format", choices=MEMORY_FORMATS, help="[auto]")
    p.add_argument("--config", help="TOML file with any of these options (lists sweep)")
    p.add_argument(
        "--backend", choices=BACKENDS, help=f"also evaluate in onnxruntime [{d['backend'].default}]"
    )
    p.add_argument("--seed", type=int, help="[0]")
    p.add_argument("--out", help=f"folder for the leaderboard, records and figures "
                                 f"[./{d['out'].default}]")  # fmt: skip
    p.add_argument(
        "--allow-results-dir",
        action="store_true",
        help="allow --out to be the repository's committed results/ (regeneration)",
    )
    p.add_argument("--format", choices=FORMATS, help="how the rows are printed [table]")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run with the same settings in --out",
    )
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="memory the run may use (4G, 512M); sets each row's batch size "
        "[half of the available memory; CUDA: 80%% of the free GPU memory]",
    )
    p.add_argument("--no-figures", dest="figures", action="store_false")
    p.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from c2f_attacks.leaderboard import render_table
    from c2f_attacks.runner import RunConfig, expand, run_all
    from c2f_attacks.runner.settings import parse_settings

    fields = RunConfig.__dataclass_fields__
    overrides = {k: v for k, v in vars(args).items() if k in fields}
    for name in ("model", "attacks", "masks", "stages", "protocols"):
        if name in overrides:
            overrides[name] = list_option(overrides[name])
    for name in ("eps", "eps_max", "budgets"):
        if name in overrides:
            overrides[name] = {k: v for item in overrides[name] for k, v in item.items()}
    if "settings" in overrides:
        attacks = overrides.get("attacks")
        overrides["settings"] = parse_settings(overrides["settings"], attacks)
    configs = expand(getattr(args, "config", None), overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        rows = run_all(configs)
    for w in caught:
        print(f"c2f-bench run: warning: {w.message}", file=sys.stderr)
    if not len(rows):  # ranks other than 0 under torchrun
        return 0
    fmt = configs[0].format
    # Machine formats keep stdout parseable; the where-to-find lines go to stderr.
    info = sys.stdout if fmt == "table" else sys.stderr
    # One table per data set and protocol; a model column when it holds several models' rows.
    for (dataset, split, n, protocol), part in rows.groupby(
        ["dataset", "split", "n", "protocol"], sort=False
    ):
        if fmt == "table":
            models = ", ".join(dict.fromkeys(part["model"]))
            rules = "; ".join(f"{stage}: {rule}" for stage, rule in dict.fromkeys(
                zip(part["stage"], part["success_rule"])))  # fmt: skip
            print(f"{models} on {dataset}/{split}, {n} images, protocol {protocol} "
                  f"(success: {rules}):")  # fmt: skip
        print(render_table(part, fmt=fmt))
    for out in dict.fromkeys(str(Path(c.out)) for c in configs):
        print(f"leaderboard: {out}/leaderboard.csv; records: {out}/records/; "
              f"figures: {out}/figures/", file=info)  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- attacks
def _cmd_attacks(args: argparse.Namespace) -> int:
    from c2f_attacks.attacks import attack_info, list_attacks
    from c2f_attacks.attacks.registry import attack_table
    from c2f_attacks.leaderboard import render_table

    if args.name:
        info = attack_info(args.name)
        print(f"{info.name} ({info.library}): {info.description}")
        print(f"stages {', '.join(info.stages)}; norm {info.norm}; protocols "
              f"{', '.join(info.protocols)}; success rule {info.criterion}")  # fmt: skip
        for setting in info.settings.values():
            default = "required" if setting.required else repr(setting.default)
            print(f"  {setting.name}: {setting.type or 'any'} = {default}")
        return 0
    names = list_attacks(args.library)
    table = attack_table(names)
    columns = ["attack", "stages", "norm", "protocols", "success_rule", "kind", "library"]
    print(render_table(table, columns, fmt=args.format))
    return 0


def _add_attacks_parser(sub) -> None:
    from c2f_attacks.leaderboard import FORMATS

    p = sub.add_parser("attacks", help="the registered attacks: stages, norm, protocols, settings")
    p.add_argument("name", nargs="?", help="one attack: its settings with types and defaults")
    p.add_argument("--library", choices=("c2f-attacks", "torchattacks", "adv_lib"),
                   help="only this library's attacks")  # fmt: skip
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=_cmd_attacks)


# ----------------------------------------------------------------------------- compare
def _cmd_compare(args: argparse.Namespace) -> int:
    from c2f_attacks.evaluation import compare_many, load_records
    from c2f_attacks.leaderboard import read_leaderboard, render_table
    from c2f_attacks.leaderboard.select import select_one

    board_path = Path(args.out) / "leaderboard.csv"
    board = read_leaderboard(board_path)
    if not len(board):
        raise ValueError(f"no leaderboard rows in {board_path} (run c2f-bench run first)")
    specs = [(args.row_a, args.row_b), *(tuple(pair) for pair in args.pair or ())]
    pairs = [tuple(select_one(board, spec, str(board_path))["row_id"] for spec in pair)
             for pair in specs]  # fmt: skip
    records = load_records(args.out)
    missing = sorted({rid for pair in pairs for rid in pair} - set(records["row_id"]))
    if missing:
        raise ValueError(f"row {missing[0]} of {board_path} has no records in {args.out}/records/")
    table = compare_many(records, pairs)
    names = {rid: spec for pair, ids in zip(specs, pairs) for spec, rid in zip(pair, ids)}
    table["row_a"], table["row_b"] = table["row_a"].map(names), table["row_b"].map(names)
    if args.format == "table":
        print(f"row_a - row_b, paired over images: exact tests (McNemar on the fooling ratio, "
              f"sign test on censored per-image budgets), 95% intervals; p_holm adjusts the "
              f"{len(table)} p-values of this call (Holm):")  # fmt: skip
    print(render_table(table, list(table.columns), fmt=args.format))
    return 0


def _add_compare_parser(sub) -> None:
    from c2f_attacks.leaderboard import FORMATS

    p = sub.add_parser("compare", help="paired tests between rows of one run, image by image")
    p.add_argument("out", help="the run's --out folder")
    p.add_argument("row_a", help="row_id, or [MODEL/]attack:mask[:stage[:protocol]] "
                   "(e.g. shapes-vgg16/lrpc:lrp:coarse:minimal)")  # fmt: skip
    p.add_argument("row_b", help="the row to compare it with (e.g. shapes-vgg16/lrpc:gradient)")
    p.add_argument(
        "--pair",
        nargs=2,
        action="append",
        metavar=("ROW_A", "ROW_B"),
        help="another pair, compared in the same call (Holm over all of them)",
    )
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=_cmd_compare)


# ----------------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    from c2f_attacks.adversarial_training import adversarial_config_from_args, train_adversarial
    from c2f_attacks.train import TrainConfig, train_shapes

    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    adversarial = adversarial_config_from_args(args)
    if adversarial is None:
        meta = train_shapes(cfg, args.out, progress=not args.quiet)
    else:
        meta = train_adversarial(cfg, adversarial, args.out, progress=not args.quiet)
    last = meta["history"][-1]
    print(
        f"saved {args.out}: val coarse acc {last['val_coarse_acc']:.4f}, "
        f"fine acc {last['val_fine_acc']:.4f}"
    )
    return 0


def _add_train_parser(sub) -> None:
    from c2f_attacks.adversarial_training import add_adversarial_args

    p = sub.add_parser("train", help="train a C2F-VGG16 on the shapes data (seeded)")
    p.add_argument("--out", required=True, help="checkpoint path to write")
    for name, typ in (("n-train", _positive_int), ("epochs", _positive_int),
                      ("batch-size", _positive_int), ("lr", float), ("width", float),
                      ("head-width", _positive_int), ("seed", int)):  # fmt: skip
        p.add_argument(f"--{name}", type=typ, default=None)
    add_adversarial_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)


# ----------------------------------------------------------------------------- accuracy, explain
def _model_and_data(args: argparse.Namespace):
    """(model, dataset) of the _add_data_args options, checked like a run's."""
    from c2f_attacks.runner import preflight
    from c2f_attacks.runner.execute import load_model_and_data

    device = str(preflight.check_device(args.device))
    return load_model_and_data(args.model, args.dataset, args.split, args.n, args.root,
                               args.hierarchy, device)  # fmt: skip


def _set_data_defaults(p: argparse.ArgumentParser, n: int) -> None:
    from c2f_attacks.runner import RunConfig
    from c2f_attacks.runner.memory import DEFAULT_BATCH_SIZE

    d = RunConfig()  # cheap: validation only
    p.set_defaults(model=d.model, hierarchy=None, dataset=d.dataset, split=d.split, root=None,
                   n=n, device=d.device, batch_size=DEFAULT_BATCH_SIZE)  # fmt: skip


def _cmd_accuracy(args: argparse.Namespace) -> int:
    from c2f_attacks.runner.distributed import Ranks
    from c2f_attacks.runner.execute import load_batch
    from c2f_attacks.train import accuracy

    model, dataset = _model_and_data(args)
    hits_c = hits_f = 0.0
    for batch in Ranks().batches(args.n, args.batch_size):  # memory: one batch at a time
        x, y, _ = load_batch(dataset, batch)
        coarse, fine = accuracy(model, x, y, batch_size=args.batch_size)
        hits_c, hits_f = hits_c + coarse * len(batch), hits_f + fine * len(batch)
    coarse, fine = hits_c / args.n, hits_f / args.n
    print(f"{args.model} on {args.dataset}/{args.split}, {args.n} images: "
          f"coarse accuracy {coarse:.4f}, fine accuracy {fine:.4f}")  # fmt: skip
    return 0


def _add_accuracy_parser(sub) -> None:
    p = sub.add_parser("accuracy", help="clean coarse and fine accuracy of a model")
    _add_data_args(p)
    _set_data_defaults(p, n=10_000)
    p.set_defaults(func=_cmd_accuracy)


def _cmd_explain(args: argparse.Namespace) -> int:
    from c2f_attacks.figures import explanation_figure
    from c2f_attacks.runner.execute import load_batch
    from c2f_attacks.runner.preflight import check_out_dir

    out = Path(args.out)
    check_out_dir(out.parent, args.allow_results_dir)
    model, dataset = _model_and_data(args)
    x, _, _ = load_batch(dataset, range(args.n))
    explanation_figure(model, x, out, composite=args.composite, batch_size=args.batch_size)
    print(f"wrote {out}")
    return 0


def _add_explain_parser(sub) -> None:
    from c2f_attacks.lrp import COMPOSITES

    p = sub.add_parser("explain", help="heatmaps of the coarse and fine decisions (LRP)")
    _add_data_args(p)
    _set_data_defaults(p, n=6)
    p.add_argument("--composite", default="epsilon_plus_flat", choices=sorted(COMPOSITES))
    p.add_argument("--out", default="c2f-results/explanations.png", help="PNG to write")
    p.add_argument(
        "--allow-results-dir",
        action="store_true",
        help="allow writing into the repository's committed results/",
    )
    p.set_defaults(func=_cmd_explain)


# ----------------------------------------------------------------------------- leaderboard
def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from c2f_attacks.leaderboard import TABLE_COLUMNS, read_leaderboard, render_table

    board = read_leaderboard(args.path)
    if not len(board):
        raise FileNotFoundError(f"no leaderboard rows in {args.path}")
    columns = (
        ("model", "dataset", *TABLE_COLUMNS) if args.columns is None else list_option(args.columns)
    )
    unknown = [c for c in columns if c not in board.columns]
    if unknown:
        raise ValueError(f"{args.path} has no column {unknown[0]!r}")
    print(render_table(board, columns, fmt=args.format))
    return 0


def _add_leaderboard_parser(sub) -> None:
    from c2f_attacks.leaderboard import FORMATS

    p = sub.add_parser("leaderboard", help="print a leaderboard CSV")
    p.add_argument("path", nargs="?", default="c2f-results/leaderboard.csv")
    p.add_argument("--columns", nargs="+", default=None, help="columns to show")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=_cmd_leaderboard)


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="c2f-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _add_run_parser(sub)
    _add_attacks_parser(sub)
    _add_compare_parser(sub)
    _add_leaderboard_parser(sub)
    _add_train_parser(sub)
    _add_accuracy_parser(sub)
    _add_explain_parser(sub)
    add_export_parser(sub)
    add_evaluate_parser(sub)
    add_transfer_parser(sub)
    add_demo_parser(sub)
    add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    command = "c2f-bench"
    try:
        with handle_interrupts():
            args = build_parser().parse_args(argv)
            command = f"c2f-bench {args.command}"
            try:
                return args.func(args)
            except USER_ERRORS as err:
                print(f"{command}: error: {err}", file=sys.stderr)
                return 2
    except KeyboardInterrupt:
        print(f"\n{command}: interrupted (Ctrl-C); nothing half-written is left", file=sys.stderr)
        return 130
    except Interrupted as sig:
        print(f"{command}: {sig}; nothing half-written is left", file=sys.stderr)
        return sig.exit_code


if __name__ == "__main__":
    sys.exit(main())

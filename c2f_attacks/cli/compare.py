"""``c2f-bench compare``: paired tests between rows of one run, image by image."""

from __future__ import annotations

import argparse
from pathlib import Path

from c2f_attacks.cli.options import add_format_option
from c2f_attacks.errors import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="paired tests between rows of one run, image by image"
    )
    p.add_argument("out", help="the run's --out folder")
    p.add_argument("row_a", help="row_id, or [MODEL/]attack:mask[:stage[:protocol[:target]]] "
                   "(e.g. shapes-vgg16/lrpc:lrp:coarse:minimal; a target such as random names "
                   "a targeted row, left out an untargeted one)")  # fmt: skip
    p.add_argument("row_b", help="the row to compare it with (e.g. shapes-vgg16/lrpc:gradient)")
    p.add_argument("--pair", nargs=2, action="append", metavar=("ROW_A", "ROW_B"),
                   help="another pair, compared in the same call (Holm over all of "
                   "them)")  # fmt: skip
    add_format_option(p)
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from c2f_attacks.evaluation import compare_many, load_records
    from c2f_attacks.leaderboard import read_leaderboard, render_table
    from c2f_attacks.leaderboard.select import select_one

    board_path = Path(args.out) / "leaderboard.csv"
    board = read_leaderboard(board_path)
    if not len(board):
        raise UserError(f"no leaderboard rows in {board_path} (run c2f-bench run first)")
    specs = [(args.row_a, args.row_b), *(tuple(pair) for pair in args.pair or ())]
    pairs = [tuple(select_one(board, spec, str(board_path))["row_id"] for spec in pair)
             for pair in specs]  # fmt: skip
    records = load_records(args.out)
    missing = sorted({rid for pair in pairs for rid in pair} - set(records["row_id"]))
    if missing:
        raise UserError(f"row {missing[0]} of {board_path} has no records in {args.out}/records/")
    table = compare_many(records, pairs)
    names = {rid: spec for pair, ids in zip(specs, pairs) for spec, rid in zip(pair, ids)}
    table["row_a"], table["row_b"] = table["row_a"].map(names), table["row_b"].map(names)
    if args.format == "table":
        print(f"row_a - row_b, paired over images: exact tests (McNemar on the fooling ratio, "
              f"sign test on censored per-image budgets), 95% intervals; p_holm adjusts the "
              f"{len(table)} p-values of this call (Holm):")  # fmt: skip
    print(render_table(table, list(table.columns), fmt=args.format))
    return 0

"""``c2f-bench leaderboard``: print a leaderboard CSV (read strictly)."""

from __future__ import annotations

import argparse

from c2f_attacks.cli.options import add_format_option, list_option
from c2f_attacks.errors import UserError


def add_parser(subparsers) -> None:
    from c2f_attacks.runner import RunConfig

    p = subparsers.add_parser("leaderboard", help="print a leaderboard CSV")
    p.add_argument("path", nargs="?", default=f"{RunConfig.out}/leaderboard.csv")
    p.add_argument("--columns", nargs="+", default=None, help="columns to show")
    add_format_option(p)
    p.set_defaults(func=_leaderboard)


def _leaderboard(args: argparse.Namespace) -> int:
    from c2f_attacks.leaderboard import TABLE_COLUMNS, read_leaderboard, render_table

    board = read_leaderboard(args.path)
    if not len(board):
        raise UserError(f"no leaderboard rows in {args.path}")
    columns = (
        ("model", "dataset", *TABLE_COLUMNS) if args.columns is None else list_option(args.columns)
    )
    unknown = [c for c in columns if c not in board.columns]
    if unknown:
        raise UserError(f"{args.path} has no column {unknown[0]!r}")
    print(render_table(board, columns, fmt=args.format))
    return 0

"""``c2f-bench``: the benchmark and every job around it.

One module per command (``run``, ``attacks``, ``compare``, ``leaderboard``, ``train``,
``accuracy``, ``explain``, ``export``, ``evaluate``, ``transfer``, ``demo``, ``report``), each
with ``add_parser(subparsers)``, which sets the command's ``func(args) -> exit status``; the
option types and groups they share live in :mod:`c2f_attacks.cli.options`.

Bad input (:class:`~c2f_attacks.errors.UserError`: a bad argument, a corrupt file, an unknown
name, a missing optional extra) and file-system errors (``OSError``) end the command with one
line on stderr, ``c2f-bench <command>: error: ...``, and exit status 2; Ctrl-C ends it with one
line and status 130, SIGTERM with status 143; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from c2f_attacks.cli import (
    accuracy,
    attacks,
    compare,
    demo,
    evaluate,
    explain,
    export,
    leaderboard,
    report,
    run,
    train,
    transfer,
)
from c2f_attacks.cli.options import OneLineParser
from c2f_attacks.errors import UserError
from c2f_attacks.interrupts import Interrupted, handle_interrupts
from c2f_attacks.runner.memory import keep_compiled_kernels

DESCRIPTION = ("Explainable adversarial attacks on coarse-to-fine classifiers: the benchmark and "
               "every job around it.")  # fmt: skip
#: the commands in the order ``c2f-bench --help`` lists them
COMMANDS = (run, attacks, compare, leaderboard, train, accuracy, explain, export, evaluate,
            transfer, demo, report)  # fmt: skip
#: what a user can cause and fix: reported in one line, never with a traceback
USER_ERRORS = (UserError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="c2f-bench", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    keep_compiled_kernels()  # before any command runs a CPU kernel
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

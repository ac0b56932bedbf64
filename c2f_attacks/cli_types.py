"""argparse value types shared by the ``c2f-bench`` subcommands.

A module of its own, below every CLI module: ``c2f_attacks.cli`` imports the subcommand modules
(``exporters.cli``, ...), so they cannot import these from it.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1 (a count of images, steps, ...); anything else is a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def list_option(values: list[str]) -> list[str]:
    """``["fgsm,pgd", "lrpc"]`` -> ``["fgsm", "pgd", "lrpc"]``: lists by spaces or commas."""
    return [v for value in values for v in value.split(",") if v]

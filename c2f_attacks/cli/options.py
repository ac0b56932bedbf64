"""Option types and option groups shared by the ``c2f-bench`` commands.

Value types (argparse ``type=``): :func:`number` (``0.03`` or a fraction like ``8/255``: every
option that takes a number takes a fraction), :func:`positive_int`, :func:`share` (a number in
[0, 1]); :func:`list_option` splits lists given with spaces or commas. Groups: the model and
data options (:func:`add_data_options`, :func:`model_and_data`), ``--format`` and
``--allow-results-dir``. :func:`default_of` reads a library function's default for the option
that stands for its argument; :func:`reported_warnings` prints a command's warnings one line
each.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from c2f_attacks.errors import UserError
from c2f_attacks.validation import parse_number


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage stays available under --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def number(text: str) -> float:
    """``0.03`` or ``8/255``."""
    try:
        return parse_number(text, "the value")
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def positive_int(text: str) -> int:
    """An integer >= 1 (a count of images, steps, ...); anything else is a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def share(text: str) -> float:
    """A number in [0, 1] (``0.99`` or ``99/100``)."""
    value = number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}")
    return value


def list_option(values: list[str]) -> list[str]:
    """``["fgsm,pgd", "lrpc"]`` -> ``["fgsm", "pgd", "lrpc"]``: lists by spaces or commas."""
    return [v for value in values for v in value.split(",") if v]


def default_of(function: Callable, parameter: str) -> Any:
    """The default of ``function``'s ``parameter``: an option that stands for a library
    argument takes the library's default, named there only."""
    return inspect.signature(function).parameters[parameter].default


def add_format_option(p: argparse.ArgumentParser, **kwargs) -> None:
    """``--format table|csv|json|markdown`` (default: table)."""
    from c2f_attacks.leaderboard import FORMATS

    p.add_argument("--format", choices=FORMATS, **{"default": "table", **kwargs})


def add_allow_results_dir(p: argparse.ArgumentParser, what: str = "--out") -> None:
    """``--allow-results-dir``: writing into the committed ``results/`` is refused without it."""
    p.add_argument("--allow-results-dir", action="store_true",
                   help=f"allow {what} to be in the repository's committed results/ "
                        "(regeneration)")  # fmt: skip


def add_data_options(p: argparse.ArgumentParser, models: str | None = None) -> None:
    """Which model sees which images; defaults come from RunConfig or :func:`set_data_defaults`.
    ``models``: the default of a ``--model`` that takes a list (one run per model); None: it
    takes one model."""
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
    p.add_argument(
        "--dataset", help="shapes, cifar10, cifar100, imagenet, photos or imagefolder:PATH"
    )
    p.add_argument("--split", help="dataset split (shapes: train, val, test; imagenet: val)")
    p.add_argument("--root", help="dataset folder (not needed for shapes)")
    # -n/--num-images, never --n: torchrun's parser takes "--n" for its --nnodes / --nproc-per-node
    p.add_argument("-n", "--num-images", dest="n", type=positive_int, help="number of images")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    p.add_argument("--batch-size", type=positive_int,
                   help="images per batch [64; run: per row the largest that fits --max-memory, "
                   "<= 64]")  # fmt: skip


def set_data_defaults(p: argparse.ArgumentParser, n: int) -> None:
    """RunConfig's defaults for :func:`add_data_options` (one model), with ``n`` images."""
    from c2f_attacks.runner import RunConfig
    from c2f_attacks.runner.memory import DEFAULT_BATCH_SIZE

    d = RunConfig()  # cheap: validation only
    p.set_defaults(model=d.model, hierarchy=None, dataset=d.dataset, split=d.split, root=None,
                   n=n, device=d.device, batch_size=DEFAULT_BATCH_SIZE)  # fmt: skip


def model_and_data(args: argparse.Namespace):
    """(model, dataset) of the :func:`add_data_options` options, checked like a run's."""
    from c2f_attacks.runner import preflight
    from c2f_attacks.runner.execute import load_model_and_data

    device = str(preflight.check_device(args.device))
    return load_model_and_data(args.model, args.dataset, args.split, args.n, args.root,
                               args.hierarchy, device)  # fmt: skip


@contextmanager
def reported_warnings(command: str) -> Iterator[None]:
    """The block's warnings, each printed on stderr as ``c2f-bench COMMAND: warning: ...`` when
    the block ends (after an error only the error's line is printed)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    for w in caught:
        print(f"c2f-bench {command}: warning: {w.message}", file=sys.stderr)

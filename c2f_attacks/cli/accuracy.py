"""``c2f-bench accuracy``: clean coarse and fine accuracy of a model on a dataset split."""

from __future__ import annotations

import argparse

from c2f_attacks.cli.options import add_data_options, model_and_data, set_data_defaults

#: images measured without -n
DEFAULT_IMAGES = 10_000


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("accuracy", help="clean coarse and fine accuracy of a model")
    add_data_options(p)
    set_data_defaults(p, n=DEFAULT_IMAGES)
    p.set_defaults(func=_accuracy)


def _accuracy(args: argparse.Namespace) -> int:
    from c2f_attacks.runner.distributed import Ranks
    from c2f_attacks.runner.execute import load_batch
    from c2f_attacks.train import accuracy

    model, dataset = model_and_data(args)
    hits_c = hits_f = 0.0
    for batch in Ranks().batches(args.n, args.batch_size):  # memory: one batch at a time
        x, y, _ = load_batch(dataset, batch)
        coarse, fine = accuracy(model, x, y, batch_size=args.batch_size)
        hits_c, hits_f = hits_c + coarse * len(batch), hits_f + fine * len(batch)
    coarse, fine = hits_c / args.n, hits_f / args.n
    print(f"{args.model} on {args.dataset}/{args.split}, {args.n} images: "
          f"coarse accuracy {coarse:.4f}, fine accuracy {fine:.4f}")  # fmt: skip
    return 0

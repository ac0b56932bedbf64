"""Train the adversarially trained shapes model (the shipped ``shapes-vgg16-at``).

    python scripts/train_at.py --adversarial fgsm_rs --adv-eps 8/255 \
        --out c2f_attacks/checkpoints/shapes-vgg16-at.pt

Same data, architecture and schedule options as ``c2f-bench train``; the same machine and thread
count (``--threads``) give the same weights.
"""

from __future__ import annotations

import argparse
import time

import torch

from c2f_attacks.adversarial_training import (
    AdversarialConfig,
    add_adversarial_args,
    adversarial_config_from_args,
    train_adversarial,
)
from c2f_attacks.train import TrainConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="checkpoint path")
    for name, typ in (("n-train", int), ("epochs", int), ("batch-size", int), ("lr", float),
                      ("width", float), ("head-width", int), ("seed", int)):  # fmt: skip
        p.add_argument(f"--{name}", type=typ, default=None)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true")
    add_adversarial_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    adv = adversarial_config_from_args(args) or AdversarialConfig()
    start = time.perf_counter()
    meta = train_adversarial(cfg, adv, args.out, init=args.init, progress=not args.quiet)
    last, sample = meta["history"][-1], meta["sample_accuracy"]
    print(f"saved {args.out} in {time.perf_counter() - start:.0f} s: "
          f"val clean {last['val_coarse_acc']:.4f}/{last['val_fine_acc']:.4f}, "
          f"val PGD {last['val_pgd_coarse_acc']:.4f}/{last['val_pgd_fine_acc']:.4f}, "
          f"test sample ({sample['n']}) {sample['coarse']:.4f}/{sample['fine']:.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

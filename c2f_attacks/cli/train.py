"""``c2f-bench train``: train a C2F-VGG16 on the shapes data (seeded), from scratch or fine-tuning
a checkpoint (``--init``), with standard or adversarial training (``--adversarial``).

The shipped ``shapes-vgg16-at`` is ``shapes-vgg16`` fine-tuned adversarially::

    c2f-bench train --init c2f_attacks/checkpoints/shapes-vgg16.pt --epochs 2 --lr 0.02 \\
        --threads 1 --adversarial fgsm_rs --adv-eps 8/255 --out shapes-vgg16-at.pt
"""

from __future__ import annotations

import argparse

from c2f_attacks.cli.options import number, positive_int
from c2f_attacks.errors import UserError

#: options that set the architecture, which an --init checkpoint brings with it
_ARCHITECTURE = ("width", "head_width")


def add_parser(subparsers) -> None:
    from c2f_attacks.adversarial_training import METHODS, TARGETS, AdversarialConfig
    from c2f_attacks.train import TrainConfig

    d, adv = TrainConfig(), AdversarialConfig()
    p = subparsers.add_parser(
        "train", help="train a C2F-VGG16 on the shapes data (seeded)",
        description="Standard training, or with --adversarial each batch replaced by its "
        "adversarial version; from scratch, or fine-tuning the checkpoint --init. The same "
        "machine and --threads give the same weights.",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="checkpoint path to write")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="checkpoint to fine-tune (its architecture is kept) "
                   "[from scratch]")  # fmt: skip
    for name, typ in (("n_train", positive_int), ("epochs", positive_int),
                      ("batch_size", positive_int), ("lr", number), ("width", number),
                      ("head_width", positive_int), ("seed", int)):  # fmt: skip
        p.add_argument(f"--{name.replace('_', '-')}", type=typ, help=f"[{getattr(d, name)}]")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads [torch's default]")
    p.add_argument("--adversarial", choices=METHODS,
                   help="adversarial training: pgd (Madry) or fgsm_rs (Wong et al. "
                   "2020)")  # fmt: skip
    p.add_argument("--adv-target", choices=TARGETS, default=adv.target,
                   help=f"loss the perturbation ascends: both stages or the coarse CE only "
                   f"[{adv.target}]")  # fmt: skip
    p.add_argument("--adv-eps", type=number, default=adv.eps,
                   help=f"l-inf budget, e.g. 8/255 [{adv.eps * 255:g}/255]")  # fmt: skip
    pgd = AdversarialConfig("pgd").resolved()
    p.add_argument("--adv-steps", type=positive_int, help=f"ascent steps (pgd) [{pgd.steps}]")
    p.add_argument("--adv-alpha", type=number,
                   help="step size [fgsm_rs: 1.25 eps; pgd: 2.5 eps / steps]")  # fmt: skip
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_train)


def _train_config(args: argparse.Namespace):
    """The :class:`~c2f_attacks.train.TrainConfig` of the options (unset ones: its defaults).
    Architecture options with ``--init`` are a UserError: the checkpoint brings its own."""
    from c2f_attacks.train import TrainConfig

    given = [name for name in _ARCHITECTURE if getattr(args, name) is not None]
    if args.init is not None and given:
        raise UserError(f"--{given[0].replace('_', '-')} with --init: the architecture is the "
                        f"checkpoint's ({args.init}); leave it out")  # fmt: skip
    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def _adversarial_config(args: argparse.Namespace):
    """The :class:`~c2f_attacks.adversarial_training.AdversarialConfig` of the options (None
    without ``--adversarial``: standard training)."""
    from c2f_attacks.adversarial_training import AdversarialConfig

    if args.adversarial is None:
        return None
    return AdversarialConfig(method=args.adversarial, target=args.adv_target, eps=args.adv_eps,
                             steps=args.adv_steps, alpha=args.adv_alpha)  # fmt: skip


def _train(args: argparse.Namespace) -> int:
    import torch

    from c2f_attacks.adversarial_training import train_adversarial
    from c2f_attacks.train import train_shapes

    cfg, adversarial = _train_config(args), _adversarial_config(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    progress = not args.quiet
    if adversarial is None:
        meta = train_shapes(cfg, args.out, init=args.init, progress=progress)
    else:
        meta = train_adversarial(cfg, adversarial, args.out, init=args.init, progress=progress)
    last = meta["history"][-1]
    robust = (f", under PGD {last['val_pgd_coarse_acc']:.4f} / {last['val_pgd_fine_acc']:.4f}"
              if "val_pgd_coarse_acc" in last else "")  # fmt: skip
    start = f" (fine-tuned from {args.init})" if args.init else ""
    print(f"saved {args.out}{start}: val coarse / fine accuracy {last['val_coarse_acc']:.4f} / "
          f"{last['val_fine_acc']:.4f}{robust}")  # fmt: skip
    return 0

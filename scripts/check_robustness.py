"""Clean and robust accuracy of a C2F model on the shapes test split, with gradient-masking checks.

    python scripts/check_robustness.py --model c2f_attacks/checkpoints/shapes-vgg16-at.pt \
        --out /tmp/at-robustness

Robust accuracy of a stage = share of images whose clean stage prediction is right and that the
attack does not fool (the stage prediction stays). Attacks, at each eps and stage:

- ``pgd20``: our PGD, 20 steps of eps/4, random start (white-box);
- ``apgd``: torchattacks APGD with the CE loss (white-box, step size adapted; it should agree with
  PGD within a few points when the gradients are informative);
- ``square``: torchattacks Square (black-box, score-based): it must not beat the white-box
  attacks, else the gradients mislead (gradient masking);
- ``transfer``: PGD-20 images made on ``--source`` (the standard model) and shown to the model.

``worst`` counts an image robust only if no attack fools it. Writes ``robustness.json`` and
``robustness.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from c2f_attacks.attacks import PGD, TorchattacksAttack
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.evaluation import bootstrap_ci
from c2f_attacks.models.zoo import load_model
from c2f_attacks.train import accuracy


def _stage_label(model, y, stage):
    return model.fine_to_coarse[y] if stage == "coarse" else y


def _stage_pred(model, x, stage, batch_size=500):
    with torch.no_grad():
        preds = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat([p.coarse_pred if stage == "coarse" else p.fine_pred for p in preds])


def _attacks(model, source, stage, eps, args):
    """name -> function(x) giving adversarial images for the model under test."""
    # torchattacks reshapes with .view: it needs contiguous batches
    ta = dict(seed=args.seed, memory_format="contiguous")
    pgd = dict(eps=eps, alpha=eps / 4, steps=20, random_start=True, stage=stage, seed=args.seed)
    return {
        "pgd20": lambda x: PGD(model, **pgd)(x).x_adv,
        "apgd": lambda x: (
            TorchattacksAttack(
                model, "APGD", stage, eps=eps, steps=args.apgd_steps, loss="ce", **ta
            )(x).x_adv
        ),
        "square": lambda x: (
            TorchattacksAttack(
                model, "Square", stage, eps=eps, n_queries=args.square_queries, **ta
            )(x[: args.square_n]).x_adv
        ),
        "transfer": lambda x: PGD(source, **pgd)(x).x_adv,
    }


def _rate(hits: np.ndarray, seed: int) -> dict:
    lo, hi = bootstrap_ci(hits.astype(float), np.mean, seed=seed)
    return {"acc": float(hits.mean()), "lo": lo, "hi": hi, "n": int(hits.size)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="shapes-vgg16-at")
    p.add_argument("--source", default="shapes-vgg16", help="model the transfer attack uses")
    p.add_argument("--n-clean", type=int, default=10_000)
    p.add_argument("--n", type=int, default=1000, help="images for the white-box attacks")
    p.add_argument("--square-n", type=int, default=200)
    p.add_argument("--square-queries", type=int, default=1000)
    p.add_argument("--apgd-steps", type=int, default=50)
    p.add_argument(
        "--eps", nargs="+", type=lambda s: float(Fraction(s)), default=[4 / 255, 8 / 255]
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, source = load_model(args.model), load_model(args.source)
    x_all, y_all, _ = ShapesC2F(args.n_clean, SHAPES_SPLITS["test"]).tensors()
    coarse, fine = accuracy(model, x_all, y_all)
    report = {"model": args.model, "clean": {"n": args.n_clean, "coarse": coarse, "fine": fine}}
    x, y = x_all[: args.n], y_all[: args.n]
    rows = []
    for stage in ("coarse", "fine"):
        label = _stage_label(model, y, stage)
        correct = (_stage_pred(model, x, stage) == label).numpy()
        for eps in args.eps:
            worst = correct.copy()
            for name, attack in _attacks(model, source, stage, eps, args).items():
                start = time.perf_counter()
                x_adv = attack(x)
                m = len(x_adv)
                kept = (_stage_pred(model, x_adv, stage) == label[:m]).numpy() & correct[:m]
                worst[:m] &= kept
                rows.append({"stage": stage, "eps_255": round(eps * 255, 3), "attack": name,
                             **_rate(kept, args.seed),
                             "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
                print(rows[-1], flush=True)
            rows.append({"stage": stage, "eps_255": round(eps * 255, 3), "attack": "worst",
                         **_rate(worst, args.seed), "seconds": 0.0})  # fmt: skip
    report["robust"] = rows
    (out / "robustness.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Robustness of {args.model}",
        "",
        f"Clean accuracy on {args.n_clean} test images: coarse {coarse:.4f}, fine {fine:.4f}.",
        "",
        "| stage | eps (x/255) | attack | robust acc | 95% CI | n | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['stage']} | {r['eps_255']:g} | {r['attack']} | {r['acc']:.3f} | "
        f"[{r['lo']:.3f}, {r['hi']:.3f}] | {r['n']} | {r['seconds']} |"
        for r in rows
    ]
    (out / "robustness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

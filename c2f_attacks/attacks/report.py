"""Regenerate results/attacks_shapes.md: LRPC, LRPF and dense PGD on the shipped shapes-vgg16.

    python -m c2f_attacks.attacks.report            # 256 shapes test images, writes the file
    python -m c2f_attacks.attacks.report --sweep    # also the default-selection sweep (slower)

Every attack runs with its documented defaults on the first ``n`` images of the shapes test
split (seed ``SHAPES_SPLITS["test"]``); metrics come from :func:`c2f_attacks.metrics.attack_metrics`
with the LRP attacks' ``top_k`` as the relevance region. LRPC and LRPF share their defaults
(k, alpha, steps, lambda, r), so their l-inf norms compare at equal settings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from c2f_attacks._io import atomic_write_text
from c2f_attacks.attacks.base import Attack
from c2f_attacks.attacks.lrpc import LRPC, LRPC_DEFAULTS
from c2f_attacks.attacks.lrpf import LRPF
from c2f_attacks.attacks.pgd import PGD
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.metrics import attack_metrics
from c2f_attacks.models import load_model

RESULTS = Path(__file__).resolve().parents[2] / "results" / "attacks_shapes.md"
COLUMNS = ("fooling_ratio", "success_rate", "l0_mean", "linf_mean", "linf_median", "l2_mean",
           "perturbation_in_relevance", "relevance_shift", "object_share", "queries_per_image",
           "seconds")  # fmt: skip


def evaluate(attack: Attack, x, labels, masks, top_k: float) -> dict[str, float]:
    """Run ``attack`` on the batch and compute its metrics (plus wall time)."""
    start = time.perf_counter()
    res = attack(x)
    seconds = time.perf_counter() - start
    metrics = attack_metrics(
        attack.model, x, res.x_adv, labels, attack.stage, masks,
        keep_coarse=attack.keep_coarse, top_k=top_k, queries=res.queries,
    )  # fmt: skip
    return {**metrics, "seconds": seconds}


def default_attacks(model) -> dict[str, Attack]:
    return {
        "PGD coarse (8/255, 10 steps)": PGD(model, stage="coarse"),
        "PGD fine (8/255, 10 steps)": PGD(model, stage="fine"),
        "LRPC (defaults)": LRPC(model),
        "LRPF (defaults)": LRPF(model),
    }


def sweep_attacks(model) -> dict[str, Attack]:
    """The grid the defaults were chosen from: one knob at a time around the defaults."""
    variants = [("top_k", v) for v in (0.05, 0.1, 0.2)] + [("alpha", 1 / 255), ("steps", 100)]
    variants += [("lam", v) for v in (0.0, 3.0)] + [("refresh", v) for v in (5, 1)]
    attacks = {}
    for cls in (LRPC, LRPF):
        attacks[f"{cls.__name__} defaults"] = cls(model)
        for name, value in variants:
            attacks[f"{cls.__name__} {name}={value:.4g}"] = cls(model, **{name: value})
    attacks.update({f"LRPF kappa={v:g}": LRPF(model, kappa=v) for v in (0.0, 3.0)})
    return attacks


def table(rows: dict[str, dict[str, float]]) -> str:
    head = "| attack | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, m in rows.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{m.get(c, float('nan')):.4g}" for c in COLUMNS) + " |"
        )
    return "\n".join(lines)


def run(n: int, sweep_n: int | None) -> dict[str, dict[str, dict[str, float]]]:
    torch.manual_seed(0)
    model = load_model("shapes-vgg16")
    x, labels, masks = ShapesC2F(n, SHAPES_SPLITS["test"]).tensors()
    top_k = LRPC_DEFAULTS["top_k"]
    out = {"defaults": {name: evaluate(a, x, labels, masks, top_k)
                        for name, a in default_attacks(model).items()}}  # fmt: skip
    if sweep_n:
        xs, ls, ms = x[:sweep_n], labels[:sweep_n], masks[:sweep_n]
        out["sweep"] = {name: evaluate(a, xs, ls, ms, getattr(a, "top_k", top_k))
                        for name, a in sweep_attacks(model).items()}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument(
        "--sweep",
        type=int,
        default=0,
        metavar="N",
        help="also run the default-selection sweep on the first N images",
    )
    parser.add_argument("--json", type=Path, default=RESULTS.with_suffix(".json"))
    args = parser.parse_args(argv)
    results = run(args.n, args.sweep)
    atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    for section, rows in results.items():
        print(f"\n## {section}\n\n{table(rows)}")


if __name__ == "__main__":
    main()

"""Hyperparameter sweep of LRPC and LRPF on the shapes VALIDATION split, for choosing defaults.

    python scripts/sweep_defaults.py --out DIR     # writes DIR/sweep_defaults.{md,json}
    python scripts/sweep_defaults.py --out /tmp/sweep -n 2 --max-steps 4   # smoke run
    python scripts/sweep_defaults.py --out results -n 256 --device cuda     # results/ (on a GPU)

Runs the shipped ``shapes-vgg16`` on the first ``n`` images of the validation split
(``ShapesC2F(n, seed=SHAPES_SPLITS["val"])``: never test images), LRPC and LRPF at their
defaults and with one setting changed at a time (:func:`variants`: k, alpha, steps, lambda,
refresh; LRPF also kappa). Every row's metrics come from the library's own per-image records and
aggregate (``c2f_attacks.evaluation``), with 95% bootstrap intervals over images.

How to read it off (the rule the documented defaults follow): the smallest ``top_k`` at which
both attacks reach a fooling ratio of at least 98% (sparsity is the point of a masked attack);
for alpha, steps and refresh the fewest queries per image among the settings whose fooling ratio
interval overlaps the best one's; lambda and kappa stay unless another value moves the median
l-inf or the fooling ratio beyond its interval. The report lists, per knob, the settings that
meet the first condition ("within the best fooling ratio") so the choice is visible.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from c2f_attacks._io import atomic_write_text
from c2f_attacks.attacks import LRPC, LRPF
from c2f_attacks.attacks.lrp_guided import LRPGuidedAttack
from c2f_attacks.attacks.lrpf import LRPF_DEFAULTS
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.evaluation import aggregate, per_image_records
from c2f_attacks.models import load_model

#: one knob at a time around the defaults
GRID: dict[str, tuple[float, ...]] = {
    "top_k": (0.05, 0.1, 0.2, 0.3),
    "alpha": (1 / 255, 4 / 255),
    "steps": (100, 400),
    "lam": (0.0, 3.0),
    "refresh": (5, 50),
}
KAPPAS = (0.0, 3.0)
COLUMNS = ("fooling_ratio", "fooling_ratio_lo", "fooling_ratio_hi", "linf_median",
           "linf_median_lo", "linf_median_hi", "l2_median", "l0_mean", "coarse_flip_share",
           "object_share", "queries_per_image", "seconds")  # fmt: skip


def variants(max_steps: int | None) -> list[tuple[str, str, float | None, type, dict]]:
    """``(attack name, knob, value, class, kwargs)`` for every row; knob "defaults" first."""
    rows = []
    for cls in (LRPC, LRPF):
        grid = dict(GRID, **({"kappa": KAPPAS} if cls is LRPF else {}))
        rows.append((cls.__name__, "defaults", None, cls, {}))
        rows += [(cls.__name__, knob, v, cls, {knob: v}) for knob, vs in grid.items() for v in vs]
    if max_steps is not None:
        capped = []
        for name, knob, value, cls, kwargs in rows:
            steps = min(kwargs.get("steps", LRPF_DEFAULTS["steps"]), max_steps)
            capped.append((name, knob, value, cls, {**kwargs, "steps": steps}))
        rows = capped
    return rows


def evaluate(atk: LRPGuidedAttack, x, y, masks, batch_size: int) -> dict[str, float]:
    """Run ``atk`` over the images in batches; the aggregate of its per-image records."""
    start = time.perf_counter()
    parts = []
    for b in range(0, len(x), batch_size):
        index = torch.arange(b, min(b + batch_size, len(x)), device=x.device)
        parts.append(atk(x[index], y[index], index=index, object_mask=masks[index]))
    seconds = time.perf_counter() - start
    x_adv = torch.cat([p.x_adv for p in parts])
    records = per_image_records(
        atk.model, x, x_adv, y, atk.stage, keep_coarse=atk.keep_coarse, masks=masks,
        queries=torch.cat([p.queries for p in parts]),
        first_success_step=torch.cat([p.first_success_step for p in parts]),
        relevance=False, batch_size=batch_size,
    )  # fmt: skip
    return {**aggregate(records), "seconds": seconds}


def within_best(rows: list[dict]) -> dict[tuple[str, str], list[str]]:
    """Per (attack, knob): the settings (the defaults included) whose fooling-ratio interval
    reaches the best fooling ratio of that knob."""
    out: dict[tuple[str, str], list[str]] = {}
    for attack in {r["attack"] for r in rows}:
        default = next(r for r in rows if r["attack"] == attack and r["knob"] == "defaults")
        for knob in {r["knob"] for r in rows if r["attack"] == attack} - {"defaults"}:
            group = [default] + [r for r in rows if r["attack"] == attack and r["knob"] == knob]
            best = max(r["fooling_ratio"] for r in group)
            out[(attack, knob)] = [_setting(r) for r in group if r["fooling_ratio_hi"] >= best]
    return out


def _setting(row: dict) -> str:
    return "defaults" if row["knob"] == "defaults" else f"{row['knob']}={row['value']:.4g}"


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{value:.4g}")  # fmt: skip


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# LRPC / LRPF hyperparameter sweep (shapes validation split)",
        "",
        f"Generated by `python scripts/sweep_defaults.py {meta['argv']}`: model "
        f"`{meta['model']}`, {meta['n']} images of the validation split "
        f"(seed {meta['split_seed']}), torch {meta['torch']}, device {meta['device']}"
        + (f" ({meta['gpu']})" if meta["gpu"] else f", {meta['threads']} threads")
        + (f", steps capped at {meta['max_steps']} (smoke run)" if meta["max_steps"] else "")
        + ".",
        "",
        f"Defaults: `{meta['defaults']}`. One setting changed per row; intervals are 95% "
        "bootstrap intervals over images; norms over the fooled images.",
        "",
        "| attack | setting | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for r in rows:
        values = " | ".join(_fmt(r.get(c, float("nan"))) for c in COLUMNS)
        lines.append(f"| {r['attack']} | {_setting(r)} | {values} |")
    lines += ["", "Settings whose fooling-ratio interval reaches the best of their knob:", ""]
    for (attack, knob), settings in sorted(within_best(rows).items()):
        lines.append(f"- {attack} {knob}: {', '.join(settings)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for sweep_defaults.md and sweep_defaults.json")  # fmt: skip
    parser.add_argument("-n", "--num-images", type=int, default=128)
    parser.add_argument("--model", default="shapes-vgg16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="cap every row's steps (smoke runs only)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out must be a folder, got the file {args.out}")
    if args.num_images < 1 or args.batch_size < 1:
        parser.error("--num-images and --batch-size must be positive")
    torch.manual_seed(0)
    model = load_model(args.model, map_location=args.device)
    x, y, masks = ShapesC2F(args.num_images, seed=SHAPES_SPLITS["val"]).tensors()
    x, y, masks = x.to(args.device), y.to(args.device), masks.to(args.device)
    rows = []
    for attack, knob, value, cls, kwargs in variants(args.max_steps):
        metrics = evaluate(cls(model, **kwargs), x, y, masks, args.batch_size)
        rows.append({"attack": attack, "knob": knob, "value": value, **metrics})
        print(f"{attack:5s} {_setting(rows[-1]):18s} FR {metrics['fooling_ratio']:.3f} "
              f"linf_median {metrics['linf_median']:.4f} queries "
              f"{metrics['queries_per_image']:.1f}", flush=True)  # fmt: skip
    meta = {
        "argv": " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model, "n": args.num_images, "split_seed": SHAPES_SPLITS["val"],
        "max_steps": args.max_steps, "defaults": LRPF_DEFAULTS, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }  # fmt: skip
    report = args.out / "sweep_defaults.md"
    atomic_write_text(report, markdown(meta, rows))
    atomic_write_text(
        report.with_suffix(".json"), json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {report} and {report.with_suffix('.json')}")


if __name__ == "__main__":
    main()

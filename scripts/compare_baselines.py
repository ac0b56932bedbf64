"""LRPC/LRPF against strong baselines on both stages of the shipped models, at fair budgets.

    python scripts/compare_baselines.py --out /tmp/compare            # full size (slow on a CPU)
    python scripts/compare_baselines.py --out /tmp/compare --quick    # a smoke run
    python scripts/compare_baselines.py --out results/baselines -n 64 # results/ (2 CPU cores)

Per model and stage (coarse: LRPC; fine: LRPF, whose success also needs the coarse label kept):

- ours: LRPC/LRPF with the ``--masks`` (lrp, gradient, random), minimal-eps search up to
  ``--eps-max``, so FR(b) is the share fooled within l-inf budget b;
- ``torchattacks.APGD`` (CE loss, the AutoAttack standard) at each l-inf budget of ``--linf``;
- minimum norm: ``torchattacks.FAB`` (l-inf, ``eps = --eps-max``) and ``torchattacks.DeepFool``
  (l2);
- sparse: ``torchattacks.SparseFool``, ``torchattacks.Pixle`` and ``torchattacks.OnePixel``
  (JSMA is left out: about 10 s per image on 2 CPU cores).

``--attacks`` keeps a subset (names as in the ``attack`` column, e.g. ``LRPC APGD``). Baselines
on the fine stage count a success when the fine label changes; the ``fr_fine_any`` and
``fr_fine_coarse_kept`` columns give both rules for every row. From each row's per-image
records: FR at equal l-inf (``fr_linf@b``, the budget curve FR(b) of
:func:`c2f_attacks.evaluation.fr_curve`; for APGD the run at b itself), FR at equal l0
(``fr_l0@b``, b = share of pixels changed), median norms of the fooled images with 95%
bootstrap intervals, queries per image and seconds (on ``--device``). Writes ``summary.csv``,
``summary.md`` and ``records.csv.gz`` (every image of every row) to ``--out``, atomically, after
every row. An existing summary in ``--out`` is an error unless ``--resume`` (keep its rows, run
only the missing ones: an interrupted run goes on where it stopped; give it the same options)
or ``--overwrite``.
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from c2f_attacks._io import atomic_write, atomic_write_text
from c2f_attacks.attacks import LRPC, LRPF, TorchattacksAttack
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.evaluation import aggregate, bootstrap_ci, fr_curve, per_image_records
from c2f_attacks.models.zoo import load_model

STAGES = ("coarse", "fine")
ATTACKS = ("LRPC", "LRPF", "APGD", "FAB", "DeepFool", "SparseFool", "Pixle", "OnePixel")
SUMMARY = ["fooling_ratio", "fooling_ratio_lo", "fooling_ratio_hi", "fr_fine_any",
           "fr_fine_coarse_kept", "linf_median", "linf_median_lo", "linf_median_hi",
           "l2_median", "l2_median_lo", "l2_median_hi", "queries_per_image"]  # fmt: skip


def _fraction(text: str) -> float:
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number like 8/255, got {text!r}") from None


def _runs(model, stage: str, args) -> list[tuple[str, str, float | None, object]]:
    """(attack, mask, l-inf budget or None, attack object) for one model and stage."""
    ours = LRPC if stage == "coarse" else LRPF
    size = {"steps": 10, "search_steps": 2, "refresh": 5} if args.quick else {}
    runs = [
        (ours.__name__, mask, None,
         ours(model, eps=args.eps_max, minimal_eps=True, mask=mask, seed=args.seed, **size))
        for mask in args.masks
    ]  # fmt: skip
    quick = args.quick

    def ta(name, **kw):
        # torchattacks reshapes with .view: it needs contiguous batches
        return TorchattacksAttack(
            model, name, stage, seed=args.seed, memory_format="contiguous", **kw
        )

    runs += [
        ("torchattacks.APGD", "none", b, ta("APGD", eps=b, loss="ce", steps=3 if quick else 100))
        for b in args.linf
    ]
    runs += [
        ("torchattacks.FAB", "none", None,
         ta("FAB", norm="Linf", eps=args.eps_max, steps=3 if quick else 100)),
        ("torchattacks.DeepFool", "none", None, ta("DeepFool", steps=3 if quick else 50)),
        ("torchattacks.SparseFool", "none", None, ta("SparseFool", steps=2 if quick else 10)),
        ("torchattacks.Pixle", "none", None,
         ta("Pixle", restarts=2 if quick else 20, max_iterations=2 if quick else 10)),
        ("torchattacks.OnePixel", "none", None,
         ta("OnePixel", pixels=1, steps=2 if quick else 10, popsize=10)),
    ]  # fmt: skip
    if args.attacks:
        runs = [r for r in runs if r[0].removeprefix("torchattacks.") in args.attacks]
    return runs


def _row(records: pd.DataFrame, args, budget: float | None) -> dict:
    agg = aggregate(records, seed=args.seed, n_boot=args.n_boot)
    row = {k: agg[k] for k in SUMMARY}
    for norm, grid in (("linf", args.linf), ("l0", args.l0)):
        curve = fr_curve(records, norm, grid=grid).fooling_ratio.to_numpy()
        for b, fr in zip(grid, curve):
            name = f"fr_{norm}@{b * 255:g}/255" if norm == "linf" else f"fr_l0@{b:g}"
            # a fixed-budget row answers only at its own budget
            fixed_elsewhere = norm == "linf" and budget is not None and b != budget
            row[name] = np.nan if fixed_elsewhere else float(fr)
    success = records["success"].to_numpy(dtype=bool)
    l0 = records["l0"].to_numpy(dtype=np.float64)[success]
    row["l0_median"] = float(np.median(l0)) if l0.size else np.nan
    row["l0_median_lo"], row["l0_median_hi"] = bootstrap_ci(
        l0, np.median, args.n_boot, seed=args.seed
    )
    return row


def _markdown(df: pd.DataFrame) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--models", nargs="+", default=["shapes-vgg16", "shapes-vgg16-at"])
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("-n", "--n", type=int, default=500, help="test-split images")
    p.add_argument("--masks", nargs="+", default=["lrp", "gradient", "random"])
    p.add_argument("--linf", nargs="+", type=_fraction, default=[4 / 255, 8 / 255])
    p.add_argument("--l0", nargs="+", type=float, default=[0.01, 0.05, 0.15])
    p.add_argument("--eps-max", type=_fraction, default=16 / 255)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="few steps everywhere (a smoke run)")
    p.add_argument("--attacks", nargs="+", help="run only these (LRPC, LRPF, APGD, FAB, ...)")
    done = p.add_mutually_exclusive_group()
    done.add_argument("--resume", action="store_true", help="keep the rows already in --out")
    done.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    args = p.parse_args(argv)
    if max(args.linf) > args.eps_max:
        p.error(f"--linf budgets must not exceed --eps-max ({args.eps_max:.4f})")
    unknown = sorted(set(args.attacks or ()) - set(ATTACKS))
    if unknown:
        p.error(f"unknown --attacks {', '.join(unknown)}; choose from {', '.join(ATTACKS)}")
    out = Path(args.out)
    rows, all_records = _previous(out, args, p)
    done = {_key_tuple(row) for row in rows}
    out.mkdir(parents=True, exist_ok=True)
    x, y, _ = ShapesC2F(args.n, SHAPES_SPLITS["test"]).tensors()
    x, y = x.to(args.device), y.to(args.device)
    for model_name in args.models:
        model = load_model(model_name, map_location=args.device)
        for stage in args.stages:
            for attack_name, mask, budget, attack in _runs(model, stage, args):
                key = {"model": model_name, "stage": stage, "attack": attack_name, "mask": mask,
                       "budget": np.nan if budget is None else budget}  # fmt: skip
                if _key_tuple(key) in done:
                    continue
                start = time.perf_counter()
                res = attack(x, y)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                records = per_image_records(
                    model, x, res.x_adv, y, stage, keep_coarse=attack_name == "LRPF",
                    queries=res.queries, eps=res.eps, relevance=False,
                )  # fmt: skip
                rows.append({**key, **_row(records, args, budget), "seconds": seconds,
                             "device": args.device, "threads": torch.get_num_threads(),
                             "n": args.n})  # fmt: skip
                all_records.append(records.assign(**key))
                fr = rows[-1]["fooling_ratio"]
                print(f"{model_name} {stage} {attack_name} {mask}: FR {fr:.3f}, {seconds:.1f} s",
                      flush=True)  # fmt: skip
                _write(out, rows, all_records)
    print(f"wrote {out / 'summary.csv'}, {out / 'summary.md'}, {out / 'records.csv.gz'}")
    return 0


def _key_tuple(row) -> tuple:
    budget = row["budget"]
    return (row["model"], row["stage"], row["attack"], row["mask"],
            None if pd.isna(budget) else round(float(budget), 9))  # fmt: skip


def _previous(out: Path, args, parser) -> tuple[list[dict], list[pd.DataFrame]]:
    """The rows and records already in ``out`` with ``--resume``; none otherwise (and an error
    when ``out`` holds a summary that neither ``--resume`` nor ``--overwrite`` allows)."""
    summary, records = out / "summary.csv", out / "records.csv.gz"
    if not summary.exists() or args.overwrite:
        return [], []
    if not args.resume:
        parser.error(f"{summary} exists: pass --resume to keep its rows or --overwrite")
    rows = pd.read_csv(summary).to_dict("records")
    if any(row.get("n") != args.n for row in rows):
        parser.error(f"{summary} holds rows for another -n than {args.n}: resume with the same -n")
    return rows, [pd.read_csv(records)] if records.exists() else []


def _write(out: Path, rows: list[dict], all_records: list[pd.DataFrame]) -> None:
    summary = pd.DataFrame(rows)
    atomic_write(out / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False))
    atomic_write(
        out / "records.csv.gz",
        lambda tmp: pd.concat(all_records).to_csv(tmp, index=False, compression="gzip"),
    )
    atomic_write_text(out / "summary.md", _markdown(summary))


if __name__ == "__main__":
    raise SystemExit(main())

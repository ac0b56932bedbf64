"""Validation sweep of LRPC's and LRPF's ``lam``, ``steps`` and ``refresh`` under the ``minimal``
protocol, on the shapes VALIDATION split, and the rule that chooses their defaults from it.

    python scripts/sweep_defaults.py --out DIR -n 64 --threads 1   # runs + report
    python scripts/sweep_defaults.py --out DIR -n 1 --models shapes-vgg16 --attacks lrpc \
        --search-steps 1                                            # a smoke run
    python scripts/sweep_defaults.py --out DIR --report-only      # the report from DIR/runs/
    python scripts/sweep_defaults.py --out DIR -n 64 --run-chosen  # the check of rule 3

Every row is an ordinary ``c2f-bench run`` (``RunConfig``: ``split="val"``, never test images;
``protocols=["minimal"]``, mask ``lrp``, figures off) written to ``DIR/runs/`` (leaderboard,
per-image records, budget curves, adversarial images); the report is read from that leaderboard,
so ``--report-only`` rebuilds it from the committed runs. Several processes may run disjoint
``--models`` into the same ``DIR`` at once (the leaderboard upsert is locked).

The grid, for each attack (LRPC, LRPF) and each model (``cell``), one setting changed at a time
around the *reference* ``steps=100, refresh=50, lam=0`` (``top_k``, ``alpha`` and LRPF's
``kappa`` stay at their defaults):

- ``lam`` in {0, 0.1, 1, 10} (the relative weight of the normalised relevance gradient; 0 is the
  reference: the relevance term must earn its place);
- ``steps/refresh`` in {100/50, 50/10, 30/10, 20/5}.

The selection rule (fixed before the sweep ran; the metric of every row is its censored median
minimal l-inf, failures counted as +inf, with its distribution-free 95% interval):

1. ``steps/refresh``: in each cell, a setting is *admissible* when its interval overlaps the
   interval of the cell's best (smallest-median) setting. Among the settings admissible in
   every cell, the one with the fewest queries per image summed over the cells; 100/50 if none.
2. ``lam``: 0 unless a value > 0 has its median below the lower end of ``lam=0``'s interval in
   at least three quarters of the cells (three of the four) and above its upper end in none;
   among such values the one below it in most cells, ties broken by the smaller sum of medians.
3. When both choices differ from the reference, ``--run-chosen`` runs the chosen combination as
   a ``chosen`` row per cell: a check reported beside the others, not part of the choice.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from c2f_attacks._io import atomic_write_text
from c2f_attacks.attacks import LRPF_DEFAULTS
from c2f_attacks.data import SHAPES_SPLITS
from c2f_attacks.leaderboard import read_leaderboard
from c2f_attacks.runner import DEFAULT_MODELS, RunConfig, run

ATTACKS = ("lrpc", "lrpf")
REFERENCE = {"steps": 100, "refresh": 50, "lam": 0.0}
LAMS = (0.0, 0.1, 1.0, 10.0)
STEPS_REFRESH = ((100, 50), (50, 10), (30, 10), (20, 5))
#: what the report shows per row (the leaderboard's columns)
COLUMNS = ("fooling_ratio", "fooling_ratio_lo", "fooling_ratio_hi", "linf_median",
           "linf_median_lo", "linf_median_hi", "l0_mean", "object_share",
           "queries_per_image", "ms_per_image")  # fmt: skip


def grid() -> list[tuple[str, str, dict]]:
    """``(knob, value label, settings)`` for every setting of a cell, the reference once."""
    rows = [("reference", "", dict(REFERENCE))]
    rows += [("lam", f"{lam:g}", {**REFERENCE, "lam": lam}) for lam in LAMS
             if lam != REFERENCE["lam"]]  # fmt: skip
    rows += [
        ("steps/refresh", f"{s}/{r}", {**REFERENCE, "steps": s, "refresh": r})
        for s, r in STEPS_REFRESH
        if (s, r) != (REFERENCE["steps"], REFERENCE["refresh"])
    ]
    return rows


def run_config(model: str, attack: str, settings: dict, args: argparse.Namespace) -> RunConfig:
    """One sweep row as a ``c2f-bench run`` configuration."""
    return RunConfig(
        model=model, dataset="shapes", split="val", n=args.num_images, attacks=[attack],
        masks=["lrp"], protocols=["minimal"], settings={attack: settings},
        out=str(args.out / "runs"), allow_results_dir=True, device=args.device,
        batch_size=args.batch_size, search_steps=args.search_steps, figures=False, progress=False,
        seed=0,
    )  # fmt: skip


# ----------------------------------------------------------------------------- the rule
def _setting(row: pd.Series) -> tuple[int, int, float]:
    """(steps, refresh, lam) of a leaderboard row (its ``steps`` column and ``config``)."""
    config = _config(row)
    return int(row["steps"]), int(config["refresh"]), float(config["lam"])


def _config(row: pd.Series) -> dict[str, str]:
    """A leaderboard row's ``config`` column (``name=value;...``) as a mapping."""
    return dict(part.split("=", 1) for part in row["config"].split(";") if part)


def _overlap(a: dict, b: dict) -> bool:
    return a["linf_median_lo"] <= b["linf_median_hi"] and b["linf_median_lo"] <= a["linf_median_hi"]


def choose(rows: list[dict]) -> dict:
    """The rule of the module docstring applied to the sweep's rows: ``{"steps", "refresh",
    "lam", "admissible": {cell: [labels]}, "lam_below": {label: cells}, ...}``."""
    cells = sorted({(r["model"], r["attack"]) for r in rows})
    swept = [r for r in rows if r["knob"] in ("reference", "steps/refresh")]
    labels = list(dict.fromkeys(f"{r['steps']}/{r['refresh']}" for r in swept))
    admissible, queries = {}, dict.fromkeys(labels, 0.0)
    for cell in cells:
        group = {
            f"{r['steps']}/{r['refresh']}": r for r in swept if (r["model"], r["attack"]) == cell
        }
        best = min(group.values(), key=lambda r: r["linf_median"])
        admissible["/".join(cell)] = [k for k, r in group.items() if _overlap(r, best)]
        for k, r in group.items():
            queries[k] += r["queries_per_image"]
    everywhere = [k for k in labels if all(k in a for a in admissible.values())]
    reference = f"{REFERENCE['steps']}/{REFERENCE['refresh']}"
    chosen_sr = min(everywhere, key=lambda k: queries[k]) if everywhere else reference

    lam_rows = [r for r in rows if r["knob"] in ("reference", "lam")]
    zero = {(r["model"], r["attack"]): r for r in lam_rows if r["lam"] == 0}
    below, above, median_sum = {}, {}, {}
    for lam in sorted({r["lam"] for r in lam_rows} - {0.0}):
        at = {(r["model"], r["attack"]): r for r in lam_rows if r["lam"] == lam}
        below[lam] = [
            "/".join(c) for c in cells if at[c]["linf_median"] < zero[c]["linf_median_lo"]
        ]
        above[lam] = [
            "/".join(c) for c in cells if at[c]["linf_median"] > zero[c]["linf_median_hi"]
        ]
        median_sum[lam] = sum(at[c]["linf_median"] for c in cells)
    winners = [lam for lam in below
               if len(below[lam]) >= math.ceil(0.75 * len(cells)) and not above[lam]]  # fmt: skip
    chosen_lam = (min(winners, key=lambda lam: (-len(below[lam]), median_sum[lam]))
                  if winners else 0.0)  # fmt: skip
    steps, refresh = (int(v) for v in chosen_sr.split("/"))
    return {"steps": steps, "refresh": refresh, "lam": chosen_lam, "admissible": admissible,
            "admissible_everywhere": everywhere, "queries_summed": queries,
            "lam_below_zero_interval": {f"{k:g}": v for k, v in below.items()},
            "lam_above_zero_interval": {f"{k:g}": v for k, v in above.items()}}  # fmt: skip


def sweep_rows(board: pd.DataFrame) -> list[dict]:
    """The sweep's rows of a leaderboard: each labelled with its knob (the setting it changes
    from the reference; ``chosen`` for a check of the chosen combination)."""
    rows = []
    for _, row in board.iterrows():
        steps, refresh, lam = _setting(row)
        changed = [k for k, v in (("steps", steps), ("refresh", refresh), ("lam", lam))
                   if v != REFERENCE[k]]  # fmt: skip
        if not changed:
            knob, value = "reference", ""
        elif changed == ["lam"]:
            knob, value = "lam", f"{lam:g}"
        elif "lam" not in changed:
            knob, value = "steps/refresh", f"{steps}/{refresh}"
        else:
            knob, value = "chosen", f"{steps}/{refresh}, lam {lam:g}"
        rows.append({"model": row["model"], "attack": row["attack"].upper(), "knob": knob,
                     "value": value, "steps": steps, "refresh": refresh, "lam": lam,
                     "n": int(row["n"]), "row_id": row["row_id"],
                     **{c: float(row[c]) for c in COLUMNS}})  # fmt: skip
    order = {"reference": 0, "lam": 1, "steps/refresh": 2, "chosen": 3}
    return sorted(rows, key=lambda r: (r["model"], r["attack"], order[r["knob"]], -r["steps"],
                                       r["lam"]))  # fmt: skip


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.4g}")
    return str(value)


def markdown(meta: dict, rows: list[dict], choice: dict) -> str:
    lines = [
        "# LRPC / LRPF defaults: validation sweep under the minimal protocol",
        "",
        f"Generated by `python scripts/sweep_defaults.py {meta['argv']}` at commit "
        f"{meta['git_commit']}: models {', '.join(meta['models'])}, {meta['n']} images of the "
        f"shapes validation split (seed {meta['split_seed']}; never test images), mask `lrp`, "
        f"protocol `minimal` (bisection to eps-max 64/255 in {meta['search_steps']} halvings: "
        f"resolution {64 / 2 ** int(meta['search_steps']):g}/255), torch {meta['torch']}, "
        f"{meta['threads']} thread(s) on a shared "
        "2-core machine (times are indicative only). Every row is an ordinary run: "
        "`runs/leaderboard.csv` and `runs/records/` beside this file.",
        "",
        f"Reference: steps {REFERENCE['steps']}, refresh {REFERENCE['refresh']}, lam "
        f"{REFERENCE['lam']:g}; the other settings at their defaults ({meta['fixed']}). "
        "`linf_median`: the censored median minimal l-inf (failures at the bound count as "
        "+inf) with its distribution-free 95% interval; FR with its exact interval; "
        "`queries_per_image` counts every model call of the search.",
        "",
        "| model | attack | knob | value | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for r in rows:
        values = " | ".join(_fmt(r[c]) for c in COLUMNS)
        lines.append(f"| {r['model']} | {r['attack']} | {r['knob']} | {r['value']} | {values} |")
    lines += ["", "## The rule, applied", "", meta["rule"], ""]
    lines += [f"- steps/refresh admissible in {cell}: {', '.join(v)}"
              for cell, v in choice["admissible"].items()]  # fmt: skip
    lines += [
        f"- admissible in every cell: {', '.join(choice['admissible_everywhere']) or 'none'}; "
        "queries per image summed over the cells: "
        + ", ".join(f"{k}: {v:.0f}" for k, v in choice["queries_summed"].items()),
        "- lam: cells where the median lies below lam=0's interval: "
        + "; ".join(f"{k}: {len(v)} ({', '.join(v) or '-'})"
                    for k, v in choice["lam_below_zero_interval"].items())
        + "; above it: "
        + "; ".join(f"{k}: {len(v)}" for k, v in choice["lam_above_zero_interval"].items()),
        "",
        f"**Chosen: steps {choice['steps']}, refresh {choice['refresh']}, lam "
        f"{choice['lam']:g}** (top_k, alpha, kappa unchanged).",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def report(out: Path, argv: Sequence[str], threads: int) -> dict | None:
    """Read ``out/runs/leaderboard.csv``, apply the rule, write ``out/sweep_defaults.{md,json}``
    and return the choice (None, and nothing written, while a grid row is missing)."""
    board = read_leaderboard(out / "runs" / "leaderboard.csv")
    rows = sweep_rows(board)
    have = {(r["model"], r["attack"], r["steps"], r["refresh"], r["lam"]) for r in rows}
    cells = sorted({(r["model"], r["attack"]) for r in rows})
    missing = [
        (*cell, s["steps"], s["refresh"], s["lam"])
        for cell in cells
        for _, _, s in grid()
        if (*cell, s["steps"], s["refresh"], s["lam"]) not in have
    ]
    if missing:
        print(
            f"sweep incomplete, no report written: {len(missing)} rows missing, e.g. {missing[0]}"
        )
        return None
    choice = choose(rows)
    rule = __doc__[__doc__.index("The selection rule") :]
    meta = {
        "argv": " ".join(argv), "models": sorted({r["model"] for r in rows}),
        "n": int(board["n"].max()),
        "split_seed": SHAPES_SPLITS["val"], "reference": REFERENCE,
        "search_steps": _config(board.iloc[0])["search_steps"],
        "defaults": {**LRPF_DEFAULTS, "steps": choice["steps"], "refresh": choice["refresh"],
                     "lam": choice["lam"]},
        "fixed": ", ".join(f"{k} {v:.4g}" for k, v in LRPF_DEFAULTS.items()
                           if k in ("top_k", "alpha", "kappa")),
        "git_commit": str(board["git_commit"].iloc[0]), "torch": torch.__version__,
        "threads": threads, "device": str(board["device"].iloc[0]), "rule": rule.strip(),
    }  # fmt: skip
    path = out / "sweep_defaults.md"
    atomic_write_text(path, markdown(meta, rows, choice))
    atomic_write_text(
        path.with_suffix(".json"),
        json.dumps({"meta": meta, "choice": choice, "rows": rows}, indent=2) + "\n",
    )
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return choice


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for runs/ and sweep_defaults.{md,json}")  # fmt: skip
    parser.add_argument("-n", "--num-images", type=int, default=64)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--search-steps", type=int, default=RunConfig.search_steps,
                        help="halvings of the minimal bisection (fewer: smoke runs)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest on a loaded machine)")  # fmt: skip
    parser.add_argument("--report-only", action="store_true",
                        help="no runs: the report from OUT/runs/leaderboard.csv")  # fmt: skip
    parser.add_argument(
        "--run-chosen",
        action="store_true",
        help="run only the chosen combination (rule 3), then the report",
    )
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out must be a folder, got the file {args.out}")
    if args.num_images < 1 or args.batch_size < 1:
        parser.error("--num-images and --batch-size must be positive")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    argv = sys.argv[1:] if argv is None else argv
    if args.run_chosen:
        choice = report(args.out, argv, torch.get_num_threads())
        if choice is None:
            parser.error("--run-chosen needs the complete sweep in OUT/runs/")
        settings = [{k: choice[k] for k in REFERENCE}]
    else:
        settings = [s for _, _, s in grid()]
    if not args.report_only:
        configs = [run_config(model, attack, s, args) for model in args.models
                   for attack in args.attacks for s in settings]  # fmt: skip
        for cfg in configs:  # every configuration is checked before the first attack
            cfg.plans()
        for cfg in configs:
            row = run(cfg).iloc[0]
            print(f"{cfg.model} {row['attack']} {row['config']}: median l-inf "
                  f"{row['linf_median']:.4f} [{row['linf_median_lo']:.4f}, "
                  f"{row['linf_median_hi']:.4f}], queries {row['queries_per_image']:.0f}",
                  flush=True)  # fmt: skip
    report(args.out, argv, torch.get_num_threads())


if __name__ == "__main__":
    main()

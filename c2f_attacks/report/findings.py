"""``findings.md``: every findings table, each under the file it comes from.

A section is a small function registered with :func:`section`: it names the files it reads (a
glob inside the results folder) and the command that writes them, and renders Markdown from
them. The findings hold the sections whose files are present, in registration order; a section
whose files are absent, or hold nothing of its kind (no targeted rows, say), is one line at the
end saying which file would produce it. Adding a section is one decorated function::

    @section("Ablation", "ablation/summary.csv", "python scripts/ablation.py --out results")
    def _ablation(ctx: Context, files: list[Path]) -> str:
        ...
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.records import is_missing
from c2f_attacks.report import fmt
from c2f_attacks.report.models import model_cards
from c2f_attacks.report.sources import Results, Run
from c2f_attacks.report.tables import (
    BUDGET_COLUMNS,
    RESULT_COLUMNS,
    groups,
    ordered,
    present,
    row_label,
    targeted,
    targeted_tables,
    transfer_matrices,
)


@dataclass(frozen=True)
class Context:
    """What a section renders from: the results, and the folder of the file being written
    (links are relative to it)."""

    results: Results
    base: Path

    def link(self, path: Path) -> str:
        """``[results/x.csv](../results/x.csv)``: the file as shown, linked from ``base``."""
        href = os.path.relpath(path.resolve(), self.base.resolve()).replace(os.sep, "/")
        return f"[{self.results.show(path)}]({href})"

    def source(self, *paths: Path) -> str:
        return "Source: " + ", ".join(self.link(p) for p in paths) + "."


Render = Callable[[Context, list[Path]], str]


@dataclass(frozen=True)
class Section:
    title: str
    source: str  #: glob inside the results folder
    produced_by: str  #: the command that writes the files
    render: Render


SECTIONS: list[Section] = []


def section(title: str, source: str, produced_by: str) -> Callable[[Render], Render]:
    """Register a findings section (in the order of registration)."""

    def register(render: Render) -> Render:
        SECTIONS.append(Section(title, source, produced_by, render))
        return render

    return register


def _runs(ctx: Context, files: list[Path]) -> list[Run]:
    folders = {f.parent for f in files}
    return [run for run in ctx.results.runs if run.folder in folders]


def _run_heading(run: Run) -> str:
    commits = sorted({str(c) for c in run.leaderboard.get("git_commit", []) if not is_missing(c)})
    at = f", measured at commit {', '.join(commits)}" if commits else ""
    models = ", ".join(sorted(set(run.leaderboard["model"])))
    return f"### {run.shown}/: {models}, {run.images} images{at}"


# ----------------------------------------------------------------------------- sections
@section("Models", "**/leaderboard.csv", "c2f-bench run --out RESULTS_DIR")
def _models(ctx: Context, files: list[Path]) -> str:
    parts = []
    for card in model_cards(ctx.results):
        rows = [[name, value] for name, value in card.facts]
        parts.append(f"### {card.name}\n\n{fmt.md_table(['', ''], rows)}")
    return "\n\n".join(parts)


@section("Leaderboards", "**/leaderboard.csv", "c2f-bench run --out RESULTS_DIR")
def _leaderboards(ctx: Context, files: list[Path]) -> str:
    """Per run, model and stage the untargeted rows (the targeted ones have a section of
    their own)."""
    parts = []
    for run in _runs(ctx, files):
        board = run.leaderboard[~targeted(run.leaderboard)]
        if not len(board):
            continue
        parts.append(f"{_run_heading(run)}\n\n{ctx.source(run.folder / 'leaderboard.csv')}")
        for (model, stage), part in groups(board, ("model", "stage")):
            part = ordered(part)
            first = part.iloc[0]
            columns = present(RESULT_COLUMNS, part)
            if stage == "coarse":  # both fine-stage rules are a fine-stage table's
                columns = [c for c in columns if c.source != "fr_fine_any"]
            rows = [[c.text(r) for c in columns] for r in part.to_dict("records")]
            clean = (f"clean accuracy coarse {fmt.num(first.get('clean_acc_coarse'))}, fine "
                     f"{fmt.num(first.get('clean_acc_fine'))}")  # fmt: skip
            table = fmt.md_table([c.header for c in columns], rows, [c.numeric for c in columns])
            parts.append(f"#### {model}, {stage} stage ({clean})\n\n{table}")
    return "\n\n".join(parts)


@section("Targeted attacks", "**/leaderboard.csv", "c2f-bench run --out RESULTS_DIR")
def _targeted(ctx: Context, files: list[Path]) -> str:
    """Per run and target policy the targeted rows (success rule ``target_reached``)."""
    parts = []
    for run in _runs(ctx, files):
        tables = targeted_tables(run.leaderboard)
        if not tables:
            continue
        parts.append(
            f"{_run_heading(run)}\n\n{ctx.source(run.folder / 'leaderboard.csv')} Each image "
            "is asked to be decided as a class drawn by the row's target policy; the fooling "
            "ratio (FR) is the share of the images whose attacked stage decides that class, the "
            "median l-inf is censored (an image not sent to its class counts as +inf)."
        )
        for title, columns, part in tables:
            rows = [[c.text(r) for c in columns] for r in part.to_dict("records")]
            table = fmt.md_table([c.header for c in columns], rows, [c.numeric for c in columns])
            parts.append(f"#### {title}\n\n{table}")
    return "\n\n".join(parts)


@section("Budgets at which half and 90% of the images are fooled", "**/leaderboard.csv",
         "c2f-bench run --out RESULTS_DIR")  # fmt: skip
def _budgets(ctx: Context, files: list[Path]) -> str:
    parts = []
    for run in _runs(ctx, files):
        board = ordered(run.leaderboard)
        columns = present(BUDGET_COLUMNS, board)
        if not columns:
            continue
        rows = [[r["model"], r["stage"], row_label(r), *(c.text(r) for c in columns)]
                for r in board.to_dict("records")]  # fmt: skip
        header = ["model", "stage", "row", *(c.header for c in columns)]
        right = [False] * 3 + [True] * len(columns)
        parts.append(f"{_run_heading(run)}\n\n{ctx.source(run.folder / 'leaderboard.csv')} "
                     "Empty: the row never fools that share of the images.\n\n"
                     f"{fmt.md_table(header, rows, right)}")  # fmt: skip
    return "\n\n".join(parts)


@section("Budget curves", "**/budget_curves.csv", "c2f-bench run --out RESULTS_DIR")
def _budget_curves(ctx: Context, files: list[Path]) -> str:
    parts = []
    for run in _runs(ctx, files):
        curves = run.budget_curves
        board = ordered(run.leaderboard).to_dict("records")  # the leaderboard's row order
        parts.append(f"{_run_heading(run)}\n\n{ctx.source(run.folder / 'budget_curves.csv')} "
                     "Fooling ratio within each budget, with its 95% interval.")  # fmt: skip
        for (norm,), part in groups(curves, ("norm",)):
            budgets = sorted(set(part["budget"]))
            head = [fmt.budget(b) if norm == "linf" else fmt.num(b) for b in budgets]
            rows = []
            by_row = {rid: mine.set_index("budget") for rid, mine in part.groupby("row_id")}
            for row in (r for r in board if r["row_id"] in by_row):
                mine = by_row[row["row_id"]]
                cells = [fmt.column_interval(mine.loc[b], "fooling_ratio", 2)
                         if b in mine.index else "" for b in budgets]  # fmt: skip
                rows.append([row["model"], row["stage"], row_label(row), *cells])
            right = [False] * 3 + [True] * len(budgets)
            parts.append(
                f"#### {norm}\n\n{fmt.md_table(['model', 'stage', 'row', *head], rows, right)}"
            )
    return "\n\n".join(parts)


@section("Transfer and deployment", "**/transfer.csv",
         "c2f-bench transfer --from RESULTS_DIR --targets ...")  # fmt: skip
def _transfer(ctx: Context, files: list[Path]) -> str:
    parts = []
    for run in _runs(ctx, files):
        parts.append(
            f"{_run_heading(run)}\n\n{ctx.source(run.folder / 'transfer.csv')} Each row's "
            "adversarial images evaluated on each target: the transfer fooling ratio (the row's "
            "own success rule on the target) and the survival of the row's successes, with 95% "
            "intervals; `onnx:*` targets are the row's own model deployed."
        )
        for matrix in transfer_matrices(run.transfer):
            for column, what in (("transfer_fooling_ratio", "transfer fooling ratio"),
                                 ("survival", "survival")):  # fmt: skip
                rows = [
                    [label, *(fmt.column_interval(matrix.cells[(i, j)], column, 2)
                              if (i, j) in matrix.cells else ""
                              for j in range(len(matrix.targets)))]
                    for i, label in enumerate(matrix.sources)
                ]  # fmt: skip
                table = fmt.md_table(["row", *matrix.targets], rows,
                                     [False] + [True] * len(matrix.targets))  # fmt: skip
                parts.append(f"#### {matrix.title}: {what}\n\n{table}")
    return "\n\n".join(parts)


@section("Robustness of the defended model", "robustness_*.json",
         "python scripts/check_robustness.py --model MODEL --out RESULTS_DIR")  # fmt: skip
def _robustness(ctx: Context, files: list[Path]) -> str:
    parts = []
    for path in files:
        data = ctx.results.json(path)
        clean = data.get("clean", {})
        rows = [
            [
                str(r.get("stage")),
                f"{fmt.num(r.get('eps_255'), 0)}/255",
                str(r.get("attack")),
                f"{fmt.percent(r.get('acc'))} [{fmt.percent(r.get('lo'))}, "
                f"{fmt.percent(r.get('hi'))}]",
                str(r.get("n")),
            ]
            for r in sorted(
                data.get("robust", []),
                key=lambda r: (str(r.get("stage")), float(r.get("eps_255", 0))),
            )
        ]
        parts.append(
            f"### {data.get('model', path.stem)}\n\n{ctx.source(path)} Clean accuracy on "
            f"{clean.get('n')} test images: coarse {fmt.percent(clean.get('coarse'), 2)}, fine "
            f"{fmt.percent(clean.get('fine'), 2)}. Robust accuracy: the share of images whose "
            "attacked stage still predicts the true label; `worst` is the per-image minimum "
            "over the attacks.\n\n"
            + fmt.md_table(["stage", "l-inf", "attack", "robust accuracy [95% CI]", "images"],
                           rows, [False, True, False, True, True])
        )  # fmt: skip
    return "\n\n".join(parts)


@section("Hyperparameter sweep (validation split)", "**/sweep_defaults.json",
         "python scripts/sweep_defaults.py --out RESULTS_DIR/sweep")  # fmt: skip
def _sweeps(ctx: Context, files: list[Path]) -> str:
    parts = []
    for path in files:
        data = ctx.results.json(path)
        meta, choice = data.get("meta", {}), data.get("choice", {})
        rows = [
            [str(r.get("model")), str(r.get("attack")),
             str(r["knob"]) if not r.get("value") else f"{r['knob']} = {r['value']}",
             fmt.column_interval(r, "fooling_ratio", 3), fmt.column_interval(r, "linf_median"),
             fmt.count(r.get("queries_per_image"))]
            for r in data.get("rows", [])
        ]  # fmt: skip
        header = ["model", "attack", "setting", "FR [95% CI]", "median l-inf [95% CI]",
                  "mean queries"]  # fmt: skip
        chosen, reference = (
            ", ".join(f"{k} {d[k]:g}" for k in ("steps", "refresh", "lam") if k in d)
            for d in (choice, meta.get("reference", {}))
        )
        parts.append(
            f"### {ctx.results.show(path)}\n\n{ctx.source(path)} Models "
            f"{', '.join(meta.get('models', []))}, {meta.get('n')} validation images (seed "
            f"{meta.get('split_seed')}), protocol minimal, one setting changed per row around "
            f"the reference ({reference}); the median l-inf is censored "
            f"(failures count as +inf). The rule fixed before the sweep (in the file) chose: "
            f"**{chosen}**.\n\n"
            + fmt.md_table(header, rows, [False, False, False, True, True, True])
        )  # fmt: skip
    return "\n\n".join(parts)


@section("Speed ratios", "bench_ratios.json",
         "pytest bench --benchmark")  # fmt: skip
def _bench_ratios(ctx: Context, files: list[Path]) -> str:
    parts = []
    for path in files:
        rows = []
        for name, entry in _ratio_records(ctx.results.json(path), ctx.results.show(path)):
            where = ", ".join(
                f"{k} {entry[k]}"
                for k in (
                    "cpu",
                    "cpu_cores",
                    "threads",
                    "device",
                    "size",
                    "batch",
                    "images",
                    "n",
                    "model",
                    "z_plus_bound",
                    "commit",
                )
                if k in entry
            )
            goal = str(entry.get("goal", ""))
            rows.append([name, fmt.num(entry.get("value"), 3), goal,
                         _meets(entry.get("value"), goal), where])  # fmt: skip
        parts.append(f"{ctx.source(path)} Each ratio measured within one process; one row per "
                     "measurement and CPU model, the latest on each.\n\n"
                     + fmt.md_table(["measurement", "value", "goal", "met", "measured with"],
                                    rows, [False, True, False, False, False]))  # fmt: skip
    return "\n\n".join(parts)


def _meets(value: object, goal: str) -> str:
    """Whether ``value`` meets a goal that starts with a bound (``<= 1.5``, ``>= 2 ...``):
    "yes" or "no"; empty for a goal without one (``none: measured``)."""
    m = re.match(r"\s*(<=|>=)\s*([0-9.]+)", goal)
    if m is None or not isinstance(value, int | float):
        return ""
    bound = float(m.group(2))
    return "yes" if (value <= bound if m.group(1) == "<=" else value >= bound) else "no"


def _ratio_records(data: object, shown: str) -> list[tuple[str, dict]]:
    """``(name, record)`` of ``{name: {cpu: record}}``, by name then CPU; a file of another shape
    is refused, naming the entry."""
    if not isinstance(data, dict):
        raise UserError(f"{shown}: not a JSON object of measurements")
    out = []
    for name in sorted(data):
        per_cpu = data[name]
        if not isinstance(per_cpu, dict) or not all(
            isinstance(r, dict) and "value" in r for r in per_cpu.values()
        ):
            raise UserError(
                f"{shown}: {name!r} is not one record per CPU model (each CPU's name mapped to "
                "a record with a value); rerun pytest bench --benchmark"
            )
        out.extend((name, per_cpu[cpu]) for cpu in sorted(per_cpu))
    return out


@section("Evaluation throughput", "throughput/throughput.json",
         "python scripts/eval_throughput.py --out RESULTS_DIR/throughput")  # fmt: skip
def _throughput(ctx: Context, files: list[Path]) -> str:
    parts = []
    for path in files:
        data = ctx.results.json(path)
        machine = ", ".join(f"{k} {v}" for k, v in sorted(data.get("machine", {}).items()))
        rows = [
            [
                str(r.get("model")),
                str(r.get("device")),
                str(r.get("precision")),
                str(r.get("batch_size")),
                fmt.count(r.get("images_per_s")),
                fmt.num(r.get("agreement_with_fp32")),
            ]
            for r in sorted(
                data.get("rows", []),
                key=lambda r: (str(r.get("model")), str(r.get("device")), str(r.get("precision"))),
            )
        ]
        parts.append(f"{ctx.source(path)} Machine: {machine}.\n\n" + fmt.md_table(
            ["model", "device", "precision", "batch", "images/s", "agreement with FP32"], rows,
            [False, False, False, True, True, True]))  # fmt: skip
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- the file
HEADER = """# Findings

<!-- Generated by `c2f-bench report {shown}`; do not edit: regenerate it. -->

Every table and number below is generated by `c2f-bench report {shown}` from the file named
above it, so none can drift from its source. LRPC and LRPF are the attacks as implemented in
c2f-attacks (defined in c2f-attacks' `docs/attacks.md`); every column is defined in its
`docs/metrics.md`."""


def findings_markdown(ctx: Context, headline: str = "") -> str:
    """The findings file for ``ctx.results``; ``headline`` (Markdown) goes first."""
    parts = [HEADER.format(shown=ctx.results.shown)]
    if headline:
        parts.append(f"## Headline findings\n\n{headline}")
    missing = []
    for sec in SECTIONS:
        files = ctx.results.glob(sec.source)
        if files:  # a section may still have nothing to show (no rows or columns of its kind)
            if body := sec.render(ctx, files).strip():
                parts.append(f"## {sec.title}\n\n{body}")
            else:
                missing.append(f"- {sec.title}: nothing of its kind in `{sec.source}` of "
                               f"{ctx.results.shown}/ (written by "
                               f"`{sec.produced_by}`).")  # fmt: skip
        else:
            missing.append(f"- {sec.title}: no `{sec.source}` in {ctx.results.shown}/ "
                           f"(written by `{sec.produced_by}`).")  # fmt: skip
    if missing:
        parts.append("## Not in these results\n\n" + "\n".join(missing))
    return "\n\n".join(parts) + "\n"

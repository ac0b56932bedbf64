"""``index.html``: the results as one self-contained page (no server, no network).

The page holds the headline findings, the leaderboard of every run (filter by run, model,
attack, stage, mask and protocol, free-text search, sort by any column; a row opens its budget
curves and its attack figure), the targeted rows in a table of their own per target policy,
budget curves side by side per model and stage (a target policy's rows in a chart of their
own), the transfer matrices as heatmaps and the model cards. Plain JavaScript
(``assets/site.js``, about 170 lines, inlined) drives the table: a few dozen to a few thousand
rows need no table library, and inlining it keeps the page one file with nothing to fetch.
Filters, sort and open rows live in the URL fragment, so a view can be bookmarked and a test
can open one directly.

Figures are linked relative to the page (``../figures/<model>/<row>.png``), not embedded, so
the page stays small; charts are inline SVG drawn here (:mod:`c2f_attacks.report.svg`).
"""

from __future__ import annotations

import html
import json
import os
import re
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import pandas as pd

from c2f_attacks.evaluation.budget import fr_curve
from c2f_attacks.evaluation.records import is_missing
from c2f_attacks.report import fmt
from c2f_attacks.report.findings import Context
from c2f_attacks.report.models import model_cards
from c2f_attacks.report.sources import Run
from c2f_attacks.report.svg import NORM_LABEL, Curve, curves_svg
from c2f_attacks.report.tables import (
    RESULT_COLUMNS,
    Column,
    groups,
    ordered,
    present,
    row_label,
    share_colour,
    sort_value,
    target_of,
    targeted_tables,
    transfer_matrices,
)

#: the leaderboard's filter columns (each gets a select)
FILTERS = ("run", "model", "attack", "stage", "mask", "protocol")
#: what a row's detail shows of its key
DETAIL_FACTS = ("row_id", "dataset", "split", "n", "seed", "eps", "steps", "config", "device",
                "eval_backend", "model_hash", "git_commit")  # fmt: skip


def _asset(name: str) -> str:
    return (
        resources.files("c2f_attacks.report").joinpath("assets").joinpath(name).read_text("utf-8")
    )


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _inline_markdown(text: str) -> str:
    """The Markdown of the headlines (bold, code, links) as HTML."""
    out = _e(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', out)


def _href(ctx: Context, path: Path) -> str:
    return os.path.relpath(path.resolve(), ctx.base.resolve()).replace(os.sep, "/")


# ----------------------------------------------------------------------------- curves
def _row_curves(run: Run, row: dict[str, Any], norm: str) -> Curve | None:
    """The row's curve in ``norm``: from budget_curves.csv where the run has one, else the
    exact step function of its records."""
    label = f"{row['model']} {row['stage']} {row_label(row)}"
    if run.budget_curves is not None:
        part = run.budget_curves[(run.budget_curves["row_id"] == row["row_id"])
                                 & (run.budget_curves["norm"] == norm)]  # fmt: skip
        if len(part):
            part = part.sort_values("budget")
            return Curve(
                label,
                list(part["budget"]),
                list(part["fooling_ratio"]),
                list(part["fooling_ratio_lo"]),
                list(part["fooling_ratio_hi"]),
            )
    records = run.records_of(row["row_id"])
    try:
        curve = fr_curve(records, norm)
    except ValueError:  # no such norm in the records
        return None
    if not len(curve) or curve["fooling_ratio"].isna().all():
        return None
    return Curve(label, list(curve["budget"]), list(curve["fooling_ratio"]), steps=True)


def _norms(row: dict[str, Any]) -> tuple[str, ...]:
    masked = not is_missing(row.get("mask")) and row["mask"] != "none"
    return ("linf", "l2", "l0") if masked else ("linf", "l2")


# ----------------------------------------------------------------------------- leaderboard
def _columns(boards: pd.DataFrame) -> list[Column]:
    lead = [Column("run", "run", lambda r: r["run"], numeric=False),
            Column("model", "model", lambda r: str(r["model"]), numeric=False),
            Column("stage", "stage", lambda r: str(r["stage"]), numeric=False)]  # fmt: skip
    return [*lead, *present(RESULT_COLUMNS, boards)]


def _detail(ctx: Context, run: Run, row: dict[str, Any]) -> str:
    charts = [
        curves_svg(
            [c], norm, title=f"fooling ratio within an {NORM_LABEL[norm]}", width=340, height=210
        )
        for norm in _norms(row)
        if (c := _row_curves(run, row, norm)) is not None
    ]
    figure = run.figure(row)
    image = (f'<figure><img loading="lazy" src="{_e(_href(ctx, figure))}" alt="attack figure '
             f'of {_e(row_label(row))}"></figure>' if figure else
             '<p class="note">No attack figure for this row (minimal rows and runs with '
             "--no-figures have none).</p>")  # fmt: skip
    facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(fmt.budget(row[k]) if k == 'eps' else row[k])}</dd>"
                    for k in DETAIL_FACTS if k in row and not is_missing(row[k]))  # fmt: skip
    return (
        f'<div class="detail-grid"><div class="charts">{"".join(charts)}</div>{image}'
        f'<dl class="facts">{facts}</dl></div>'
    )


def _board_data(ctx: Context) -> dict[str, Any]:
    runs = ctx.results.runs
    boards = pd.concat([r.leaderboard for r in runs], ignore_index=True)
    columns = _columns(boards)
    rows, details = [], {}
    for run in runs:
        for row in ordered(run.leaderboard).to_dict("records"):
            row["run"] = run.shown
            ident = f"{run.name}/{row['row_id']}" if run.name else str(row["row_id"])
            cells = {}
            for c in columns:
                value = row.get(c.source) if c.source not in ("run", "protocol") else c.text(row)
                cells[c.source] = [c.text(row), sort_value(value)]
            rows.append({"id": ident, "order": len(rows), "cells": cells})
            details[ident] = _detail(ctx, run, row)
    return {
        "columns": [{"key": c.source, "header": c.header, "numeric": c.numeric} for c in columns],
        "filters": list(FILTERS),
        "rows": rows,
        "details": details,
    }


def _json_script(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/")


def _leaderboard_section(ctx: Context) -> str:
    data = _board_data(ctx)
    headers = {c["key"]: c["header"] for c in data["columns"]}
    filters = "".join(
        f'<label>{_e(headers.get(k, k))}<select id="filter-{k}">'
        '<option value="">all</option></select></label>'
        for k in FILTERS
    )
    sources = ", ".join(
        f'<a href="{_e(_href(ctx, r.folder / "leaderboard.csv"))}">'
        f"{_e(r.shown)}/leaderboard.csv</a>"
        for r in ctx.results.runs
    )
    return (
        '<section id="leaderboard"><h2>Leaderboard</h2>'
        f'<p class="note">From {sources}. Click a column to sort, a row for its budget curves '
        "and attack figure. Intervals are 95%; definitions in the project's docs/metrics.md.</p>"
        f'<div class="filters">{filters}<label>search<input id="filter-q" type="search" '
        'placeholder="any text"></label><span id="board-count"></span></div>'
        '<div class="scroll"><table id="board"><thead><tr></tr></thead><tbody></tbody></table>'
        f'</div><script type="application/json" id="board-data">{_json_script(data)}</script>'
        "</section>"
    )


# ----------------------------------------------------------------------------- other sections
def _targeted_section(ctx: Context) -> str:
    """Per run and target policy a table of the targeted rows (none: no section)."""
    blocks = []
    for run in ctx.results.runs:
        tables = targeted_tables(run.leaderboard)
        if not tables:
            continue
        href = _e(_href(ctx, run.folder / "leaderboard.csv"))
        blocks.append(f'<h3>{_e(run.shown)}/ (<a href="{href}">{_e(run.shown)}/leaderboard.csv'
                      "</a>)</h3>")  # fmt: skip
        for title, columns, part in tables:
            align = ["" if not c.numeric else ' class="num"' for c in columns]
            head = "".join(f"<th{a}>{_e(c.header)}</th>" for c, a in zip(columns, align))
            body = "".join(
                "<tr>" + "".join(f"<td{a}>{_e(c.text(r))}</td>" for c, a in zip(columns, align))
                + "</tr>" for r in part.to_dict("records")
            )  # fmt: skip
            blocks.append(f'<h3>{_e(title)}</h3><div class="scroll"><table class="targeted">'
                          f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                          "</div>")  # fmt: skip
    if not blocks:
        return ""
    return ('<section id="targeted"><h2>Targeted attacks</h2><p class="note">Rows whose success '
            "rule is <code>target_reached</code>: each image is asked to be decided as a class "
            "drawn by the row's target policy; FR is the share of the images whose attacked "
            "stage decides that class, the median l-inf is censored (an image not sent to its "
            "class counts as +inf). 95% intervals.</p>"
            + "".join(blocks) + "</section>")  # fmt: skip


def _curves_section(ctx: Context) -> str:
    blocks = []
    for run in ctx.results.runs:
        charts = []
        board = run.leaderboard.assign(_target=[target_of(r) for r in run.rows])
        # a targeted row's curve counts the images sent to their class: a chart of its own
        for (model, stage, target), part in groups(board, ("model", "stage", "_target")):
            curves = [c for row in ordered(part).to_dict("records")
                      if (c := _row_curves(run, row, "linf")) is not None]  # fmt: skip
            for c in curves:  # the legend names the row; the title has model and stage
                object.__setattr__(c, "label", c.label.split(" ", 2)[2])
            aimed = "" if target == "none" else f", {target} targets"
            if curves:
                charts.append(curves_svg(curves, "linf", title=f"{model}, {stage} stage{aimed}"))
        source = ("budget_curves.csv" if run.budget_curves is not None
                  else "the per-image records (exact steps)")  # fmt: skip
        blocks.append(
            f"<h3>{_e(run.shown)}/ ({run.images} images; from {_e(source)})</h3>"
            f'<div class="charts">{"".join(charts)}</div>'
        )
    return ('<section id="curves"><h2>Budget curves</h2><p class="note">Fooling ratio within an '
            "l-inf budget: the share of all images fooled with a perturbation no larger than "
            "the budget.</p>" + "".join(blocks) + "</section>")  # fmt: skip


def _heat_table(matrix, column: str) -> str:
    head = "".join(f"<th>{_e(t)}</th>" for t in matrix.targets)
    body = []
    for i, label in enumerate(matrix.sources):
        cells = []
        for j in range(len(matrix.targets)):
            row = matrix.cells.get((i, j))
            if row is None:
                cells.append('<td class="cell"></td>')
                continue
            value = row.get(column)
            dark = not is_missing(value) and float(value) > 0.6
            interval = (f"[{fmt.num(row.get(column + '_lo'), 2)}, "
                        f"{fmt.num(row.get(column + '_hi'), 2)}]")  # fmt: skip
            cells.append(
                f'<td class="cell" style="background:{share_colour(value)};'
                f'color:{"#fff" if dark else "#1d2330"}">{fmt.num(value, 2)}'
                f"<small>{interval}</small></td>"
            )
        body.append(f"<tr><th>{_e(label)}</th>{''.join(cells)}</tr>")
    return (
        f'<table class="heat" data-metric="{column}"><thead><tr><th>row \\ target</th>'
        f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _transfer_section(ctx: Context) -> str:
    blocks = []
    for run in ctx.results.runs:
        if run.transfer is None:
            continue
        href = _e(_href(ctx, run.folder / "transfer.csv"))
        src = f'<a href="{href}">{_e(run.shown)}/transfer.csv</a>'
        blocks.append(f"<h3>{_e(run.shown)}/ ({src})</h3>")
        for matrix in transfer_matrices(run.transfer):
            blocks.append(f"<h3>{_e(matrix.title)}</h3><div class=\"scroll\">"
                          f"{_heat_table(matrix, 'transfer_fooling_ratio')}"
                          f"{_heat_table(matrix, 'survival')}</div>")  # fmt: skip
    if not blocks:
        return ""
    return (
        '<section id="transfer"><h2>Transfer and deployment</h2><p class="note">Each row\'s '
        "adversarial images replayed on each target; <code>onnx:*</code> targets are the "
        'row\'s own model deployed. <label>Show <select id="transfer-metric">'
        '<option value="transfer_fooling_ratio">transfer fooling ratio</option>'
        '<option value="survival">survival of the row\'s successes</option></select>'
        "</label> (95% intervals below each value).</p>" + "".join(blocks) + "</section>"
    )


def _models_section(ctx: Context) -> str:
    cards = []
    for card in model_cards(ctx.results):
        facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in card.facts)
        sources = ", ".join(_e(s) for s in card.sources)
        cards.append(
            f'<div class="card"><h3>{_e(card.name)}</h3><dl class="facts">{facts}</dl>'
            f'<p class="note">From {sources} and the checkpoint.</p></div>'
        )
    return (
        f'<section id="models"><h2>Models</h2><div class="cards">{"".join(cards)}</div></section>'
    )


def site_html(ctx: Context, headline: str) -> str:
    """The page for ``ctx.results``, linking files relative to ``ctx.base``; ``headline``: the
    headline findings as Markdown bullets."""
    results = ctx.results
    commits = sorted({str(c) for r in results.runs for c in r.leaderboard.get("git_commit", [])
                      if not is_missing(c)})  # fmt: skip
    at = f" at commit {', '.join(commits)}" if commits else ""
    bullets = "".join(f"<li>{_inline_markdown(line[2:])}</li>" for line in headline.splitlines()
                      if line.startswith("- "))  # fmt: skip
    findings = (f'<section id="findings"><h2>Headline findings</h2><ul class="headlines">'
                f"{bullets}</ul></section>" if bullets else "")  # fmt: skip
    sections = [findings, _leaderboard_section(ctx), _targeted_section(ctx), _curves_section(ctx),
                _transfer_section(ctx), _models_section(ctx)]  # fmt: skip
    nav = "".join(
        f'<a href="#{key}">{label}</a>'
        for key, label in (
            ("findings", "Findings"),
            ("leaderboard", "Leaderboard"),
            ("targeted", "Targeted"),
            ("curves", "Budget curves"),
            ("transfer", "Transfer"),
            ("models", "Models"),
        )
        if f'id="{key}"' in "".join(sections)
    )
    summary = (
        f"{results.shown}/: {len(results.runs)} runs, "
        f"{sum(len(r.leaderboard) for r in results.runs)} leaderboard rows{at}."
    )
    return Template(_asset("site.html")).substitute(
        shown=_e(results.shown), summary=_e(summary), nav=nav, css=_asset("site.css"),
        js=_asset("site.js"), sections="\n".join(s for s in sections if s),
    )  # fmt: skip

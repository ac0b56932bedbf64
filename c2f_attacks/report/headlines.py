"""The headline findings: a few sentences whose every number is read from a results file.

Each headline is a small function registered with :func:`headline`; it picks the rows it
needs (from the run with the most images that has them), writes one Markdown bullet with the
numbers and their 95% intervals and names its source file, or returns None when the results
lack those rows (the headline is then left out). The lead of a bullet names what is compared;
the verdict is computed from the numbers (which value is smaller, and whether the intervals are
disjoint), so that a regenerated result can never sit under a stale claim. Headlines read the
untargeted rows only; targeted rows have a findings section of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from c2f_attacks.attacks import attack_info
from c2f_attacks.evaluation.budget import censored_budgets
from c2f_attacks.evaluation.compare import compare_records
from c2f_attacks.evaluation.exact import holm
from c2f_attacks.evaluation.records import is_missing
from c2f_attacks.leaderboard import config_settings
from c2f_attacks.report import fmt
from c2f_attacks.report.findings import Context
from c2f_attacks.report.sources import Run
from c2f_attacks.report.tables import row_label, target_of

Headline = Callable[[Context], "str | None"]
#: the level of the headlines' paired tests (after Holm's adjustment)
ALPHA = 0.05
HEADLINES: list[Headline] = []


def headline(fn: Headline) -> Headline:
    """Register a headline (in the order of registration)."""
    HEADLINES.append(fn)
    return fn


def headline_markdown(ctx: Context) -> str:
    """The registered headlines that the results support, one bullet each."""
    return "\n".join(f"- {text}" for fn in HEADLINES if (text := fn(ctx)))


# ----------------------------------------------------------------------------- row picking
Row = Mapping[str, Any]


def _pick(board: list[Row], **match: Any) -> Row | None:
    """The one row matching every ``column=value``; None when no row or several rows match."""
    rows = [r for r in board if all(r.get(c) == v for c, v in match.items())]
    return rows[0] if len(rows) == 1 else None


def _masked(board: list[Row], model: str, attack: str, mask: str) -> Row | None:
    """An LRP-guided row: under the ``minimal`` protocol where the run has it (a headline never
    rests on a diagnostic row when a comparable one exists), else its first-success row."""
    for protocol in ("minimal", "first_success"):
        row = _pick(board, model=model, attack=attack, mask=mask, protocol=protocol)
        if row is not None:
            return row
    return None


def _largest(ctx: Context, find: Callable[[Run], Any]) -> tuple[Run, Any] | None:
    """The run with the most images for which ``find(run)`` is not None, and that value."""
    found = [(run, value) for run in ctx.results.runs if (value := find(run)) is not None]
    if not found:
        return None
    return max(found, key=lambda rv: (rv[0].images, -ctx.results.runs.index(rv[0])))


def _untargeted(run: Run) -> list[Row]:
    """The run's untargeted leaderboard rows: every headline compares untargeted attacks (a
    targeted row's fooling ratio counts the images sent to a requested class)."""
    return [r for r in run.rows if target_of(r) == "none"]


def _untargeted_transfer(run: Run) -> list[Row]:
    """The run's transfer rows of untargeted source rows."""
    return [r for r in run.transfer_rows if target_of(r) == "none"]


def _models(run: Run) -> list[str]:
    return sorted(set(run.leaderboard["model"]))


@dataclass(frozen=True)
class Pair:
    """Two rows compared on one column: ``a`` against ``b``."""

    what: str
    a: Row
    b: Row

    def text(self, column: str, digits: int = 3) -> str:
        return (f"{self.what} {fmt.column_interval(self.a, column, digits)} vs "
                f"{fmt.column_interval(self.b, column, digits)}")  # fmt: skip


def _significant(
    run: Run, pairs: list[Pair], column: str, metric: str = ""
) -> tuple[int, int, np.ndarray]:
    """In how many pairs a paired per-image sign test of ``metric`` (:func:`compare_records`'
    row; ``column`` when not given; failures censored at +inf, Holm-adjusted over the pairs)
    finds a's ``column`` lower, in how many higher, and the adjusted p-values."""
    tests = [
        compare_records(run.records_of(p.a["row_id"]), run.records_of(p.b["row_id"]))
        .set_index("metric")
        .loc[metric or column]
        for p in pairs
    ]
    adjusted = holm(np.array([float(t["p_value"]) for t in tests]))
    below = sum(
        1 for p, q in zip(pairs, adjusted) if q < ALPHA and float(p.a[column]) < float(p.b[column])
    )
    above = sum(
        1 for p, q in zip(pairs, adjusted) if q < ALPHA and float(p.a[column]) > float(p.b[column])
    )
    return below, above, adjusted


def _verdict(run: Run, pairs: Iterable[Pair], column: str, a_name: str, metric: str = "") -> str:
    """How often a's value of ``column`` is the smaller, and in how many pairs the paired test
    of :func:`_significant` finds it lower or higher."""
    pairs = list(pairs)
    smaller = [p for p in pairs if float(p.a[column]) < float(p.b[column])]
    below, above, adjusted = _significant(run, pairs, column, metric)
    return (
        f"{a_name} is lower in {len(smaller)} of {len(pairs)}; the paired per-image sign test "
        f"(Holm over the {len(pairs)}, p < {ALPHA}) finds it lower in {below} and higher in "
        f"{above} (smallest adjusted p {fmt.p_value(float(min(adjusted)))})"
    )


def _source(ctx: Context, run: Run, file: str, extra: str = "") -> str:
    return f"({ctx.link(run.folder / file)}, {run.images} images{extra})"


# ----------------------------------------------------------------------------- headlines
def _mask_pairs(run: Run, a_mask: str, b_mask: str) -> list[Pair] | None:
    pairs = []
    for model in _models(run):
        for attack in ("lrpc", "lrpf"):
            a, b = (_masked(_untargeted(run), model, attack, m) for m in (a_mask, b_mask))
            if a is not None and b is not None:
                pairs.append(Pair(f"{attack.upper()} on {model}", a, b))
    return pairs or None


def _mask_name(mask: str) -> str:
    return "LRP" if mask == "lrp" else mask


def _mask_headline(ctx: Context, lead: str, a_mask: str, b_mask: str) -> str | None:
    found = _largest(ctx, lambda run: _mask_pairs(run, a_mask, b_mask))
    if found is None:
        return None
    run, pairs = found
    protocols = " / ".join(sorted({str(p.a["protocol"]) for p in pairs}))
    numbers = "; ".join(p.text("linf_median") for p in pairs)
    return (
        f"**{lead}** Median l-inf, {_mask_name(a_mask)} vs {_mask_name(b_mask)} mask: "
        f"{numbers}. "
        f"{_verdict(run, pairs, 'linf_median', f'The {_mask_name(a_mask)} mask')} "
        f"{_source(ctx, run, 'leaderboard.csv', f', {protocols} rows')}."
    )


@headline
def lrp_against_random(ctx: Context) -> str | None:
    return _mask_headline(
        ctx, "The LRP mask against a random mask of the same size.", "lrp", "random"
    )


@headline
def gradient_against_lrp(ctx: Context) -> str | None:
    return _mask_headline(
        ctx, "The gradient-saliency mask against the LRP mask.", "gradient", "lrp"
    )


@headline
def dense_against_masked(ctx: Context) -> str | None:
    """Minimal-eps PGD (every pixel) against the LRP-guided attacks (a mask of pixels)."""

    def pairs(run: Run) -> list[Pair] | None:
        found = []
        for model in _models(run):
            for attack, stage in (("lrpc", "coarse"), ("lrpf", "fine")):
                pgd = _pick(_untargeted(run), model=model, attack="pgd", stage=stage,
                            protocol="minimal")  # fmt: skip
                lrp = _masked(_untargeted(run), model, attack, "lrp")
                if pgd is not None and lrp is not None:
                    found.append(Pair(f"{model} {stage}", pgd, lrp))
        return found or None

    found = _largest(ctx, pairs)
    if found is None:
        return None
    run, found_pairs = found
    numbers = "; ".join(
        f"{p.text('linf_median')} (mean l0 {fmt.num(p.a.get('l0_mean'), 2)} vs "
        f"{fmt.num(p.b.get('l0_mean'), 2)})"
        for p in found_pairs
    )
    return (
        f"**Dense minimal-eps PGD against LRPC/LRPF with the LRP mask.** Median l-inf, PGD "
        f"vs the LRP-guided attack of the same stage: {numbers}. "
        f"{_verdict(run, found_pairs, 'linf_median', 'PGD')}; PGD changes every pixel, the "
        f"LRP-guided attacks only their mask {_source(ctx, run, 'leaderboard.csv')}."
    )


@headline
def relevance_term(ctx: Context) -> str | None:
    """What the relevance weight lambda does to the minimal l-inf (the validation sweep)."""
    paths = ctx.results.glob("**/sweep_defaults.json")
    if not paths:
        return None
    path = paths[-1]
    data = ctx.results.json(path)
    rows = [r for r in data.get("rows", []) if r.get("knob") in ("reference", "lam")]
    lams = sorted({float(r["lam"]) for r in rows})
    cells = sorted({(r["model"], r["attack"]) for r in rows})
    if len(lams) < 2 or not cells:
        return None
    text = "; ".join(
        f"{attack} on {model} "
        + " / ".join(
            fmt.column_interval(r, "linf_median")
            for lam in lams
            for r in rows
            if (r["model"], r["attack"], float(r["lam"])) == (model, attack, lam)
        )
        for model, attack in cells
    )
    choice = data.get("choice", {})
    below, above = (choice.get(f"lam_{side}_zero_interval", {}) for side in ("below", "above"))
    counts = ", ".join(
        f"lambda {lam}: lower in {len(below.get(lam, []))}, higher in {len(above.get(lam, []))}"
        for lam in below
    )
    chosen = float(choice.get("lam", float("nan")))
    off = ", so LRPC/LRPF are LRP-masked signed gradient steps" if chosen == 0 else ""
    return (
        f"**The relevance term.** Censored median minimal l-inf on {data['meta'].get('n')} "
        f"validation images per row at lambda {' / '.join(f'{lam:g}' for lam in lams)}: {text}. "
        f"Beyond lambda 0's 95% interval, of {len(cells)} cells: {counts}. The defaults use "
        f"lambda {chosen:g}{off} ({ctx.link(path)})."
    )


def _setting(row: Row, name: str) -> str | None:
    """One setting of a row's ``config`` (its text), None where the row has none."""
    return config_settings(row.get("config")).get(name)


def _identical_budgets(run: Run, pair: Pair, norm: str = "linf") -> bool:
    """Whether the two rows of ``pair`` have the same censored budget on every image."""
    a, b = (run.records_of(r["row_id"]).sort_values("index") for r in (pair.a, pair.b))
    return bool(np.array_equal(censored_budgets(a, norm), censored_budgets(b, norm)))


def _lrp_rows(run: Run, model: str, attack: str) -> list[Row]:
    """A model's minimal rows of an LRP-guided attack with the LRP mask."""
    return [r for r in _untargeted(run) if (r["model"], r["attack"], r["mask"], r["protocol"])
            == (model, attack, "lrp", "minimal")]  # fmt: skip


@headline
def relevance_ablation(ctx: Context) -> str | None:
    """The relevance term on test images: lambda x how its gradient is computed, each against
    lambda 0 on the same images."""

    def pairs(run: Run) -> list[Pair] | None:
        found = []
        for model in _models(run):
            for attack in ("lrpc", "lrpf"):
                rows = _lrp_rows(run, model, attack)
                if not any(_setting(r, "relevance_grad") == "exact" for r in rows):
                    continue
                composite = {_setting(r, "composite") for r in rows
                             if float(_setting(r, "lam") or 0) > 0}  # fmt: skip
                reference = [r for r in rows if float(_setting(r, "lam") or 0) == 0 and
                             _setting(r, "relevance_grad") == "refresh" and
                             _setting(r, "composite") in composite]  # fmt: skip
                if len(reference) != 1:
                    continue
                for r in sorted(rows, key=lambda r: (_setting(r, "relevance_grad"),
                                                     float(_setting(r, "lam") or 0))):  # fmt: skip
                    if float(_setting(r, "lam") or 0) > 0:
                        what = (f"{attack.upper()} on {model}, lambda {_setting(r, 'lam')} "
                                f"{_setting(r, 'relevance_grad')}")  # fmt: skip
                        found.append(Pair(what, r, reference[0]))
        return found or None

    found = _largest(ctx, pairs)
    if found is None:
        return None
    run, found_pairs = found
    identical = sum(_identical_budgets(run, p) for p in found_pairs)
    numbers = "; ".join(p.text("linf_median") for p in found_pairs)
    below, above, _ = _significant(run, found_pairs, "linf_median")
    inert = (" The term changes no budget detectably: with it, LRPC/LRPF remain LRP-masked signed "
             "gradient steps." if below == above == 0 else "")  # fmt: skip
    return (
        f"**The relevance term, ablated on test images.** Censored median minimal l-inf with the "
        f"LRP mask, each row against lambda 0 (relevance gradient refreshed with the mask, or "
        f"recomputed at every step, `exact`): {numbers}. "
        f"{_verdict(run, found_pairs, 'linf_median', 'lambda > 0')}; every image's budget is "
        f"unchanged in {identical} of {len(found_pairs)} rows "
        f"{_source(ctx, run, 'leaderboard.csv')}.{inert}"
    )


@headline
def lrp_composites(ctx: Context) -> str | None:
    """The mask under other LRP composites than the default, at lambda 0."""
    default = attack_info("lrpc").settings["composite"].default

    def pairs(run: Run) -> list[Pair] | None:
        found = []
        for model in _models(run):
            for attack in ("lrpc", "lrpf"):
                plain = [r for r in _lrp_rows(run, model, attack)
                         if float(_setting(r, "lam") or 0) == 0 and
                         _setting(r, "relevance_grad") in ("refresh", None)]  # fmt: skip
                reference = [r for r in plain if _setting(r, "composite") == default]
                others = [r for r in plain if _setting(r, "composite") not in (default, None)]
                if len(reference) == 1:
                    found += [Pair(f"{attack.upper()} on {model}, {_setting(r, 'composite')}", r,
                                   reference[0]) for r in others]  # fmt: skip
        return found or None

    found = _largest(ctx, pairs)
    if found is None:
        return None
    run, found_pairs = found
    numbers = "; ".join(p.text("linf_median") for p in found_pairs)
    return (
        f"**The LRP composite behind the mask.** Censored median minimal l-inf at lambda 0, "
        f"another composite vs the default {default}: {numbers}. "
        f"{_verdict(run, found_pairs, 'linf_median', 'The other composite')} "
        f"{_source(ctx, run, 'leaderboard.csv')}."
    )


def _linf_policy(row: Row) -> float:
    """The l-inf bound a row was held to: a masked attack's minimal search bound (its ``eps``),
    an l0 attack's ``linf_cap``; +inf for none (a bound of 1 or more holds nothing)."""
    bound = row["eps"] if row["norm"] == "linf" else _setting(row, "linf_cap")
    bound = math.inf if is_missing(bound) or bound == "" else float(bound)
    return math.inf if bound >= 1 else bound


@headline
def sparse_attacks(ctx: Context) -> str | None:
    """The masked LRP attacks against the field's l0 attacks, under each l-inf policy: per
    model, stage and policy, every row's l0 at FR 50%, and the best l0 attack tested against the
    LRP mask."""

    def cells(run: Run) -> list[tuple[Pair, list[Row]]] | None:
        found = []
        board = [r for r in _untargeted(run) if r["protocol"] == "minimal"]
        for model in _models(run):
            for attack, stage in (("lrpc", "coarse"), ("lrpf", "fine")):
                for policy in sorted({_linf_policy(r) for r in board}):
                    same = [r for r in board if (r["model"], r["stage"]) == (model, stage)
                            and _linf_policy(r) == policy]  # fmt: skip
                    lrp = [r for r in same if (r["attack"], r["mask"]) == (attack, "lrp")]
                    sparse = [r for r in same if r["norm"] == "l0"]
                    if len(lrp) == 1 and sparse:
                        best = min(sparse, key=lambda r: (float(r["l0_at_fr50"]), r["attack"]))
                        bound = "unbounded" if policy == math.inf else fmt.budget(policy)
                        found.append((Pair(f"{model} {stage}, l-inf {bound}", best, lrp[0]), same))
        return found or None

    found = _largest(ctx, cells)
    if found is None:
        return None
    run, found_cells = found

    def name(row: Row) -> str:  # the cell names the protocol and the l-inf policy
        return row["attack"] if row["mask"] == "none" else f"{row['attack']} {row['mask']}"

    texts = [
        f"{pair.what}: "
        + ", ".join(
            f"{name(r)} {fmt.num(r['l0_at_fr50'], 3)} ({fmt.num(r['queries_per_image'], 0)} "
            "queries)"
            for r in sorted(rows, key=lambda r: (r["norm"] == "l0", name(r)))
        )
        for pair, rows in found_cells
    ]
    pairs = [pair for pair, _ in found_cells]
    return (
        f"**Sparse attacks under one l-inf policy.** l0 at FR 50% (censored median share of "
        f"pixels changed; mean queries per image): {'; '.join(texts)}. The best l0 attack of "
        f"each cell against the LRP mask: "
        f"{_verdict(run, pairs, 'l0_at_fr50', 'the l0 attack', metric='l0_median')} "
        f"{_source(ctx, run, 'leaderboard.csv')}."
    )


@headline
def defended_model(ctx: Context) -> str | None:
    """Robust accuracy of an adversarially trained model, and PGD on both models."""
    parts, sources = [], []
    for path in ctx.results.glob("robustness_*.json"):
        data = ctx.results.json(path)
        worst = [r for r in data.get("robust", []) if r.get("attack") == "worst"]
        if not worst:
            continue
        cells = ", ".join(
            f"{r['stage']} {fmt.num(r['eps_255'], 0)}/255: {fmt.percent(r['acc'])} "
            f"[{fmt.percent(r['lo'])}, {fmt.percent(r['hi'])}]"
            for r in sorted(worst, key=lambda r: (str(r["stage"]), float(r["eps_255"])))
        )
        attacks = ", ".join(sorted({str(r.get("attack")) for r in data["robust"]} - {"worst"}))
        parts.append(f"{data.get('model')} keeps a robust accuracy (worst case per image over "
                     f"{attacks}) of {cells}")  # fmt: skip
        sources.append(ctx.link(path))

    def pgd_rows(run: Run) -> list[Row] | None:
        rows = [_pick(_untargeted(run), model=m, attack="pgd", stage="coarse", protocol="fixed")
                for m in _models(run)]  # fmt: skip
        rows = [r for r in rows if r is not None]
        return rows if len(rows) > 1 else None

    found = _largest(ctx, pgd_rows)
    if found is not None:
        run, rows = found
        eps = ", ".join(sorted({fmt.budget(r["eps"]) for r in rows}))
        parts.append(
            f"PGD at {eps} (the run's settings) flips the coarse prediction of "
            + ", ".join(
                f"{fmt.column_interval(r, 'fooling_ratio')} of {r['model']}'s images" for r in rows
            )
        )
        sources.append(f"{ctx.link(run.folder / 'leaderboard.csv')}, {run.images} images")
    if not parts:
        return None
    return f"**The defended model.** {'; '.join(parts)} ({'; '.join(sources)})."


def _transfer_cell(run: Run, model: str, stage: str, label: str, target: str) -> Row | None:
    for row in _untargeted_transfer(run):
        if (row["model"], row["stage"], row["target"]) == (model, stage, target) and row_label(
            row
        ) == label:
            return row
    return None


@headline
def int8_survival(ctx: Context) -> str | None:
    """How many of minimal-eps and fixed-budget PGD's successes survive INT8 deployment."""

    def cells(run: Run) -> list[str] | None:
        if run.transfer is None:
            return None
        out = []
        for model in _models(run):
            for stage in ("coarse", "fine"):
                found = {}
                for label in ("pgd minimal", *sorted({row_label(r) for r in
                              _untargeted_transfer(run) if row_label(r).startswith(
                                  "pgd fixed")})):  # fmt: skip
                    row = _transfer_cell(run, model, stage, label, "onnx:int8")
                    if row is not None:
                        found[label] = fmt.column_interval(row, "survival", 2)
                if "pgd minimal" in found and len(found) > 1:
                    out.append(f"{model} {stage}: " + ", ".join(f"{k} {v}" for k, v in
                                                                 found.items()))  # fmt: skip
        return out or None

    found = _largest(ctx, cells)
    if found is None:
        return None
    run, texts = found
    return (
        f"**Deployment in INT8.** Share of PGD's successes that still fool the row's own "
        f"model as ONNX INT8 (`survival`), minimal-eps against fixed-budget PGD: "
        f"{'; '.join(texts)} {_source(ctx, run, 'transfer.csv')}."
    )


@headline
def transfer_between_models(ctx: Context) -> str | None:
    """The best transfer from each model onto each other model of the run."""

    def best(run: Run) -> list[str] | None:
        if run.transfer is None:
            return None
        out = []
        models = _models(run)
        for source in models:
            for target in models:
                rows = [
                    r
                    for r in _untargeted_transfer(run)
                    if r["model"] == source and r["target"] == target != source
                ]
                if rows:
                    top = max(rows, key=lambda r: (r["transfer_fooling_ratio"], row_label(r)))
                    out.append(
                        f"from {source} onto {target} at most "
                        f"{fmt.column_interval(top, 'transfer_fooling_ratio', 2)} "
                        f"({row_label(top)}, {top['stage']} stage, of {len(rows)} rows)"
                    )
        return out or None

    found = _largest(ctx, best)
    if found is None:
        return None
    run, texts = found
    return (
        f"**Transfer between models.** The largest transfer fooling ratio of any row's "
        f"adversarial images: {'; '.join(texts)} {_source(ctx, run, 'transfer.csv')}."
    )

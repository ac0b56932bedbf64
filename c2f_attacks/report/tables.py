"""What the findings and the site show of a run, computed once for both.

A *view* turns a run's frames into rows of display text (``fmt``), with the raw numbers kept
for sorting and colouring. Columns are picked by name from what the file has: a column the
file lacks (an older or newer format) is left out, an unknown extra column never breaks a view.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from c2f_attacks.evaluation.records import is_missing
from c2f_attacks.leaderboard import config_settings, target_policy
from c2f_attacks.report import fmt

#: the success rule of a targeted row (the attacked stage decides the requested class)
TARGETED_RULE = "target_reached"


def target_of(row: Mapping[str, Any]) -> str:
    """A row's target policy ("random", ...; "none" for an untargeted row), as its ``config``
    names it; a ``target_reached`` row whose config does not name it is "unnamed"."""
    policy = target_policy(row.get("config"))
    if policy == "none" and row.get("success_rule") == TARGETED_RULE:
        return "unnamed"
    return policy


def targeted(frame: pd.DataFrame) -> pd.Series:
    """Which rows of a leaderboard (or transfer table) are targeted."""
    return pd.Series([target_of(r) != "none" for r in frame.to_dict("records")],
                     index=frame.index, dtype=bool)  # fmt: skip


def row_label(row: Mapping[str, Any]) -> str:
    """A leaderboard row in a few words: ``lrpc lrp minimal``, ``pgd fixed 8/255``,
    ``pgd minimal target=random`` (a targeted row), followed by the settings that tell it apart
    from rows with the same words (``lrpc lrp minimal lam=1.0``) where :func:`with_labels` gave
    it a ``label``."""
    if not is_missing(row.get("label")):
        return str(row["label"])
    parts = [str(row["attack"])]
    if not is_missing(row.get("mask")) and row["mask"] != "none":
        parts.append(str(row["mask"]))
    protocol = str(row["protocol"])
    parts.append(protocol)
    if protocol == "fixed" and not is_missing(row.get("eps")):
        parts.append(fmt.budget(row["eps"]))
    if (target := target_of(row)) != "none":
        parts.append(f"target={target}")
    return " ".join(parts)


def _settings(row: Mapping[str, Any]) -> dict[str, str]:
    """A row's settings: its ``config`` column (``name=value;...``) but the target, which
    :func:`row_label` names, its ``steps``, and the ``eps`` of a row whose words do not name it
    (a minimal row's search bound: one l-inf policy against another)."""
    settings = config_settings(row.get("config"))
    settings.pop("target", None)
    if not is_missing(row.get("steps")):
        settings["steps"] = str(int(row["steps"]))
    if row.get("protocol") != "fixed" and not is_missing(row.get("eps")):
        settings["eps"] = fmt.budget(row["eps"])
    return settings


def with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (a run's leaderboard or transfer table) with a ``label`` column: the row's
    words (:func:`row_label`) plus, where rows of one model and stage share those words, the
    settings in which they differ (also alone, in ``differing_settings``; missing elsewhere), so
    that no two rows of a run read alike."""
    frame = frame.drop(columns=["label", "differing_settings"], errors="ignore")
    words = [row_label(r) for r in frame.to_dict("records")]
    labels = pd.Series(words, index=frame.index, dtype=object)
    differing = pd.Series(None, index=frame.index, dtype=object)
    for _, group in frame.assign(_words=words).groupby(["model", "stage", "_words"], sort=False):
        settings = [_settings(r) for r in group.to_dict("records")]
        differ = sorted(n for n in set().union(*settings)
                        if len({s.get(n) for s in settings}) > 1)  # fmt: skip
        if differ:
            differing[group.index] = [
                " ".join(f"{n}={s.get(n, '')}" for n in differ) for s in settings
            ]
            labels[group.index] = [
                f"{w} {d}" for w, d in zip(group["_words"], differing[group.index])
            ]
    return frame.assign(label=labels, differing_settings=differing)


def sort_value(value: Any) -> float | str | None:
    """A cell's value for sorting: numbers as floats, text as text, missing None. An infinite
    number (a censored budget) becomes the largest float of its sign, which sorts the same and
    fits JSON (which has no infinity)."""
    if is_missing(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return math.copysign(sys.float_info.max, number) if math.isinf(number) else number


@dataclass(frozen=True)
class Column:
    """One displayed column: ``header``, the leaderboard column it shows, how it is written."""

    header: str
    source: str
    text: Callable[[Mapping[str, Any]], str]
    numeric: bool = True


def _plain(column: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda row: "" if is_missing(row.get(column)) else str(row[column])


def _number(column: str, digits: int = 3) -> Callable[[Mapping[str, Any]], str]:
    return lambda row: fmt.num(row.get(column), digits)


def _with_interval(column: str, digits: int = 3) -> Callable[[Mapping[str, Any]], str]:
    return lambda row: fmt.column_interval(row, column, digits)


def _eps_text(row: Mapping[str, Any]) -> str:
    """A fixed row's budget, or the upper end of a minimal row's search."""
    text = fmt.budget(row.get("eps"))
    return f"up to {text}" if text and str(row["protocol"]) == "minimal" else text


#: the leaderboard as the findings and the site show it (left to right)
RESULT_COLUMNS: tuple[Column, ...] = (
    Column("attack", "attack", _plain("attack"), numeric=False),
    Column("settings", "differing_settings", _plain("differing_settings"), numeric=False),
    Column("mask", "mask", _plain("mask"), numeric=False),
    Column("protocol", "protocol", _plain("protocol"), numeric=False),
    Column("success rule", "success_rule", _plain("success_rule"), numeric=False),
    Column("eps", "eps", lambda row: _eps_text(row)),
    Column("FR [95% CI]", "fooling_ratio", _with_interval("fooling_ratio")),
    Column("FR, any fine change [95% CI]", "fr_fine_any", _with_interval("fr_fine_any")),
    Column("median l-inf [95% CI]", "linf_median", _with_interval("linf_median")),
    Column("median l2 [95% CI]", "l2_median", _with_interval("l2_median")),
    Column("mean l0", "l0_mean", _number("l0_mean")),
    Column("object share", "object_share", _number("object_share", 2)),
    Column(
        "mean queries", "queries_per_image", lambda row: fmt.count(row.get("queries_per_image"))
    ),
    Column("mistake severity [95% CI]", "mistake_severity", _with_interval("mistake_severity", 2)),
    Column("severity counts", "severity_counts", _plain("severity_counts"), numeric=False),
)
#: a targeted row as the findings and the site show it: its fooling ratio is the share of the
#: images whose attacked stage decides the requested class
_BY_SOURCE = {
    c.source: c
    for c in (
        *RESULT_COLUMNS,
        Column("stage", "stage", _plain("stage"), numeric=False),
        Column("model", "model", _plain("model"), numeric=False),
    )
}
TARGETED_COLUMNS: tuple[Column, ...] = tuple(
    _BY_SOURCE[source]
    for source in ("attack", "mask", "stage", "model", "protocol", "fooling_ratio", "linf_median",
                   "queries_per_image", "mistake_severity", "severity_counts")
)  # fmt: skip
#: the budget columns: the smallest budget at which a row fools 50% / 90% of the images
BUDGET_COLUMNS: tuple[Column, ...] = tuple(
    Column(f"{label} at FR {p}%", f"{norm}_at_fr{p}", _with_interval(f"{norm}_at_fr{p}"))
    for norm, label in (("linf", "l-inf"), ("l2", "l2"), ("l0", "l0"))
    for p in (50, 90)
)


def present(columns: Sequence[Column], frame: pd.DataFrame) -> list[Column]:
    """The columns whose source the frame has, with at least one value."""
    return [c for c in columns if c.source in frame.columns and frame[c.source].notna().any()]


def ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in a fixed order: model, stage, attack, mask, protocol, eps, n, the settings in
    which rows of the same words differ, row_id."""
    keys = [c for c in ("model", "stage", "attack", "mask", "protocol", "eps", "n",
                        "differing_settings", "row_id") if c in frame.columns]  # fmt: skip
    return frame.sort_values(keys, kind="stable", na_position="first").reset_index(drop=True)


def targeted_tables(frame: pd.DataFrame) -> list[tuple[str, list[Column], pd.DataFrame]]:
    """The targeted rows of a run's leaderboard, one table per target policy: (title, columns,
    rows in :func:`ordered` order), e.g. "Targeted attacks (random targets)"; empty when the
    run has none."""
    mine = frame[targeted(frame)]
    mine = mine.assign(_target=[target_of(r) for r in mine.to_dict("records")])
    return [(f"Targeted attacks ({policy} targets)", present(TARGETED_COLUMNS, part),
             ordered(part.drop(columns="_target")))
            for (policy,), part in groups(mine, ("_target",))]  # fmt: skip


def groups(frame: pd.DataFrame, by: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """``frame`` split by ``by`` in sorted order (missing values as "")."""
    keyed = frame.assign(**{f"_{c}": frame[c].fillna("").astype(str) for c in by})
    return [(k if isinstance(k, tuple) else (k,), part.drop(columns=[f"_{c}" for c in by]))
            for k, part in keyed.groupby([f"_{c}" for c in by], sort=True)]  # fmt: skip


# ----------------------------------------------------------------------------- transfer
@dataclass(frozen=True)
class Matrix:
    """A transfer matrix: one row per source row, one column per target."""

    title: str
    sources: list[str]  #: row labels
    targets: list[str]
    cells: dict[tuple[int, int], Mapping[str, Any]]  #: (i, j) -> the transfer.csv row


def transfer_matrices(transfer: pd.DataFrame) -> list[Matrix]:
    """One matrix per source model and stage."""
    matrices = []
    for (model, stage), part in groups(transfer, ("model", "stage")):
        part = ordered(part)
        labels = list(dict.fromkeys(row_label(r) for r in part.to_dict("records")))
        targets = sorted(set(part["target"]))
        cells = {}
        for row in part.to_dict("records"):
            cells[(labels.index(row_label(row)), targets.index(row["target"]))] = row
        matrices.append(Matrix(f"{model}, {stage} stage", labels, targets, cells))
    return matrices


def share_colour(value: Any) -> str:
    """A background for a share in [0, 1]: white at 0 to a deep red at 1 (missing: grey)."""
    if is_missing(value) or not math.isfinite(float(value)):
        return "#eeeeee"
    t = min(max(float(value), 0.0), 1.0)
    low, high = (255, 255, 255), (178, 24, 43)
    r, g, b = (round(lo + (hi - lo) * t) for lo, hi in zip(low, high))
    return f"#{r:02x}{g:02x}{b:02x}"

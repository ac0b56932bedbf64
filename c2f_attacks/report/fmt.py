"""Numbers and tables as text, the same on every machine.

Floats are printed with a fixed number of decimals (Python's correctly rounded formatting, so
the same double gives the same text everywhere); missing values are empty, infinities ``inf``
(a censored budget that no image count reaches), and ``-0.000`` is ``0.000``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from c2f_attacks.evaluation.records import is_missing


def num(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; "" when missing, "inf" / "-inf" when infinite."""
    if is_missing(value):
        return ""
    if isinstance(value, bool):
        return str(value)
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def count(value: Any) -> str:
    """A whole number, or a mean count rounded to one."""
    return "" if is_missing(value) else f"{float(value):.0f}"


def interval(value: Any, lo: Any = None, hi: Any = None, digits: int = 3) -> str:
    """``0.125 [0.110, 0.141]``; the value alone when the interval is missing."""
    text = num(value, digits)
    if not text or is_missing(lo) or is_missing(hi):
        return text
    return f"{text} [{num(lo, digits)}, {num(hi, digits)}]"


def column_interval(row: Mapping[str, Any], column: str, digits: int = 3) -> str:
    """``row[column]`` with ``row[column_lo]`` and ``row[column_hi]`` when the row has them."""
    return interval(row.get(column), row.get(f"{column}_lo"), row.get(f"{column}_hi"), digits)


def budget(eps: Any) -> str:
    """An l-inf budget as ``8/255`` when it is a whole number of 255ths (up to float32
    rounding of a measured norm), else 4 decimals."""
    if is_missing(eps):
        return ""
    steps = float(eps) * 255
    if math.isfinite(steps) and steps > 0 and abs(steps - round(steps)) < 1e-4:
        return f"{round(steps)}/255"
    return num(eps, 4)


def percent(value: Any, digits: int = 1) -> str:
    return "" if is_missing(value) else f"{num(100 * float(value), digits)}%"


def md_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None
) -> str:
    """A Markdown pipe table; ``right[j]`` right-aligns column j. ``|`` in a cell is escaped."""
    right = right or [False] * len(header)
    rule = ["---:" if r else "---" for r in right]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |"
                     for line in lines)  # fmt: skip


def p_value(p: float) -> str:
    """A p-value to two significant digits (``4.2e-08``, ``0.031``)."""
    return f"{p:.2g}"

"""Budget curves as inline SVG: fooling ratio against budget, drawn in Python so the page needs
no plotting library and the same data give the same bytes.

A :class:`Curve` is a step function (``steps=True``: from per-image norms, FR(b) jumps at every
fooled image's norm) or points on a budget grid with an optional interval band
(``budget_curves.csv``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

#: colour-blind-safe palette (Okabe-Ito), then the same with dashes
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000",
           "#f0e442")  # fmt: skip
NORM_LABEL = {"linf": "l-inf budget", "l2": "l2 budget", "l0": "l0 budget (share of pixels)"}


@dataclass(frozen=True)
class Curve:
    label: str
    budgets: Sequence[float]
    ratios: Sequence[float]
    lo: Sequence[float] | None = None
    hi: Sequence[float] | None = None
    steps: bool = False


def _n(value: float) -> str:
    return f"{value:.1f}"


def _ticks(top: float) -> list[float]:
    """About five round ticks (1, 2, 2.5 or 5 times a power of ten apart) from 0 to ``top``."""
    if top <= 0:
        return [0.0]
    raw = top / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def curves_svg(
    curves: Sequence[Curve], norm: str, title: str = "", width: int = 420, height: int = 240
) -> str:
    """An SVG chart of ``curves`` (FR from 0 to 1 against the budget, from 0 to the largest
    budget shown) with a legend when there is more than one curve."""
    left, right, top, bottom = 44, 12, 22 if title else 10, 36
    legend = 16 * len(curves) if len(curves) > 1 else 0
    full = height + legend
    xmax = max((max(c.budgets) for c in curves if len(c.budgets)), default=1.0) or 1.0
    w, h = width - left - right, height - top - bottom

    def x(b: float) -> float:
        return left + w * min(b, xmax) / xmax

    def y(r: float) -> float:
        return top + h * (1 - r)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="curve" viewBox="0 0 {width} {full}" '
        f'width="{width}" height="{full}" role="img" aria-label="{html.escape(title or norm)}">'
    ]
    if title:
        out.append(f'<text x="{left}" y="14" class="title">{html.escape(title)}</text>')
    for r in (0, 0.25, 0.5, 0.75, 1):
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{_n(y(r))}" y2="{_n(y(r))}" '
                   f'class="grid"/><text x="{left - 4}" y="{_n(y(r) + 4)}" class="ytick">'
                   f'{r:g}</text>')  # fmt: skip
    for t in _ticks(xmax):
        out.append(f'<text x="{_n(x(t))}" y="{top + h + 14}" class="xtick">{t:g}</text>')
    out.append(
        f'<text x="{left + w / 2:.1f}" y="{top + h + 30}" class="axis">'
        f"{html.escape(NORM_LABEL.get(norm, norm))}</text>"
    )
    out.append(
        f'<text transform="translate(11 {top + h / 2:.1f}) rotate(-90)" class="axis">'
        "fooling ratio</text>"
    )
    for i, c in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="5 3"' if i >= len(PALETTE) else ""
        if c.lo is not None and c.hi is not None and len(c.budgets):
            band = [f"{_n(x(b))},{_n(y(v))}" for b, v in zip(c.budgets, c.hi)]
            band += [f"{_n(x(b))},{_n(y(v))}" for b, v in reversed(list(zip(c.budgets, c.lo)))]
            out.append(
                f'<polygon points="{" ".join(band)}" fill="{colour}" '
                'fill-opacity="0.15" stroke="none"/>'
            )
        points = []
        for j, (b, r) in enumerate(zip(c.budgets, c.ratios)):
            if c.steps and j:
                points.append(f"{_n(x(b))},{_n(y(c.ratios[j - 1]))}")
            points.append(f"{_n(x(b))},{_n(y(r))}")
        if c.steps and len(c.budgets):
            points.append(f"{_n(x(xmax))},{_n(y(c.ratios[-1]))}")
        out.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
            f'stroke-width="1.8"{dash}><title>{html.escape(c.label)}</title></polyline>'
        )
        if not c.steps:
            out += [f'<circle cx="{_n(x(b))}" cy="{_n(y(r))}" r="2.5" fill="{colour}"/>'
                    for b, r in zip(c.budgets, c.ratios)]  # fmt: skip
        if legend:
            ly = height + 16 * i + 4
            out.append(
                f'<line x1="{left}" x2="{left + 18}" y1="{ly}" y2="{ly}" '
                f'stroke="{colour}" stroke-width="2.5"{dash}/><text x="{left + 24}" '
                f'y="{ly + 4}" class="legend">{html.escape(c.label)}</text>'
            )
    out.append("</svg>")
    return "".join(out)

"""Stacked bar charts as inline SVG, drawn on the server: no script and no asset from elsewhere.

Heights are worked out in Decimal and rounded to whole pixels, so a chart of exact
usage figures never passes through binary floating point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal

from markupsafe import Markup, escape

from meterbill.core.money import format_decimal

PALETTE = ("#3b5bdb", "#f59f00", "#2f9e44", "#e03131", "#7048e8", "#0c8599", "#d6336c", "#868e96")
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 44


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _px(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _short(value: Decimal) -> str:
    """Axis labels: 1234567 -> 1.23M, keeping exact figures for the table and tooltips."""
    for size, suffix in ((Decimal(10**9), "G"), (Decimal(10**6), "M"), (Decimal(10**3), "k")):
        if abs(value) >= size:
            return format_decimal((value / size).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)) + suffix
    return format_decimal(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP).normalize())


def bucket_label(bucket: str) -> str:
    """'2024-01-05T00:00:00Z' -> '01-05'; hourly buckets keep their hour."""
    return bucket[5:10] if bucket[11:19] == "00:00:00" else f"{bucket[5:10]} {bucket[11:13]}h"


def stacked_bars(
    buckets: Sequence[str], series: Mapping[str, Mapping[str, Decimal]], *, title: str,
    width: int = 900, height: int = 260,
) -> Markup:
    """One bar per bucket, one colour per series (segment), stacked; empty buckets stay empty."""
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    totals = [sum((max(Decimal(0), values.get(b, Decimal(0))) for values in series.values()), Decimal(0))
              for b in buckets]
    peak = max(totals, default=Decimal(0))
    parts = [f'<svg class="usage-chart" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" '
             f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px;background:#fff">']
    for fraction in (Decimal(0), Decimal("0.5"), Decimal(1)):
        y = TOP + plot_h - _px(plot_h * fraction)
        parts.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y}" y2="{y}" stroke="#e4e7f0"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4}" text-anchor="end" font-size="11" fill="#667085">'
                     f'{escape(_short(peak * fraction))}</text>')
    if not buckets or peak == 0:
        parts.append(f'<text x="{LEFT + plot_w // 2}" y="{TOP + plot_h // 2}" text-anchor="middle" '
                     f'fill="#667085">No usage in this period</text></svg>')
        return Markup("".join(parts))  # noqa: S704 - every text placed inside was escaped
    slot = Decimal(plot_w) / len(buckets)
    bar = max(1, _px(slot * Decimal("0.8")))
    every = max(1, -(-len(buckets) // 12))
    for i, bucket in enumerate(buckets):
        x = LEFT + _px(slot * i + (slot - bar) / 2)
        base = Decimal(0)
        for n, (name, values) in enumerate(series.items()):
            value = max(Decimal(0), values.get(bucket, Decimal(0)))
            if value == 0:
                continue
            top, bottom = _px(plot_h * (base + value) / peak), _px(plot_h * base / peak)
            base += value
            parts.append(f'<rect class="bar" x="{x}" y="{TOP + plot_h - top}" width="{bar}" '
                         f'height="{max(1, top - bottom)}" fill="{color(n)}"><title>{escape(bucket)} · '
                         f'{escape(name)}: {escape(format_decimal(value))}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{x + bar // 2}" y="{height - BOTTOM + 16}" text-anchor="middle" font-size="11" '
                         f'fill="#667085">{escape(bucket_label(bucket))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text placed inside was escaped

"""Charts drawn on the server as inline SVG: jobs finished per minute, and queue depth.

Pure functions from per-minute counts (:class:`~taskrun.stores.base.MinuteCounts`)
to SVG text; every label is escaped.  No script and no front-end build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from taskrun.stores.base import MinuteCounts

__all__ = ["Series", "bar_chart", "depth_series", "finished_series", "line_chart"]

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM = 640, 160, 36, 20


@dataclass(frozen=True, slots=True)
class Series:
    """One chart's data: a value per minute (oldest first) for each named layer."""

    minutes: list[int]
    layers: dict[str, list[int]]


def finished_series(rows: Sequence[MinuteCounts], now: float, span: int = 60) -> Series:
    """Return succeeded, failed and cancelled jobs per minute, the ``span`` minutes to ``now``."""
    last = int(now // 60)
    minutes = list(range(last - span + 1, last + 1))
    index = {minute: i for i, minute in enumerate(minutes)}
    layers = {name: [0] * span for name in ("SUCCESS", "FAILURE", "CANCELLED")}
    for row in rows:
        i = index.get(row.minute)
        if i is not None:
            for name, values in layers.items():
                values[i] += row.finished.get(name, 0)
    return Series(minutes, layers)


def depth_series(
    rows: Sequence[MinuteCounts], waiting_now: int, now: float, span: int = 60
) -> Series:
    """Return the waiting jobs per minute: as recorded each minute, ``waiting_now`` at the end.

    A minute with no record repeats the one before it (0 before the first).
    """
    last = int(now // 60)
    minutes = list(range(last - span + 1, last + 1))
    recorded = {row.minute: row.waiting for row in rows if row.waiting is not None}
    values, depth = [], 0
    for minute in minutes:
        depth = recorded.get(minute, depth)
        values.append(depth)
    values[-1] = waiting_now
    return Series(minutes, {"waiting": values})


def _frame(peak: int, title: str, minutes: list[int]) -> list[str]:
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    plot_h = HEIGHT - PAD_BOTTOM
    for frac in (0, 0.5, 1) if peak >= 2 else (0, 1):
        y = plot_h - frac * (plot_h - 8)
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{round(peak * frac)}</text>"
        )
    last = len(minutes) - 1
    for i, anchor in ((0, "start"), (last // 2, "middle"), (last, "end")):
        x = PAD_LEFT + (i + 0.5) * (WIDTH - PAD_LEFT) / max(len(minutes), 1)
        x = min(max(x, float(PAD_LEFT)), float(WIDTH))
        label = _clock(minutes[i])
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 4}" text-anchor="{anchor}">{label}</text>'
        )
    return parts


def _clock(minute: int) -> str:
    return f"{(minute // 60) % 24:02d}:{minute % 60:02d}"


def bar_chart(series: Series, title: str) -> Markup:
    """Return stacked bars, one per minute, one colour class per layer (``bar-<layer>``)."""
    totals = [sum(layer[i] for layer in series.layers.values()) for i in range(len(series.minutes))]
    peak = max(max(totals, default=0), 1)
    parts = _frame(peak, title, series.minutes)
    plot_h = HEIGHT - PAD_BOTTOM
    step = (WIDTH - PAD_LEFT) / max(len(series.minutes), 1)
    scale = (plot_h - 8) / peak
    for i, minute in enumerate(series.minutes):
        y = float(plot_h)
        for name, values in series.layers.items():
            if values[i]:
                h = values[i] * scale
                y -= h
                parts.append(
                    f'<rect class="bar-{escape(name.lower())}" x="{PAD_LEFT + i * step + 1:.1f}" '
                    f'y="{y:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}">'
                    f"<title>{_clock(minute)} {escape(name.lower())}: {values[i]}</title></rect>"
                )
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(series: Series, title: str) -> Markup:
    """Return one line (and its filled area) per layer (``line-<layer>``)."""
    values = next(iter(series.layers.values()), [])
    name = next(iter(series.layers), "value")
    peak = max(max(values, default=0), 1)
    parts = _frame(peak, title, series.minutes)
    plot_h = HEIGHT - PAD_BOTTOM
    step = (WIDTH - PAD_LEFT) / max(len(values), 1)
    scale = (plot_h - 8) / peak
    points = [
        f"{PAD_LEFT + (i + 0.5) * step:.1f},{plot_h - v * scale:.1f}" for i, v in enumerate(values)
    ]
    if points:
        first_x = PAD_LEFT + 0.5 * step
        last_x = PAD_LEFT + (len(values) - 0.5) * step
        area = f"{first_x:.1f},{plot_h} {' '.join(points)} {last_x:.1f},{plot_h}"
        parts.append(f'<polygon class="area-{escape(name)}" points="{area}"/>')
        parts.append(f'<polyline class="line-{escape(name)}" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))

"""Charts as SVG drawn on the server: no script, no chart library, nothing fetched by the browser.

Each chart is an ``<svg role="img">`` with a title and a description that states its numbers in
words, for screen readers; the page shows the same totals in a table beside it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

from payorch.storage.gateway_stats import AttemptCounts, GatewayWindow

WIDTH, HEIGHT = 360, 140
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 24
APPROVED, OTHER = "#1f5f8b", "#b8c7d6"
LINE_COLOURS = ("#1f5f8b", "#a3461a")
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]


def bucket_starts(since: datetime, now: datetime, bucket_seconds: int) -> list[datetime]:
    """Every bucket from the one holding ``since`` to the one holding ``now``."""
    first = int(since.timestamp()) // bucket_seconds
    last = int(now.timestamp()) // bucket_seconds
    return [datetime.fromtimestamp(n * bucket_seconds, since.tzinfo) for n in range(first, last + 1)]


def per_bucket(window: GatewayWindow | None, starts: list[datetime]) -> list[AttemptCounts | None]:
    found = {} if window is None else {bucket.start: bucket.counts for bucket in window.buckets}
    return [found.get(start) for start in starts]


def _frame(
    title: str, description: str, body: list[str], y_labels: tuple[str, str], x_labels: tuple[str, str]
) -> Markup:
    n = next(_ids)
    bottom = HEIGHT - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-labelledby="chart{n}-title chart{n}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart{n}-title">{escape(title)}</title>',
        f'<desc id="chart{n}-desc">{escape(description)}</desc>',
        f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#595959" stroke-width="1"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#595959" stroke-width="1"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="10" fill="#333">{escape(y_labels[1])}</text>',
        f'<text x="{LEFT - 4}" y="{bottom}" text-anchor="end" font-size="10" fill="#333">{escape(y_labels[0])}</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 8}" font-size="10" fill="#333">{escape(x_labels[0])}</text>',
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end" font-size="10" fill="#333">'
        f"{escape(x_labels[1])}</text>",
        *body,
        "</svg>",
    ]
    return Markup("".join(parts))  # noqa: S704 - every piece of text in it is escaped above


def _x(index: int, count: int) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * (index + 0.5) / max(count, 1)


def _y(value: float, top: float) -> float:
    return (HEIGHT - BOTTOM) - (HEIGHT - BOTTOM - TOP) * (value / top if top else 0)


def volume_chart(title: str, counts: list[AttemptCounts | None], x_labels: tuple[str, str]) -> Markup:
    """Attempts per bucket, the approved ones in the darker colour."""
    top = max((c.calls for c in counts if c is not None), default=0)
    slot = (WIDTH - LEFT - RIGHT) / max(len(counts), 1)
    body = []
    for index, bucket in enumerate(counts):
        if bucket is None or not bucket.calls:
            continue
        x = LEFT + slot * index + slot * 0.15
        for value, colour in ((bucket.calls, OTHER), (bucket.approved, APPROVED)):
            if value:
                y = _y(value, top)
                body.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{HEIGHT - BOTTOM - y:.1f}" '
                    f'fill="{colour}"/>'
                )
    calls = sum(c.calls for c in counts if c is not None)
    approved = sum(c.approved for c in counts if c is not None)
    description = f"{calls} attempts, {approved} approved; at most {top} in one interval."
    return _frame(title, description, body, ("0", str(top)), x_labels)


def line_chart(
    title: str, series: Sequence[Series], x_labels: tuple[str, str], *, unit: str, top: float | None = None
) -> Markup:
    """One line per series; a gap where a bucket had no value."""
    highest = max((v for s in series for v in s.values if v is not None), default=0.0)
    scale = top if top is not None else max(highest, 1.0)
    body = []
    words = []
    for colour, line in zip(LINE_COLOURS, series, strict=False):
        points = [(_x(i, len(line.values)), _y(v, scale)) for i, v in enumerate(line.values) if v is not None]
        if len(points) == 1:
            (x, y) = points[0]
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        elif points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        known = [v for v in line.values if v is not None]
        words.append(
            f"{line.name}: " + (f"latest {known[-1]:.0f}{unit}, highest {max(known):.0f}{unit}" if known else "no data")
        )
    legend_x = LEFT + 6
    for colour, line in zip(LINE_COLOURS, series, strict=False):
        body.append(f'<text x="{legend_x}" y="{TOP + 10}" font-size="10" fill="{colour}">{escape(line.name)}</text>')
        legend_x += 8 + 7 * len(line.name)
    return _frame(title, "; ".join(words) + ".", body, ("0", f"{scale:.0f}{unit}"), x_labels)

"""Charts as SVG drawn on the server: horizontal bars, grouped bars and lines over time.

Each function returns one ``<figure>`` (a :class:`markupsafe.Markup`, so a Jinja2 template
puts it in as it is) holding the SVG and, beside it, the same figures as an HTML table: a
screen reader announces the SVG as one image (``role="img"`` with its ``<title>`` and
``<desc>``) and reads the numbers from the table. Every text that came from data (option
labels, group names, titles) is escaped here. The SVG is drawn :data:`DISPLAY_WIDTH` pixels
wide with a ``viewBox``, so a page's ``svg { max-width: 100%; height: auto }`` shrinks it
to a narrow screen (320 px too); labels sit above their bars so long ones keep the whole
width. No script, no web fonts, no CDN.

Colours are the NHS palette's dark blue and purple on white (contrast above 7:1 for text;
bars above 3:1 as graphics need) and the series are told apart by their labels and a
pattern too, not by colour alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH = 480  # narrow enough that 14-unit text stays readable when the chart shrinks
# The width a chart is drawn at on a wide screen (CSS max-width: 100% shrinks it on a narrow
# one, the viewBox keeping its proportions): 14-unit text shows at 17.5 px.
DISPLAY_WIDTH = 600
TEXT = "#212b32"  # NHS black: 15.6:1 on white
GRID = "#768692"  # NHS mid grey: 3.9:1, for axes and guides
SERIES = ("#005eb8", "#330072", "#00703c", "#7c2855")  # blue, purple, dark green, plum
# Attributes, not a style="" (a strict Content-Security-Policy drops inline styles).
FONT = 'font-family="Arial, Helvetica, sans-serif"'
_ids = itertools.count(1)


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _number(value: float) -> str:
    """12.0 as 12, 12.345 as 12.3."""
    if not math.isfinite(value):
        return "–"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _shown(value: float, unit: str) -> str:
    return f"{_number(value)}{unit}"


def _clean(value: float | None) -> float:
    """A value a chart can draw: None, NaN and negatives count as 0."""
    if value is None or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


def _svg(chart_id: str, title: str, desc: str, height: float, body: list[str]) -> str:
    return (
        f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {math.ceil(height)}" '
        f'preserveAspectRatio="xMinYMin meet" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" '
        f'xmlns="http://www.w3.org/2000/svg" width="{DISPLAY_WIDTH}" {FONT}>'
        f'<title id="{chart_id}-t">{_e(title)}</title>'
        f'<desc id="{chart_id}-d">{_e(desc)}</desc>' + "".join(body) + "</svg>"
    )


def _table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in header)
    body = "".join(
        "<tr>"
        + f'<th scope="row">{_e(row[0])}</th>'
        + "".join(f"<td>{_e(c)}</td>" for c in row[1:])
        + "</tr>"
        for row in rows
    )
    return (
        '<details class="chart-data"><summary>The figures as a table</summary>'
        f'<table class="chart-table"><caption>{_e(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></details>"
    )


def _figure(chart_id: str, title: str, svg: str, table: str) -> Markup:
    return Markup(
        f'<figure class="chart" id="{chart_id}"><figcaption>{_e(title)}</figcaption>'
        f"{svg}{table}</figure>"
    )


def _patterns(chart_id: str, count: int) -> str:
    """Fill patterns for the second and later series (diagonal lines, dots, crosses)."""
    shapes = [
        '<path d="M0,6 L6,0" stroke="white" stroke-width="1.5"/>',
        '<circle cx="3" cy="3" r="1.2" fill="white"/>',
        '<path d="M0,3 L6,3 M3,0 L3,6" stroke="white" stroke-width="1.2"/>',
    ]
    defs = []
    for i in range(1, count):
        colour = SERIES[i % len(SERIES)]
        defs.append(
            f'<pattern id="{chart_id}-p{i}" width="6" height="6" patternUnits="userSpaceOnUse">'
            f'<rect width="6" height="6" fill="{colour}"/>{shapes[(i - 1) % len(shapes)]}'
            "</pattern>"
        )
    return f"<defs>{''.join(defs)}</defs>" if defs else ""


def _fill(chart_id: str, series: int) -> str:
    return SERIES[0] if series == 0 else f"url(#{chart_id}-p{series})"


def bar_chart(
    title: str,
    rows: Sequence[tuple[str, float | None]],
    *,
    unit: str = "%",
    max_value: float | None = None,
    desc: str | None = None,
    value_header: str = "Value",
    notes: Sequence[str] | None = None,
) -> Markup:
    """Horizontal bars, one per ``(label, value)``, each with its label and value.

    ``max_value`` is the full width (100 for percentages; the largest value by default).
    ``notes``, one per row when given, go in the table (a margin of error, say).
    """
    chart_id = f"chart{next(_ids)}"
    values = [_clean(v) for _, v in rows]
    top = max_value if max_value and max_value > 0 else max(values, default=0) or 1.0
    label_h, bar_h, gap = 18, 18, 12
    body: list[str] = []
    y = 6.0
    usable = WIDTH - 80
    for (label, _), value in zip(rows, values, strict=True):
        length = usable * min(value, top) / top
        body.append(f'<text x="0" y="{y + 13:.0f}" font-size="14" fill="{TEXT}">{_e(label)}</text>')
        y += label_h
        body.append(
            f'<rect x="0" y="{y:.0f}" width="{length:.1f}" height="{bar_h}" fill="{SERIES[0]}"/>'
        )
        body.append(
            f'<text x="{length + 6:.1f}" y="{y + 14:.0f}" font-size="14" fill="{TEXT}">'
            f"{_e(_shown(value, unit))}</text>"
        )
        y += bar_h + gap
    if not rows:
        body.append(f'<text x="0" y="20" font-size="14" fill="{TEXT}">No data yet</text>')
        y = 30
    description = desc or "; ".join(
        f"{label}: {_shown(v, unit)}" for (label, _), v in zip(rows, values, strict=True)
    )
    header = ["", value_header] + (["Note"] if notes else [])
    table_rows = [
        [label, _shown(v, unit)] + ([notes[i]] if notes else [])
        for i, ((label, _), v) in enumerate(zip(rows, values, strict=True))
    ]
    return _figure(
        chart_id,
        title,
        _svg(chart_id, title, description or "No data yet", y, body),
        _table(title, header, table_rows),
    )


def grouped_bar_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    unit: str = "%",
    max_value: float | None = None,
    desc: str | None = None,
) -> Markup:
    """Bars grouped per category, one bar per series (e.g. panel share against target)."""
    chart_id = f"chart{next(_ids)}"
    clean = [(name, [_clean(v) for v in values]) for name, values in series]
    every = [v for _, values in clean for v in values]
    top = max_value if max_value and max_value > 0 else max(every, default=0) or 1.0
    usable = WIDTH - 80
    body: list[str] = [_patterns(chart_id, len(clean))]
    # The legend: a swatch and the series' name each.
    x = 0.0
    for i, (name, _) in enumerate(clean):
        body.append(
            f'<rect x="{x:.0f}" y="4" width="14" height="14" fill="{_fill(chart_id, i)}"/>'
            f'<text x="{x + 20:.0f}" y="16" font-size="14" fill="{TEXT}">{_e(name)}</text>'
        )
        x += 30 + 8 * len(name)
    y = 30.0
    bar_h = 14
    for c, category in enumerate(categories):
        body.append(
            f'<text x="0" y="{y + 13:.0f}" font-size="14" fill="{TEXT}">{_e(category)}</text>'
        )
        y += 18
        for i, (name, values) in enumerate(clean):
            value = values[c] if c < len(values) else 0.0
            length = usable * min(value, top) / top
            body.append(
                f'<rect x="0" y="{y:.0f}" width="{length:.1f}" height="{bar_h}" '
                f'fill="{_fill(chart_id, i)}"><title>{_e(name)}: '
                f"{_e(_shown(value, unit))}</title></rect>"
                f'<text x="{length + 6:.1f}" y="{y + 12:.0f}" font-size="12" fill="{TEXT}">'
                f"{_e(_shown(value, unit))}</text>"
            )
            y += bar_h + 2
        y += 10
    description = desc or "; ".join(
        f"{category}: "
        + ", ".join(
            f"{name} {_shown(values[c] if c < len(values) else 0.0, unit)}"
            for name, values in clean
        )
        for c, category in enumerate(categories)
    )
    table_rows = [
        [category] + [_shown(values[c] if c < len(values) else 0.0, unit) for _, values in clean]
        for c, category in enumerate(categories)
    ]
    return _figure(
        chart_id,
        title,
        _svg(chart_id, title, description or "No data yet", y, body),
        _table(title, ["", *[name for name, _ in clean]], table_rows),
    )


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    step: bool = True,
    unit: str = "",
    desc: str | None = None,
) -> Markup:
    """Lines over time (``labels`` along the bottom, e.g. days), one per series; ``step``
    draws each as a staircase, right for running totals such as invited or completed."""
    chart_id = f"chart{next(_ids)}"
    clean = [(name, [_clean(v) for v in values]) for name, values in series]
    every = [v for _, values in clean for v in values]
    top = max(every, default=0) or 1.0
    left, right, top_pad, plot_h = 48, 12, 30, 180
    plot_w = WIDTH - left - right
    n = max(len(labels), 1)

    def px(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def py(v: float) -> float:
        return top_pad + plot_h - plot_h * v / top

    body: list[str] = []
    x = 0.0
    dashes = (
        "",
        ' stroke-dasharray="8 4"',
        ' stroke-dasharray="2 3"',
        ' stroke-dasharray="10 3 2 3"',
    )
    for i, (name, _) in enumerate(clean):
        colour = SERIES[i % len(SERIES)]
        body.append(
            f'<line x1="{x:.0f}" y1="11" x2="{x + 24:.0f}" y2="11" stroke="{colour}" '
            f'stroke-width="3"{dashes[i % len(dashes)]}/>'
            f'<text x="{x + 30:.0f}" y="16" font-size="14" fill="{TEXT}">{_e(name)}</text>'
        )
        x += 44 + 8 * len(name)
    # Axes with the top value and zero marked.
    body.append(
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="{GRID}"/>'
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{WIDTH - right}" '
        f'y2="{top_pad + plot_h}" stroke="{GRID}"/>'
        f'<text x="{left - 6}" y="{top_pad + 5}" font-size="12" text-anchor="end" '
        f'fill="{TEXT}">{_e(_shown(top, unit))}</text>'
        f'<text x="{left - 6}" y="{top_pad + plot_h}" font-size="12" text-anchor="end" '
        f'fill="{TEXT}">0</text>'
    )
    if labels:
        body.append(
            f'<text x="{left}" y="{top_pad + plot_h + 18}" font-size="12" fill="{TEXT}">'
            f"{_e(labels[0])}</text>"
        )
        if len(labels) > 1:
            body.append(
                f'<text x="{WIDTH - right}" y="{top_pad + plot_h + 18}" font-size="12" '
                f'text-anchor="end" fill="{TEXT}">{_e(labels[-1])}</text>'
            )
    for i, (_, values) in enumerate(clean):
        if not values:
            continue
        points: list[str] = []
        for j, v in enumerate(values):
            if step and j > 0:
                points.append(f"{px(j):.1f},{py(values[j - 1]):.1f}")
            points.append(f"{px(j):.1f},{py(v):.1f}")
        body.append(
            f'<polyline fill="none" stroke="{SERIES[i % len(SERIES)]}" stroke-width="3" '
            f'points="{" ".join(points)}"{dashes[i % len(dashes)]}/>'
        )
    height = top_pad + plot_h + 26
    description = desc or "; ".join(
        f"{name}: {_shown(values[-1], unit)} by {labels[-1]}" if values and labels else name
        for name, values in clean
    )
    table_rows = [
        [label] + [_shown(values[j], unit) if j < len(values) else "" for _, values in clean]
        for j, label in enumerate(labels)
    ]
    return _figure(
        chart_id,
        title,
        _svg(chart_id, title, description or "No data yet", height, body),
        _table(title, ["", *[name for name, _ in clean]], table_rows),
    )

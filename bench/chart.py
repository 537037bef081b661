"""A dependency-free SVG line chart: throughput against the number of processes, one line per
series, each point the median with a bar from the slowest to the fastest run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape


@dataclass
class Series:
    label: str
    color: str
    dashed: bool
    points: list[tuple[int, float, float, float]]  # (x, median, low, high)


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def line_chart(title: str, x_label: str, y_label: str, series: list[Series], *, width=790, height=440) -> str:
    left, right, top, bottom = 80, 250, 50, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = sorted({p[0] for s in series for p in s.points})
    y_max = max((p[3] for s in series for p in s.points), default=1.0) or 1.0
    step = _nice_step(y_max * 1.05)
    y_top = step * math.ceil(y_max * 1.05 / step)
    # Processes double from one point to the next: a log2 axis spaces them evenly.
    lo, hi = math.log2(xs[0]), math.log2(xs[-1]) if len(xs) > 1 else math.log2(xs[0]) + 1

    def px(x: float) -> float:
        return left + (math.log2(x) - lo) / ((hi - lo) or 1) * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / y_top * plot_h

    out = _frame(title, width, height, left, plot_w, py, y_top, step)
    for x in xs:
        out.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#f0f0f0"/>')
        out.append(f'<text x="{px(x):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{x}</text>')
    out.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#333"/>'
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#333"/>'
    )
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 15}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text transform="translate(20 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    for index, s in enumerate(series):
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        points = " ".join(f"{px(x):.1f},{py(m):.1f}" for x, m, _, _ in s.points)
        out.append(f'<polyline points="{points}" fill="none" stroke="{s.color}" stroke-width="2"{dash}/>')
        for x, m, low, high in s.points:
            out.append(
                f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{py(low):.1f}" y2="{py(high):.1f}" '
                f'stroke="{s.color}" stroke-width="1.5"/>'
                f'<circle cx="{px(x):.1f}" cy="{py(m):.1f}" r="3.5" fill="{s.color}"/>'
            )
        ly = top + 10 + index * 22
        lx = left + plot_w + 18
        out.append(
            f'<line x1="{lx}" x2="{lx + 26}" y1="{ly}" y2="{ly}" stroke="{s.color}" stroke-width="2"{dash}/>'
            f'<text x="{lx + 32}" y="{ly + 4}">{escape(s.label)}</text>'
        )
    out.append(
        f'<text x="{left + plot_w + 18}" y="{top + 10 + len(series) * 22 + 10}" fill="#666" font-size="11">'
        "dot: median; bar: min–max</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


@dataclass
class Bar:
    label: str
    color: str
    median: float
    low: float
    high: float


def _frame(title: str, width, height, left, plot_w, py, y_top: float, step: float) -> list[str]:
    """The start of a chart: the white page, the title, and the horizontal grid with its labels."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="28" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    y = 0.0
    while y <= y_top + 1e-9:
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{left - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{y:,.0f}</text>')
        y += step
    return out


def bar_chart(title: str, y_label: str, bars: list[Bar], *, width=790, height=360, note: str = "") -> str:
    """One bar per measured quantity (the median), with a line from the slowest to the fastest run."""
    left, right, top, bottom = 80, 40, 50, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = max((b.high for b in bars), default=1.0) or 1.0
    step = _nice_step(y_max * 1.05)
    y_top = step * math.ceil(y_max * 1.05 / step)

    def py(y: float) -> float:
        return top + plot_h - y / y_top * plot_h

    out = _frame(title, width, height, left, plot_w, py, y_top, step)
    out.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#333"/>'
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#333"/>'
        f'<text transform="translate(20 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    slot = plot_w / max(len(bars), 1)
    for index, bar in enumerate(bars):
        x = left + slot * index + slot * 0.2
        w = slot * 0.6
        centre = x + w / 2
        out.append(
            f'<rect x="{x:.1f}" y="{py(bar.median):.1f}" width="{w:.1f}" height="{top + plot_h - py(bar.median):.1f}" '
            f'fill="{bar.color}" fill-opacity="0.8"/>'
            f'<line x1="{centre:.1f}" x2="{centre:.1f}" y1="{py(bar.low):.1f}" y2="{py(bar.high):.1f}" '
            'stroke="#222" stroke-width="1.5"/>'
            f'<text x="{centre:.1f}" y="{py(bar.high) - 6:.1f}" text-anchor="middle">{bar.median:,.0f}</text>'
            f'<text x="{centre:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{escape(bar.label)}</text>'
        )
    out.append(
        f'<text x="{left}" y="{height - 20}" fill="#666" font-size="11">'
        f"{escape(note + ('; ' if note else '') + 'bar: median; line: min–max')}</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def stack(panels: list[str]) -> str:
    """Several charts, one under the other, as one SVG (each panel keeps its own coordinates)."""
    sizes = [(float(_attribute(p, "width")), float(_attribute(p, "height"))) for p in panels]
    width, height = max(w for w, _ in sizes), sum(h for _, h in sizes)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{height:g}" '
        f'viewBox="0 0 {width:g} {height:g}">',
        f'<rect width="{width:g}" height="{height:g}" fill="white"/>',
    ]
    y = 0.0
    for panel, (_, h) in zip(panels, sizes, strict=True):
        out.append(panel.replace("<svg ", f'<svg y="{y:g}" ', 1).strip())
        y += h
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _attribute(svg: str, name: str) -> str:
    head = svg[: svg.index(">")]
    return head.split(f' {name}="', 1)[1].split('"', 1)[0]

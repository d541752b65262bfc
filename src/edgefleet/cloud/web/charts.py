"""Inline SVG charts, pure: values in, ``Markup`` out (no JS, no external assets).

Every string that reaches the SVG (series names, labels, units, colours) goes through
``html.escape``: class names come from devices, model names from operators.

``sparkline_svg`` for table cells, ``line_chart_svg`` for a few series over time with
axes, ``bars_svg`` for two histograms side by side (drift windows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape

from markupsafe import Markup

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2")


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def sparkline_svg(values: Sequence[float | None], *, width: int = 120, height: int = 28,
                  lo: float | None = None, hi: float | None = None, color: str = "#2563eb",
                  label: str = "") -> Markup:
    """A polyline over the non-None values (gaps break the line); last value dotted."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    title, color = escape(label), escape(color)
    if not pts:
        return Markup(f'<svg class="spark empty" width="{width}" height="{height}" role="img" aria-label="{title}: no data"></svg>')
    vs = [v for _, v in pts]
    lo = min(vs) if lo is None else lo
    hi = max(vs) if hi is None else hi
    span = (hi - lo) or 1.0
    n = max(len(values) - 1, 1)
    pad = 2

    def xy(i: int, v: float) -> tuple[float, float]:
        return pad + i * (width - 2 * pad) / n, height - pad - (v - lo) * (height - 2 * pad) / span

    segments: list[list[tuple[float, float]]] = [[]]
    prev = None
    for i, v in pts:
        if prev is not None and i != prev + 1:
            segments.append([])
        segments[-1].append(xy(i, v))
        prev = i
    lines = "".join(
        f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in seg)}"/>'
        for seg in segments if len(seg) > 1
    )
    lx, ly = xy(*pts[-1])
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{title}"><title>{title}</title>{lines}<circle cx="{_fmt(lx)}" cy="{_fmt(ly)}" r="2" fill="{color}"/></svg>'
    )


def line_chart_svg(series: Mapping[str, Sequence[tuple[datetime, float | None]]], *, width: int = 560,
                   height: int = 180, unit: str = "", lo: float | None = None, hi: float | None = None,
                   percent: bool = False) -> Markup:
    """Several named series over a shared time axis, with min/max labels and a legend."""
    all_pts = [(t, v) for pts in series.values() for t, v in pts if v is not None]
    if not all_pts:
        return Markup(f'<svg class="chart empty" width="{width}" height="{height}"><text x="10" y="20" '
                      'class="muted">no data yet</text></svg>')
    t0 = min(t.timestamp() for t, _ in all_pts)
    t1 = max(t.timestamp() for t, _ in all_pts)
    vs = [v for _, v in all_pts]
    lo = min(vs) if lo is None else lo
    hi = max(vs) if hi is None else hi
    if hi == lo:
        hi = lo + 1.0
    left, right, top, bottom = 52, 10, 10, 34
    w, h = width - left - right, height - top - bottom

    def xy(t: datetime, v: float) -> tuple[float, float]:
        fx = (t.timestamp() - t0) / (t1 - t0) if t1 > t0 else 0.5
        return left + fx * w, top + h - (v - lo) * h / (hi - lo)

    def lab(v: float) -> str:
        return f"{v * 100:.0f}%" if percent else f"{v:.2f}{escape(unit)}"

    parts = [
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" class="axis"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" class="axis"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="tick">{lab(hi)}</text>',
        f'<text x="{left - 4}" y="{top + h}" text-anchor="end" class="tick">{lab(lo)}</text>',
        f'<text x="{left}" y="{height - 18}" class="tick">{datetime.fromtimestamp(t0).strftime("%H:%M:%S")}</text>',
        f'<text x="{left + w}" y="{height - 18}" text-anchor="end" class="tick">{datetime.fromtimestamp(t1).strftime("%H:%M:%S")}</text>',
    ]
    legend_x = left
    for k, (name, pts) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        coords = [xy(t, v) for t, v in pts if v is not None]
        if len(coords) > 1:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                         + " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in coords) + '"/>')
        for x, y in coords[-1:] if len(coords) > 1 else coords:
            parts.append(f'<circle cx="{_fmt(x)}" cy="{_fmt(y)}" r="2.5" fill="{color}"/>')
        parts.append(f'<rect x="{legend_x}" y="{height - 10}" width="10" height="3" fill="{color}"/>'
                     f'<text x="{legend_x + 14}" y="{height - 6}" class="tick">{escape(name)}</text>')
        legend_x += 24 + 7 * len(name)
    return Markup(f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
                  + "".join(parts) + "</svg>")


def bars_svg(labels: Sequence[str], groups: Mapping[str, Sequence[float]], *, width: int = 560,
             height: int = 150) -> Markup:
    """Grouped bars of shares (each group normalised to sum 1), e.g. reference vs current."""
    if not labels:
        return Markup("")
    norm = {}
    for name, vals in groups.items():
        s = float(sum(vals)) or 1.0
        norm[name] = [v / s for v in vals]
    top_v = max((v for vals in norm.values() for v in vals), default=1.0) or 1.0
    left, bottom, top = 8, 30, 8
    h = height - bottom - top
    slot = (width - left) / len(labels)
    bw = max(2.0, (slot - 4) / max(len(groups), 1))
    parts = []
    for i, label in enumerate(labels):
        for k, (name, vals) in enumerate(norm.items()):
            bh = vals[i] / top_v * h
            x = left + i * slot + k * bw
            parts.append(f'<rect x="{_fmt(x)}" y="{_fmt(top + h - bh)}" width="{_fmt(bw - 1)}" height="{_fmt(bh)}" '
                         f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(name)} {escape(label)}: {vals[i]:.1%}</title></rect>')
        parts.append(f'<text x="{_fmt(left + i * slot + slot / 2)}" y="{top + h + 12}" text-anchor="middle" class="tick">{escape(label)}</text>')
    lx = left
    for k, name in enumerate(norm):
        parts.append(f'<rect x="{lx}" y="{height - 10}" width="10" height="6" fill="{PALETTE[k % len(PALETTE)]}"/>'
                     f'<text x="{lx + 14}" y="{height - 4}" class="tick">{escape(name)}</text>')
        lx += 30 + 7 * len(name)
    return Markup(f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
                  + "".join(parts) + "</svg>")

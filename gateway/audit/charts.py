"""Inline SVG bar charts: the report must open anywhere, offline, with no script."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

ROW_H = 22
LABEL_W = 190
BAR_W = 480
NUMBER_W = 70


def _label(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stacked_bars(
    rows: Sequence[tuple[str, Sequence[int]]],
    colors: Sequence[str],
    title: str,
) -> str:
    """One horizontal bar per row, split into parts (e.g. forwarded/redacted/refused/error)."""
    if not rows:
        return ""
    peak = max(sum(parts) for _, parts in rows) or 1
    height = ROW_H * len(rows) + 4
    width = LABEL_W + BAR_W + NUMBER_W
    out = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, parts) in enumerate(rows):
        y = i * ROW_H + 2
        out.append(
            f'<text x="{LABEL_W - 8}" y="{y + 15}" text-anchor="end">{escape(_label(label))}</text>'
        )
        x = float(LABEL_W)
        for value, color in zip(parts, colors, strict=False):
            w = BAR_W * value / peak
            if w > 0:
                out.append(
                    f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 6}" '
                    f'fill="{escape(color)}"/>'
                )
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + 15}">{sum(parts)}</text>')
    out.append("</svg>")
    return "".join(out)


def bars(rows: Sequence[tuple[str, int]], color: str, title: str) -> str:
    return stacked_bars([(label, [n]) for label, n in rows], [color], title)

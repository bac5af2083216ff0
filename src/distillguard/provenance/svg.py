"""Tiny inline-SVG charts for self-contained HTML reports (no JavaScript, no network)."""

from __future__ import annotations

import html

import numpy as np


def histogram(values, *, bins: int = 20, width: int = 420, height: int = 180, title: str = "", marker: float | None = None) -> str:
    """Histogram of values in [0, 1] with the uniform density drawn as a dashed line.

    >>> histogram([0.1, 0.5, 0.9]).startswith("<svg")
    True
    """
    v = np.clip(np.asarray(values, dtype=float), 0, 1)
    counts, _ = np.histogram(v, bins=bins, range=(0, 1))
    pad, top = 30, 22
    w, h = width - 2 * pad, height - pad - top
    cmax = max(counts.max() if len(counts) else 1, len(v) / bins * 1.5, 1)
    bw = w / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">']
    parts.append(f'<text x="{pad}" y="14">{html.escape(title)}</text>')
    for i, c in enumerate(counts):
        bh = h * c / cmax
        parts.append(f'<rect x="{pad + i * bw:.1f}" y="{top + h - bh:.1f}" width="{bw - 1:.1f}" height="{bh:.1f}" fill="#7aa6d6"/>')
    uy = top + h - h * (len(v) / bins) / cmax
    parts.append(f'<line x1="{pad}" x2="{pad + w}" y1="{uy:.1f}" y2="{uy:.1f}" stroke="#c33" stroke-dasharray="4,3"/>')
    parts.append(f'<line x1="{pad}" x2="{pad + w}" y1="{top + h}" y2="{top + h}" stroke="#333"/>')
    for x in (0, 0.5, 1):
        parts.append(f'<text x="{pad + w * x - 6:.1f}" y="{top + h + 14}">{x:g}</text>')
    if marker is not None:
        mx = pad + w * float(np.clip(marker, 0, 1))
        parts.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{top + h}" stroke="#d60" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


def bars(labels, values, *, width: int = 640, height: int = 240, title: str = "", ref: float | None = None, ylabel: str = "") -> str:
    """Vertical bar chart; ``ref`` draws a horizontal reference line.

    >>> bars(["a"], [1.0]).startswith("<svg")
    True
    """
    vals = np.asarray(values, dtype=float)
    vals = np.where(np.isfinite(vals), vals, 0.0)
    pad_l, pad_b, top = 40, 70, 22
    w, h = width - pad_l - 10, height - pad_b - top
    vmax = max(vals.max() if len(vals) else 1.0, ref or 0.0, 1e-9) * 1.1
    bw = w / max(len(vals), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="10">']
    parts.append(f'<text x="{pad_l}" y="14" font-size="11">{html.escape(title)}</text>')
    parts.append(f'<text x="2" y="{top + 10}">{html.escape(ylabel)}</text>')
    for i, (lab, v) in enumerate(zip(labels, vals)):
        bh = h * v / vmax
        x = pad_l + i * bw
        parts.append(f'<rect x="{x + 2:.1f}" y="{top + h - bh:.1f}" width="{bw - 4:.1f}" height="{bh:.1f}" fill="#5b8c5a"><title>{html.escape(str(lab))}: {v:.3g}</title></rect>')
        parts.append(f'<text x="{x + bw / 2:.1f}" y="{top + h - bh - 2:.1f}" text-anchor="middle">{v:.3g}</text>')
        parts.append(f'<text transform="translate({x + bw / 2:.1f},{top + h + 8}) rotate(40)" font-size="9">{html.escape(str(lab))}</text>')
    if ref is not None:
        ry = top + h - h * ref / vmax
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{ry:.1f}" y2="{ry:.1f}" stroke="#c33" stroke-dasharray="4,3"/>')
    parts.append(f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{top + h}" y2="{top + h}" stroke="#333"/>')
    parts.append("</svg>")
    return "".join(parts)

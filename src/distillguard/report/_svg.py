"""Small inline-SVG charts for the report: no JavaScript library, no network, fast to render.

Every text that reaches the SVG goes through :func:`html.escape`.

    >>> svg = timeline_svg([0, 3, 1], start=0, bucket_s=10, t0=0, t1=30)
    >>> svg.startswith("<svg") and "</svg>" in svg
    True
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

import numpy as np

EDGE_COLORS = {
    "payment_fingerprint": "#d62728",
    "client_ip": "#ff7f0e",
    "ip_prefix": "#ffbb78",
    "user_agent_params": "#9467bd",
    "created_wave": "#8c564b",
    "email_domain": "#e377c2",
    "shared_prompts": "#1f77b4",
    "template": "#6baed6",
    "prompt_set_slices": "#17becf",
    "sync_timing": "#2ca02c",
    "model_pivot": "#bcbd22",
}
BENIGN_COLOR = "#7f8c9a"
FLAGGED_COLOR = "#c0392b"


def _fmt(x: float) -> str:
    """Short number label: 0.12, 3.4k, 2.1M."""
    ax = abs(x)
    if ax == 0:
        return "0"
    if ax >= 1e6:
        return f"{x / 1e6:.1f}M"
    if ax >= 1e3:
        return f"{x / 1e3:.1f}k"
    if ax >= 10 or x == int(x):
        return f"{x:.0f}"
    return f"{x:.2g}"


def score_color(score: float) -> str:
    """Colour for a score in [0, 1]: grey-blue (low) to red (high)."""
    s = min(1.0, max(0.0, float(score)))
    lo, hi = (127, 140, 154), (192, 57, 43)
    r, g, b = (round(a + (c - a) * s) for a, c in zip(lo, hi))
    return f"#{r:02x}{g:02x}{b:02x}"


def timeline_svg(
    counts: list[int], *, start: float, bucket_s: float, t0: float, t1: float, width: int = 640, height: int = 46
) -> str:
    """Requests per bucket as an area on the scan's common time axis [t0, t1]."""
    span = max(float(t1) - float(t0), 1.0)
    c = np.asarray(counts, dtype=float)
    top = float(c.max()) if c.size else 0.0
    parts = [f'<svg class="tl" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f6f7f9"/>']
    day = 86400.0
    if span / day <= 60:  # faint day boundaries, labelled MM-DD
        first = np.ceil(float(t0) / day) * day
        for k, t in enumerate(np.arange(first, float(t1), day)):
            x = (t - float(t0)) / span * width
            parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#d5d9e0" stroke-width="1"/>')
            if height >= 40 and (span / day <= 14 or k % 7 == 0):
                label = datetime.fromtimestamp(t, UTC).strftime("%m-%d")
                parts.append(f'<text x="{x + 2:.1f}" y="{height - 2}" class="ax">{label}</text>')
    if c.size and top > 0:
        xs = (float(start) + np.arange(c.size + 1) * float(bucket_s) - float(t0)) / span * width
        ys = height - 4 - c / top * (height - 8)
        pts = [f"{xs[0]:.1f},{height - 4}"]
        for i in range(c.size):
            pts.append(f"{xs[i]:.1f},{ys[i]:.1f}")
            pts.append(f"{xs[i + 1]:.1f},{ys[i]:.1f}")
        pts.append(f"{xs[-1]:.1f},{height - 4}")
        parts.append(f'<polygon points="{" ".join(pts)}" fill="{FLAGGED_COLOR}" fill-opacity="0.75"/>')
    parts.append(f'<text x="{width - 4}" y="11" text-anchor="end" class="ax">max {_fmt(top)}/bucket</text>')
    parts.append(f"<title>{int(c.sum())} requests; peak {_fmt(top)} per {int(bucket_s)} s</title></svg>")
    return "".join(parts)


#: The line of a signal's strength over its feature in the distribution plots.
STRENGTH_COLOR = "#222222"


def histogram_svg(
    benign: np.ndarray, flagged: np.ndarray, *, title: str, width: int = 300, height: int = 150, bins: int = 30,
    strength: tuple[list[float], list[float]] | None = None,
) -> str:
    """Two overlaid histograms (share of accounts per bin) of one feature: benign vs flagged, and, given
    ``strength`` knots (x ascending, y in [0, 1]), the signal's strength as a line from the bottom (0) to
    the top (1) of the plot, so that an analyst sees where the signal starts to count.

    Heavy-tailed non-negative features (spanning over two decades) get a log10 x axis.
    """
    benign = np.asarray(benign, dtype=float)
    flagged = np.asarray(flagged, dtype=float)
    benign = benign[np.isfinite(benign)]
    flagged = flagged[np.isfinite(flagged)]
    both = np.concatenate([benign, flagged])
    pad_l, pad_b, pad_t = 8, 18, 18
    plot_w, plot_h = width - 2 * pad_l, height - pad_b - pad_t
    parts = [f'<svg class="hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<text x="{pad_l}" y="12" class="ht">{escape(title)}</text>']
    if both.size == 0:
        parts.append(f'<text x="{pad_l}" y="{height / 2}" class="ax">no values</text></svg>')
        return "".join(parts)
    lo, hi = float(both.min()), float(both.max())
    log = lo >= 0 and hi > 0 and hi / max(lo, 1.0) > 100
    tf = (lambda v: np.log10(v + 1.0)) if log else (lambda v: v)
    tlo, thi = float(tf(np.array([lo]))[0]), float(tf(np.array([hi]))[0])
    if thi <= tlo:
        thi = tlo + 1.0
    edges = np.linspace(tlo, thi, bins + 1)
    hb = np.histogram(tf(benign), edges)[0] / max(benign.size, 1)
    hf = np.histogram(tf(flagged), edges)[0] / max(flagged.size, 1)
    top = max(float(hb.max(initial=0)), float(hf.max(initial=0)), 1e-9)
    bw = plot_w / bins
    parts.append(f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" '
                 'stroke="#999" stroke-width="1"/>')
    for h, color, op in ((hb, BENIGN_COLOR, 0.55), (hf, FLAGGED_COLOR, 0.6)):
        for i in np.nonzero(h)[0]:
            bh = h[i] / top * plot_h
            parts.append(f'<rect x="{pad_l + i * bw:.1f}" y="{pad_t + plot_h - bh:.1f}" width="{bw:.1f}" '
                         f'height="{bh:.1f}" fill="{color}" fill-opacity="{op}"/>')
    for val, label, color in ((benign, "benign", BENIGN_COLOR), (flagged, "flagged", FLAGGED_COLOR)):
        if val.size:
            med = float(np.median(val))
            x = pad_l + (float(tf(np.array([med]))[0]) - tlo) / (thi - tlo) * plot_w
            parts.append(f'<line x1="{x:.1f}" y1="{pad_t}" x2="{x:.1f}" y2="{pad_t + plot_h}" stroke="{color}" '
                         f'stroke-dasharray="3,2"><title>{label} median {_fmt(med)}</title></line>')
    if strength is not None and len(strength[0]) >= 2:
        kx, ky = np.asarray(strength[0], dtype=float), np.asarray(strength[1], dtype=float)
        xs = np.unique(np.concatenate([[lo, hi], kx[(kx > lo) & (kx < hi)]]))
        ys = np.interp(xs, kx, ky)
        px = pad_l + (tf(xs) - tlo) / (thi - tlo) * plot_w
        py = pad_t + plot_h - ys * plot_h
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py))
        parts.append(f'<polyline class="strength" points="{pts}" fill="none" stroke="{STRENGTH_COLOR}" stroke-width="1.5">'
                     "<title>signal strength under the model (bottom 0, top 1)</title></polyline>")
    axis = "log scale" if log else ""
    parts.append(f'<text x="{pad_l}" y="{height - 4}" class="ax">{_fmt(lo)}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 4}" class="ax" text-anchor="middle">{axis}</text>')
    parts.append(f'<text x="{width - pad_l}" y="{height - 4}" class="ax" text-anchor="end">{_fmt(hi)}</text>')
    parts.append(f"<title>{escape(title)}: {benign.size} benign, {flagged.size} flagged accounts</title></svg>")
    return "".join(parts)


def graph_svg(
    nodes: list[tuple[str, float]],
    edges: list[tuple[str, str, str, float]],
    *,
    seed: int = 0,
    width: int = 520,
    height: int = 360,
) -> str:
    """A cluster's account graph: nodes coloured by score, edges coloured by link type.

    ``nodes`` is ``[(account_id, score)]``; ``edges`` is ``[(src, dst, type, weight)]`` between them.
    The layout is networkx's spring layout with a fixed seed, so the picture is reproducible.
    """
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(n for n, _ in nodes)
    for s, d, _t, w in edges:
        if s in g and d in g and s != d:
            prev = g.get_edge_data(s, d, {}).get("weight", 0.0)
            g.add_edge(s, d, weight=prev + float(w))
    if g.number_of_nodes() == 0:
        return ""
    pos = nx.spring_layout(g, seed=seed, iterations=60) if g.number_of_nodes() > 1 else {nodes[0][0]: (0.0, 0.0)}
    xy = np.array([pos[n] for n, _ in nodes], dtype=float)
    mn, mx = xy.min(axis=0), xy.max(axis=0)
    rng = np.where(mx - mn > 1e-9, mx - mn, 1.0)
    m = 18
    xy = m + (xy - mn) / rng * np.array([width - 2 * m, height - 2 * m])
    at = {n: xy[i] for i, (n, _) in enumerate(nodes)}
    parts = [f'<svg class="graph" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<rect width="{width}" height="{height}" fill="#fbfbfc"/>']
    pair_n: dict[tuple[str, str], int] = {}
    for s, d, _t, _w in edges:
        if s in at and d in at and s != d:
            key = (s, d) if s < d else (d, s)
            pair_n[key] = pair_n.get(key, 0) + 1
    pair_k: dict[tuple[str, str], int] = {}
    for s, d, t, w in edges:
        if s in at and d in at and s != d:
            key = (s, d) if s < d else (d, s)
            k = pair_k.get(key, 0)
            pair_k[key] = k + 1
            (x1, y1), (x2, y2) = at[key[0]], at[key[1]]
            off = (k - (pair_n[key] - 1) / 2) * 3.0  # parallel links of different types side by side
            if off:
                dx, dy = x2 - x1, y2 - y1
                norm = max(float(np.hypot(dx, dy)), 1e-9)
                ox, oy = -dy / norm * off, dx / norm * off
                x1, y1, x2, y2 = x1 + ox, y1 + oy, x2 + ox, y2 + oy
            sw = 1.2 + 1.8 * min(float(w), 1.0)
            parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                         f'stroke="{EDGE_COLORS.get(t, "#aaa")}" stroke-width="{sw:.1f}" stroke-opacity="0.8">'
                         f"<title>{escape(str(t))} ({float(w):.2g})</title></line>")
    r = 5 if len(nodes) > 60 else 7
    for n, score in nodes:
        x, y = at[n]
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{score_color(score)}" stroke="#fff" '
                     f'stroke-width="1"><title>{escape(str(n))} score {float(score):.2f}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def legend_html(types: list[str]) -> str:
    """HTML legend for edge types present in a graph."""
    return "".join(
        f'<span class="lg"><i style="background:{EDGE_COLORS.get(t, "#aaa")}"></i>{escape(t)}</span>' for t in types
    )

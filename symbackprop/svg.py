"""Inline SVG pictures for the report and the notebook displays: the computational graph and a loss curve.

Plain SVG markup built as text: no script, no font or image to fetch, so a page that includes it stays one
self-contained file. Every label is escaped; a box's full definition and values are in its ``<title>``
(a browser shows it as a tooltip).
"""
from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np

#: fill and stroke of a box, by the kind of quantity
COLOURS = {"input": ("#dbeafe", "#2563eb"), "param": ("#fef3c7", "#b45309"), "node": ("#f3f4f6", "#4b5563"),
           "loss": ("#fee2e2", "#b91c1c"), "constant": ("#ecfccb", "#4d7c0f")}
KIND_WORDS = {"input": "input", "param": "parameter", "node": "node", "loss": "loss", "constant": "constant"}
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'
BOX_W, GAP_X, GAP_Y, LINE = 184, 56, 22, 15


def _text(x: float, y: float, text: str, size: int = 12, anchor: str = "middle", weight: str = "normal",
          fill: str = "#1f2328") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
            f'fill="{fill}">{html.escape(text)}</text>')


def short_number(x: float, digits: int = 4) -> str:
    """A number in a few significant digits, with the minus sign U+2212."""
    text = f"{float(x):.{digits}g}"
    return text.replace("-", "\u2212")


def short_value(value, limit: int = 22) -> str:
    """A scalar in 4 significant digits, or as many leading entries of an array (3 digits) as fit in ``limit``
    characters: ``[0.226, 0.0199, …]``."""
    a = np.asarray(value, dtype=np.float64)
    if a.ndim == 0:
        return short_number(a)
    flat = a.reshape(-1)
    for count in (3, 2, 1):
        shown = ", ".join(short_number(v, 3) for v in flat[:count])
        more = ", \u2026" if flat.size > count else ""
        text = f"[{shown}{more}]"
        if len(text) <= limit or count == 1:
            return text
    return text  # pragma: no cover - the loop always returns


def _columns(graph) -> dict[str, int]:
    """A column for every quantity: a node one right of its latest input; an input or parameter just left
    of its first consumer, so that edges stay short."""
    col: dict[str, int] = {}
    for q in graph.quantities.values():
        deps = graph.dependencies(q.name)
        col[q.name] = 1 + max((col[d] for d in deps if d in col), default=0) if q.expr is not None else 0
    consumers: dict[str, list[str]] = {}
    for q in graph.computed:
        for d in graph.dependencies(q.name):
            consumers.setdefault(d, []).append(q.name)
    for q in graph.input_list + graph.params:
        used_by = consumers.get(q.name)
        col[q.name] = max(0, min(col[c] for c in used_by) - 1) if used_by else 0
    return col


def graph_picture(graph, evaluation=None, title: str | None = None) -> str:
    """The computational graph as SVG: inputs, parameters, nodes and the loss, left to right, edges from each
    quantity to the nodes that use it; with an ``evaluation``, each box shows its value and its adjoint."""
    col = _columns(graph)
    n_cols = max(col.values()) + 1
    lines_per_box = 2 + (2 if evaluation is not None else 0)
    box_h = 10 + LINE * lines_per_box
    stacks: list[list[str]] = [[] for _ in range(n_cols)]
    for name in graph.quantities:
        stacks[col[name]].append(name)
    # order each column by the mean position of its neighbours (two sweeps), for fewer crossings
    edges = [(d, q.name) for q in graph.computed for d in graph.dependencies(q.name)]
    for _ in range(2):
        position = {n: i for stack in stacks for i, n in enumerate(stack)}
        for stack in stacks:
            def centre(n):
                near = [position[a] for a, b in edges if b == n] + [position[b] for a, b in edges if a == n]
                return sum(near) / len(near) if near else position[n]
            stack.sort(key=centre)
    height = max(len(s) for s in stacks) * (box_h + GAP_Y) + GAP_Y + 40
    width = n_cols * (BOX_W + GAP_X) - GAP_X + 2 * 24
    xy: dict[str, tuple[float, float]] = {}
    for c, stack in enumerate(stacks):
        top = (height - 40 - len(stack) * (box_h + GAP_Y) + GAP_Y) / 2
        for i, name in enumerate(stack):
            xy[name] = (24 + c * (BOX_W + GAP_X), top + i * (box_h + GAP_Y))
    out = [f'<svg class="graph" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
           f'role="img" {FONT}>',
           f"<title>{html.escape(title or f'Computational graph of {graph.name}')}</title>",
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#6b7280"/></marker></defs>']
    for a, b in edges:
        (xa, ya), (xb, yb) = xy[a], xy[b]
        x1, y1, x2, y2 = xa + BOX_W, ya + box_h / 2, xb - 2, yb + box_h / 2
        bend = max(30.0, (x2 - x1) / 2)
        out.append(f'<path d="M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} {y2:.1f}, '
                   f'{x2:.1f} {y2:.1f}" fill="none" stroke="#9ca3af" stroke-width="1.3" marker-end="url(#arrow)"/>')
    for name, (x, y) in xy.items():
        out.append(_box(graph, name, x, y, box_h, evaluation))
    legend_y = height - 16
    kinds = ("input", "param") + (("constant",) if graph.constants else ()) + ("node", "loss")
    for i, kind in enumerate(kinds):
        fill, stroke = COLOURS[kind]
        lx = 24 + i * 110
        out.append(f'<rect x="{lx}" y="{legend_y - 10}" width="14" height="12" rx="3" fill="{fill}" '
                   f'stroke="{stroke}"/>')
        out.append(_text(lx + 20, legend_y, KIND_WORDS[kind], 11, "start", fill="#59636e"))
    out.append("</svg>")
    return "\n".join(out)


def _box(graph, name: str, x: float, y: float, h: float, evaluation) -> str:
    from .printing import NetworkTextPrinter
    q = graph[name]
    fill, stroke = COLOURS[q.kind]
    shape = "\u00d7".join(map(str, q.shape)) if q.shape else "scalar"
    if q.expr is not None:
        detail = NetworkTextPrinter({n: p.shape for n, p in graph.quantities.items()}).doprint(q.expr)
    else:
        detail = f"= {q.value!r}" if q.kind == "constant" else f"{KIND_WORDS[q.kind]}, {shape}"
    tooltip = [f"{name} ({KIND_WORDS[q.kind]}, {shape})"] + ([f"{name} = {detail}"] if q.expr is not None else [])
    rows = [(name, 13, "bold"), (_clip(detail), 11, "normal")]
    if evaluation is not None:
        value = evaluation.values.get(name)
        adjoint_name = evaluation.derivation.adjoint(name)
        adjoint = evaluation.values.get(getattr(adjoint_name, "name", ""), None)
        if name == evaluation.derivation.loss:
            adjoint = 1.0
        label = f"\u2202{evaluation.derivation.loss}/\u2202{name} = "
        rows.append(("= " + short_value(value, 25) if value is not None else "", 11, "normal"))
        rows.append((_clip(label + short_value(adjoint, 29 - len(label))) if adjoint is not None else "", 11,
                     "normal"))
        if value is not None:
            tooltip.append(f"value: {np.array2string(np.asarray(value), precision=6, threshold=20)}")
        if adjoint is not None:
            tooltip.append(f"adjoint: {np.array2string(np.asarray(adjoint), precision=6, threshold=20)}")
    parts = [f'<g class="quantity" id="graph-{html.escape(name)}"><title>{html.escape(chr(10).join(tooltip))}</title>',
             f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{h:.1f}" rx="7" fill="{fill}" stroke="{stroke}" '
             f'stroke-width="1.4"/>']
    for i, (text, size, weight) in enumerate(rows):
        if text:
            colour = "#59636e" if i else "#1f2328"
            parts.append(_text(x + BOX_W / 2, y + 17 + i * LINE, text, size, weight=weight, fill=colour))
    parts.append("</g>")
    return "".join(parts)


def _clip(text: str, limit: int = 29) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


# ---- a line chart ----------------------------------------------------------------------------------------------
def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    if not high > low:
        return [low]
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten in [low, high]; with 1, 2 and 5 times them when the range is under two decades."""
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    multipliers = (1, 2, 5) if hi - lo <= 2 else (1,)
    ticks = [m * 10 ** k for k in range(lo, hi + 1) for m in multipliers]
    inside = [t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
    return inside or [low, high]


def line_chart(x: Sequence[float], series: Mapping[str, Sequence[float]], title: str, x_label: str = "epoch",
               y_label: str = "mean loss", log_y: bool | None = None, width: int = 640, height: int = 320) -> str:
    """An SVG line chart of one or more series over ``x``; the y axis is logarithmic when every value is
    positive and they span more than a factor of 10 (``log_y`` forces it either way)."""
    values = [v for s in series.values() for v in s if v is not None and np.isfinite(v)]
    if not values or len(x) == 0:
        return f'<svg viewBox="0 0 {width} 40" width="{width}" height="40" {FONT}>' + \
            _text(width / 2, 24, f"{title}: no values", 12) + "</svg>"
    if log_y is None:
        log_y = min(values) > 0 and max(values) / min(values) > 10
    left, right, top, bottom = 72, 16, 34, 46
    x0, x1 = float(min(x)), float(max(x))
    x1 = x1 if x1 > x0 else x0 + 1
    y0, y1 = min(values), max(values)
    if log_y:
        scale = math.log10
        ticks = log_ticks(y0, y1)
    else:
        if y1 == y0:
            y0, y1 = y0 - 1, y1 + 1
        scale = float
        ticks = nice_ticks(y0, y1)
        y0, y1 = min(y0, ticks[0]), max(y1, ticks[-1])
    s0, s1 = scale(y0), scale(y1)
    s1 = s1 if s1 > s0 else s0 + 1

    def px(v):
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def py(v):
        return top + (s1 - scale(v)) / (s1 - s0) * (height - top - bottom)

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" {FONT}>',
           f"<title>{html.escape(title)}</title>", _text(width / 2, 20, title, 13, weight="bold"),
           f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" fill="none" '
           'stroke="#d0d7de"/>']
    for t in ticks:
        y = py(t)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>')
        out.append(_text(left - 6, y + 4, short_number(t, 3), 11, "end", fill="#59636e"))
    for t in nice_ticks(x0, x1, 6):
        out.append(_text(px(t), height - bottom + 16, f"{t:g}", 11, fill="#59636e"))
    out.append(_text((left + width - right) / 2, height - 8, x_label, 12, fill="#59636e"))
    out.append(f'<text x="16" y="{(top + height - bottom) / 2:.1f}" font-size="12" fill="#59636e" text-anchor="middle" '
               f'transform="rotate(-90 16 {(top + height - bottom) / 2:.1f})">'
               f"{html.escape(y_label + (' (log scale)' if log_y else ''))}</text>")
    colours = ("#2563eb", "#dc2626", "#059669", "#7c3aed")
    for i, (name, ys) in enumerate(series.items()):
        points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, ys)
                          if b is not None and np.isfinite(b) and (b > 0 or not log_y))
        colour = colours[i % len(colours)]
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<line x1="{width - right - 120}" x2="{width - right - 100}" y1="{top + 16 + 16 * i}" '
                   f'y2="{top + 16 + 16 * i}" stroke="{colour}" stroke-width="2"/>')
        out.append(_text(width - right - 94, top + 20 + 16 * i, name, 11, "start"))
    out.append("</svg>")
    return "\n".join(out)

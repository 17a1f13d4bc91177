"""The report's pictures as geometry: the dependency graph and the step timeline, as plain data the HTML
report and the live board both draw (one layout, two renderers)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.report.model import (
    OUTCOME_COLOURS,
    STATUS_COLOURS,
    GraphNode,
    Report,
    StepRecord,
    format_duration,
)


@dataclass(frozen=True)
class _Box:
    name: str
    x: float
    y: float
    w: float
    h: float
    colour: str
    text: str  # label colour readable on ``colour``
    outcome: str
    label2: str


@dataclass(frozen=True)
class _Edge:
    path: str
    dependent: str
    dependency: str


@dataclass(frozen=True)
class _Bar:
    step_id: str
    label: str
    x: float
    y: float
    w: float
    colour: str
    status: str
    title: str
    point: bool  # finished without a recorded start: a marker, not a bar


@dataclass(frozen=True)
class _Tick:
    x: float
    label: str


@dataclass(frozen=True)
class _Mark:
    x: float
    label: str


def _text_on(colour: str) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#0f172a" if 0.299 * r + 0.587 * g + 0.114 * b > 160 else "#ffffff"


def _rows(report: Report, tiers: list[int]) -> list[list[GraphNode]]:
    """One row per tier, each host placed under the mean position of its dependencies placed above."""
    deps: dict[str, list[str]] = {}
    for dependent, dependency in report.graph_edges:
        deps.setdefault(dependent, []).append(dependency)
    xs: dict[str, float] = {}
    rows: list[list[GraphNode]] = []
    for tier in tiers:
        row = [n for n in report.graph_nodes if n.tier == tier]

        def key(n: GraphNode) -> tuple[float, str, str]:
            placed = [xs[d] for d in deps.get(n.name, []) if d in xs]
            return (sum(placed) / len(placed) if placed else math.inf, n.segment, n.name)

        row.sort(key=key)
        for i, n in enumerate(row):
            xs[n.name] = i
        rows.append(row)
    return rows


def _edge_path(a: _Box, b: _Box) -> str:
    """The SVG path from a dependent's box to its dependency's."""
    if a.y > b.y:  # dependency above: from the top of the dependent to the bottom of the dependency
        return f"M{a.x + a.w / 2:.1f},{a.y:.1f} L{b.x + b.w / 2:.1f},{b.y + b.h + 2:.1f}"
    if a.y == b.y:  # same tier: arc above
        x1, x2 = a.x + a.w / 2, b.x + b.w / 2
        return f"M{x1:.1f},{a.y:.1f} Q{(x1 + x2) / 2:.1f},{a.y - 40:.1f} {x2:.1f},{b.y - 2:.1f}"
    # a dependency below its dependent (should not happen: tiers forbid it)
    return f"M{a.x + a.w / 2:.1f},{a.y + a.h:.1f} L{b.x + b.w / 2:.1f},{b.y - 2:.1f}"


def _graph_layout(report: Report) -> dict[str, Any]:
    node_w, node_h, gap_x, gap_y, margin = 170.0, 44.0, 26.0, 64.0, 20.0
    tiers = sorted({n.tier for n in report.graph_nodes})
    rows = _rows(report, tiers)
    widest = max((len(r) for r in rows), default=0)
    width = max(2 * margin + widest * (node_w + gap_x) - gap_x, 360.0)
    boxes: dict[str, _Box] = {}
    for r, row in enumerate(rows):
        row_w = len(row) * (node_w + gap_x) - gap_x
        x0 = (width - row_w) / 2
        y = margin + 18 + r * (node_h + gap_y)
        for i, n in enumerate(row):
            boxes[n.name] = _Box(
                name=n.name,
                x=round(x0 + i * (node_w + gap_x), 1),
                y=round(y, 1),
                w=node_w,
                h=node_h,
                colour=OUTCOME_COLOURS.get(n.outcome, "#94a3b8"),
                text=_text_on(OUTCOME_COLOURS.get(n.outcome, "#94a3b8")),
                outcome=n.outcome,
                label2=f"tier {n.tier}" + (f" · {n.segment}" if n.segment else ""),
            )
    edges: list[_Edge] = []
    for dependent, dependency in report.graph_edges:
        a, b = boxes.get(dependent), boxes.get(dependency)
        if a is None or b is None:
            continue
        edges.append(_Edge(path=_edge_path(a, b), dependent=dependent, dependency=dependency))
    height = margin * 2 + 18 + len(rows) * (node_h + gap_y) - gap_y + 40
    tier_labels = [
        {"label": f"tier {tier}", "y": margin + 18 + r * (node_h + gap_y) - 6} for r, tier in enumerate(tiers)
    ]
    used = sorted({b.outcome for b in boxes.values()})
    legend = [
        {"outcome": o, "colour": OUTCOME_COLOURS.get(o, "#94a3b8"), "x": margin + i * 120, "y": height - 22}
        for i, o in enumerate(used)
    ]
    width = max(width, margin * 2 + len(used) * 120)
    return {
        "width": round(width),
        "height": round(height),
        "boxes": list(boxes.values()),
        "edges": edges,
        "tiers": tier_labels,
        "legend": legend,
    }


def _nice_step(total: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400):
        if total / step <= 10:
            return float(step)
    return 86400.0


def _first_offset(step: StepRecord) -> float:
    moment = step.started or step.finished
    return moment.offset_s if moment else 0.0


def _timeline_layout(report: Report) -> dict[str, Any]:
    label_w, chart_w, row_h, top, margin = 250.0, 680.0, 16.0, 34.0, 10.0
    steps = [s for s in report.steps if s.started or s.finished]
    steps.sort(key=lambda s: (_first_offset(s), s.step_id))
    end = max(
        [report.duration_s or 0.0]
        + [s.finished.offset_s for s in steps if s.finished]
        + [s.started.offset_s for s in steps if s.started]
        + [m.elapsed_s for m in report.milestones]
    )
    total = max(end, 1.0)
    scale = chart_w / total
    bars: list[_Bar] = []
    for i, s in enumerate(steps):
        begin = s.started.offset_s if s.started else (s.finished.offset_s if s.finished else 0.0)
        stop = s.finished.offset_s if s.finished else end
        title = f"{s.step_id}: {s.status}, {format_duration(s.duration_s)}"
        if s.error:
            title += f" - {s.error}"
        bars.append(
            _Bar(
                step_id=s.step_id,
                label=s.step_id if len(s.step_id) <= 38 else s.step_id[:36] + "…",
                x=round(label_w + begin * scale, 2),
                y=top + i * row_h,
                w=round(max((stop - begin) * scale, 2.0), 2),
                colour=STATUS_COLOURS.get(s.status, "#94a3b8"),
                status=s.status,
                title=title,
                point=s.started is None,
            )
        )
    step = _nice_step(total)
    ticks = [
        _Tick(x=round(label_w + k * step * scale, 2), label=format_duration(k * step) if k else "0")
        for k in range(int(total // step) + 1)
    ]
    marks = [_Mark(x=round(label_w + m.elapsed_s * scale, 2), label=m.name) for m in report.milestones]
    height = top + max(len(bars), 1) * row_h + 30
    legend = [{"status": k, "colour": v} for k, v in STATUS_COLOURS.items()]
    return {
        "width": round(label_w + chart_w + margin * 2 + 40),
        "height": round(height),
        "bars": bars,
        "ticks": ticks,
        "marks": marks,
        "axis_y": top - 6,
        "bottom": height - 24,
        "label_w": label_w,
        "chart_right": label_w + chart_w,
        "legend": legend,
    }


def _layout_data(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _layout_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _layout_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_layout_data(v) for v in value]
    return value


def graph_layout(report: Report) -> dict[str, Any]:
    """The dependency graph's geometry as plain data (boxes, edges, tier labels, legend): what the HTML
    report draws, for the live board to draw the same picture (one layout, two renderers)."""
    out: dict[str, Any] = _layout_data(_graph_layout(report))
    return out


def timeline_layout(report: Report) -> dict[str, Any]:
    """The step timeline's geometry as plain data (bars, ticks, milestone marks), as :func:`graph_layout`."""
    out: dict[str, Any] = _layout_data(_timeline_layout(report))
    return out


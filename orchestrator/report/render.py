"""Rendering a Report: Markdown and HTML through the Jinja2 templates in ``templates/report/``, or JSON."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import jinja2

from orchestrator.errors import UsageError
from orchestrator.report.layout import _graph_layout, _timeline_layout
from orchestrator.report.model import OUTCOME_COLOURS, STATUS_COLOURS, Report, _compact, format_duration

Format = Literal["md", "html", "json"]
TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "report"


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["duration"] = format_duration
    env.filters["compact"] = _compact
    env.filters["cell"] = _md_cell
    env.filters["colour"] = lambda outcome: OUTCOME_COLOURS.get(str(outcome), "#94a3b8")
    env.filters["status_colour"] = lambda status: STATUS_COLOURS.get(str(status), "#94a3b8")
    return env


def render_report(report: Report, fmt: str) -> str:
    """``md`` (Markdown), ``html`` (one self-contained file with SVG graphs) or ``json``."""
    if fmt == "json":
        return json.dumps(report.as_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    if fmt == "md":
        return _environment(autoescape=False).get_template("report.md.j2").render(r=report)
    if fmt == "html":
        return (
            _environment(autoescape=True)
            .get_template("report.html.j2")
            .render(r=report, graph=_graph_layout(report), chart=_timeline_layout(report), esc=html.escape)
        )
    raise UsageError(f"unknown report format {fmt!r}", target="--format", hint="use md, html or json")


def report_formats() -> Iterable[str]:
    return ("md", "html", "json")

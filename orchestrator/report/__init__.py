"""The incident report: a run's journal turned into a timeline, outcomes and NIS2 fields.

``build_report(records, inventory)`` reads the records of one run (``journal.read_journal``) and returns
a frozen :class:`Report`; ``render_report(report, "md" | "html" | "json")`` renders it with the Jinja2
templates in ``templates/report/``. Nothing here does I/O: the CLI reads the journal and writes the
output. The same journal always gives the same bytes (no "generated at" stamp).

What is known from the journal is prefilled; what only a person can know (severity, root cause,
cross-border impact, contacts) is marked ``TO BE COMPLETED BY: <role>``.

The parts: ``build`` (records parsed once into :mod:`orchestrator.events`, then steps, times and the
report), ``summary`` (one timeline line per event type), ``outcomes`` (each host's outcome and why, the
measures in force, the services affected), ``nis2`` (the notification fields), ``topology`` (what the
report knows of the site), ``layout`` (the graph and timeline geometry, shared with the live board),
``render`` (Markdown, HTML, JSON) and ``model`` (the frozen values they share).
"""

from __future__ import annotations

from orchestrator.report.build import build_report
from orchestrator.report.layout import graph_layout, timeline_layout
from orchestrator.report.model import (
    EVIDENCE_LIMIT,
    OUTCOME_COLOURS,
    REPORT_SCHEMA,
    STATUS_COLOURS,
    Approval,
    Attestation,
    Clearance,
    Finding,
    GraphNode,
    HostOutcome,
    Milestone,
    Moment,
    Nis2Field,
    Nis2Section,
    ObserverError,
    Report,
    StepRecord,
    TimelineEntry,
    format_duration,
)
from orchestrator.report.render import TEMPLATES, Format, render_report, report_formats
from orchestrator.report.topology import topology_of

__all__ = [
    "EVIDENCE_LIMIT",
    "OUTCOME_COLOURS",
    "REPORT_SCHEMA",
    "STATUS_COLOURS",
    "TEMPLATES",
    "Approval",
    "Attestation",
    "Clearance",
    "Finding",
    "Format",
    "GraphNode",
    "HostOutcome",
    "Milestone",
    "Moment",
    "Nis2Field",
    "Nis2Section",
    "ObserverError",
    "Report",
    "StepRecord",
    "TimelineEntry",
    "build_report",
    "format_duration",
    "graph_layout",
    "render_report",
    "report_formats",
    "timeline_layout",
    "topology_of",
]

"""The report's data: frozen values, colours, and the time and text helpers every part shares."""

from __future__ import annotations

import calendar
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from orchestrator.events import Event

if TYPE_CHECKING:
    from orchestrator.report.evidence import HostEvidence

REPORT_SCHEMA = "orchestrator.report/v1"
EVIDENCE_LIMIT = 3000  # characters of evidence shown inline in md/html; the journal has it all

# Who completes what in the NIS2 forms.
SECURITY_OFFICER = "security officer (CISO)"
INCIDENT_MANAGER = "incident manager"
DPO = "data protection officer"
MANAGEMENT = "hospital management (accountable body)"

OUTCOME_COLOURS: dict[str, str] = {
    "stopped": "#64748b",
    "kept-running": "#15803d",
    "restored": "#0f766e",
    "restored-attested": "#a21caf",  # restored, its integrity attested by a person (not verified)
    "isolated": "#ca8a04",
    "running": "#94a3b8",
    "failed": "#dc2626",
    "quarantined": "#ea580c",
    "not-stopped": "#9333ea",
    "not-restored": "#9333ea",
    "isolation-unproven": "#c026d3",
    "started": "#0891b2",
    "dry-run": "#a8a29e",
    "out-of-scope": "#e2e8f0",
}
STATUS_COLOURS: dict[str, str] = {
    "verified": "#16a34a",
    "failed": "#dc2626",
    "unproven": "#c026d3",
    "attested": "#a21caf",
    "skipped": "#9333ea",
    "pending": "#a8a29e",
    "dry-run": "#94a3b8",
    "running": "#2563eb",
}

# Event types shown in the timeline (the others are detail, shown per step).
HOST_ACTIONS = ("stop-host", "start-host", "check-integrity", "check-health")

# --------------------------------------------------------------------------------------------
# The report (frozen data)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """A point in time, in UTC to the second, in the site's local time, and since the run started."""

    iso: str  # full precision UTC, ISO 8601
    utc: str  # "2026-11-24 18:33:00Z"
    local: str  # "2026-11-24 19:33:00 CET"
    offset_s: float  # seconds since the run started


@dataclass(frozen=True)
class TimelineEntry:
    at: Moment
    seq: int
    type: str
    summary: str
    step_id: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class StepRecord:
    step_id: str
    action: str
    target: str
    wave: int | None
    phase: str
    status: str  # verified|failed|skipped|pending|dry-run, or "running" when started and never finished
    started: Moment | None
    finished: Moment | None
    duration_s: float | None
    changed: bool = False
    already: bool = False
    escalated: bool = False
    error: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    commands: tuple[str, ...] = ()
    verifications: tuple[Mapping[str, Any], ...] = ()
    requires: tuple[str, ...] = ()
    seq: int | None = None  # journal seq of its step-finished record


@dataclass(frozen=True)
class HostOutcome:
    name: str
    outcome: str  # stopped|kept-running|failed|restored|quarantined|isolated|running|not-stopped|...
    why: str
    segment: str = ""
    campus: str = ""
    tier: int | None = None
    role: str = ""
    services: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Approval:
    gate: str
    approved: bool
    approver: str
    how: str
    at: Moment
    reason: str = ""


@dataclass(frozen=True)
class Finding:
    host: str
    category: str
    path: str
    detail: str
    at: Moment


@dataclass(frozen=True)
class Clearance:
    """How a host that had not passed its checks was cleared before its segment came back: its power
    driver proved it off, or a person attested its physical disconnection (not verified by the tool)."""

    host: str
    segment: str
    how: str  # power-driver | attestation
    text: str  # "power driver: off" | "attested by X: physically disconnected, not verified"
    quarantined: bool
    at: Moment


@dataclass(frozen=True)
class Attestation:
    host: str
    claim: str
    by: str
    reason: str
    operator: str
    evidence_sha256: str
    evidence_file: str
    at: Moment


@dataclass(frozen=True)
class ObserverError:
    observer: str
    error: str
    at: Moment


@dataclass(frozen=True)
class Milestone:
    name: str
    at: Moment
    elapsed_s: float


@dataclass(frozen=True)
class Nis2Field:
    label: str
    value: str  # prefilled from the journal ("" when nothing is known)
    complete_by: str | None = None  # who still has to complete or confirm it
    source: str = ""  # where the prefilled value comes from


@dataclass(frozen=True)
class Nis2Section:
    key: str  # early-warning | incident-notification | final-report | personal-data
    title: str
    basis: str
    due: Moment | None
    due_note: str
    fields: tuple[Nis2Field, ...]


@dataclass(frozen=True)
class GraphNode:
    name: str
    tier: int
    segment: str
    outcome: str


@dataclass(frozen=True)
class Report:
    run_id: str
    site: str
    timezone: str
    mode: str
    status: str
    plan_id: str
    operator: str
    host: str
    argv: tuple[str, ...]
    inventory: str
    inventory_sha256: str
    scope: Mapping[str, Any]
    started: Moment | None
    finished: Moment | None
    detected: Moment | None
    detected_source: str
    duration_s: float | None
    time_to_containment_s: float | None
    time_to_shutdown_s: float | None
    time_to_restored_s: float | None
    counts: Mapping[str, int]
    milestones: tuple[Milestone, ...]
    timeline: tuple[TimelineEntry, ...]
    steps: tuple[StepRecord, ...]
    hosts: tuple[HostOutcome, ...]
    kept: tuple[HostOutcome, ...]
    failures: tuple[StepRecord, ...]
    left: tuple[Mapping[str, str], ...]
    approvals: tuple[Approval, ...]
    escalations: tuple[TimelineEntry, ...]
    findings: tuple[Finding, ...]
    unproven: tuple[StepRecord, ...]
    clearances: tuple[Clearance, ...]
    attestations: tuple[Attestation, ...]
    observer_errors: tuple[ObserverError, ...]
    measures: tuple[str, ...]
    affected_services: tuple[str, ...]
    interruptions: tuple[TimelineEntry, ...]
    nis2: tuple[Nis2Section, ...]
    graph_nodes: tuple[GraphNode, ...]
    graph_edges: tuple[tuple[str, str], ...]  # (dependent, dependency)
    notes: tuple[str, ...]
    records: int
    journal_ok: bool | None = None
    journal_head: str | None = None
    journal_problems: tuple[str, ...] = ()
    schema: str = REPORT_SCHEMA
    restore_evidence: tuple[HostEvidence, ...] = ()  # a restore's per-host evidence (report/evidence.py)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _plain(dataclasses.asdict(self))
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value

# --------------------------------------------------------------------------------------------
# Helpers: time, text
# --------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, start: datetime, tz: ZoneInfo | None) -> None:
        self.start = start
        self.tz = tz

    def moment(self, when: datetime) -> Moment:
        utc = when.astimezone(UTC)
        local = utc.astimezone(self.tz) if self.tz else utc
        return Moment(
            iso=utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            utc=utc.strftime("%Y-%m-%d %H:%M:%SZ"),
            local=local.strftime("%Y-%m-%d %H:%M:%S %Z"),
            offset_s=round((utc - self.start).total_seconds(), 3),
        )

    def of(self, event: Event) -> Moment:
        return self.moment(event.at or self.start)


def format_duration(seconds: float | None) -> str:
    """``42.3 s``, ``3 min 05 s``, ``2 h 04 min``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {(whole % 3600) // 60:02d} min"


def _compact(value: Any, limit: int = EVIDENCE_LIMIT) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    if len(text) > limit:
        return text[:limit] + f"... ({len(text) - limit} more characters in the journal)"
    return text


def _str(value: Any, default: str = "") -> str:
    return default if value is None else str(value)


def _add_months(moment: datetime, months: int) -> datetime:
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)

"""The incident report: a run's journal turned into a timeline, outcomes and NIS2 fields.

``build_report(records, inventory)`` reads the records of one run (``journal.read_journal``) and returns
a frozen :class:`Report`; ``render_report(report, "md" | "html" | "json")`` renders it with the Jinja2
templates in ``templates/report/``. Nothing here does I/O: the CLI reads the journal and writes the
output. The same journal always gives the same bytes (no "generated at" stamp).

What is known from the journal is prefilled; what only a person can know (severity, root cause,
cross-border impact, contacts) is marked ``TO BE COMPLETED BY: <role>``.
"""

from __future__ import annotations

import calendar
import dataclasses
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2

from orchestrator.errors import UsageError
from orchestrator.journal import JournalVerification, parse_timestamp
from orchestrator.model import Inventory

REPORT_SCHEMA = "orchestrator.report/v1"
TEMPLATES = Path(__file__).parent / "templates" / "report"
EVIDENCE_LIMIT = 3000  # characters of evidence shown inline in md/html; the journal has it all

Format = Literal["md", "html", "json"]

# Who completes what in the NIS2 forms.
SECURITY_OFFICER = "security officer (CISO)"
INCIDENT_MANAGER = "incident manager"
DPO = "data protection officer"
MANAGEMENT = "hospital management (accountable body)"

OUTCOME_COLOURS: dict[str, str] = {
    "stopped": "#64748b",
    "kept-running": "#15803d",
    "restored": "#0f766e",
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
    "skipped": "#9333ea",
    "pending": "#a8a29e",
    "dry-run": "#94a3b8",
    "running": "#2563eb",
}

# Event types shown in the timeline (the others are detail, shown per step).
_DETAIL_TYPES = frozenset({"step-started", "command-sent", "verification", "ansible-event"})
_HOST_ACTIONS = ("stop-host", "start-host", "check-integrity", "check-health")


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

    def of(self, record: Mapping[str, Any]) -> Moment:
        return self.moment(_ts(record) or self.start)


def _ts(record: Mapping[str, Any]) -> datetime | None:
    value = record.get("ts")
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


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


def topology_of(inventory: Inventory) -> dict[str, Any]:
    """What the report needs from an inventory, as plain data (the executor may put it in run-started)."""
    return {
        "hosts": {
            h.name: {
                "segment": h.segment,
                "campus": h.campus or "",
                "tier": h.tier,
                "role": h.role,
                "services": list(h.services),
                "depends_on": list(h.depends_on),
            }
            for h in sorted(inventory.hosts.values(), key=lambda h: h.name)
        },
        "segments": {
            s.name: {"campus": s.campus or "", "zone": s.zone, "gateway": s.gateway or ""}
            for s in sorted(inventory.segments.values(), key=lambda s: s.name)
        },
        "links": {
            link.name: {"kind": link.kind.value, "device": link.device, "description": link.description}
            for link in sorted(inventory.links.values(), key=lambda x: x.name)
        },
        "kept": inventory.keep_reasons(),
        "management": inventory.management_segment,
        "lab": inventory.lab is not None,
    }


def _topology_from_plan(plan: Mapping[str, Any]) -> dict[str, Any]:
    """A best-effort topology when neither the inventory nor run-started's topology is at hand."""
    hosts: dict[str, dict[str, Any]] = {}
    steps = [s for w in plan.get("waves", []) for s in w.get("steps", []) if isinstance(s, Mapping)]
    by_id = {str(s.get("id")): s for s in steps}
    for step in steps:
        if step.get("action") in _HOST_ACTIONS:
            entry = hosts.setdefault(
                str(step.get("target")),
                {"segment": "", "campus": "", "tier": 0, "role": "", "depends_on": []},
            )
            if isinstance(step.get("tier"), int):
                entry["tier"] = step["tier"]
    for step in steps:
        for req in step.get("requires", []) or []:
            other = by_id.get(str(req))
            if other is None or other.get("action") != step.get("action"):
                continue
            if step.get("action") == "stop-host":  # X stops after Y: Y depends on X
                dependent, dependency = str(other.get("target")), str(step.get("target"))
            elif step.get("action") == "start-host":  # Y starts after X: Y depends on X
                dependent, dependency = str(step.get("target")), str(other.get("target"))
            else:
                continue
            deps = hosts.setdefault(dependent, {"segment": "", "tier": 0, "depends_on": []})["depends_on"]
            if dependency not in deps:
                deps.append(dependency)
    for name in plan.get("kept", {}) or {}:
        hosts.setdefault(str(name), {"segment": "", "campus": "", "tier": 0, "role": "", "depends_on": []})
    return {"hosts": hosts, "segments": {}, "links": {}, "kept": dict(plan.get("kept", {}) or {})}


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _summary(record: Mapping[str, Any]) -> str:
    t = str(record.get("type"))
    g = record.get
    if t == "run-started":
        return (
            f"run started by {_str(g('operator'), '?')} on {_str(g('host'), '?')}: {_str(g('mode'), '?')} of "
            f"{_str(g('site'), '?')} (plan {_str(g('plan_id'))[:12]})"
        )
    if t == "wave-started":
        return f"wave {_str(g('wave'))} ({_str(g('phase'))}) started"
    if t == "step-finished":
        text = f"{_str(g('step_id'))}: {_str(g('status'))}"
        if g("already"):
            text += " (already in force)"
        if g("escalated"):
            text += " (escalated)"
        if g("error"):
            text += f": {_str(g('error'))}"
        return text
    if t == "escalation":
        return f"{_str(g('step_id'))}: escalated to {_str(g('to'))}: {_str(g('reason'))}"
    if t == "quarantine":
        off = "powered off" if g("powered_off") else "NOT powered off"
        return f"quarantined {_str(g('host'))} ({off}): {_str(g('reason'))}"
    if t == "gate-approved":
        return f"gate {_str(g('gate'))} approved by {_str(g('approver'), '?')} ({_str(g('how'))})"
    if t == "gate-refused":
        reason = f": {_str(g('summary'))}" if g("summary") else ""
        return f"gate {_str(g('gate'))} refused by {_str(g('approver'), '?')} ({_str(g('how'))}){reason}"
    if t == "milestone":
        elapsed = g("elapsed_s")
        after = f" after {format_duration(float(elapsed))}" if isinstance(elapsed, int | float) else ""
        return f"milestone: {_str(g('name'))}{after}"
    if t == "run-interrupted":
        return f"run interrupted ({_str(g('signal'), 'signal unknown')})"
    if t == "run-resumed":
        return f"run resumed by {_str(g('by'), '?')}"
    if t == "run-finished":
        counts = g("counts")
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if isinstance(counts, Mapping) else ""
        return f"run finished: {_str(g('status'))}" + (f" ({detail})" if detail else "")
    if t == "integrity-finding":
        return f"integrity: {_str(g('host'))}: {_str(g('category'))} {_str(g('path'))}"
    if t == "attestation":
        return (f"attestation: {_str(g('host'))} {_str(g('claim'))}, by {_str(g('by'), '?')} "
                f"(as {_str(g('operator'), '?')}): {_str(g('reason'))}")
    if t == "clearance":
        return f"{_str(g('host'))} cleared for reconnecting {_str(g('segment'))}: {_str(g('text'))}"
    if t == "observer-error":
        return (f"observer {_str(g('observer'))} failed ({_str(g('error_type'))}: {_str(g('message'))}); "
                "the run went on")
    if t == "journal-repaired":
        return f"journal repaired: a torn last line was moved to {_str(g('torn_file'))}"
    if t == "lock-taken-over":
        return f"stale run lock taken over (pid {_str(g('pid'))}: {_str(g('reason'))})"
    payload = {
        k: v for k, v in record.items() if k not in {"schema_version", "seq", "prev", "run_id", "ts", "mono", "type"}
    }
    return f"{t} {_compact(payload, 200)}"


def _plan_steps(plan: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for wave in plan.get("waves", []) or []:
        if not isinstance(wave, Mapping):
            continue
        for step in wave.get("steps", []) or []:
            if isinstance(step, Mapping) and "id" in step:
                out[str(step["id"])] = {
                    "action": _str(step.get("action")),
                    "target": _str(step.get("target")),
                    "wave": wave.get("index"),
                    "phase": _str(wave.get("phase")),
                    "requires": tuple(str(r) for r in step.get("requires", []) or []),
                }
    return out


def _commands(record: Mapping[str, Any]) -> list[str]:
    cmds = record.get("commands")
    if not isinstance(cmds, list):
        return []
    driver = _str(record.get("driver"))
    prefix = f"[{driver}] " if driver else ""
    return [f"{prefix}{c}" for c in cmds if c is not None]


def _share_command(record: Mapping[str, Any], step_id: str, info: Mapping[str, dict[str, Any]]) -> None:
    action = step_id.split(" ")[0].split(":")[0]
    targets = {t.strip() for t in _str(record.get("target")).split(",") if t.strip()}
    for entry in info.values():
        if entry.get("target") in targets and entry.get("action") == action:
            entry.setdefault("commands", []).extend(_commands(record))


def _steps(records: Sequence[Mapping[str, Any]], plan: Mapping[str, Any], clock: _Clock) -> list[StepRecord]:
    planned = _plan_steps(plan)
    order: list[str] = list(planned)
    info: dict[str, dict[str, Any]] = {k: dict(v) for k, v in planned.items()}
    for record in records:
        step_id = record.get("step_id")
        t = record.get("type")
        if not isinstance(step_id, str):
            continue
        if step_id not in info and t == "command-sent":
            # A command sent for several steps at once ("stop-host wave 3", target "a,b"): give it to each.
            _share_command(record, step_id, info)
            continue
        if step_id not in info and t not in ("step-started", "step-finished"):
            continue
        entry = info.setdefault(step_id, {"action": "", "target": "", "wave": None, "phase": "", "requires": ()})
        if step_id not in order:
            order.append(step_id)
        if t == "step-started":
            entry["started"] = clock.of(record)
            entry.pop("finished_record", None)  # a resumed run starts it again
            for key in ("action", "target"):
                if record.get(key):
                    entry[key] = str(record[key])
            if isinstance(record.get("wave"), int):
                entry["wave"] = record["wave"]
        elif t == "step-finished":
            entry["finished_record"] = record
            for key in ("action", "target"):
                if record.get(key):
                    entry[key] = str(record[key])
        elif t == "command-sent":
            entry.setdefault("commands", []).extend(_commands(record))
        elif t == "verification":
            entry.setdefault("verifications", []).append(
                {
                    "check": _str(record.get("check")),
                    "passed": bool(record.get("passed")),
                    "evidence": record.get("evidence") or {},
                    "at": clock.of(record).utc,
                }
            )
    steps: list[StepRecord] = []
    for step_id in order:
        entry = info[step_id]
        done: Mapping[str, Any] | None = entry.get("finished_record")
        started: Moment | None = entry.get("started")
        if done is not None:
            finished: Moment | None = clock.of(done)
            status = _str(done.get("status"), "failed")
            duration = done.get("duration_s")
            duration_s = float(duration) if isinstance(duration, int | float) else None
            evidence = done.get("evidence") if isinstance(done.get("evidence"), Mapping) else {}
        else:
            finished, status, duration_s, evidence = None, ("running" if started else "pending"), None, {}
        if duration_s is None and started and finished:
            duration_s = round(finished.offset_s - started.offset_s, 3)
        steps.append(
            StepRecord(
                step_id=step_id,
                action=entry["action"],
                target=entry["target"],
                wave=entry["wave"] if isinstance(entry["wave"], int) else None,
                phase=entry["phase"],
                status=status,
                started=started,
                finished=finished,
                duration_s=duration_s,
                changed=bool(done and done.get("changed")),
                already=bool(done and done.get("already")),
                escalated=bool(done and done.get("escalated")),
                error=_str(done.get("error")) or None if done else None,
                evidence=dict(evidence or {}),
                commands=tuple(entry.get("commands", [])),
                verifications=tuple(entry.get("verifications", [])),
                requires=tuple(entry["requires"]),
                seq=done.get("seq") if done and isinstance(done.get("seq"), int) else None,
            )
        )
    return steps


def _blocking(step: StepRecord, by_id: Mapping[str, StepRecord]) -> str:
    """Why a skipped step was not attempted: the first required step that did not succeed."""
    for req in step.requires:
        other = by_id.get(req)
        if other is not None and other.status not in ("verified", "dry-run"):
            return f"{req} {other.status}"
    return "a step it requires did not succeed"


def _host_outcomes(
    topology: Mapping[str, Any],
    steps: Sequence[StepRecord],
    findings: Sequence[Finding],
    kept: Mapping[str, str],
    mode: str,
    management: str,
    quarantined: Mapping[str, Mapping[str, Any]],
    clearances: Mapping[str, Clearance] | None = None,
) -> list[HostOutcome]:
    clearances = clearances or {}
    by_id = {s.step_id: s for s in steps}
    by_action: dict[tuple[str, str], StepRecord] = {(s.action, s.target): s for s in steps}
    host_info: Mapping[str, Mapping[str, Any]] = topology.get("hosts", {})
    names = sorted(set(host_info) | {s.target for s in steps if s.action in _HOST_ACTIONS} | set(kept))
    out: list[HostOutcome] = []
    for name in names:
        info = host_info.get(name, {})
        segment = _str(info.get("segment"))
        found = [f for f in findings if f.host == name]
        stop = by_action.get(("stop-host", name))
        start = by_action.get(("start-host", name))
        integrity = by_action.get(("check-integrity", name))
        health = by_action.get(("check-health", name))
        isolate = by_action.get(("isolate-segment", segment)) if segment else None
        reconnect = by_action.get(("reconnect-segment", segment)) if segment else None
        evidence: Mapping[str, Any] = {}
        if name in quarantined:
            q = quarantined[name]
            off = "powered off again" if q.get("powered_off") else "NOT powered off: it stays isolated"
            outcome, why = "quarantined", f"{_str(q.get('reason'), 'quarantined')} ({off})"
            evidence = integrity.evidence if integrity else {}
            if name in clearances:
                c = clearances[name]
                why += f"; cleared for reconnecting segment {c.segment}: {c.text}"
            elif reconnect is not None and reconnect.status != "verified":
                why += f"; segment {segment} held isolated ({reconnect.status})"
        elif start or integrity or health:
            if (integrity and integrity.status == "failed") or found:
                paths = ", ".join(f"{f.category} {f.path}" for f in found[:10])
                more = f" (+{len(found) - 10} more)" if len(found) > 10 else ""
                why = (
                    f"integrity differs from the baseline: {paths}{more}"
                    if found
                    else (f"integrity check failed: {integrity.error if integrity else ''}")
                )
                outcome, evidence = "quarantined", integrity.evidence if integrity else {}
            elif health and health.status == "failed":
                outcome, why, evidence = (
                    "quarantined",
                    f"health check failed: {health.error or ''}",
                    health.evidence,
                )
            elif start and start.status == "failed":
                outcome, why, evidence = "failed", f"start failed: {start.error or ''}", start.evidence
            elif all(s is None or s.status == "verified" for s in (start, integrity, health)):
                if reconnect is None or reconnect.status == "verified":
                    outcome = "restored"
                    why = "started; integrity and health verified" + (
                        f"; segment {segment} reconnected" if reconnect else ""
                    )
                else:
                    outcome, why = (
                        "started",
                        f"verified, but segment {segment} not reconnected ({reconnect.status})",
                    )
            elif all(s is None or s.status == "dry-run" for s in (start, integrity, health)):
                outcome, why = "dry-run", "dry run: nothing done"
            else:
                pending = next(s for s in (start, integrity, health) if s is not None and s.status != "verified")
                reason = _blocking(pending, by_id) if pending.status == "skipped" else "not reached"
                outcome, why = "not-restored", f"{pending.step_id} {pending.status}: {reason}"
        elif stop is not None:
            if stop.status == "verified":
                outcome = "stopped"
                why = "was already off" if stop.already else "powered off, verified from outside"
                if stop.escalated:
                    why += " (escalated to out-of-band power-off)"
            elif stop.status == "failed":
                outcome, why, evidence = (
                    "failed",
                    f"stop failed: {stop.error or 'no error recorded'}",
                    stop.evidence,
                )
            elif stop.status == "dry-run":
                outcome, why = "dry-run", "dry run: would be stopped"
            elif stop.status == "skipped":
                outcome, why = "not-stopped", f"not attempted: {_blocking(stop, by_id)}"
            else:
                outcome, why = "not-stopped", f"not reached ({stop.status}: run interrupted or unfinished)"
        elif name in kept and mode == "shutdown":
            outcome, why = "kept-running", kept[name]
        elif isolate is not None:
            if isolate.status == "verified":
                outcome, why = (
                    "isolated",
                    f"running; segment {segment} isolated (nothing is powered off in {mode})",
                )
                if name in kept:
                    why += f"; kept: {kept[name]}"
            elif isolate.status == "failed":
                outcome, why = "failed", f"segment {segment} isolation failed: {isolate.error or ''}"
                evidence = isolate.evidence
            elif isolate.status == "unproven":
                outcome, why = "isolation-unproven", (
                    f"segment {segment} isolation UNPROVEN (not verified): {isolate.error or 'no probe from inside'}")
                evidence = isolate.evidence
            else:
                outcome, why = "running", f"segment {segment} isolation {isolate.status}"
        elif segment and segment == management:
            outcome, why = "running", "management segment: never isolated"
        elif name in kept:
            outcome, why = "kept-running", kept[name]
        else:
            outcome, why = "out-of-scope", "no step of this run concerns it"
        if name in clearances and name not in quarantined:
            c = clearances[name]
            why += f"; cleared for reconnecting segment {c.segment}: {c.text}"
        tier = info.get("tier")
        out.append(
            HostOutcome(
                name=name,
                outcome=outcome,
                why=why,
                segment=segment,
                campus=_str(info.get("campus")),
                tier=tier if isinstance(tier, int) else None,
                role=_str(info.get("role")),
                services=tuple(str(s) for s in info.get("services", []) or []),
                depends_on=tuple(str(d) for d in info.get("depends_on", []) or []),
                evidence=dict(evidence),
            )
        )
    return out


def build_report(
    records: Sequence[Mapping[str, Any]],
    inventory: Inventory | None = None,
    *,
    detected_at: datetime | None = None,
    verification: JournalVerification | None = None,
) -> Report:
    """Turn one run's journal records into a Report.

    ``inventory`` (optional) supplies hosts, tiers and dependencies; without it the report uses
    run-started's ``topology`` or, failing that, what the plan shows. ``detected_at`` overrides the
    detection time (default: run-started's ``detected_at``, else the run's start). ``verification``
    (``journal.verify_journal``) is shown, and a journal that does not verify is flagged.
    """
    records = [r for r in records if isinstance(r, Mapping)]
    notes: list[str] = []
    start_rec = next((r for r in records if r.get("type") == "run-started"), None)
    if start_rec is None:
        notes.append("the journal has no run-started record: run details are unknown")
        start_rec = records[0] if records else {}
    first_ts = _ts(start_rec) or next((t for t in map(_ts, records) if t), None) or datetime(1970, 1, 1, tzinfo=UTC)

    timezone = _str(start_rec.get("timezone")) or (inventory.site.timezone if inventory else "") or "UTC"
    try:
        tz: ZoneInfo | None = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        notes.append(f"time zone {timezone!r} is unknown here: local times are shown in UTC")
        tz = None
    clock = _Clock(first_ts, tz)

    plan = start_rec.get("plan") if isinstance(start_rec.get("plan"), Mapping) else {}
    assert isinstance(plan, Mapping)
    mode = _str(start_rec.get("mode")) or _str(plan.get("mode"), "unknown")
    site = _str(start_rec.get("site")) or (inventory.site.name if inventory else "") or _str(plan.get("site"), "?")

    if inventory is not None:
        topology: Mapping[str, Any] = topology_of(inventory)
    elif isinstance(start_rec.get("topology"), Mapping):
        topology = start_rec["topology"]
    else:
        topology = _topology_from_plan(plan)
        notes.append("no inventory given: hosts and dependencies are inferred from the plan")
    if start_rec.get("dry_run"):
        notes.append("DRY RUN: nothing was touched; outcomes say what would have been done")
    if topology.get("lab"):
        notes.append("the inventory describes the rehearsal lab: this is a drill, not an incident to notify")
    kept: dict[str, str] = {str(k): str(v) for k, v in (topology.get("kept") or {}).items()}
    kept.update({str(k): str(v) for k, v in (plan.get("kept") or {}).items()})
    management = _str(topology.get("management")) or (inventory.management_segment if inventory else "")

    # -- events ----------------------------------------------------------------------------
    timeline: list[TimelineEntry] = []
    approvals: list[Approval] = []
    findings: list[Finding] = []
    milestones: dict[str, Milestone] = {}
    escalations: list[TimelineEntry] = []
    interruptions: list[TimelineEntry] = []
    finish_rec: Mapping[str, Any] | None = None
    quarantined: dict[str, Mapping[str, Any]] = {}
    clearances: dict[str, Clearance] = {}
    attestations: list[Attestation] = []
    observer_errors: list[ObserverError] = []
    for record in records:
        t = _str(record.get("type"))
        at = clock.of(record)
        seq = record.get("seq") if isinstance(record.get("seq"), int) else -1
        assert isinstance(seq, int)
        if t not in _DETAIL_TYPES:
            timeline.append(
                TimelineEntry(
                    at=at,
                    seq=seq,
                    type=t,
                    summary=_summary(record),
                    step_id=_str(record.get("step_id")) or None,
                    status=_str(record.get("status")) or None,
                )
            )
        if t in ("gate-approved", "gate-refused"):
            approvals.append(
                Approval(
                    gate=_str(record.get("gate")),
                    approved=t == "gate-approved",
                    approver=_str(record.get("approver"), "?"),
                    how=_str(record.get("how")),
                    at=at,
                    reason=_str(record.get("reason")),
                )
            )
        elif t == "integrity-finding":
            findings.append(
                Finding(
                    host=_str(record.get("host")),
                    category=_str(record.get("category")),
                    path=_str(record.get("path")),
                    detail=_str(record.get("detail")),
                    at=at,
                )
            )
        elif t == "milestone":
            name = _str(record.get("name"))
            elapsed = record.get("elapsed_s")
            elapsed_s = float(elapsed) if isinstance(elapsed, int | float) else at.offset_s
            milestones.setdefault(name, Milestone(name=name, at=at, elapsed_s=round(elapsed_s, 3)))
        elif t == "escalation":
            escalations.append(timeline[-1])
        elif t in ("run-interrupted", "run-resumed", "journal-repaired", "lock-taken-over"):
            interruptions.append(timeline[-1])
        elif t == "quarantine":
            quarantined[_str(record.get("host"))] = record
        elif t == "clearance":
            clearances[_str(record.get("host"))] = Clearance(
                host=_str(record.get("host")), segment=_str(record.get("segment")), how=_str(record.get("how")),
                text=_str(record.get("text")), quarantined=bool(record.get("quarantined")), at=at)
        elif t == "attestation":
            evidence = record.get("evidence") if isinstance(record.get("evidence"), Mapping) else {}
            assert isinstance(evidence, Mapping)
            attestations.append(Attestation(
                host=_str(record.get("host")), claim=_str(record.get("claim")), by=_str(record.get("by"), "?"),
                reason=_str(record.get("reason")), operator=_str(record.get("operator")),
                evidence_sha256=_str(evidence.get("sha256")), evidence_file=_str(evidence.get("file")), at=at))
        elif t == "observer-error":
            observer_errors.append(ObserverError(
                observer=_str(record.get("observer"), "?"),
                error=f"{_str(record.get('error_type'))}: {_str(record.get('message'))}", at=at))
        elif t == "run-finished":
            finish_rec = record

    steps = _steps(records, plan, clock)
    by_id = {s.step_id: s for s in steps}

    # -- status, counts, what is left -------------------------------------------------------
    last_type = _str(records[-1].get("type")) if records else ""
    if finish_rec is not None and last_type == "run-finished":
        status = _str(finish_rec.get("status"), "unknown")
    elif last_type == "run-interrupted":
        status = "interrupted"
    else:
        status = "unfinished"
        notes.append(
            "the journal does not end with run-finished: the run is still going, or its process died "
            "(resume it with `orchestrator resume RUN_ID`)"
        )
    counts: dict[str, int] = {}
    if finish_rec is not None and isinstance(finish_rec.get("counts"), Mapping) and last_type == "run-finished":
        counts = {str(k): int(v) for k, v in finish_rec["counts"].items() if isinstance(v, int)}
    else:
        for step in steps:
            counts[step.status] = counts.get(step.status, 0) + 1
    left: list[dict[str, str]] = []
    if finish_rec is not None and isinstance(finish_rec.get("left"), list) and last_type == "run-finished":
        for item in finish_rec["left"]:
            if isinstance(item, Mapping):
                left.append({"step_id": _str(item.get("step_id")), "reason": _str(item.get("reason"))})
    else:
        for step in steps:
            if step.status in ("verified", "dry-run"):
                continue
            reason = step.error or (_blocking(step, by_id) if step.status == "skipped" else step.status)
            left.append({"step_id": step.step_id, "reason": reason or step.status})

    # -- times ----------------------------------------------------------------------------
    finished = clock.of(finish_rec) if finish_rec is not None else (clock.of(records[-1]) if records else None)
    started = clock.moment(first_ts) if records else None
    detected_source = "run start (no earlier detection time recorded)"
    detected_dt = detected_at
    if detected_dt is not None:
        detected_source = "given when the report was made"
    elif isinstance(start_rec.get("detected_at"), str):
        try:
            detected_dt = parse_timestamp(start_rec["detected_at"])
            detected_source = "run-started detected_at"
        except ValueError:
            notes.append(f"run-started detected_at {start_rec['detected_at']!r} is not a time: ignored")
    if detected_dt is None and records:
        detected_dt = first_ts
    detected = clock.moment(detected_dt) if detected_dt is not None else None

    def _milestone_s(name: str) -> float | None:
        m = milestones.get(name)
        return m.elapsed_s if m else None

    # -- outcomes --------------------------------------------------------------------------
    hosts = _host_outcomes(topology, steps, findings, kept, mode, management, quarantined, clearances)
    kept_hosts = tuple(h for h in hosts if h.name in kept and h.outcome in ("kept-running", "isolated", "running"))
    failures = tuple(s for s in steps if s.status == "failed")
    measures = _measures(steps, topology, hosts)
    affected = _affected_services(hosts, topology, steps)

    # -- graph -----------------------------------------------------------------------------
    outcome_of = {h.name: h.outcome for h in hosts}
    graph_nodes = tuple(
        GraphNode(
            name=h.name,
            tier=h.tier if h.tier is not None else 0,
            segment=h.segment,
            outcome=outcome_of[h.name],
        )
        for h in hosts
    )
    edges = tuple(sorted({(h.name, d) for h in hosts for d in h.depends_on if d in outcome_of}))

    if verification is not None and not verification.ok:
        notes.insert(0, "THE JOURNAL DOES NOT VERIFY: this report rests on records that were altered or damaged")

    report_wo_nis2 = Report(
        run_id=_str(start_rec.get("run_id")),
        site=site,
        timezone=timezone,
        mode=mode,
        status=status,
        plan_id=_str(start_rec.get("plan_id")) or _str(plan.get("plan_id")),
        operator=_str(start_rec.get("operator"), "?"),
        host=_str(start_rec.get("host")),
        argv=tuple(str(a) for a in start_rec.get("argv", []) or []),
        inventory=_str(start_rec.get("inventory")) or (inventory.path if inventory else ""),
        inventory_sha256=_str(start_rec.get("inventory_sha256")),
        scope=dict(start_rec.get("scope") or {}) if isinstance(start_rec.get("scope"), Mapping) else {},
        started=started,
        finished=finished,
        detected=detected,
        detected_source=detected_source,
        duration_s=finished.offset_s if finished else None,
        time_to_containment_s=_milestone_s("contained"),
        time_to_shutdown_s=_milestone_s("shutdown-complete"),
        time_to_restored_s=_milestone_s("restored"),
        counts=dict(sorted(counts.items())),
        milestones=tuple(sorted(milestones.values(), key=lambda m: m.at.iso)),
        timeline=tuple(timeline),
        steps=tuple(steps),
        hosts=tuple(hosts),
        kept=kept_hosts,
        failures=failures,
        left=tuple(left),
        approvals=tuple(approvals),
        escalations=tuple(escalations),
        findings=tuple(findings),
        unproven=tuple(s for s in steps if s.status == "unproven"),
        clearances=tuple(sorted(clearances.values(), key=lambda c: (c.segment, c.host))),
        attestations=tuple(attestations),
        observer_errors=tuple(observer_errors),
        measures=measures,
        affected_services=affected,
        interruptions=tuple(interruptions),
        nis2=(),
        graph_nodes=graph_nodes,
        graph_edges=edges,
        notes=tuple(notes),
        records=len(records),
        journal_ok=verification.ok if verification is not None else None,
        journal_head=verification.head if verification is not None else None,
        journal_problems=tuple(verification.problems) if verification is not None else (),
    )
    return dataclasses.replace(report_wo_nis2, nis2=_nis2(report_wo_nis2, detected_dt, clock))


def _measures(
    steps: Sequence[StepRecord], topology: Mapping[str, Any], hosts: Sequence[HostOutcome]
) -> tuple[str, ...]:
    links: Mapping[str, Mapping[str, Any]] = topology.get("links", {}) or {}
    segments: Mapping[str, Mapping[str, Any]] = topology.get("segments", {}) or {}
    out: list[str] = []
    for step in steps:
        when = step.finished.utc if step.finished else ""
        if step.action == "cut-link":
            link = links.get(step.target, {})
            what = f"external link {step.target}"
            if link:
                what += f" ({_str(link.get('kind'))}: {_str(link.get('description'))})".replace(": )", ")")
        elif step.action == "isolate-segment":
            seg = segments.get(step.target, {})
            what = f"segment {step.target} isolated" + (
                f" at its gateway {seg['gateway']}" if seg.get("gateway") else ""
            )
        else:
            continue
        if step.status == "verified":
            verb = "cut" if step.action == "cut-link" else ""
            out.append(f"{what} {verb} at {when} (verified)".replace("  ", " "))
        elif step.status == "unproven":
            out.append(f"UNPROVEN: {what} at {when}: in the device's running config, but not proven by any probe "
                       f"(not verified){': ' + step.error if step.error else ''}")
        else:
            out.append(f"NOT IN FORCE: {what} ({step.status}{': ' + step.error if step.error else ''})")
    stopped = [h.name for h in hosts if h.outcome == "stopped"]
    if stopped:
        out.append(f"{len(stopped)} host(s) powered off, verified from outside: {', '.join(stopped)}")
    return tuple(out)


def _affected_services(
    hosts: Sequence[HostOutcome], topology: Mapping[str, Any], steps: Sequence[StepRecord]
) -> tuple[str, ...]:
    out: list[str] = []
    for h in hosts:
        if h.outcome in ("stopped", "isolated", "quarantined", "failed", "not-restored"):
            label = h.role or "host"
            svc = f" ({', '.join(h.services)})" if h.services else ""
            state = {
                "stopped": "down",
                "isolated": "isolated",
                "quarantined": "quarantined",
                "failed": "state unknown",
                "not-restored": "down",
            }[h.outcome]
            out.append(f"{label}{svc} on {h.name}: {state}")
    links: Mapping[str, Mapping[str, Any]] = topology.get("links", {}) or {}
    for step in steps:
        if step.action == "cut-link" and step.status == "verified":
            desc = _str(links.get(step.target, {}).get("description"))
            out.append(f"external connection {step.target}{' (' + desc + ')' if desc else ''}: cut")
    return tuple(out)


def _nis2(report: Report, detected_dt: datetime | None, clock: _Clock) -> tuple[Nis2Section, ...]:
    def due(hours: int) -> Moment | None:
        return clock.moment(detected_dt + timedelta(hours=hours)) if detected_dt else None

    notification_due = detected_dt + timedelta(hours=72) if detected_dt else None
    final_due = clock.moment(_add_months(notification_due, 1)) if notification_due else None
    detected = f"{report.detected.utc} ({report.detected.local})" if report.detected else ""
    measures = "; ".join(report.measures) or "none recorded"
    affected = "; ".join(report.affected_services) or "none recorded"
    counts = ", ".join(f"{k}: {v}" for k, v in report.counts.items())
    kept = "; ".join(f"{h.name} ({h.why})" for h in report.kept) or "none"
    stopped = [h for h in report.hosts if h.outcome == "stopped"]
    failed = [h for h in report.hosts if h.outcome in ("failed", "not-stopped")]
    quarantined = [h for h in report.hosts if h.outcome == "quarantined"]
    restored = [h for h in report.hosts if h.outcome == "restored"]
    iocs = (
        "; ".join(f"{f.host}: {f.category} {f.path}" for f in report.findings)
        or "none found by integrity checks in this run"
    )
    ttc = (
        format_duration(report.time_to_containment_s)
        if report.time_to_containment_s is not None
        else "not reached in this run"
    )
    tts = (
        format_duration(report.time_to_shutdown_s)
        if report.time_to_shutdown_s is not None
        else "not reached in this run"
    )
    started = report.started.utc if report.started else "?"
    description = (
        f"Precautionary {report.mode} of {report.site} started {started} by {report.operator}; "
        f"run {report.run_id} status {report.status}."
    )
    entity = Nis2Field(
        "Entity",
        report.site,
        SECURITY_OFFICER + " (legal name, sector: health, registration id)",
        "run-started site",
    )
    contact = Nis2Field("Contact point for the CSIRT", "", SECURITY_OFFICER, "")
    early = Nis2Section(
        key="early-warning",
        title="Early warning (within 24 hours of becoming aware)",
        basis="NIS2 Directive (EU) 2022/2555, Art. 23(4)(a)",
        due=due(24),
        due_note="24 h after detection",
        fields=(
            entity,
            contact,
            Nis2Field(
                "Detection time",
                detected,
                None,
                report.detected_source + "; correct it if the incident was detected earlier",
            ),
            Nis2Field(
                "Short description",
                description,
                INCIDENT_MANAGER + " (confirm, add what was observed)",
                "journal",
            ),
            Nis2Field(
                "Suspected unlawful or malicious act",
                "suspected (a precautionary containment was started)",
                SECURITY_OFFICER,
                "run mode",
            ),
            Nis2Field("Possible cross-border impact", "unknown", SECURITY_OFFICER, ""),
            Nis2Field(
                "Affected services",
                affected,
                INCIDENT_MANAGER + " (add clinical impact)",
                "journal step outcomes",
            ),
            Nis2Field("Containment measures taken", measures, None, "journal step outcomes"),
            Nis2Field("Time to containment", ttc, None, "milestone contained"),
        ),
    )
    notification = Nis2Section(
        key="incident-notification",
        title="Incident notification (within 72 hours of becoming aware)",
        basis="NIS2 Directive (EU) 2022/2555, Art. 23(4)(b)",
        due=due(72),
        due_note="72 h after detection",
        fields=(
            entity,
            Nis2Field("Update of the early warning", "", INCIDENT_MANAGER, ""),
            Nis2Field(
                "Initial assessment: severity and impact",
                f"{len(stopped)} host(s) powered off, {len(report.kept)} kept running, "
                f"{len(failed)} failed or not stopped; run {report.status} ({counts}); "
                f"time to shutdown {tts}",
                SECURITY_OFFICER + " (severity rating, patients and services affected)",
                "journal",
            ),
            Nis2Field(
                "Indicators of compromise",
                iocs,
                SECURITY_OFFICER + " (add network and threat-intel IoCs)",
                "integrity findings",
            ),
            Nis2Field("Number of people affected (patients, staff)", "", INCIDENT_MANAGER, ""),
            Nis2Field("Services kept running and why", kept, None, "plan kept hosts, islands"),
            Nis2Field("Possible cross-border impact", "unknown", SECURITY_OFFICER, ""),
        ),
    )
    restore_state = (
        f"{len(restored)} host(s) restored, {len(quarantined)} quarantined"
        + (f" ({', '.join(h.name for h in quarantined)})" if quarantined else "")
        if (restored or quarantined)
        else "no restore recorded in this run"
    )
    final = Nis2Section(
        key="final-report",
        title="Final report (within one month of the incident notification)",
        basis="NIS2 Directive (EU) 2022/2555, Art. 23(4)(e)",
        due=final_due,
        due_note="one month after the incident notification (shown: if notified at the 72 h deadline)",
        fields=(
            entity,
            Nis2Field("Detailed description, severity and impact", "", SECURITY_OFFICER, ""),
            Nis2Field("Type of threat or root cause", "", SECURITY_OFFICER, ""),
            Nis2Field("Mitigation measures applied", measures, None, "journal step outcomes"),
            Nis2Field(
                "Mitigation measures ongoing; restoration",
                restore_state,
                INCIDENT_MANAGER + " (confirm; add what is still ongoing)",
                "journal",
            ),
            Nis2Field("Cross-border impact", "unknown", SECURITY_OFFICER, ""),
            Nis2Field("Lessons learned, approved by", "", MANAGEMENT, ""),
        ),
    )
    gdpr = Nis2Section(
        key="personal-data",
        title="Personal data breach (GDPR), assessed separately",
        basis=(
            "GDPR (EU) 2016/679, Art. 33: notify the supervisory authority within 72 hours "
            "where personal data is at risk"
        ),
        due=due(72),
        due_note="72 h after becoming aware of a personal data breach",
        fields=(
            Nis2Field("Personal data (patient records) accessed or exfiltrated?", "unknown", DPO, ""),
            Nis2Field("Categories and approximate number of data subjects", "", DPO, ""),
        ),
    )
    return (early, notification, final, gdpr)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


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


def _graph_layout(report: Report) -> dict[str, Any]:
    node_w, node_h, gap_x, gap_y, margin = 170.0, 44.0, 26.0, 64.0, 20.0
    tiers = sorted({n.tier for n in report.graph_nodes})
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
        if a.y > b.y:  # dependency above: from the top of the dependent to the bottom of the dependency
            path = f"M{a.x + a.w / 2:.1f},{a.y:.1f} L{b.x + b.w / 2:.1f},{b.y + b.h + 2:.1f}"
        elif a.y == b.y:  # same tier: arc above
            x1, x2 = a.x + a.w / 2, b.x + b.w / 2
            path = f"M{x1:.1f},{a.y:.1f} Q{(x1 + x2) / 2:.1f},{a.y - 40:.1f} {x2:.1f},{b.y - 2:.1f}"
        else:  # a dependency below its dependent (should not happen: tiers forbid it)
            path = f"M{a.x + a.w / 2:.1f},{a.y + a.h:.1f} L{b.x + b.w / 2:.1f},{b.y - 2:.1f}"
        edges.append(_Edge(path=path, dependent=dependent, dependency=dependency))
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

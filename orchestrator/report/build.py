"""Building a Report: a run's journal records, parsed once into typed events (:mod:`orchestrator.events`),
turned into steps, host outcomes, times and the NIS2 fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from orchestrator import events as ev
from orchestrator.journal import JournalVerification, parse_timestamp
from orchestrator.model import Inventory
from orchestrator.report.evidence import restore_evidence
from orchestrator.report.model import (
    Approval,
    Attestation,
    Clearance,
    Finding,
    GraphNode,
    HostOutcome,
    Milestone,
    Moment,
    ObserverError,
    Report,
    StepRecord,
    TimelineEntry,
    _Clock,
    _str,
)
from orchestrator.report.nis2 import _nis2
from orchestrator.report.outcomes import RunFacts, _blocking, affected_services, host_outcomes, measures
from orchestrator.report.summary import summary
from orchestrator.report.topology import _topology_from_plan, topology_of

# Event types shown in the timeline (the others are detail, shown per step).
_DETAIL_TYPES = (ev.StepStarted, ev.CommandSent, ev.VerificationDone, ev.AnsibleEvent)
_INTERRUPTIONS = (ev.RunInterrupted, ev.RunResumed, ev.JournalRepaired, ev.LockTakenOver)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Steps: the plan's, then what the journal says of each
# --------------------------------------------------------------------------------------------


@dataclass
class _StepEntry:
    action: str = ""
    target: str = ""
    wave: int | None = None
    phase: str = ""
    requires: tuple[str, ...] = ()
    started: Moment | None = None
    finished: ev.StepFinished | None = None
    commands: list[str] = field(default_factory=list)
    verifications: list[Mapping[str, Any]] = field(default_factory=list)


def _plan_steps(plan: Mapping[str, Any]) -> dict[str, _StepEntry]:
    out: dict[str, _StepEntry] = {}
    for wave in plan.get("waves", []) or []:
        if not isinstance(wave, Mapping):
            continue
        for step in wave.get("steps", []) or []:
            if isinstance(step, Mapping) and "id" in step:
                index = wave.get("index")
                out[str(step["id"])] = _StepEntry(
                    action=_str(step.get("action")),
                    target=_str(step.get("target")),
                    wave=index if isinstance(index, int) else None,
                    phase=_str(wave.get("phase")),
                    requires=tuple(str(r) for r in step.get("requires", []) or []),
                )
    return out


def _commands(event: ev.CommandSent) -> list[str]:
    prefix = f"[{event.driver}] " if event.driver else ""
    return [f"{prefix}{c}" for c in event.commands]


class _Steps:
    """The steps of a run: the plan's in plan order, then those only the journal names."""

    def __init__(self, plan: Mapping[str, Any], clock: _Clock) -> None:
        self.info = _plan_steps(plan)
        self.order: list[str] = list(self.info)
        self.clock = clock

    def _entry(self, step_id: str) -> _StepEntry:
        if step_id not in self.info:
            self.info[step_id] = _StepEntry()
            self.order.append(step_id)
        return self.info[step_id]

    def _share_command(self, event: ev.CommandSent) -> None:
        """A command sent for several steps at once ("stop-host wave 3", target "a,b"): give it to each."""
        action = event.step_id.split(" ")[0].split(":")[0]
        targets = {t.strip() for t in event.target.split(",") if t.strip()}
        for entry in self.info.values():
            if entry.target in targets and entry.action == action:
                entry.commands.extend(_commands(event))

    def add(self, event: ev.Event) -> None:
        if isinstance(event, ev.StepStarted):
            entry = self._entry(event.step_id)
            entry.started = self.clock.of(event)
            entry.finished = None  # a resumed run starts it again
            entry.action, entry.target = event.action or entry.action, event.target or entry.target
            if event.wave is not None:
                entry.wave = event.wave
        elif isinstance(event, ev.StepFinished):
            entry = self._entry(event.step_id)
            entry.finished = event
            entry.action, entry.target = event.action or entry.action, event.target or entry.target
        elif isinstance(event, ev.CommandSent):
            if event.step_id in self.info:
                self.info[event.step_id].commands.extend(_commands(event))
            else:
                self._share_command(event)
        elif isinstance(event, ev.VerificationDone) and event.step_id in self.info:
            self.info[event.step_id].verifications.append(
                {"check": event.check, "passed": event.passed, "evidence": event.evidence or {},
                 "at": self.clock.of(event).utc})

    def _record(self, step_id: str, entry: _StepEntry) -> StepRecord:
        done, started = entry.finished, entry.started
        finished: Moment | None = None
        status, duration_s = ("running" if started else "pending"), None
        if done is not None:
            finished = self.clock.of(done)
            status = _str(done.status, "failed")
            duration_s = done.duration_s
        if duration_s is None and started and finished:
            duration_s = round(finished.offset_s - started.offset_s, 3)
        return StepRecord(
            step_id=step_id,
            action=entry.action,
            target=entry.target,
            wave=entry.wave,
            phase=entry.phase,
            status=status,
            started=started,
            finished=finished,
            duration_s=duration_s,
            changed=bool(done and done.changed),
            already=bool(done and done.already),
            escalated=bool(done and done.escalated),
            error=(done.error or None) if done else None,
            evidence=dict(done.evidence) if done else {},
            commands=tuple(entry.commands),
            verifications=tuple(entry.verifications),
            requires=entry.requires,
            seq=done.seq if done else None,
        )

    def records(self) -> list[StepRecord]:
        return [self._record(step_id, self.info[step_id]) for step_id in self.order]


def _steps(events: Sequence[ev.Event], plan: Mapping[str, Any], clock: _Clock) -> list[StepRecord]:
    steps = _Steps(plan, clock)
    for event in events:
        steps.add(event)
    return steps.records()


# --------------------------------------------------------------------------------------------
# The run: who, where, what, against which topology
# --------------------------------------------------------------------------------------------


@dataclass
class _Run:
    start: ev.RunStarted
    first_ts: datetime
    timezone: str
    clock: _Clock
    plan: Mapping[str, Any]
    mode: str
    site: str
    topology: Mapping[str, Any]
    kept: dict[str, str]
    management: str
    notes: list[str]


def _start_of(events: Sequence[ev.Event], notes: list[str]) -> ev.RunStarted:
    start = ev.first(events, ev.RunStarted)
    if start is not None:
        return start
    notes.append("the journal has no run-started record: run details are unknown")
    if not events:
        return ev.RunStarted(type=ev.RunStarted.TYPE)
    head = events[0]
    return ev.RunStarted(type=head.type, seq=head.seq, run_id=head.run_id, ts=head.ts, at=head.at, mono=head.mono)


def _zone(timezone: str, notes: list[str]) -> ZoneInfo | None:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        notes.append(f"time zone {timezone!r} is unknown here: local times are shown in UTC")
        return None


def _topology(start: ev.RunStarted, plan: Mapping[str, Any], inventory: Inventory | None,
              notes: list[str]) -> Mapping[str, Any]:
    if inventory is not None:
        return topology_of(inventory)
    if start.topology is not None:
        return start.topology
    notes.append("no inventory given: hosts and dependencies are inferred from the plan")
    return _topology_from_plan(plan)


def _run(events: Sequence[ev.Event], inventory: Inventory | None) -> _Run:
    notes: list[str] = []
    start = _start_of(events, notes)
    first_ts = start.at or next((e.at for e in events if e.at), None) or _EPOCH
    timezone = start.timezone or (inventory.site.timezone if inventory else "") or "UTC"
    clock = _Clock(first_ts, _zone(timezone, notes))
    plan: Mapping[str, Any] = start.plan  # the plan document (its own contract), read as plain data
    topology = _topology(start, plan, inventory, notes)
    if start.dry_run:
        notes.append("DRY RUN: nothing was touched; outcomes say what would have been done")
    if topology.get("lab"):
        notes.append("the inventory describes the rehearsal lab: this is a drill, not an incident to notify")
    kept: dict[str, str] = {str(k): str(v) for k, v in (topology.get("kept") or {}).items()}
    kept.update({str(k): str(v) for k, v in (plan.get("kept") or {}).items()})
    return _Run(
        start=start, first_ts=first_ts, timezone=timezone, clock=clock, plan=plan,
        mode=start.mode or _str(plan.get("mode"), "unknown"),
        site=start.site or (inventory.site.name if inventory else "") or _str(plan.get("site"), "?"),
        topology=topology, kept=kept,
        management=_str(topology.get("management")) or (inventory.management_segment if inventory else ""),
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# The events: timeline, approvals, findings, milestones, ...
# --------------------------------------------------------------------------------------------


@dataclass
class _Collected:
    clock: _Clock
    timeline: list[TimelineEntry] = field(default_factory=list)
    approvals: list[Approval] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    milestones: dict[str, Milestone] = field(default_factory=dict)
    escalations: list[TimelineEntry] = field(default_factory=list)
    interruptions: list[TimelineEntry] = field(default_factory=list)
    finish: ev.RunFinished | None = None
    quarantined: dict[str, ev.Quarantine] = field(default_factory=dict)
    clearances: dict[str, Clearance] = field(default_factory=dict)
    attestations: list[Attestation] = field(default_factory=list)
    observer_errors: list[ObserverError] = field(default_factory=list)

    def add(self, e: ev.Event) -> None:
        at = self.clock.of(e)
        if not isinstance(e, _DETAIL_TYPES):
            self.timeline.append(_entry(e, at))
        if isinstance(e, ev.GateApproved | ev.GateRefused):
            self.approvals.append(Approval(
                gate=e.gate, approved=isinstance(e, ev.GateApproved), approver=_str(e.approver, "?"), how=e.how,
                at=at, reason=e.summary if isinstance(e, ev.GateRefused) else ""))
        elif isinstance(e, ev.IntegrityFinding):
            self.findings.append(Finding(host=e.host, category=e.category, path=e.path, detail=e.detail, at=at))
        elif isinstance(e, ev.Milestone):
            elapsed_s = e.elapsed_s if e.elapsed_s is not None else at.offset_s
            self.milestones.setdefault(e.name, Milestone(name=e.name, at=at, elapsed_s=round(elapsed_s, 3)))
        elif isinstance(e, ev.Escalation):
            self.escalations.append(self.timeline[-1])
        elif isinstance(e, _INTERRUPTIONS):
            self.interruptions.append(self.timeline[-1])
        else:
            self._add_assurance(e, at)

    def _add_assurance(self, e: ev.Event, at: Moment) -> None:
        if isinstance(e, ev.Quarantine):
            self.quarantined[e.host] = e
        elif isinstance(e, ev.Clearance):
            self.clearances[e.host] = Clearance(host=e.host, segment=e.segment, how=e.how, text=e.text,
                                                quarantined=e.quarantined, at=at)
        elif isinstance(e, ev.Attestation):
            evidence = e.evidence or {}
            self.attestations.append(Attestation(
                host=e.host, claim=e.claim, by=_str(e.by, "?"), reason=e.reason, operator=e.operator,
                evidence_sha256=_str(evidence.get("sha256")), evidence_file=_str(evidence.get("file")), at=at))
        elif isinstance(e, ev.ObserverError):
            self.observer_errors.append(ObserverError(
                observer=_str(e.observer, "?"), error=f"{e.error_type}: {e.message}", at=at))
        elif isinstance(e, ev.RunFinished):
            self.finish = e


def _entry(e: ev.Event, at: Moment) -> TimelineEntry:
    step_id: object = e.step_id if isinstance(e, ev.StepFinished | ev.Escalation | ev.Clearance) else None
    status: object = e.status if isinstance(e, ev.StepFinished | ev.RunFinished) else None
    if isinstance(e, ev.UnknownEvent):  # a newer journal's event: its step and status as they are
        step_id, status = e.record.get("step_id"), e.record.get("status")
    return TimelineEntry(at=at, seq=e.seq if e.seq is not None else -1, type=e.type, summary=summary(e),
                         step_id=_str(step_id) or None, status=_str(status) or None)


def _collect(events: Sequence[ev.Event], clock: _Clock) -> _Collected:
    collected = _Collected(clock)
    for e in events:
        collected.add(e)
    return collected


# --------------------------------------------------------------------------------------------
# Status, counts, what is left; times
# --------------------------------------------------------------------------------------------


def _status(events: Sequence[ev.Event], finish: ev.RunFinished | None, notes: list[str]) -> tuple[str, bool]:
    """The run's status, and whether its run-finished record is the journal's last (and so holds)."""
    last_type = events[-1].type if events else ""
    if finish is not None and last_type == "run-finished":
        return _str(finish.status, "unknown"), True
    if last_type == "run-interrupted":
        return "interrupted", False
    notes.append(
        "the journal does not end with run-finished: the run is still going, or its process died "
        "(resume it with `orchestrator resume RUN_ID`)"
    )
    return "unfinished", False


def _counts(finish: ev.RunFinished | None, steps: Sequence[StepRecord]) -> dict[str, int]:
    if finish is not None and finish.counts is not None:
        return {str(k): int(v) for k, v in finish.counts.items() if isinstance(v, int)}
    counts: dict[str, int] = {}
    for step in steps:
        counts[step.status] = counts.get(step.status, 0) + 1
    return counts


def _left(finish: ev.RunFinished | None, steps: Sequence[StepRecord]) -> list[dict[str, str]]:
    if finish is not None and finish.left is not None:
        return [{"step_id": _str(item.get("step_id")), "reason": _str(item.get("reason"))} for item in finish.left]
    by_id = {s.step_id: s for s in steps}
    left: list[dict[str, str]] = []
    for step in steps:
        if step.status in ("verified", "dry-run"):
            continue
        reason = step.error or (_blocking(step, by_id) if step.status == "skipped" else step.status)
        left.append({"step_id": step.step_id, "reason": reason or step.status})
    return left


def _detected(run: _Run, detected_at: datetime | None, has_records: bool) -> tuple[datetime | None, str]:
    """When the incident was detected, and where that comes from."""
    if detected_at is not None:
        return detected_at, "given when the report was made"
    if run.start.detected_at is not None:
        try:
            return parse_timestamp(run.start.detected_at), "run-started detected_at"
        except ValueError:
            run.notes.append(f"run-started detected_at {run.start.detected_at!r} is not a time: ignored")
    return (run.first_ts if has_records else None), "run start (no earlier detection time recorded)"


def _graph(hosts: Sequence[HostOutcome]) -> tuple[tuple[GraphNode, ...], tuple[tuple[str, str], ...]]:
    outcome_of = {h.name: h.outcome for h in hosts}
    nodes = tuple(
        GraphNode(name=h.name, tier=h.tier if h.tier is not None else 0, segment=h.segment, outcome=outcome_of[h.name])
        for h in hosts
    )
    edges = tuple(sorted({(h.name, d) for h in hosts for d in h.depends_on if d in outcome_of}))
    return nodes, edges


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def build_report(
    records: Sequence[Mapping[str, object]],
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
    events = ev.parse_all([r for r in records if isinstance(r, Mapping)])
    run = _run(events, inventory)
    clock, start, notes = run.clock, run.start, run.notes
    got = _collect(events, clock)
    steps = _steps(events, run.plan, clock)
    status, final = _status(events, got.finish, notes)
    finish = got.finish if final else None
    finished = clock.of(got.finish) if got.finish is not None else (clock.of(events[-1]) if events else None)
    detected_dt, detected_source = _detected(run, detected_at, bool(events))
    facts = RunFacts(steps=steps, findings=got.findings, kept=run.kept, mode=run.mode, management=run.management,
                     quarantined=got.quarantined, clearances=got.clearances)
    hosts = host_outcomes(run.topology, facts)
    graph_nodes, graph_edges = _graph(hosts)
    if verification is not None and not verification.ok:
        notes.insert(0, "THE JOURNAL DOES NOT VERIFY: this report rests on records that were altered or damaged")

    def _milestone_s(name: str) -> float | None:
        m = got.milestones.get(name)
        return m.elapsed_s if m else None

    report_wo_nis2 = Report(
        run_id=start.run_id,
        site=run.site,
        timezone=run.timezone,
        mode=run.mode,
        status=status,
        plan_id=start.plan_id or _str(run.plan.get("plan_id")),
        operator=start.operator or "?",
        host=start.host,
        argv=start.argv,
        inventory=start.inventory or (inventory.path if inventory else ""),
        inventory_sha256=start.inventory_sha256,
        scope=dict(start.scope),
        started=clock.moment(run.first_ts) if events else None,
        finished=finished,
        detected=clock.moment(detected_dt) if detected_dt is not None else None,
        detected_source=detected_source,
        duration_s=finished.offset_s if finished else None,
        time_to_containment_s=_milestone_s("contained"),
        time_to_shutdown_s=_milestone_s("shutdown-complete"),
        time_to_restored_s=_milestone_s("restored"),
        counts=dict(sorted(_counts(finish, steps).items())),
        milestones=tuple(sorted(got.milestones.values(), key=lambda m: m.at.iso)),
        timeline=tuple(got.timeline),
        steps=tuple(steps),
        hosts=tuple(hosts),
        kept=tuple(h for h in hosts if h.name in run.kept and h.outcome in ("kept-running", "isolated", "running")),
        failures=tuple(s for s in steps if s.status == "failed"),
        left=tuple(_left(finish, steps)),
        approvals=tuple(got.approvals),
        escalations=tuple(got.escalations),
        findings=tuple(got.findings),
        unproven=tuple(s for s in steps if s.status == "unproven"),
        clearances=tuple(sorted(got.clearances.values(), key=lambda c: (c.segment, c.host))),
        attestations=tuple(got.attestations),
        observer_errors=tuple(got.observer_errors),
        measures=measures(steps, run.topology, hosts),
        affected_services=affected_services(hosts, run.topology, steps),
        interruptions=tuple(got.interruptions),
        nis2=(),
        graph_nodes=graph_nodes,
        graph_edges=graph_edges,
        notes=tuple(notes),
        records=len(events),
        journal_ok=verification.ok if verification is not None else None,
        journal_head=verification.head if verification is not None else None,
        journal_problems=tuple(verification.problems) if verification is not None else (),
    )
    return dataclasses.replace(report_wo_nis2, nis2=_nis2(report_wo_nis2, detected_dt, clock),
                               restore_evidence=restore_evidence(report_wo_nis2))

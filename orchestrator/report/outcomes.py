"""What happened to each host, and what that meant: outcomes with their reasons, the containment
measures in force and the services affected, from the steps the journal recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator import events as ev
from orchestrator.report.model import HOST_ACTIONS, Clearance, Finding, HostOutcome, StepRecord, _str

_Verdict = tuple[str, str, Mapping[str, Any]]  # outcome, why, evidence


def _blocking(step: StepRecord, by_id: Mapping[str, StepRecord]) -> str:
    """Why a skipped step was not attempted: the first required step that did not succeed."""
    for req in step.requires:
        other = by_id.get(req)
        if other is not None and other.status not in ("verified", "dry-run", "attested"):
            return f"{req} {other.status}"
    return "a step it requires did not succeed"


@dataclass(frozen=True)
class RunFacts:
    """What every host's outcome is judged against."""

    steps: Sequence[StepRecord]
    findings: Sequence[Finding]
    kept: Mapping[str, str]
    mode: str
    management: str
    quarantined: Mapping[str, ev.Quarantine]
    clearances: Mapping[str, Clearance] = field(default_factory=dict)

    @property
    def by_id(self) -> dict[str, StepRecord]:
        return {s.step_id: s for s in self.steps}


@dataclass(frozen=True)
class _HostSteps:
    """One host's steps (and its segment's), as the run recorded them."""

    name: str
    segment: str
    found: Sequence[Finding]
    stop: StepRecord | None
    start: StepRecord | None
    integrity: StepRecord | None
    health: StepRecord | None
    isolate: StepRecord | None
    reconnect: StepRecord | None

    @classmethod
    def of(cls, name: str, segment: str, facts: RunFacts,
           by_action: Mapping[tuple[str, str], StepRecord]) -> _HostSteps:
        return cls(
            name=name, segment=segment, found=[f for f in facts.findings if f.host == name],
            stop=by_action.get(("stop-host", name)), start=by_action.get(("start-host", name)),
            integrity=by_action.get(("check-integrity", name)), health=by_action.get(("check-health", name)),
            isolate=by_action.get(("isolate-segment", segment)) if segment else None,
            reconnect=by_action.get(("reconnect-segment", segment)) if segment else None,
        )


def _quarantined(h: _HostSteps, q: ev.Quarantine, facts: RunFacts) -> _Verdict:
    off = "powered off again" if q.powered_off else "NOT powered off: it stays isolated"
    why = f"{_str(q.reason, 'quarantined')} ({off})"
    evidence = h.integrity.evidence if h.integrity else {}
    if h.name in facts.clearances:
        c = facts.clearances[h.name]
        why += f"; cleared for reconnecting segment {c.segment}: {c.text}"
    elif h.reconnect is not None and h.reconnect.status != "verified":
        why += f"; segment {h.segment} held isolated ({h.reconnect.status})"
    return "quarantined", why, evidence


def _restore_failure(h: _HostSteps) -> _Verdict | None:
    """A restore step that failed: integrity, then health, then the start itself."""
    integrity, health, start, found = h.integrity, h.health, h.start, h.found
    if (integrity and integrity.status == "failed") or found:
        paths = ", ".join(f"{f.category} {f.path}" for f in found[:10])
        more = f" (+{len(found) - 10} more)" if len(found) > 10 else ""
        why = (
            f"integrity differs from the baseline: {paths}{more}"
            if found
            else (f"integrity check failed: {integrity.error if integrity else ''}")
        )
        return "quarantined", why, integrity.evidence if integrity else {}
    if health and health.status == "failed":
        return "quarantined", f"health check failed: {health.error or ''}", health.evidence
    if start and start.status == "failed":
        return "failed", f"start failed: {start.error or ''}", start.evidence
    return None


def _restored(h: _HostSteps, facts: RunFacts) -> _Verdict:
    failure = _restore_failure(h)
    if failure is not None:
        return failure
    steps = (h.start, h.integrity, h.health)
    segment, reconnect = h.segment, h.reconnect
    if all(s is None or s.status in ("verified", "attested") for s in steps):
        attested = h.integrity is not None and h.integrity.status == "attested"
        checks = (f"integrity ATTESTED, not verified ({h.integrity.error if h.integrity else ''}); health verified"
                  if attested else "integrity and health verified")
        if reconnect is None or reconnect.status == "verified":
            why = f"started; {checks}" + (f"; segment {segment} reconnected" if reconnect else "")
            return "restored-attested" if attested else "restored", why, {}
        return "started", f"{checks if attested else 'verified'}, but segment {segment} not reconnected " \
                          f"({reconnect.status})", {}
    if all(s is None or s.status == "dry-run" for s in steps):
        return "dry-run", "dry run: nothing done", {}
    pending = next(s for s in steps if s is not None and s.status not in ("verified", "attested"))
    reason = _blocking(pending, facts.by_id) if pending.status == "skipped" else "not reached"
    return "not-restored", f"{pending.step_id} {pending.status}: {reason}", {}


def _stopped(stop: StepRecord, facts: RunFacts) -> _Verdict:
    if stop.status == "verified":
        why = "was already off" if stop.already else "powered off, verified from outside"
        if stop.escalated:
            why += " (escalated to out-of-band power-off)"
        return "stopped", why, {}
    if stop.status == "failed":
        return "failed", f"stop failed: {stop.error or 'no error recorded'}", stop.evidence
    if stop.status == "dry-run":
        return "dry-run", "dry run: would be stopped", {}
    if stop.status == "skipped":
        return "not-stopped", f"not attempted: {_blocking(stop, facts.by_id)}", {}
    return "not-stopped", f"not reached ({stop.status}: run interrupted or unfinished)", {}


def _isolated(h: _HostSteps, isolate: StepRecord, facts: RunFacts) -> _Verdict:
    segment = h.segment
    if isolate.status == "verified":
        why = f"running; segment {segment} isolated (nothing is powered off in {facts.mode})"
        if h.name in facts.kept:
            why += f"; kept: {facts.kept[h.name]}"
        return "isolated", why, {}
    if isolate.status == "failed":
        return "failed", f"segment {segment} isolation failed: {isolate.error or ''}", isolate.evidence
    if isolate.status == "unproven":
        why = f"segment {segment} isolation UNPROVEN (not verified): {isolate.error or 'no probe from inside'}"
        return "isolation-unproven", why, isolate.evidence
    return "running", f"segment {segment} isolation {isolate.status}", {}


def _verdict(h: _HostSteps, facts: RunFacts) -> _Verdict:
    """The host's outcome: quarantine first, then what its restore, stop or isolation steps say."""
    name = h.name
    if name in facts.quarantined:
        return _quarantined(h, facts.quarantined[name], facts)
    if h.start or h.integrity or h.health:
        return _restored(h, facts)
    if h.stop is not None:
        return _stopped(h.stop, facts)
    if name in facts.kept and facts.mode == "shutdown":
        return "kept-running", facts.kept[name], {}
    if h.isolate is not None:
        return _isolated(h, h.isolate, facts)
    if h.segment and h.segment == facts.management:
        return "running", "management segment: never isolated", {}
    if name in facts.kept:
        return "kept-running", facts.kept[name], {}
    return "out-of-scope", "no step of this run concerns it", {}


def host_outcomes(topology: Mapping[str, Any], facts: RunFacts) -> list[HostOutcome]:
    """Every host's outcome and why, in name order: the topology's hosts, those the steps name, the kept."""
    by_action: dict[tuple[str, str], StepRecord] = {(s.action, s.target): s for s in facts.steps}
    host_info: Mapping[str, Mapping[str, Any]] = topology.get("hosts", {})
    names = sorted(set(host_info) | {s.target for s in facts.steps if s.action in HOST_ACTIONS} | set(facts.kept))
    out: list[HostOutcome] = []
    for name in names:
        info = host_info.get(name, {})
        segment = _str(info.get("segment"))
        outcome, why, evidence = _verdict(_HostSteps.of(name, segment, facts, by_action), facts)
        if name in facts.clearances and name not in facts.quarantined:
            c = facts.clearances[name]
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


def measures(
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


def affected_services(
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


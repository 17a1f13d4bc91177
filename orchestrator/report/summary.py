"""One line of text per journal event, for the report's timeline: one function per event type; a type
without one (a newer journal's, or detail like ``syslog-dropped``) is shown with its payload."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from orchestrator import events as ev
from orchestrator.report.model import _compact, _str, format_duration

# What the generic line leaves out: the envelope (the record's ``hmac``, if any, is shown as payload).
_NOT_PAYLOAD = frozenset({"schema_version", "seq", "prev", "run_id", "ts", "mono", "type"})


def _run_started(e: ev.RunStarted) -> str:
    return (
        f"run started by {e.operator or '?'} on {e.host or '?'}: {e.mode or '?'} of "
        f"{e.site or '?'} (plan {e.plan_id[:12]})"
    )


def _wave_started(e: ev.WaveStarted) -> str:
    return f"wave {_str(e.wave)} ({e.phase}) started"


def _step_finished(e: ev.StepFinished) -> str:
    text = f"{e.step_id}: {_str(e.status)}"
    if e.already:
        text += " (already in force)"
    if e.escalated:
        text += " (escalated)"
    if e.error:
        text += f": {e.error}"
    return text


def _escalation(e: ev.Escalation) -> str:
    return f"{e.step_id}: escalated to {e.to}: {e.reason}"


def _quarantine(e: ev.Quarantine) -> str:
    off = "powered off" if e.powered_off else "NOT powered off"
    return f"quarantined {e.host} ({off}): {_str(e.reason)}"


def _gate_approved(e: ev.GateApproved) -> str:
    return f"gate {e.gate} approved by {_str(e.approver, '?')} ({e.how})"


def _gate_refused(e: ev.GateRefused) -> str:
    reason = f": {e.summary}" if e.summary else ""
    return f"gate {e.gate} refused by {_str(e.approver, '?')} ({e.how}){reason}"


def _milestone(e: ev.Milestone) -> str:
    after = f" after {format_duration(e.elapsed_s)}" if e.elapsed_s is not None else ""
    return f"milestone: {e.name}{after}"


def _run_interrupted(e: ev.RunInterrupted) -> str:
    return f"run interrupted ({_str(e.signal, 'signal unknown')})"


def _run_resumed(e: ev.RunResumed) -> str:
    return f"run resumed by {_str(e.by, '?')}"


def _run_finished(e: ev.RunFinished) -> str:
    detail = ", ".join(f"{k} {v}" for k, v in sorted(e.counts.items())) if e.counts is not None else ""
    return f"run finished: {_str(e.status)}" + (f" ({detail})" if detail else "")


def _integrity_finding(e: ev.IntegrityFinding) -> str:
    return f"integrity: {e.host}: {e.category} {e.path}"


def _attestation(e: ev.Attestation) -> str:
    return f"attestation: {e.host} {e.claim}, by {_str(e.by, '?')} (as {e.operator or '?'}): {e.reason}"


def _clearance(e: ev.Clearance) -> str:
    return f"{e.host} cleared for reconnecting {e.segment}: {e.text}"


def _observer_error(e: ev.ObserverError) -> str:
    return f"observer {_str(e.observer)} failed ({e.error_type}: {e.message}); the run went on"


def _journal_repaired(e: ev.JournalRepaired) -> str:
    return f"journal repaired: a torn last line was moved to {e.torn_file}"


def _lock_taken_over(e: ev.LockTakenOver) -> str:
    return f"stale run lock taken over (pid {_str(e.holder.get('pid'))}: {_str(e.holder.get('reason'))})"


# Each function takes its own event class (checked where the table is read).
_SUMMARIES: Mapping[type[ev.Event], Callable[..., str]] = {
    ev.RunStarted: _run_started,
    ev.WaveStarted: _wave_started,
    ev.StepFinished: _step_finished,
    ev.Escalation: _escalation,
    ev.Quarantine: _quarantine,
    ev.GateApproved: _gate_approved,
    ev.GateRefused: _gate_refused,
    ev.Milestone: _milestone,
    ev.RunInterrupted: _run_interrupted,
    ev.RunResumed: _run_resumed,
    ev.RunFinished: _run_finished,
    ev.IntegrityFinding: _integrity_finding,
    ev.Attestation: _attestation,
    ev.Clearance: _clearance,
    ev.ObserverError: _observer_error,
    ev.JournalRepaired: _journal_repaired,
    ev.LockTakenOver: _lock_taken_over,
}


def summary(event: ev.Event) -> str:
    """The timeline's line for one event."""
    describe = _SUMMARIES.get(type(event))
    if describe is not None:
        return describe(event)
    payload = {k: v for k, v in event.record.items() if k not in _NOT_PAYLOAD}
    return f"{event.type} {_compact(payload, 200)}"

"""What the board shows, built from a run's journal records only (through the report's builder).

``board_state(records)`` returns plain JSON data: status and times, the report's dependency graph with
each host's live state, the timeline, what is left undone, the hosts kept running (islands) and why,
the restore's per-tier board and the NIS2 due times. Every string in it comes from the journal (already
masked when written) and is data: the page sets it with ``textContent`` / Jinja2 autoescape, never as
markup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator.report import (
    OUTCOME_COLOURS,
    GraphNode,
    Report,
    StepRecord,
    build_report,
    format_duration,
    graph_layout,
    timeline_layout,
)

# The states a host's box takes on the board (the report's outcomes, as a crisis cell says them,
# plus what is happening now: stopping, restoring).
LIVE_LABELS: dict[str, str] = {
    "running": "running",
    "stopping": "stopping",
    "stopped": "off",
    "kept-running": "kept running",
    "failed": "failed",
    "quarantined": "quarantined",
    "restored": "restored",
    "restored-attested": "restored (attested, not verified)",
    "restoring": "restoring",
    "isolated": "isolated",
    "not-stopped": "not stopped",
    "not-restored": "not restored",
    "started": "started",
    "dry-run": "dry run",
    "out-of-scope": "not concerned",
    "isolation-unproven": "isolation unproven",
    "unproven": "unproven",
}
LIVE_COLOURS: dict[str, str] = {**OUTCOME_COLOURS, "stopping": "#2563eb", "restoring": "#7c3aed"}
TIMELINE_LIMIT = 400  # newest entries shown in the event list (the chart shows every step)
_STOP_ACTIONS = ("stop-host",)
_RESTORE_ACTIONS = ("start-host", "check-integrity", "check-health")


def _host_steps(report: Report) -> dict[str, list[StepRecord]]:
    out: dict[str, list[StepRecord]] = {}
    for step in report.steps:
        if step.action in _STOP_ACTIONS + _RESTORE_ACTIONS:
            out.setdefault(step.target, []).append(step)
    return out


def live_outcomes(report: Report) -> dict[str, tuple[str, str]]:
    """Each host's state now and why: the report's outcome, corrected for a run still going (a step
    under way is ``stopping`` / ``restoring``; a stop not yet reached is ``running``)."""
    ongoing = report.status == "unfinished"
    steps = _host_steps(report)
    out: dict[str, tuple[str, str]] = {}
    for host in report.hosts:
        state, why = host.outcome, host.why
        mine = steps.get(host.name, [])
        under_way = next((s for s in mine if s.status == "running"), None)
        if ongoing and under_way is not None:
            if under_way.action in _STOP_ACTIONS:
                state, why = "stopping", f"{under_way.step_id} under way"
            else:
                state, why = "restoring", f"{under_way.step_id} under way"
        elif ongoing and state in ("not-stopped", "not-restored"):
            waiting = next((s for s in mine if s.status == "pending"), None)
            if waiting is not None:
                wave = f" (wave {waiting.wave})" if waiting.wave is not None else ""
                state = "running" if waiting.action in _STOP_ACTIONS else "stopped"
                why = f"waiting: {waiting.step_id}{wave} not started yet"
        out[host.name] = (state, why)
    return out


def text_on(colour: str) -> str:
    """A label colour readable on ``colour`` (``#rrggbb``)."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#0f172a" if 0.299 * r + 0.587 * g + 0.114 * b > 160 else "#ffffff"


def _moment(m: Any) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"iso": m.iso, "utc": m.utc, "local": m.local, "offset_s": m.offset_s}


def restore_tiers(report: Report) -> list[dict[str, Any]]:
    """Per tier of a restore: integrity, health, gate (and who approved it), segments reconnected."""
    if not any(s.action == "gate" or s.action in _RESTORE_ACTIONS for s in report.steps):
        return []
    tier_of = {h.name: h.tier for h in report.hosts}
    approvals = {a.gate: a for a in report.approvals}
    tiers: dict[int, dict[str, Any]] = {}

    def row(tier: int) -> dict[str, Any]:
        return tiers.setdefault(tier, {"tier": tier, "hosts": [], "integrity": {}, "health": {}, "start": {},
                                       "gate": None, "reconnected": {}})

    gate_tier: dict[str, int] = {}
    for step in report.steps:
        if step.action == "gate" and step.target.startswith("tier-"):
            try:
                tier = int(step.target.removeprefix("tier-"))
            except ValueError:
                continue
            gate_tier[step.step_id] = tier
            approval = approvals.get(step.step_id)
            row(tier)["gate"] = {
                "step_id": step.step_id, "status": step.status,
                "approved": None if approval is None else approval.approved,
                "approver": approval.approver if approval else "", "how": approval.how if approval else "",
                "at": approval.at.utc if approval else "", "reason": approval.reason if approval else "",
            }
    for step in report.steps:
        key = {"check-integrity": "integrity", "check-health": "health", "start-host": "start"}.get(step.action)
        if key is not None:
            host_tier = tier_of.get(step.target)
            r = row(host_tier if host_tier is not None else 0)
            r[key][step.target] = step.status
            if step.target not in r["hosts"]:
                r["hosts"].append(step.target)
        elif step.action == "reconnect-segment":
            gates = [gate_tier[q] for q in step.requires if q in gate_tier]
            if gates:
                row(gates[0])["reconnected"][step.target] = step.status
    for r in tiers.values():
        r["summary"] = {k: _summary_of(r[k]) for k in ("start", "integrity", "health", "reconnected")}
    return [tiers[t] for t in sorted(tiers)]


def _summary_of(states: Mapping[str, str]) -> str:
    if not states:
        return "-"
    values = list(states.values())
    if all(v == "verified" for v in values):
        return "verified"
    for bad in ("failed", "running", "skipped", "pending"):
        if bad in values:
            n = values.count(bad)
            return f"{n} {bad}"
    return ", ".join(sorted(set(values)))


def _live_graph(report: Report, live: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """The report's graph with each host in its live state (label, colour, why) instead of its outcome."""
    shown = dataclasses.replace(report, graph_nodes=tuple(
        GraphNode(name=n.name, tier=n.tier, segment=n.segment, outcome=live.get(n.name, (n.outcome, ""))[0])
        for n in report.graph_nodes))
    graph = graph_layout(shown)
    for box in graph["boxes"]:
        state, why = live.get(box["name"], (box["outcome"], ""))
        box["state"] = state
        box["label"] = LIVE_LABELS.get(state, state)
        box["colour"] = LIVE_COLOURS.get(state, "#94a3b8")
        box["text"] = text_on(box["colour"])
        box["why"] = why
    for item in graph["legend"]:
        item["label"] = LIVE_LABELS.get(item["outcome"], item["outcome"])
        item["colour"] = LIVE_COLOURS.get(item["outcome"], "#94a3b8")
    return graph


def _left(report: Report, finished: bool) -> list[dict[str, Any]]:
    if finished:
        return [dict(x) for x in report.left]
    # a run still going: only what already went wrong (the rest is simply not reached yet)
    return [{"step_id": s.step_id, "reason": s.error or s.status} for s in report.steps
            if s.status in ("failed", "skipped")]


def _nis2_clocks(report: Report) -> list[dict[str, Any]]:
    """The NIS2 clocks run from the incident's detection; a restore's own start is not that moment."""
    if report.mode == "restore" and report.detected_source.startswith("run start"):
        return []
    return [{"key": n.key, "title": n.title, "due": _moment(n.due), "note": n.due_note}
            for n in report.nis2 if n.key in ("early-warning", "incident-notification")]


def board_state(records: Sequence[Mapping[str, Any]], *, run_id: str = "", now: datetime | None = None,
                journal: str = "") -> dict[str, Any]:
    """The whole page's data from one run's records (an empty list: waiting for the run)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    if not records:
        return {"waiting": True, "run_id": run_id, "now": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "journal": journal, "records": 0}
    report = build_report(records)
    live = live_outcomes(report)
    graph = _live_graph(report, live)
    finished = report.status != "unfinished"
    left = _left(report, finished)
    pending = sum(1 for s in report.steps if s.status in ("pending", "running"))
    nis2 = _nis2_clocks(report)
    by_state: dict[str, int] = {}
    for state, _why in live.values():
        by_state[LIVE_LABELS.get(state, state)] = by_state.get(LIVE_LABELS.get(state, state), 0) + 1
    return {
        "waiting": False,
        "run_id": report.run_id or run_id,
        "journal": journal,
        "now": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "records": report.records,
        "site": report.site,
        "mode": report.mode,
        "operator": report.operator,
        "status": "running" if not finished else report.status,
        "finished": finished,
        "started": _moment(report.started),
        "ended": _moment(report.finished) if finished else None,
        "last_record": _moment(report.finished),
        "duration_s": report.duration_s if finished else None,
        "detected": _moment(report.detected),
        "detected_source": report.detected_source,
        "time_to_containment_s": report.time_to_containment_s,
        "time_to_shutdown_s": report.time_to_shutdown_s,
        "time_to_restored_s": report.time_to_restored_s,
        "times": {
            "containment": format_duration(report.time_to_containment_s)
            if report.time_to_containment_s is not None else "",
            "shutdown": format_duration(report.time_to_shutdown_s) if report.time_to_shutdown_s is not None else "",
            "restored": format_duration(report.time_to_restored_s) if report.time_to_restored_s is not None else "",
        },
        "counts": dict(report.counts),
        "hosts_by_state": dict(sorted(by_state.items())),
        "pending_steps": pending,
        "graph": graph,
        "chart": timeline_layout(report),
        "timeline": [{"at": e.at.utc, "local": e.at.local, "offset": format_duration(e.at.offset_s),
                      "type": e.type, "summary": e.summary, "status": e.status or ""}
                     for e in report.timeline[-TIMELINE_LIMIT:]],
        "left": left,
        "kept": [{"name": h.name, "state": LIVE_LABELS.get(live.get(h.name, (h.outcome, ""))[0], h.outcome),
                  "why": h.why, "segment": h.segment} for h in report.kept],
        "restore": restore_tiers(report),
        "approvals": [{"gate": a.gate, "approved": a.approved, "approver": a.approver, "how": a.how,
                       "at": a.at.utc, "reason": a.reason} for a in report.approvals],
        "nis2": nis2,
        # a run going on is what the board shows; a run that went quiet is said by the page (last record)
        "notes": [n for n in report.notes if finished or not n.startswith("the journal does not end with")],
    }


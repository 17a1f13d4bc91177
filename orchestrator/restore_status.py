"""The restore board's view: per tier and host, where the latest restore of a site stands.

``restore_status(inventory, settings)`` finds the newest restore run of the inventory's site in the
state directory (or the run given), builds its report from the journal and takes the board's per-tier
restore state (``board.state.restore_tiers``), then says per host: off, started, integrity
ok/failed/attested, health suites x/y, gate, reconnected; per segment: reconnected, or what blocks it;
per gate: who approved it. Without a restore run yet it shows the readiness (what will prove each host
clean, who must attest). Read-only: nothing is locked, written or sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.config import Settings
from orchestrator.errors import UsageError
from orchestrator.model import Inventory, Mode
from orchestrator.readiness import Readiness, restore_readiness

RESTORE_STATUS_SCHEMA = "orchestrator.restore-status/v1"
_INTEGRITY_WORDS = {"verified": "integrity ok", "failed": "integrity failed", "attested": "integrity attested"}


def latest_restore_run(settings: Settings, site: str) -> str | None:
    """The newest restore run of ``site`` in the state directory, or None."""
    from orchestrator.errors import OrchestratorError
    from orchestrator.runs import list_run_ids, read_run

    for run_id in reversed(list_run_ids(settings)):
        try:
            started = read_run(settings, run_id).started
        except OrchestratorError:
            continue  # a run without a readable start is no restore to show
        if started.mode == Mode.RESTORE.value and started.site == site:
            return run_id
    return None


def _suites(evidence: Mapping[str, Any]) -> tuple[int, int]:
    rows = evidence.get("suites")
    if not isinstance(rows, list):
        return 0, 0
    return sum(1 for r in rows if isinstance(r, Mapping) and r.get("outcome") == "passed"), len(rows)


def _host_state(start: str, integrity: str, health: str, reconnected: str, quarantined: bool) -> str:
    """One word (or three) for where the host is, the furthest step it reached."""
    if quarantined:
        return "quarantined"
    if reconnected == "verified":
        return "reconnected"
    if health == "verified":
        return "health ok" + (" (integrity attested)" if integrity == "attested" else "")
    if health == "failed":
        return "health failed"
    if integrity in _INTEGRITY_WORDS:
        return _INTEGRITY_WORDS[integrity]
    if start in ("verified", "failed"):
        return "started" if start == "verified" else "start failed"
    if start == "running":
        return "starting"
    return "off"


def _segment_blocking(step: Any, by_id: Mapping[str, Any]) -> str:
    """What keeps a segment isolated: its step's error, or the steps it waits for."""
    if step.status == "verified":
        return ""
    if step.status == "failed":
        return step.error or "failed"
    waiting = [f"{r} ({by_id[r].status if r in by_id else 'not planned'})" for r in step.requires
               if r not in by_id or by_id[r].status not in ("verified", "attested")]
    return ("waiting for " + ", ".join(waiting)) if waiting else (step.error or step.status)


def _tiers_from_run(records: Sequence[Mapping[str, Any]], inventory: Inventory) -> tuple[dict[str, Any], list[Any]]:
    from orchestrator.board.state import restore_tiers
    from orchestrator.report import build_report

    report = build_report(records, inventory)
    steps = {(s.action, s.target): s for s in report.steps}
    by_id = {s.step_id: s for s in report.steps}
    outcomes = {h.name: h for h in report.hosts}
    evidence = {e.host: e for e in report.restore_evidence}
    tiers = restore_tiers(report)
    quarantined = {r.get("host") for r in records if r.get("type") == "quarantine"}
    for row in tiers:
        hosts = []
        for name in row["hosts"]:
            host = inventory.hosts.get(name)
            segment = host.segment if host is not None else ""
            health = steps.get(("check-health", name))
            passed, total = _suites(health.evidence) if health is not None else (0, 0)
            reconnect = steps.get(("reconnect-segment", segment))
            outcome = outcomes[name].outcome if name in outcomes else ""
            e = evidence.get(name)
            hosts.append({
                "host": name, "segment": segment,
                "state": _host_state(row["start"].get(name, "-"), row["integrity"].get(name, "-"),
                                     row["health"].get(name, "-"), reconnect.status if reconnect else "-",
                                     name in quarantined),
                "start": row["start"].get(name, "-"), "integrity": row["integrity"].get(name, "-"),
                "health": row["health"].get(name, "-"), "suites": {"passed": passed, "total": total},
                "attestation": e.attestation if e is not None else "", "outcome": outcome,
                "why": outcomes[name].why if name in outcomes else ""})
        row["hosts"] = hosts
        row["segments"] = [{"segment": seg, "status": status,
                            "blocking": _segment_blocking(steps[("reconnect-segment", seg)], by_id)}
                           for seg, status in sorted(row["reconnected"].items())]
    summary = {"run_id": report.run_id, "status": report.status, "started": report.started.utc if report.started
               else "", "approvals": [{"gate": a.gate, "approved": a.approved, "approver": a.approver, "how": a.how,
                                       "at": a.at.utc} for a in report.approvals]}
    return summary, tiers


def _tiers_from_readiness(readiness: Readiness) -> list[dict[str, Any]]:
    tiers: dict[int, dict[str, Any]] = {}
    for h in readiness.hosts:
        row = tiers.setdefault(h.tier, {"tier": h.tier, "hosts": [], "gate": None, "segments": []})
        row["hosts"].append({"host": h.host, "segment": h.segment, "state": "off (no restore run yet)",
                             "start": "-", "integrity": "-", "health": "-",
                             "suites": {"passed": 0, "total": len(h.suites)}, "attestation": "", "outcome": "",
                             "why": h.why})
    for row in tiers.values():
        segments = sorted({h["segment"] for h in row["hosts"]})
        row["segments"] = [{"segment": s, "status": "-",
                            "blocking": ("needs an attestation: " + ", ".join(readiness.held_segments[s]))
                            if s in readiness.held_segments else "no restore run yet"} for s in segments]
    return [tiers[t] for t in sorted(tiers)]


def restore_status(inventory: Inventory, settings: Settings, run_id: str | None = None) -> dict[str, Any]:
    """The board's view of the site's latest restore (or ``run_id``), with the readiness of its hosts."""
    from orchestrator.planner import build_plan
    from orchestrator.runs import read_run

    readiness = restore_readiness(inventory, build_plan(inventory, Mode.RESTORE), settings)
    chosen = run_id or latest_restore_run(settings, inventory.site.name)
    doc: dict[str, Any] = {"schema": RESTORE_STATUS_SCHEMA, "site": inventory.site.name, "run": None,
                           "readiness": readiness.as_dict()}
    if chosen is None:
        doc["tiers"] = _tiers_from_readiness(readiness)
        doc["still_to_attest"] = list(readiness.to_attest)
        return doc
    state = read_run(settings, chosen)
    if state.started.mode != Mode.RESTORE.value:
        raise UsageError(f"run {chosen} is a {state.started.mode} run, not a restore", target=chosen,
                         hint="name a restore run (orchestrator status lists the runs), or leave --run out")
    summary, tiers = _tiers_from_run(state.records, inventory)
    doc["run"] = summary
    doc["tiers"] = tiers
    attested = {h["host"] for t in tiers for h in t["hosts"] if h["integrity"] == "attested"}
    doc["still_to_attest"] = [h for h in readiness.to_attest if h not in attested]
    return doc

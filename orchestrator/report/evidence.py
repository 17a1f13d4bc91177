"""A restore's per-host evidence, what a restore board reads before it says "reconnect": the baseline
compared (date, signature key) and the differences found, the health suites' results, the attestation
that stood in for a check the tool could not make, the gate's approver and when the segment came back.

Built from the report's own steps, approvals, findings, attestations and clearances (so from the
journal only). An integrity step passed on an attestation says "attested by X, not verified", never
"verified".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.report.model import StepRecord, _str

if TYPE_CHECKING:
    from orchestrator.report.model import Report

VOUCHED_CLEAN = "vouched-clean"  # attest.VOUCHED_CLEAN (the report reads records, it imports no runtime code)
SUITE_FAILURES_SHOWN = 10


@dataclass(frozen=True)
class HostEvidence:
    host: str
    tier: int | None
    segment: str
    started: str  # the start-host step's status
    integrity: str  # verified | failed | attested | skipped | pending | "-"
    integrity_text: str  # "verified against the baseline", "attested by X, not verified: ...", the failure
    baseline_taken: str
    baseline_key_id: str
    differences: int
    difference_paths: tuple[str, ...]
    health: str  # the check-health step's status
    suites_passed: int
    suites_total: int
    suite_failures: tuple[str, ...]  # "suite::test (outcome): message"
    attestation: str  # who vouched for it (or attested its disconnection), when, why; "" if nobody
    gate: str
    gate_approver: str  # "NAME (how) at UTC", "refused by ...", or ""
    reconnect: str  # the reconnect-segment step's status
    reconnected_at: str  # UTC, when its segment was reconnected (verified); "" otherwise


def _steps(report: Report) -> dict[tuple[str, str], StepRecord]:
    return {(s.action, s.target): s for s in report.steps}


def _integrity(step: StepRecord | None, paths: Sequence[str]) -> tuple[str, str, str, str]:
    """status, text, baseline date, baseline key id."""
    if step is None:
        return "-", "", "", ""
    ev: Mapping[str, Any] = step.evidence
    sig = ev.get("baseline_signature")
    key_id = _str(sig.get("key_id")) if isinstance(sig, Mapping) else ""
    taken = _str(ev.get("baseline_taken"))
    if step.status == "attested":
        return "attested", step.error or "attested, not verified", taken, key_id
    if step.status == "verified":
        return "verified", "no difference from the signed baseline", taken, key_id
    if step.status == "failed" and paths:
        return "failed", f"{len(paths)} difference(s) from the baseline", taken, key_id
    return step.status, step.error or step.status, taken, key_id


def _suites(step: StepRecord | None) -> tuple[int, int, tuple[str, ...]]:
    if step is None:
        return 0, 0, ()
    suites = step.evidence.get("suites")
    if not isinstance(suites, list):
        return 0, 0, ()
    rows = [r for r in suites if isinstance(r, Mapping)]
    passed = sum(1 for r in rows if r.get("outcome") == "passed")
    failed = tuple(f"{_str(r.get('suite'))}::{_str(r.get('test'))} ({_str(r.get('outcome'))}): "
                   f"{_str(r.get('message'))}".rstrip(": ")
                   for r in rows if r.get("outcome") != "passed")
    return passed, len(rows), failed[:SUITE_FAILURES_SHOWN]


def _attestation_text(report: Report, host: str) -> str:
    texts = [f"{a.claim} by {a.by} (as {a.operator or '?'}) at {a.at.utc}: {a.reason}"
             + (f" [evidence sha256 {a.evidence_sha256}]" if a.evidence_sha256 else "")
             for a in report.attestations if a.host == host]
    return "; ".join(texts[-2:])  # the latest of each kind is what counted; older ones are in the attestations


def _gate(report: Report, tier: int | None) -> tuple[str, str]:
    if tier is None:
        return "", ""
    gate_id = f"gate:tier-{tier}"
    approvals = [a for a in report.approvals if a.gate == gate_id]
    if not approvals:
        return gate_id, ""
    a = approvals[-1]
    who = f"{a.approver} ({a.how}) at {a.at.utc}"
    return gate_id, who if a.approved else f"refused: {who}"


def restore_evidence(report: Report) -> tuple[HostEvidence, ...]:
    """One row per host the restore started, in tier then name order; empty for other runs."""
    steps = _steps(report)
    started = sorted({s.target for s in report.steps if s.action == "start-host"})
    info = {h.name: h for h in report.hosts}
    rows: list[HostEvidence] = []
    for name in started:
        h = info.get(name)
        tier, segment = (h.tier, h.segment) if h is not None else (None, "")
        paths = tuple(f"{f.category} {f.path}" for f in report.findings if f.host == name)
        status, text, taken, key_id = _integrity(steps.get(("check-integrity", name)), paths)
        health = steps.get(("check-health", name))
        passed, total, failures = _suites(health)
        gate_id, approver = _gate(report, tier)
        reconnect = steps.get(("reconnect-segment", segment)) if segment else None
        rows.append(HostEvidence(
            host=name, tier=tier, segment=segment, started=_status(steps.get(("start-host", name))),
            integrity=status, integrity_text=text, baseline_taken=taken, baseline_key_id=key_id,
            differences=len(paths), difference_paths=paths[:20], health=_status(health), suites_passed=passed,
            suites_total=total, suite_failures=failures, attestation=_attestation_text(report, name),
            gate=gate_id, gate_approver=approver, reconnect=_status(reconnect),
            reconnected_at=reconnect.finished.utc if reconnect is not None and reconnect.status == "verified"
            and reconnect.finished is not None else ""))
    return tuple(sorted(rows, key=lambda r: (r.tier if r.tier is not None else -1, r.host)))


def _status(step: StepRecord | None) -> str:
    return step.status if step is not None else "-"

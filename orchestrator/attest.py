"""Attestations: what the tool cannot prove, a named person signs, in the run's journal.

``orchestrator attest RUN_ID HOST --by NAME --reason TEXT [--evidence FILE]`` appends one
``attestation`` record to the run's journal, through the journal API (so it is chained, keyed with
the controller's key like every record, masked, and copied to the syslog collector when one is
set), under the state directory's run lock (never beside a run that is writing the same journal).

Each attestation makes one ``claim``. Today there is one:

* ``physically-disconnected``: the host is cut off the network by hand (cable pulled, port shut by
  someone at the switch). A restore reconnects a segment only when each of its hosts passed its checks
  or is cleared: its power driver proves it off, or this attestation says it is disconnected. The
  report then says "attested by NAME: physically disconnected, not verified", never "verified".

* ``vouched-clean``: a named person vouches that the host is clean where the tool cannot check it
  (no baseline for it, or a Windows host the collector cannot read): rebuilt from a backup of date
  X, scanned by the EDR, ... A restore then passes the host's integrity step as ``attested`` (never
  ``verified``: the run ends "unproven") and the report says "attested by NAME, not verified". It
  replaces a MISSING check only: a host whose integrity check ran and found differences from its
  baseline (or whose baseline fails its signature) is never cleared by an attestation, and ``attest``
  refuses to record one for it.

``CLAIMS`` is the one list to extend, and :func:`attestations_for` reads any claim back from the records.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.errors import UsageError
from orchestrator.model import Mode

DISCONNECTED = "physically-disconnected"
VOUCHED_CLEAN = "vouched-clean"
CLAIMS: dict[str, str] = {
    # claim -> what it says, in the words of the record and the report
    DISCONNECTED: "physically disconnected from every network, not verified by the tool",
    VOUCHED_CLEAN: "vouched clean by a person where the tool cannot check its integrity, not verified by the tool",
}
CLI_CLAIMS: dict[str, str] = {"disconnected": DISCONNECTED, "clean": VOUCHED_CLEAN}  # --claim WORD -> claim
EVIDENCE_MAX_BYTES = 512 * 1024 * 1024  # hashed in chunks; a bigger file is refused (it is not a photo or a log)
TEXT_MAX = 2000  # characters of --by and --reason kept


@dataclass(frozen=True)
class Attestation:
    run_id: str
    host: str
    claim: str
    by: str
    reason: str
    operator: str
    evidence: Mapping[str, Any] | None
    seq: int
    ts: str

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "host": self.host, "claim": self.claim, "by": self.by,
                "reason": self.reason, "operator": self.operator,
                "evidence": dict(self.evidence) if self.evidence is not None else None,
                "seq": self.seq, "ts": self.ts}


def attestations_for(records: Iterable[Mapping[str, Any]], claim: str) -> dict[str, dict[str, Any]]:
    """host -> the latest ``attestation`` record making ``claim``, from a run's journal records."""
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("type") == "attestation" and record.get("claim") == claim and isinstance(record.get("host"), str):
            out[record["host"]] = dict(record)
    return out


def disconnection_attestations(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """host -> its latest physical-disconnection attestation in the run (what a restore's readiness accepts)."""
    return attestations_for(records, DISCONNECTED)


def vouched_attestations(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """host -> its latest vouched-clean attestation in the run (what a restore's integrity step accepts
    where it cannot check: no baseline, a Windows host)."""
    return attestations_for(records, VOUCHED_CLEAN)


def integrity_failed(records: Iterable[Mapping[str, Any]], host: str) -> int:
    """How many differences from its baseline the run found on ``host`` (0: none found, or never checked)."""
    return sum(1 for r in records if r.get("type") == "integrity-finding" and r.get("host") == host)


def hash_evidence(path: str | Path) -> dict[str, Any]:
    """The evidence file's name, size and SHA-256 (the file itself stays where it is, unread by anything else)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise UsageError(f"the evidence {p} is not a regular file", target=str(p), hint="pass a file")
        if size > EVIDENCE_MAX_BYTES:
            raise UsageError(f"the evidence {p} is {size} bytes (at most {EVIDENCE_MAX_BYTES})", target=str(p),
                             hint="attach a smaller file (a photo, a ticket export) and keep the rest elsewhere")
        digest = hashlib.sha256()
        with p.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise UsageError(f"cannot read the evidence file {p}: {exc.strerror}", target=str(p),
                         hint="check the path and its permissions") from None
    return {"file": str(p.resolve()), "bytes": size, "sha256": digest.hexdigest()}


def _text(value: str, option: str) -> str:
    text = " ".join(value.split())
    if not text:
        what = "who attests" if option == "--by" else "why"
        raise UsageError(f"{option} is empty", target=option, hint=f"say {what}")
    return text[:TEXT_MAX]


def attest_host(settings: Settings, run_id: str, host: str, *, by: str, reason: str,
                evidence: str | Path | None = None, claim: str = DISCONNECTED, operator: str = "") -> Attestation:
    """Append a person's attestation about ``host`` to run ``run_id``'s journal and return it.

    Refused (exit 2) for an unknown run, a run that is not a restore, a host the run does not
    restore, an empty ``by``/``reason`` or an unreadable evidence file; refused (exit 3) while
    another process holds the run lock."""
    from orchestrator import runs, storage
    from orchestrator.journal import Journal, current_operator
    from orchestrator.lock import RunLock

    if claim not in CLAIMS:
        raise UsageError(f"unknown claim {claim!r}", target="--claim", hint=f"one of: {', '.join(CLAIMS)}")
    by = _text(by, "--by")
    reason = _text(reason, "--reason")
    state = runs.read_run(settings, run_id)  # a clear error for an unknown run, before the lock
    plan = state.plan
    if plan.mode is not Mode.RESTORE:
        raise UsageError(f"run {run_id} is a {plan.mode.value} run: attestations clear hosts of a restore run",
                         target=run_id, hint="attest in the restore run that holds the host back (orchestrator status)")
    restored = sorted({s.target for s in plan.steps() if s.action.value == "start-host"})
    if host not in restored:
        shown = ", ".join(restored[:12]) + (" ..." if len(restored) > 12 else "")
        raise UsageError(f"run {run_id} does not restore host {host!r}", target=host,
                         hint=f"hosts of this restore: {shown or 'none'}")
    if claim == VOUCHED_CLEAN and (found := integrity_failed(state.records, host)):
        raise UsageError(f"run {run_id} found {found} difference(s) from {host}'s signed baseline: an "
                         "attestation never overrides a failed integrity check", target=host,
                         hint="investigate the differences (orchestrator report RUN_ID); rebuild the host, "
                         "then capture a new baseline once it is known good, and restore it in a new run")
    evidence_doc = hash_evidence(evidence) if evidence is not None else None
    storage.ensure_private_dir(settings.state_dir)
    with RunLock(settings.lock_path, run_id, command=f"attest {run_id} {host}"):
        journal = Journal.open_existing(settings.journal_path(run_id),
                                        key=runs._journal_key(settings, create=False),  # the run's own journal key
                                        forwarder=runs._open_forwarder(settings))  # as resume does
        try:
            record = journal.emit(
                "attestation", host=host, claim=claim, statement=CLAIMS[claim], by=by, reason=reason,
                operator=operator or current_operator(), from_host=socket.gethostname(), pid=os.getpid(),
                evidence=evidence_doc)
        finally:
            journal.close()
    return Attestation(run_id=run_id, host=host, claim=claim, by=str(record.get("by", by)),
                       reason=str(record.get("reason", reason)), operator=str(record.get("operator", "")),
                       evidence=evidence_doc, seq=int(record.get("seq", -1)), ts=str(record.get("ts", "")))


def run_assurances(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What a run's journal says beyond step outcomes, for ``status``: hosts kept running and why,
    how each held-back host was cleared before its segment came back, and the attestations made."""
    records = list(records)
    started = next((r for r in records if r.get("type") == "run-started"), {})
    plan: Mapping[str, Any] = started["plan"] if isinstance(started.get("plan"), Mapping) else {}
    kept: Mapping[str, Any] = plan["kept"] if isinstance(plan.get("kept"), Mapping) else {}
    cleared = {str(r.get("host")): str(r.get("text", "")) for r in records if r.get("type") == "clearance"}
    attested = [{"host": str(r.get("host")), "claim": str(r.get("claim")), "by": str(r.get("by")),
                 "reason": str(r.get("reason")), "ts": str(r.get("ts")), "operator": str(r.get("operator")),
                 "evidence_sha256": (r.get("evidence") or {}).get("sha256") if isinstance(r.get("evidence"), Mapping)
                 else None}
                for r in records if r.get("type") == "attestation"]
    return {"kept": {str(k): str(v) for k, v in kept.items()}, "cleared": cleared, "attestations": attested}

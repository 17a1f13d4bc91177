"""Restore readiness: before anything is powered on, what will prove each host clean.

For each host a restore plan starts: its integrity proof (a signed baseline of date X, or an
attestation because the tool cannot check it: no baseline, a Windows host), its health checks
(services, the baseline's ports, its site health suites) and whether its segment will stay isolated
unless someone attests. Read-only: baselines are read and their signatures checked, nothing is created
(no key, no directory). ``plan --mode restore``, the restore preview and ``restore-status`` show it.

An attestation replaces a MISSING check only. A host whose baseline exists but fails its signature
(or cannot be read) is reported as such: the restore will quarantine it and no attestation clears it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.config import Settings
from orchestrator.errors import OrchestratorError
from orchestrator.inventory.health import suite_label
from orchestrator.model import Action, Host, HostOs, Inventory, Plan

READINESS_SCHEMA = "orchestrator.restore-readiness/v1"
BASELINE = "baseline"  # a signed baseline will be compared
ATTESTATION = "attestation-required"  # the tool cannot check: a person must vouch (attest --claim clean)
BROKEN = "baseline-unusable"  # a baseline exists and fails its check: quarantined, never attestable


def integrity_unavailable(host: Host, settings: Settings) -> str | None:
    """Why the tool cannot check ``host``'s integrity at all (what an attestation may stand in for),
    or None when a baseline exists to compare with (whether it then verifies or not)."""
    from orchestrator.integrity import baseline_dir, baseline_versions

    if host.never_ssh:  # an os: windows host, an ESXi powered through vCenter: never reached over SSH
        what = "windows host" if host.os is HostOs.WINDOWS else "host never reached over SSH (ESXi)"
        return f"{what}: the baseline collector (SSH, POSIX shell) cannot read it"
    if not baseline_versions(host.name, settings):
        return f"no baseline for it in {baseline_dir(host.name, settings)}"
    return None


@dataclass(frozen=True)
class HostReadiness:
    host: str
    tier: int
    segment: str
    proof: str  # BASELINE | ATTESTATION | BROKEN
    why: str  # what the proof rests on, or why it needs a person / is refused
    baseline_taken: str = ""
    key_id: str = ""
    services: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    suites: tuple[str, ...] = ()
    os: str = HostOs.LINUX.value

    @property
    def needs_attestation(self) -> bool:
        return self.proof == ATTESTATION

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "tier": self.tier, "segment": self.segment, "os": self.os,
                "integrity": {"proof": self.proof, "why": self.why, "baseline_taken": self.baseline_taken or None,
                              "key_id": self.key_id or None},
                "health": {"services": list(self.services), "ports": list(self.ports), "suites": list(self.suites)},
                "stays_isolated_unless_attested": self.needs_attestation}


@dataclass(frozen=True)
class Readiness:
    hosts: tuple[HostReadiness, ...]
    held_segments: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # segment -> hosts to attest

    @property
    def to_attest(self) -> tuple[str, ...]:
        return tuple(h.host for h in self.hosts if h.needs_attestation)

    @property
    def refused(self) -> tuple[str, ...]:
        return tuple(h.host for h in self.hosts if h.proof == BROKEN)

    def as_dict(self) -> dict[str, Any]:
        return {"schema": READINESS_SCHEMA, "hosts": [h.as_dict() for h in self.hosts],
                "attestation_required": list(self.to_attest), "baseline_unusable": list(self.refused),
                "held_segments": {s: list(h) for s, h in self.held_segments.items()}}


def _entry(host: Host, proof: str, why: str, *, taken: str = "", key_id: str = "",
           ports: tuple[int, ...] = ()) -> HostReadiness:
    return HostReadiness(host=host.name, tier=host.tier, segment=host.segment, proof=proof, why=why,
                         baseline_taken=taken, key_id=key_id, services=tuple(host.services), ports=ports,
                         suites=tuple(host.health), os=host.os.value)


def host_readiness(host: Host, settings: Settings) -> HostReadiness:
    """What will prove one host clean, from its inventory entry and its baselines on disk."""
    from orchestrator.integrity import listening_tcp_ports, load_baseline

    missing = integrity_unavailable(host, settings)
    if missing is not None:
        return _entry(host, ATTESTATION, missing)
    try:
        doc = load_baseline(host.name, settings)
    except OrchestratorError as exc:
        return _entry(host, BROKEN, exc.message)
    signature = doc.get("signature")
    key_id = str(signature.get("key_id", "")) if isinstance(signature, Mapping) else ""
    taken = str(doc.get("taken", ""))
    return _entry(host, BASELINE, f"signed baseline of {taken}", taken=taken, key_id=key_id,
                  ports=listening_tcp_ports(doc))


def _labelled(entry: HostReadiness, base_dir: str) -> HostReadiness:
    """Suites named as reports name them: relative to the inventory's directory."""
    return replace(entry, suites=tuple(suite_label(s, base_dir) for s in entry.suites))


def restore_readiness(inventory: Inventory, plan: Plan, settings: Settings) -> Readiness:
    """Every host the restore plan starts, in plan order, and the segments that will stay isolated
    until someone attests the hosts the tool cannot check."""
    names = list(dict.fromkeys(s.target for s in plan.steps() if s.action is Action.START_HOST))
    hosts = tuple(_labelled(host_readiness(inventory.hosts[n], settings), inventory.base_dir)
                  for n in names if n in inventory.hosts)
    held: dict[str, list[str]] = {}
    reconnected = {s.target for s in plan.steps() if s.action is Action.RECONNECT_SEGMENT}
    for h in hosts:
        if h.needs_attestation and h.segment in reconnected:
            held.setdefault(h.segment, []).append(h.host)
    return Readiness(hosts=hosts, held_segments={s: tuple(v) for s, v in sorted(held.items())})


def plan_document_with_readiness(plan: Plan, readiness: Readiness) -> str:
    """The §4 plan document, extended with a ``readiness`` key (formatted as ``plan_to_json``). The key
    is not part of ``plan_id`` and is ignored when a plan is loaded: it says what the state directory's
    baselines were when the plan was made."""
    import orjson

    return orjson.dumps({**plan.as_dict(), "readiness": readiness.as_dict()},
                        option=orjson.OPT_INDENT_2).decode("utf-8") + "\n"

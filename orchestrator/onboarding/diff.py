"""The inventory against the estate: what a shutdown would forget or do wrong.

- missing: in the estate, not in the inventory (the dangerous case: a server the shutdown forgets);
- gone: in the inventory, no longer in the estate (a vSphere diff: hosts powered through that
  controller; a CSV diff: every host not in the file);
- changed: address, OS or hypervisor (``runs_on``) differ.

Each of them changes what a shutdown does, so any of them makes ``would_change_shutdown`` true.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.model import Host, Inventory
from orchestrator.onboarding.records import TODO, HostRecord, ImportResult


@dataclass(frozen=True)
class Change:
    host: str
    key: str
    inventory: str
    estate: str


@dataclass
class Drift:
    source: str
    missing: list[HostRecord] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)

    @property
    def would_change_shutdown(self) -> bool:
        return bool(self.missing or self.gone or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "would_change_shutdown": self.would_change_shutdown,
            "missing": [{"host": r.name, "source": r.source, "address": r.fields.get("address"),
                         "segment": r.fields.get("segment"), "os": r.fields.get("os"),
                         "runs_on": r.fields.get("runs_on", []), "todo": r.todos} for r in self.missing],
            "gone": self.gone,
            "changed": [{"host": c.host, "key": c.key, "inventory": c.inventory, "estate": c.estate}
                        for c in self.changed],
        }


def _target(host: Host, controller: str | None) -> str | None:
    t = host.power_target
    if t is None or controller is None or t.controller != controller:
        return None
    return t.vm or getattr(t, "host", None)


def _estate_target(record: HostRecord) -> str | None:
    power = record.fields.get("power")
    if isinstance(power, dict):
        return str(power.get("vm") or power.get("host") or "") or None
    return None


def drift(inventory: Inventory, result: ImportResult) -> Drift:
    """What differs between ``inventory`` and the estate ``result`` describes."""
    out = Drift(source=result.source)
    by_target = {t: h for h in inventory.hosts.values() if (t := _target(h, result.controller)) is not None}
    matched: set[str] = set()
    for record in result.records:
        if record.fields.get("kind") == "storage" and record.vm is None and result.controller is not None:
            continue  # a datastore's storage host: the inventory's stored_on says which (no estate name to match)
        target = _estate_target(record) if result.controller is not None else None
        host = by_target.get(target) if target else None
        host = host or inventory.hosts.get(record.name)
        if host is None:
            out.missing.append(record)
            continue
        matched.add(host.name)
        out.changed.extend(_changes(host, record))
    if result.controller is not None:
        out.gone = sorted(h.name for t, h in by_target.items() if h.name not in matched)
    else:
        out.gone = sorted(n for n in inventory.hosts if n not in matched)
    return out


def _changes(host: Host, record: HostRecord) -> list[Change]:
    changes: list[Change] = []
    address = record.fields.get("address")
    if address not in (None, TODO) and str(host.address) != address:
        changes.append(Change(host.name, "address", str(host.address), str(address)))
    os = record.fields.get("os")
    if os not in (None, TODO) and host.os.value != os:
        changes.append(Change(host.name, "os", host.os.value, str(os)))
    runs_on = record.fields.get("runs_on")
    if runs_on is not None and sorted(host.runs_on) != sorted(runs_on):
        changes.append(Change(host.name, "runs_on", ", ".join(host.runs_on) or "(none)", ", ".join(runs_on)))
    return changes

"""What the report needs to know of the site: from the inventory, from run-started's copy of it, or
(failing both) inferred from the plan."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.model import Inventory
from orchestrator.report.model import HOST_ACTIONS


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
        if step.get("action") in HOST_ACTIONS:
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


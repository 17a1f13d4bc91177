"""Reachability probes that prove a cut or an isolation (and its undoing): from a running host inside
a segment, from a link's lab peer. Used before and after containment and after reconnecting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.executor.context import RunContext
from orchestrator.model import Step


def reach_probe(ctx: RunContext, step: Step, expect_reach: bool = False) -> dict[str, Any]:
    """From a running host inside the segment: what beyond the gateway answers, and does the
    segment still reach itself."""
    segment = step.target
    hosts = ctx.probes.running_hosts_in(segment, limit=2)  # a probe host and its neighbour
    if not hosts:
        return {"probe_host": None, "note": "no running host in the segment to probe from"}
    probe_host = hosts[0]
    targets = ctx.probes.cross_gateway_targets(segment)[:3]
    neighbour = str(hosts[1].address) if len(hosts) > 1 else None
    answers = ctx.probes.reach_map(probe_host.name, targets + ([neighbour] if neighbour else []),
                                   expect=expect_reach, expect_reach=[neighbour] if neighbour else [])
    crosses = [t for t in targets if answers[t]]
    out: dict[str, Any] = {"probe_host": probe_host.name, "targets": targets, "crosses": crosses,
                           "reaches_beyond": bool(crosses)}
    if neighbour is not None:
        out["same_segment_peer"] = hosts[1].name
        out["same_segment_broken"] = not answers[neighbour]
    return out


def link_probe(ctx: RunContext, step: Step, expect_reach: bool = False) -> dict[str, Any]:
    link = ctx.inventory.links[step.target]
    lab = ctx.inventory.lab
    if lab is None or link.name not in lab.peers:
        return {"probed": False, "note": "no lab peer: judged from the running config"}
    targets = _inside_targets(ctx)
    answers = ctx.probes.peer_reach_map(link.name, targets, expect=expect_reach)
    crosses = [t for t in targets if answers[t]]
    return {"probed": True, "from": f"peer of {link.name}", "targets": targets, "crosses": crosses,
            "reaches": bool(crosses)}


def _inside_targets(ctx: RunContext) -> list[str]:
    segs = sorted((s for s in ctx.inventory.segments.values()
                   if s.gateway_address is not None and s.name != ctx.inventory.management_segment),
                  key=lambda s: s.name)
    return [str(s.gateway_address) for s in segs[:2]]


def safe_probe(probe: Callable[[RunContext, Step], dict[str, Any]], ctx: RunContext, step: Step) -> dict[str, Any]:
    try:
        return probe(ctx, step)
    except OrchestratorError as exc:
        return {"probe_error": f"{exc.code}: {exc}"}

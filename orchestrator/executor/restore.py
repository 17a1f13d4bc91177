"""Restore: start each host, settle its boot, check its integrity against the baseline and its
health, pass the tier's gate, then reconnect its segment (and, last, the external links). A host
that fails a check is quarantined (powered off again where it can be) and never reconnected."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any, assert_never

from orchestrator.errors import DriverError, OrchestratorError
from orchestrator.executor import outside_ssh
from orchestrator.executor.context import ApprovalPolicy, Outcome, RunContext, StepFailed
from orchestrator.executor.power_on import power_on_verified, power_said
from orchestrator.executor.reach import link_probe, reach_probe
from orchestrator.model import Action, Host, Step, Verification
from orchestrator.readiness import integrity_unavailable
from orchestrator.verify import wait_until

# ---- start --------------------------------------------------------------------------------------


def start_host(ctx: RunContext, step: Step) -> Outcome:
    host = ctx.inventory.hosts[step.target]
    if host.never_ssh:  # issue 14: windows and ESXi hosts, never SSH; see executor/outside_ssh.py
        return outside_ssh.start_host(ctx, step, host)
    if ctx.probes.ssh_answers(host):
        v = ctx.verification(step, ctx.probes.host_up(host))
        if v.passed:
            return Outcome(already=True, evidence={**v.evidence, "system_state": boot_settled(ctx, host)})
    power = ctx.drivers.power_for(host)
    if power is None:
        raise StepFailed(f"{host.name} is off and has no power driver: power it on by hand, then resume",
                         {"power": host.power or "none"})
    evidence = power_on_verified(
        ctx, step, host, power, lambda: ctx.probes.wait_host_up(host, ctx.options.start_timeout_s),
        f"did not answer SSH within {ctx.options.start_timeout_s:.0f} s")
    return Outcome(changed=True, evidence={**evidence, "system_state": boot_settled(ctx, host)})


def boot_settled(ctx: RunContext, host: Host) -> str:
    """Wait (bounded) until the host's boot has finished, so that its integrity and health checks
    see the settled system, not one still starting units. Returns systemd's word for the state
    (running, degraded, ...); the checks that follow judge the host, not this."""
    limit = int(ctx.options.boot_settle_timeout_s)
    try:
        res = ctx.drivers.ssh.run(host.name, f"timeout {limit} systemctl is-system-running --wait",
                                  timeout_s=limit + 10)
    except OrchestratorError as exc:
        return f"unknown ({exc.code})"
    state = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    if res.exit_status == 124:  # timeout(1): the boot is still going on
        return f"not settled after {limit} s" + (f" ({state})" if state else "")
    return state or f"exit {res.exit_status}"


# ---- checks and quarantine ----------------------------------------------------------------------


def quarantine(ctx: RunContext, host: Host, why: str) -> dict[str, Any]:
    """Keep a suspect host out: power it off again (it is never reconnected)."""
    ctx.quarantined[host.name] = why
    power = ctx.drivers.power_for(host)
    if power is None:
        ctx.rec.emit("quarantine", host=host.name, reason=why, powered_off=False)
        return {"quarantine": "no power driver: its segment stays isolated until an operator attests the "
                              f"host's physical disconnection (orchestrator attest {ctx.run_id} {host.name} "
                              "--by NAME --reason TEXT)"}
    try:
        power.power_off(host.name, graceful=False)
    except DriverError as exc:
        said = power_said(power, host)
        ctx.rec.emit("quarantine", host=host.name, reason=why, powered_off=False, error=str(exc),
                     **({"evidence": said} if said else {}))
        return {"quarantine": f"power off failed: {exc}"}
    off = ctx.probes.wait_host_off(host, 15.0)
    ctx.rec.emit("quarantine", host=host.name, reason=why, powered_off=off.passed, evidence=dict(off.evidence))
    return {"quarantine": "powered off" if off.passed else "power off not confirmed"}


def check_integrity(ctx: RunContext, step: Step) -> Outcome:
    from orchestrator.integrity import check_host

    host = ctx.inventory.hosts[step.target]
    unavailable = integrity_unavailable(host, ctx.settings)
    if unavailable is not None and host.name in ctx.vouched:  # only a MISSING check is ever attested
        return _vouched(ctx, step, host, unavailable)
    if host.never_ssh:  # issue 14: the collector is Linux-only; see executor/outside_ssh.py
        return outside_ssh.check_integrity(ctx, step, host)
    if unavailable is not None:  # nothing to compare with: the host stays up, its segment isolated
        raise StepFailed(
            f"{unavailable}: the tool cannot prove it clean; its segment stays isolated until a person vouches "
            f"for it (orchestrator attest {ctx.run_id} {host.name} --claim clean --by NAME --reason TEXT "
            f"[--evidence FILE]), then resume {ctx.run_id}", {"integrity": "not checked", "needs": "attestation",
                                                             "unavailable": unavailable})
    result = check_host(ctx.drivers.ssh, ctx.inventory, host.name, ctx.settings)
    diffs = [{"category": d.category, "path": d.path, "detail": d.detail} for d in result.differences]
    for d in diffs:
        ctx.rec.emit("integrity-finding", host=host.name, **d)
    evidence: dict[str, Any] = {"differences": diffs, "baseline_taken": result.baseline_taken,
                                "baseline_signature": _baseline_signature(ctx, host)}
    if result.collections > 1:
        evidence["collections"] = result.collections  # a part could not be read at first
    ctx.verification(step, Verification(result.clean, "integrity", evidence))
    if not result.clean:
        paths = ", ".join(f"{d['category']} {d['path']}" for d in diffs[:20])
        evidence.update(quarantine(ctx, host, f"integrity: {paths}"))
        raise StepFailed(f"{len(diffs)} difference(s) from the baseline: {paths}", evidence)
    return Outcome(evidence=evidence)


def _vouched(ctx: RunContext, step: Step, host: Host, unavailable: str) -> Outcome:
    """The integrity step of a host the tool cannot check, passed on a person's vouched-clean
    attestation: ``attested`` (never ``verified``), with who, when, why and the evidence's hash."""
    a = ctx.vouched[host.name]
    attestation = {k: a.get(k) for k in ("by", "reason", "operator", "ts", "seq", "evidence") if k in a}
    evidence: dict[str, Any] = {"integrity": "not checked", "unavailable": unavailable, "attestation": attestation}
    return Outcome(evidence=evidence, attested=f"attested by {a.get('by', '?')}, not verified ({unavailable}): "
                                                f"{a.get('reason', '')}")


def _baseline_signature(ctx: RunContext, host: Host) -> dict[str, Any]:
    """The signature of the baseline just compared (checked again by ``load_baseline``)."""
    from orchestrator.integrity import load_baseline

    sig = load_baseline(host.name, ctx.settings).get("signature")
    return {"alg": sig.get("alg"), "key_id": sig.get("key_id"), "checked": True} if isinstance(sig, Mapping) else {}


def _baseline_ports(ctx: RunContext, host: Host, evidence: dict[str, Any]) -> set[int]:
    """The TCP ports the host's baseline listened on; none for a vouched host that has no baseline."""
    from orchestrator.integrity import listening_tcp_ports, load_baseline

    if host.name in ctx.vouched and integrity_unavailable(host, ctx.settings) is not None:
        evidence["ports_from"] = "no baseline (integrity attested, not verified): no ports to expect"
        return set()
    return set(listening_tcp_ports(load_baseline(host.name, ctx.settings)))


def check_health(ctx: RunContext, step: Step) -> Outcome:
    """The host's services are active, its baseline's TCP listening ports are back, and its health
    suites (pytest-testinfra files the site owns) pass."""
    host = ctx.inventory.hosts[step.target]
    if host.never_ssh:  # issue 14: no services over SSH; see executor/outside_ssh.py
        return outside_ssh.check_health(ctx, step, host)
    problems: list[str] = []
    evidence: dict[str, Any] = {}
    want = _baseline_ports(ctx, host, evidence)
    states: dict[str, str] = {}
    have: set[int] = set()

    def healthy() -> bool:
        if host.services:
            # Every service name quoted, after `--`: a name is never read as shell or as an option.
            units = " ".join(shlex.quote(s) for s in host.services)
            res = ctx.drivers.ssh.run(host.name, f"systemctl is-active -- {units}", timeout_s=15)
            states.clear()
            states.update(zip(host.services, res.stdout.split(), strict=False))
            for service in host.services:  # a service systemd gave no answer for is never "active"
                states.setdefault(service, "unknown (no answer)")
        res = ctx.drivers.ssh.run(host.name, "ss -ltnH", timeout_s=10)
        have.clear()
        have.update(tcp_ports(res.stdout))
        return all(st == "active" for st in states.values()) and want <= have

    wait_until(healthy, 20.0, 1.0)  # services may still be starting right after boot
    evidence["services"] = dict(states)
    evidence["ports_expected"] = sorted(want)
    evidence["ports_missing"] = sorted(want - have)
    problems += [f"service {s} is {st}" for s, st in states.items() if st != "active"]
    problems += [f"port {p} is not listening" for p in sorted(want - have)]
    problems += _health_suites(ctx, host, evidence)
    v = ctx.verification(step, Verification(not problems, "health", evidence))
    if not v.passed:
        evidence.update(quarantine(ctx, host, "health: " + "; ".join(problems)))
        raise StepFailed("; ".join(problems), evidence)
    return Outcome(evidence=evidence)


def _health_suites(ctx: RunContext, host: Host, evidence: dict[str, Any]) -> list[str]:
    """Run the host's health suites (none: nothing to do); each test's outcome goes to
    ``evidence["suites"]``; returns what failed, one problem per failed or errored test."""
    from orchestrator.health.suites import run_host_suites, suite_problems, suites_apply

    if not suites_apply(host):
        return []
    result = run_host_suites(ctx.inventory, host.name)
    evidence["suites"] = [t.as_dict() for t in result.tests]
    evidence["suites_duration_s"] = result.duration_s
    return suite_problems(result)


def tcp_ports(ss_output: str) -> set[int]:
    """``ss -ltnH`` lines -> the listening TCP ports."""
    out = set()
    for line in ss_output.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            port = parts[3].rsplit(":", 1)[-1]
            if port.isdigit():
                out.add(int(port))
    return out


# ---- gates --------------------------------------------------------------------------------------


def gate(ctx: RunContext, step: Step) -> Outcome:
    if step.id in ctx.approved_gates:
        return Outcome(already=True, evidence={"approved": "earlier in this run"})
    summary = gate_summary(ctx, step)
    policy = ctx.options.approve
    approver = ctx.options.operator
    if policy is ApprovalPolicy.ALL:
        how = "--approve all"
        approved = True
    elif policy is ApprovalPolicy.EACH:
        how = "--approve each (asked at the gate)"
        approved = bool(ctx.options.approver and ctx.options.approver(step, summary))
    elif policy is ApprovalPolicy.NONE:
        how = "no approval given"
        approved = False
    else:
        assert_never(policy)
    if not approved:
        ctx.rec.emit("gate-refused", gate=step.id, approver=approver, how=how, summary=summary)
        raise StepFailed(f"gate {step.target} not approved ({how})", {"summary": summary})
    ctx.approved_gates.add(step.id)
    ctx.rec.emit("gate-approved", gate=step.id, approver=approver, how=how, summary=summary)
    return Outcome(evidence={"approver": approver, "how": how, "summary": summary})


def gate_summary(ctx: RunContext, step: Step) -> str:
    passed = sorted(s.target for s in ctx.plan.steps() if s.action is Action.CHECK_HEALTH
                    and s.tier == step.tier and ctx.results.get(s.id, None) is not None
                    and ctx.results[s.id].ok)
    quarantined = sorted(h for h in ctx.quarantined if ctx.inventory.hosts[h].tier == step.tier)
    if step.target == "links":
        links = [s.target for s in ctx.plan.steps() if s.action is Action.RESTORE_LINK]
        held = ", ".join(ctx.quarantined) or "none"
        return f"restore external links: {', '.join(links)}; quarantined hosts: {held}"
    return (f"{step.target}: passed {', '.join(passed) or 'none'}; "
            f"quarantined {', '.join(quarantined) or 'none'}")


# ---- reconnect ----------------------------------------------------------------------------------


def reconnect(ctx: RunContext, step: Step) -> Outcome:
    """A reconnect-segment (once its hosts are cleared) or a restore-link, then proven."""
    assert step.device is not None
    readiness = check_segment_ready(ctx, step.target) if step.action is Action.RECONNECT_SEGMENT else {}
    undo_of = Action.CUT_LINK if step.action is Action.RESTORE_LINK else Action.ISOLATE_SEGMENT
    changed, evidence = _undo_device_action(ctx, step, undo_of)
    evidence.update(readiness)
    gone = not ctx.drivers.net.is_in_force(step.device, undo_of, step.target)
    evidence["rule_removed"] = gone
    problems = [] if gone else [f"the {undo_of} rule is still in {step.device}'s running config"]
    if step.action is Action.RECONNECT_SEGMENT:
        probe: dict[str, Any] = {}
        ok = wait_until(lambda: bool((probe.update(reach_probe(ctx, step, expect_reach=True)) or True)
                                     and probe.get("reaches_beyond")), 8.0, 0.5)
        evidence["after"] = dict(probe)
        if not ok and probe.get("probe_host"):
            problems.append("from inside the segment nothing beyond the gateway answers yet")
    else:
        after = link_probe(ctx, step, expect_reach=True)
        evidence["after"] = after
        if after.get("probed") and not after.get("reaches"):
            problems.append("the peer still cannot reach inside")
    v = ctx.verification(step, Verification(not problems, step.action.value, evidence))
    if not v.passed:
        raise StepFailed("; ".join(problems), evidence)
    return Outcome(changed=changed, already=not changed, evidence=evidence)


def _undo_device_action(ctx: RunContext, step: Step, undo_of: Action) -> tuple[bool, dict[str, Any]]:
    """Apply the step's restore-link or reconnect-segment unless ``undo_of`` is not in force any
    more; returns (changed, evidence). Cuts and isolations go per device: containment."""
    assert step.device is not None
    net = ctx.drivers.net
    if not net.is_in_force(step.device, undo_of, step.target):
        return False, {"already_in_force": True}
    outcome = net.apply(step.device, step.action, step.target)
    ctx.rec.emit("command-sent", step_id=step.id, driver="netmiko", target=step.device,
                 commands=list(outcome.commands))
    return True, {"commands": list(outcome.commands)}


def check_segment_ready(ctx: RunContext, segment: str) -> dict[str, Any]:
    """A segment comes back only when each of its hosts in this restore passed its checks, or is
    cleared: its power driver proves it off, or an operator attested that it is physically
    disconnected (``orchestrator attest``, journaled with who, when and why). "SSH closed and no
    ping" is never enough: a compromised host can fake it by playing dead. Returns the evidence
    (each cleared host and how) and journals one ``clearance`` record per cleared host."""
    planned = {s.id for s in ctx.plan.steps()}
    blocking: dict[str, str] = {}
    cleared: dict[str, dict[str, Any]] = {}
    for host in ctx.inventory.hosts_in_segment(segment):
        health = ctx.results.get(f"check-health:{host.name}")
        if f"start-host:{host.name}" not in planned or (health is not None and health.ok):
            continue
        clearance, why = _clearance(ctx, host)
        if clearance is not None:
            cleared[host.name] = clearance
        else:
            blocking[host.name] = why
    if blocking:
        names = ", ".join(blocking)
        unchecked = [h for h in blocking if _needs_vouching(ctx, h)]
        vouch = (f"; {', '.join(unchecked)}: the tool cannot check its integrity, a person who can vouch for it "
                 f"attests it clean (orchestrator attest {ctx.run_id} HOST --claim clean --by NAME --reason TEXT)"
                 if unchecked else "")
        raise StepFailed(
            f"hosts of {segment} neither passed their checks nor are safely off: {names}; the segment stays "
            f"isolated until each is powered off (proven by its power driver) or an operator attests its "
            f"physical disconnection (orchestrator attest {ctx.run_id} HOST --by NAME --reason TEXT){vouch}, "
            f"then resume {ctx.run_id}",
            {"blocking_hosts": list(blocking), "why": blocking,
             "cleared": {h: c["text"] for h, c in cleared.items()}})
    for name, how in cleared.items():
        ctx.rec.emit("clearance", step_id=f"reconnect-segment:{segment}", segment=segment, host=name,
                     quarantined=name in ctx.quarantined, **how)
    return {"cleared": {h: c["text"] for h, c in cleared.items()}} if cleared else {}


def _needs_vouching(ctx: RunContext, host: str) -> bool:
    """The host's integrity step failed only because the tool cannot check it (no baseline, windows)."""
    integrity = ctx.results.get(f"check-integrity:{host}")
    return integrity is not None and not integrity.ok and integrity.evidence.get("needs") == "attestation"


def _clearance(ctx: RunContext, host: Host) -> tuple[dict[str, Any] | None, str]:
    """How a host that did not pass its checks is cleared (its power driver proves it off, or an
    attestation), or None and why it blocks its segment."""
    off: Verification | None = None
    if ctx.drivers.power_for(host) is not None:
        off = ctx.probes.host_off(host)
        if off.passed:
            return {"how": "power-driver", "text": "power driver: off", "evidence": dict(off.evidence)}, ""
    attestation = ctx.attestations.get(host.name)
    if attestation is not None:
        return {
            "how": "attestation",
            "text": f"attested by {attestation.get('by', '?')}: physically disconnected, not verified",
            "attestation": {k: attestation.get(k) for k in
                            ("by", "reason", "operator", "ts", "seq", "evidence") if k in attestation}}, ""
    if off is None:
        return None, "no power driver can prove it off (SSH closed and no ping is what a compromised host can fake)"
    return None, f"its power driver does not prove it off ({_compact_evidence(off.evidence)})"


def _compact_evidence(evidence: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in evidence.items())

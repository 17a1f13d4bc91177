"""Restore of a host the product never logs into (``Host.never_ssh``, issue 14): an ``os: windows``
host, or an ESXi host powered through vCenter. Nothing here sends an SSH or Ansible command.

* start, windows: powered on through its power controller; up = the controller says on and one of RDP
  (3389), WinRM (5985/5986) or SMB (445) answers on its address(es) (``verify.Probes.windows_up``);
* start, ESXi: powered on by its BMC (``bmc:``), or, without one, by hand (the plan says so; nothing is
  sent); the step waits for vCenter to see the host connected and powered on, then takes it out of
  maintenance mode (``ExitMaintenanceMode_Task``); up = vCenter says connected, poweredOn, not in
  maintenance (and its BMC on);
* integrity: the collector is Linux-only (it runs over SSH), so nothing is collected: the step needs an
  operator's attestation (the ``vouched-clean`` claim, accepted at the integrity step by
  ``executor/restore.py``); without one the step fails and says so;
* health: up as above, again (services are not asked: that would need a login).
"""

from __future__ import annotations

from typing import Any

from orchestrator.drivers.base import PowerDriver
from orchestrator.drivers.controller_power import HypervisorOnVCenter
from orchestrator.errors import DriverError
from orchestrator.executor.context import Outcome, RunContext, StepFailed
from orchestrator.executor.power_on import power_on_verified, power_said
from orchestrator.model import Host, HostOs, Step, Verification
from orchestrator.planner import INTEGRITY_TEXT
from orchestrator.verify import wait_until


def _power(ctx: RunContext, host: Host) -> PowerDriver:
    power = ctx.drivers.power_for(host)
    if power is None:  # validation refuses such a host without a controller; a hand-made plan may not
        raise StepFailed(f"{host.name} has no power controller and is never reached over SSH: power it on by "
                         "hand, then resume", {"power": host.power or "none"})
    return power


def esxi_up(ctx: RunContext, host: Host, view: HypervisorOnVCenter) -> Verification:
    """Up: vCenter says the ESXi host is connected, powered on and out of maintenance mode (and its BMC on)."""
    try:
        seen = view.vcenter_state(host.name)
        bmc = view.bmc.state(host.name) if view.bmc is not None else None
    except DriverError as exc:
        return Verification(False, "host-up", {"vcenter_host": f"unknown ({exc.code}: {exc.message})"})
    ok = (seen.get("connection_state") == "connected" and seen.get("power_state") == "poweredOn"
          and seen.get("maintenance") is False and bmc in (None, "running"))
    return Verification(ok, "host-up", {"vcenter_host": seen, **({"bmc": bmc} if bmc is not None else {})})


def _connected(view: HypervisorOnVCenter, host: Host) -> bool:
    try:
        seen = view.vcenter_state(host.name)
    except DriverError:
        return False
    return seen.get("connection_state") == "connected" and seen.get("power_state") == "poweredOn"


def _start_esxi(ctx: RunContext, step: Step, host: Host, view: HypervisorOnVCenter) -> Outcome:
    before = ctx.verification(step, esxi_up(ctx, host, view))
    if before.passed:
        return Outcome(already=True, evidence=dict(before.evidence))
    try:
        if view.bmc is not None and view.bmc.state(host.name) != "running":
            ctx.rec.emit("command-sent", step_id=step.id, driver=view.bmc.label, target=host.name,
                         commands=["power on"])
        view.power_on(host.name)  # without a BMC nothing is sent: a person powers it on
    except DriverError as exc:
        raise StepFailed(f"power on through {view.label} failed: {exc}", power_said(view, host)) from None
    if not wait_until(lambda: _connected(view, host), ctx.options.start_timeout_s, view.poll_interval_s):
        how = "its BMC was told to power it on" if view.bmc is not None else \
            "it has no BMC in the inventory: power it on at the server or its BMC console"
        raise StepFailed(f"vCenter does not see {host.name} connected and powered on after "
                         f"{ctx.options.start_timeout_s:.0f} s ({how}), then resume", power_said(view, host))
    ctx.rec.emit("command-sent", step_id=step.id, driver=view.label, target=host.name,
                 commands=["ExitMaintenanceMode_Task"])
    try:
        view.exit_maintenance(host.name)
    except DriverError as exc:
        raise StepFailed(f"leaving maintenance mode through {view.label} failed: {exc}",
                         power_said(view, host)) from None
    v = ctx.verification(step, esxi_up(ctx, host, view))
    if not v.passed:
        raise StepFailed(f"vCenter does not say {host.name} is connected, on and out of maintenance mode",
                         {**v.evidence, **power_said(view, host)})
    return Outcome(changed=True, evidence={**v.evidence, **power_said(view, host)})


def start_host(ctx: RunContext, step: Step, host: Host) -> Outcome:
    """Already up, or powered on (through the controller, or by hand for an ESXi host without a BMC)
    and proven up by the controller and the host's own ports, never by a login."""
    power = _power(ctx, host)
    if isinstance(power, HypervisorOnVCenter):
        return _start_esxi(ctx, step, host, power)
    before = ctx.verification(step, ctx.probes.windows_up(host))
    if before.passed:
        return Outcome(already=True, evidence=dict(before.evidence))
    evidence = power_on_verified(
        ctx, step, host, power, lambda: ctx.probes.wait_windows_up(host, ctx.options.start_timeout_s),
        f"its controller did not say on with RDP/WinRM/SMB answering within {ctx.options.start_timeout_s:.0f} s")
    return Outcome(changed=True, evidence=evidence)


def check_integrity(ctx: RunContext, step: Step, host: Host) -> Outcome:
    """No collector runs on a host outside SSH: the step needs an operator's vouched-clean attestation."""
    what = "runs windows" if host.os is HostOs.WINDOWS else "is an ESXi host"
    raise StepFailed(
        f"{INTEGRITY_TEXT}: {host.name} {what}, which the baseline collector cannot read; an operator who has "
        f"checked it vouches for it (orchestrator attest {ctx.run_id} {host.name} --claim clean --by NAME "
        f"--reason TEXT), then resume {ctx.run_id}",
        {"integrity": "not collected (never reached over SSH)", "needs": "attestation"})


def check_health(ctx: RunContext, step: Step, host: Host) -> Outcome:
    """Up as its controller (and its own ports, for windows) say; services are not asked (no login)."""
    power = _power(ctx, host)
    v = esxi_up(ctx, host, power) if isinstance(power, HypervisorOnVCenter) else ctx.probes.windows_up(host)
    ctx.verification(step, v)
    evidence: dict[str, Any] = {**v.evidence, "services": "not checked (never reached over SSH)"}
    if not v.passed:
        raise StepFailed("its controller does not say it is up" + (
            ", or none of RDP/WinRM/SMB answers" if host.os is HostOs.WINDOWS else ""), evidence)
    return Outcome(evidence=evidence)

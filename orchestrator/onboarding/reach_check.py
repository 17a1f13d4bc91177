"""The read-only preflight (``orchestrator inventory check-reach``): would the morning's run reach
everything it must change or stop?

- every device in scope answers SSH with its pinned host key and shows its platform's prompt
  (netmiko, as a run logs in: ``drivers/netmiko.py``);
- every link's device has the link's interface, every segment's gateway the segment's interface;
- every linux host's management address answers SSH with its pinned key (paramiko, RejectPolicy:
  ``drivers/ssh.py``) and runs ``true``; a windows host's power controller answers for it.

Nothing is changed: devices get one read-only command (their interface list), hosts ``true``.
Checks run in parallel (bounded), each with a short timeout.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from orchestrator.drivers.netmiko import NetmikoDriver
from orchestrator.drivers.ssh import SshDriver
from orchestrator.errors import OrchestratorError
from orchestrator.model import HostOs, Inventory, Scope
from orchestrator.planner import resolve_scope
from orchestrator.power_status import read_power_status


@dataclass(frozen=True)
class Check:
    kind: str  # device, link, segment, host
    target: str
    check: str  # what was checked, in words
    ok: bool
    detail: str  # the evidence, or why it would fail

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "target": self.target, "check": self.check, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class ReachReport:
    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def as_dict(self) -> dict[str, object]:
        return {"ok": not self.failed, "checked": len(self.checks), "failed": len(self.failed),
                "checks": [c.as_dict() for c in self.checks]}


def _why(exc: BaseException) -> str:
    if isinstance(exc, OrchestratorError):
        return f"{exc.code}: {exc.message}" + (f" (fix: {exc.hint})" if exc.hint else "")
    return f"{type(exc).__name__}: {exc}"


def check_reach(inventory: Inventory, scope: Scope, *, timeout_s: float = 5.0, parallel: int = 16) -> ReachReport:
    """Every check, devices first, then links and segments, then hosts (see the module docstring)."""
    sel = resolve_scope(inventory, scope)
    wanted: dict[str, list[tuple[str, str, str]]] = {d: [] for d in sel.devices}  # device -> (kind, name, iface)
    for name in sel.links:
        link = inventory.links[name]
        if link.interface:
            wanted.setdefault(link.device, []).append(("link", name, link.interface))
    for name in sel.segments:
        seg = inventory.segments[name]
        if seg.gateway and seg.interface:
            wanted.setdefault(seg.gateway, []).append(("segment", name, seg.interface))
    devices = NetmikoDriver(inventory, timeout_s=timeout_s)
    ssh = SshDriver(inventory, connect_timeout_s=timeout_s)
    linux = [h for h in sel.hosts if inventory.hosts[h].os != HostOs.WINDOWS]
    windows = tuple(h for h in sel.hosts if inventory.hosts[h].os == HostOs.WINDOWS)
    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            device_checks = pool.map(lambda d: _device(devices, d, wanted[d]), sorted(wanted))
            host_checks = pool.map(lambda h: _host(ssh, inventory, h, timeout_s), linux)
            checks = [c for group in device_checks for c in group] + list(host_checks)
    finally:
        devices.close()
        ssh.close()
    checks += _windows(inventory, windows)
    order = {"device": 0, "link": 1, "segment": 2, "host": 3}
    return ReachReport(tuple(sorted(checks, key=lambda c: (order[c.kind], c.target))))


def _device(devices: NetmikoDriver, device: str, wanted: list[tuple[str, str, str]]) -> list[Check]:
    interfaces = sorted({iface for _, _, iface in wanted})
    try:
        prompt, missing = devices.preflight(device, interfaces)
    except Exception as exc:  # noqa: BLE001 - every failure is a row of the table, never a crash
        why = _why(exc)
        return [Check("device", device, "SSH with its pinned key and platform prompt", False, why)] + [
            Check(kind, name, f"{device} has interface {iface}", False, f"not checked: {device} did not answer")
            for kind, name, iface in wanted]
    out = [Check("device", device, "SSH with its pinned key and platform prompt", True, f"prompt {prompt}")]
    for kind, name, iface in wanted:
        ok = iface not in missing
        out.append(Check(kind, name, f"{device} has interface {iface}", ok,
                         "present" if ok else f"{device} has no interface {iface}: fix the inventory's interface"))
    return out


def _host(ssh: SshDriver, inventory: Inventory, name: str, timeout_s: float) -> Check:
    address = inventory.hosts[name].management_address
    what = f"SSH to {address} with its pinned key"
    try:
        result = ssh.run(name, "true", timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001 - a row of the table
        return Check("host", name, what, False, _why(exc))
    if result.exit_status != 0:
        return Check("host", name, what, False, f"logged in, but `true` exited {result.exit_status}")
    return Check("host", name, what, True, "logged in")


def _windows(inventory: Inventory, hosts: tuple[str, ...]) -> list[Check]:
    """A windows host never gets SSH: its power controller must answer for it."""
    if not hosts:
        return []
    report = read_power_status(inventory, Scope(hosts=hosts))
    read = {h.name: h for h in report.hosts}
    out: list[Check] = []
    for name in hosts:
        h = read.get(name)
        if h is None:
            out.append(Check("host", name, "its power controller answers", False,
                             "windows host without a power controller (power: {controller: ...})"))
        else:
            out.append(Check("host", name, f"power controller {h.controller} answers", h.state != "unknown",
                             h.error or f"{h.state} ({h.evidence})"))
    return out

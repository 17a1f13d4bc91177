"""``orchestrator power status``: each in-scope host's power state as its own controller reports it.

Read-only: a session per controller (``power_controllers.open_driver``), one state query per host, the
session closed again; nothing is powered on or off. A controller that cannot be reached, or refuses
the login, is reported as such for each of its hosts (state "unknown", never "off"), and is asked
nothing more (one refused login, not one per host: BMCs lock accounts out). Where an SSH runner is
given, each host's own probe (``verify.Probes.answers``: its SSH port on the management address; RDP,
WinRM and SMB for an ``os: windows`` host)
is compared with the controller: a host whose controller says off while SSH answers, or on while SSH is
silent, is flagged as a mismatch (the latter may be a host still booting, or one without sshd).

Hosts with a short ``power:`` form (lab, vagrant, manual) or none are not listed: only structured
``power: {controller: ...}`` hosts have a controller to ask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from orchestrator.drivers.base import PowerState, SshRunner
from orchestrator.drivers.controller_power import target_on_controller
from orchestrator.drivers.power_controllers import PowerController, controller_from_inventory, open_driver
from orchestrator.errors import AuthFailedError, DriverError, DriverTimeoutError, UnreachableError
from orchestrator.model import Host, Inventory, PowerControllerSpec, Scope
from orchestrator.planner import resolve_scope
from orchestrator.verify import Probes

Reading = Literal["on", "off", "unknown"]
ProbeResult = Literal["answers", "silent"]
_WHAT_IT_POWERS = {"vsphere": "VM", "redfish": "system", "ipmi": "BMC of"}
_MAX_PARALLEL = 16  # controllers (and probes) asked at once


class PowerReader(Protocol):
    """What power status needs of a driver: read a target's state, then end the session."""

    def state(self, target: str) -> PowerState: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class HostPower:
    """One host's state as its controller reports it, and what its own probe says."""

    name: str
    controller: str
    target: str  # what the controller calls it: a VM name or moref, a Systems id, the host (IPMI)
    state: Reading
    evidence: str  # where the state came from, in words
    error: str | None = None  # why the state is unknown
    probe: ProbeResult | None = None  # None: not probed

    @property
    def mismatch(self) -> bool:
        """The controller and the host's own probe disagree."""
        return (self.state == "off" and self.probe == "answers") or (self.state == "on" and self.probe == "silent")

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "controller": self.controller, "target": self.target, "state": self.state,
                "probe": self.probe, "mismatch": self.mismatch, "error": self.error, "evidence": self.evidence}


@dataclass(frozen=True)
class ControllerStatus:
    """Whether a controller answered: ``error`` (with ``hint``) when it could not be reached or refused
    the login, or the entry cannot work; ``logout_error`` when the session did not close cleanly."""

    name: str
    type: str
    endpoint: str
    hosts: tuple[str, ...]
    error: str | None = None
    hint: str | None = None
    logout_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "endpoint": self.endpoint, "hosts": list(self.hosts),
                "ok": self.ok, "error": self.error, "hint": self.hint, "logout_error": self.logout_error}


@dataclass(frozen=True)
class PowerStatus:
    hosts: tuple[HostPower, ...]
    controllers: tuple[ControllerStatus, ...]

    @property
    def failed_controllers(self) -> tuple[ControllerStatus, ...]:
        return tuple(c for c in self.controllers if not c.ok)

    @property
    def mismatches(self) -> tuple[HostPower, ...]:
        return tuple(h for h in self.hosts if h.mismatch)

    def as_dict(self) -> dict[str, object]:
        return {"hosts": [h.as_dict() for h in self.hosts], "controllers": [c.as_dict() for c in self.controllers]}


def where(controller: PowerController) -> str:
    """Where a controller is, as an operator would write it (IPMI is RMCP+ over UDP: no scheme)."""
    if controller.type == "ipmi":
        host = f"[{controller.address}]" if ":" in controller.address else controller.address
        return f"{host}:{controller.effective_port}"
    return controller.endpoint


def read_power_status(inventory: Inventory, scope: Scope, *, ssh: SshRunner | None = None,
                      open_controller: Callable[[PowerController], PowerReader] = open_driver) -> PowerStatus:
    """Every in-scope host with a structured ``power:``, read through its controller (one session per
    controller, controllers in parallel), and, with ``ssh``, probed on its own. Never raises for what a
    controller does; UsageError for a scope naming what the inventory does not have."""
    selected = [inventory.hosts[h] for h in resolve_scope(inventory, scope).hosts]
    by_controller: dict[str, list[Host]] = {}
    for host in selected:
        if host.power_target is not None:
            by_controller.setdefault(host.power_target.controller, []).append(host)
    names = sorted(by_controller)
    with ThreadPoolExecutor(max_workers=max(1, min(_MAX_PARALLEL, len(names)))) as pool:
        results = list(pool.map(lambda n: _read_controller(inventory, n, by_controller[n], open_controller), names))
    readings = sorted((h for _, hosts in results for h in hosts), key=lambda h: h.name)
    if ssh is not None:
        readings = _with_probes(inventory, readings, ssh)
    return PowerStatus(tuple(readings), tuple(c for c, _ in results))


def _read_controller(inventory: Inventory, name: str, hosts: Sequence[Host],
                     open_controller: Callable[[PowerController], PowerReader]) -> tuple[ControllerStatus,
                                                                                        list[HostPower]]:
    spec = inventory.power_controllers[name]
    host_names = tuple(h.name for h in hosts)
    try:
        controller = controller_from_inventory(spec, inventory.credentials[spec.credentials])
        driver = open_controller(controller)
    except DriverError as exc:
        status = ControllerStatus(name, spec.type.value, spec.address, host_names, exc.message, exc.hint)
        return status, [_unknown(h, spec, f"controller {name}: {exc.message}") for h in hosts]
    readings: list[HostPower] = []
    failure: DriverError | None = None
    try:
        for host in hosts:
            if failure is not None:
                readings.append(_unknown(host, spec, f"controller {name} not asked: {failure.message}"))
                continue
            try:
                readings.append(_read_host(driver, host, spec, where(controller)))
            except (UnreachableError, AuthFailedError, DriverTimeoutError) as exc:
                failure = exc  # the controller itself failed: ask it nothing more
                readings.append(_unknown(host, spec, f"controller {name}: {exc.message}"))
            except DriverError as exc:
                readings.append(_unknown(host, spec, exc.message))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # an answer not of the protocol
                readings.append(_unknown(host, spec, f"the controller's answer could not be read "
                                                     f"({type(exc).__name__})"))
    finally:
        logout_error = _close(driver)
    status = ControllerStatus(name, spec.type.value, where(controller), host_names,
                              failure.message if failure else None, failure.hint if failure else None, logout_error)
    return status, readings


def _read_host(driver: PowerReader, host: Host, spec: PowerControllerSpec, endpoint: str) -> HostPower:
    target = target_on_controller(host, spec)
    if host.power_target is not None and host.power_target.host is not None and hasattr(driver, "host_state"):
        return _read_esxi(driver, host, spec, endpoint, target)
    state = driver.state(target)
    reading: Reading = "off" if state == "stopped" else "on"
    what = f"{_WHAT_IT_POWERS[spec.type.value]} {target!r}" if target else "its one system"
    return HostPower(host.name, spec.name, target, reading,
                     f"{spec.type.value} {what} at {endpoint}: {'powered off' if reading == 'off' else 'powered on'}")


def _read_esxi(driver: Any, host: Host, spec: PowerControllerSpec, endpoint: str, target: str) -> HostPower:
    """An ESXi host as vCenter sees it (``power: {host: ...}``): off when powered off, standing by or
    unknown, or no longer heard (notResponding, disconnected); its maintenance mode is said."""
    seen = driver.host_state(target)
    off = seen.get("power_state") in ("poweredOff", "standBy", "unknown") or \
        seen.get("connection_state") in ("notResponding", "disconnected")
    detail = (f"vsphere ESXi host {target!r} at {endpoint}: {seen.get('power_state')}, "
              f"{seen.get('connection_state')}{', in maintenance mode' if seen.get('maintenance') else ''}")
    return HostPower(host.name, spec.name, target, "off" if off else "on", detail)


def _unknown(host: Host, spec: PowerControllerSpec, error: str) -> HostPower:
    return HostPower(host.name, spec.name, target_on_controller(host, spec), "unknown",
                     "no answer from the controller", error)


def _close(driver: PowerReader) -> str | None:
    """End the session; what went wrong doing so (it changes no reading)."""
    try:
        driver.close()
    except DriverError as exc:
        return exc.message
    return None


def _with_probes(inventory: Inventory, readings: list[HostPower], ssh: SshRunner) -> list[HostPower]:
    """Each reading with its host's own probe (SSH on the management address), in parallel."""
    probes = Probes(inventory, ssh, lambda _host: None)

    def probe(reading: HostPower) -> HostPower:
        answers = probes.answers(inventory.hosts[reading.name])  # windows: RDP/WinRM/SMB
        return replace(reading, probe="answers" if answers else "silent")

    with ThreadPoolExecutor(max_workers=max(1, min(_MAX_PARALLEL * 2, len(readings)))) as pool:
        return list(pool.map(probe, readings))

"""A run's power controllers: one driver (one session) per controller, and per host a view onto it.

``ControllerSessions`` opens the driver of a ``power_controllers:`` entry on its first use (through the
opener it is given: ``orchestrator.drivers.open_power_controller``), shares it between every host on
that controller for the rest of the run, and closes them all (``close()``: logged out) when the run
ends. ``HostOnController`` is one host's view onto its controller's driver: it speaks the
``PowerDriver`` interface in the host's inventory name, and asks the controller about the host's name
there (``target_on_controller``: a VM's name or moref, a Redfish Systems id, the host itself for an
IPMI BMC, which powers its one server).

What the views add to the drivers:

- A controller that refused the login (or whose password reference cannot be read) is not asked
  again in the run: each later call fails at once with that first refusal. Until a first call on a
  controller has succeeded, its calls go one at a time, so a run polling many hosts on a controller
  with a wrong password makes one failed login, not one per host (BMCs and vCenter lock accounts out).
- An answer the driver could not read (a library's ``ValueError``, ``KeyError``, ``TypeError`` or
  ``AttributeError``) is a ``DriverError`` naming the exception's type (its text is not kept: a
  library may echo what it was sent), so a verification reads it as "unknown", never as "off".
- ``evidence(host)`` names the controller and the target, with what the driver's last operation on
  that target saw (``last_operation``: task, fault, reset type, VMware Tools status), for the journal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from orchestrator.drivers.base import PowerControllerDriver, PowerState
from orchestrator.drivers.power_controllers import (
    CONTROLLER_POLL_INTERVAL_S,
    NotSupportedError,
    PowerController,
    controller_from_inventory,
)
from orchestrator.errors import AuthFailedError, DriverError
from orchestrator.model import Host, Inventory, PowerControllerSpec

T = TypeVar("T")
OpenController = Callable[[PowerController], PowerControllerDriver]
_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)  # an answer not of the protocol


def target_on_controller(host: Host, spec: PowerControllerSpec) -> str:
    """What the host's controller calls it: the VM's name or moref (vsphere), the Systems member id
    (redfish; empty: the service's only system), the host's own name (ipmi: the BMC is the server's)."""
    if host.power_target is None:
        raise DriverError("the host has no structured power: entry", target=host.name,
                          hint="give it power: {controller: NAME, ...}")
    if spec.type.value == "vsphere":
        return host.power_target.vm or host.power_target.host or ""
    if spec.type.value == "redfish":
        return host.power_target.system or ""
    return host.name


class ControllerSessions:
    """The run's controller drivers: one per ``power_controllers:`` entry, opened on first use."""

    def __init__(self, inventory: Inventory, open_controller: OpenController) -> None:
        self._inventory = inventory
        self._open_controller = open_controller
        self._lock = threading.Lock()
        self._drivers: dict[str, PowerControllerDriver] = {}
        self._first_call: dict[str, threading.Lock] = {}  # one call at a time until one succeeded
        self._answered: set[str] = set()  # controllers a call has succeeded on
        self._refused: dict[str, AuthFailedError] = {}  # controller -> its first refused login
        self._hypervisors: dict[str, HypervisorOnVCenter] = {}  # host -> its view (ESXi through vCenter)

    def view_for(self, host: Host) -> HostOnController | HypervisorOnVCenter:
        """The host's view onto its controller (nothing is opened until the view is used); a hypervisor
        powered through vCenter (``power: {host: ...}``) gets a ``HypervisorOnVCenter``."""
        target = host.power_target
        if target is None:
            raise DriverError("the host has no structured power: entry", target=host.name)
        spec = self._inventory.power_controllers[target.controller]
        if target.host is None:
            return HostOnController(host.name, spec, target_on_controller(host, spec), self)
        with self._lock:  # one view per hypervisor for the run: it remembers what vCenter said and did
            view = self._hypervisors.get(host.name)
            if view is None:
                bmc = None
                if target.bmc is not None:
                    bmc_spec = self._inventory.power_controllers[target.bmc]
                    bmc = HostOnController(host.name, bmc_spec, target.system or ""
                                           if bmc_spec.type.value == "redfish" else host.name, self)
                view = self._hypervisors[host.name] = HypervisorOnVCenter(host.name, spec, target.host, self, bmc)
            return view

    def opened(self, controller: str) -> PowerControllerDriver | None:
        """The controller's driver if the run has opened it."""
        with self._lock:
            return self._drivers.get(controller)

    def call(self, controller: str, host: str, operation: Callable[[PowerControllerDriver], T]) -> T:
        """``operation(driver)`` on the controller's driver, with the refusal and first-call rules above."""
        with self._lock:
            answered = controller in self._answered
            gate = self._first_call.setdefault(controller, threading.Lock())
        if answered:
            return self._guarded(controller, host, operation)
        with gate:
            return self._guarded(controller, host, operation)

    def _guarded(self, controller: str, host: str, operation: Callable[[PowerControllerDriver], T]) -> T:
        driver = self._driver(controller)
        try:
            result = operation(driver)
        except AuthFailedError as exc:
            with self._lock:
                self._refused.setdefault(controller, exc)
            raise
        except DriverError:
            raise
        except _UNREADABLE as exc:
            raise DriverError(f"power controller {controller}: its answer could not be read ({type(exc).__name__})",
                              target=host, hint="check the controller's firmware or API version") from None
        with self._lock:
            self._answered.add(controller)
        return result

    def _driver(self, controller: str) -> PowerControllerDriver:
        with self._lock:
            refused = self._refused.get(controller)
            if refused is not None:
                raise AuthFailedError(f"{refused.message}; not asked again in this run (no account lock-out)",
                                      target=controller, hint=refused.hint)
            driver = self._drivers.get(controller)
            if driver is None:
                spec = self._inventory.power_controllers[controller]
                description = controller_from_inventory(spec, self._inventory.credentials[spec.credentials])
                driver = self._drivers[controller] = self._open_controller(description)
            return driver

    def close(self) -> None:
        """End every session the run opened (logged out); a failing logout does not stop the others."""
        with self._lock:
            drivers = list(self._drivers.values())
            self._drivers.clear()
        for driver in drivers:
            try:
                driver.close()
            except Exception:  # noqa: BLE001 - closing must not hide the run's outcome
                continue


class HostOnController:
    """One host's power through its controller's driver (a ``PowerDriver`` for the executor and the
    probes). It answers for its own host only: another name is refused, never passed on."""
    poll_interval_s = CONTROLLER_POLL_INTERVAL_S

    def __init__(self, host: str, spec: PowerControllerSpec, target: str, sessions: ControllerSessions) -> None:
        self.host = host
        self.controller = spec.name
        self.controller_type = spec.type.value
        self.target = target
        self._sessions = sessions

    @property
    def label(self) -> str:
        """How the journal names this driver: ``power.vsphere:vc-antwerp``."""
        return f"power.{self.controller_type}:{self.controller}"

    def _mine(self, name: str) -> None:
        if name != self.host:
            raise DriverError(f"the power view of {self.host} was asked about {name}", target=name,
                              hint="a host's power goes through its own view (Drivers.power_for)")

    def state(self, name: str) -> PowerState:
        self._mine(name)
        return self._sessions.call(self.controller, self.host, lambda driver: driver.state(self.target))

    def power_on(self, name: str) -> None:
        self._mine(name)
        self._sessions.call(self.controller, self.host, lambda driver: driver.power_on(self.target))

    def power_off(self, name: str, graceful: bool) -> None:
        self._mine(name)
        self._sessions.call(self.controller, self.host, lambda driver: driver.power_off(self.target, graceful))

    def evidence(self, name: str) -> dict[str, object]:
        """The controller and target, and what the driver's last operation on the target saw."""
        self._mine(name)
        said: dict[str, object] = {"controller": self.controller, "type": self.controller_type,
                                   "target": self.target or "its only system"}
        driver = self._sessions.opened(self.controller)
        last = driver.evidence(self.target) if driver is not None else {}
        if last:
            said["last_operation"] = last
        return said


_VCENTER_OFF = {"poweredOff", "standBy", "unknown"}  # runtime.powerState of a host that is not running
_VCENTER_LOST = {"notResponding", "disconnected"}  # runtime.connectionState of a host vCenter cannot hear


class HypervisorOnVCenter:
    """An ESXi host powered through vCenter (``power: {controller: VC, host: ESXI[, bmc: BMC]}``).

    - off (graceful): maintenance mode, then a host shutdown (``VSpherePower.shutdown_host``, both tasks
      awaited); when vCenter cannot shut it down (a fault, or an endpoint without ``ShutdownHost_Task``,
      as govmomi's vcsim) but it is in maintenance mode, its BMC's graceful off, if it has one;
    - off (hard): its BMC's hard off (vCenter has none for a host): without a BMC, refused with what to do;
    - on: its BMC's power on; without one, nothing is sent (the restore step waits for vCenter to see the
      host connected, powered on by hand); ``exit_maintenance`` then gives it back to its VMs;
    - state: its BMC's when it has one (the BMC is what knows the server's power), otherwise vCenter's:
      stopped when vCenter says poweredOff, standBy or unknown, or no longer hears it (notResponding,
      disconnected); what vCenter said is kept in the evidence either way.
    """
    poll_interval_s = CONTROLLER_POLL_INTERVAL_S

    def __init__(self, host: str, spec: PowerControllerSpec, esx: str, sessions: ControllerSessions,
                 bmc: HostOnController | None) -> None:
        self.host = host
        self.controller = spec.name
        self.controller_type = spec.type.value
        self.target = esx
        self.bmc = bmc
        self._sessions = sessions
        self._seen: dict[str, object] = {}  # vCenter's last view of the host
        self._note: dict[str, object] = {}  # what this view did beyond its drivers

    @property
    def label(self) -> str:
        """``power.vsphere:vc-antwerp`` (``+power.ipmi:bmc-esx1`` with a BMC)."""
        mine = f"power.{self.controller_type}:{self.controller}"
        return f"{mine}+{self.bmc.label}" if self.bmc is not None else mine

    def _mine(self, name: str) -> None:
        if name != self.host:
            raise DriverError(f"the power view of {self.host} was asked about {name}", target=name,
                              hint="a host's power goes through its own view (Drivers.power_for)")

    def _vcenter(self, operation: Callable[[Any], T]) -> T:
        def run(driver: PowerControllerDriver) -> T:
            if not hasattr(driver, "host_state"):
                raise DriverError(f"{self.controller} cannot power ESXi hosts", target=self.host,
                                  hint="host: needs a vsphere controller")
            return operation(driver)

        return self._sessions.call(self.controller, self.host, run)

    def vcenter_state(self, name: str) -> dict[str, object]:
        """What vCenter says of the host: power_state, connection_state, maintenance."""
        self._mine(name)
        seen = self._vcenter(lambda driver: driver.host_state(self.target))
        self._seen = dict(seen)
        return dict(seen)

    def state(self, name: str) -> PowerState:
        seen = self.vcenter_state(name)
        if self.bmc is not None:
            return self.bmc.state(name)
        off = seen.get("power_state") in _VCENTER_OFF or seen.get("connection_state") in _VCENTER_LOST
        return "stopped" if off else "running"

    def power_off(self, name: str, graceful: bool) -> None:
        self._mine(name)
        if not graceful:
            if self.bmc is None:
                raise NotSupportedError("vCenter has no hard power off for a host: that is its BMC's job",
                                        target=self.host, hint="add bmc: NAME (its redfish or ipmi controller) to "
                                        "its power: entry, or power it off at the server")
            self.bmc.power_off(name, graceful=False)
            return
        try:
            self._vcenter(lambda driver: driver.shutdown_host(self.target))
        except DriverError as exc:
            in_maintenance = self.vcenter_state(name).get("maintenance") is True
            self._note = {"vcenter_shutdown": f"{exc.code}: {exc.message}"}
            if self.bmc is None or not in_maintenance:
                raise DriverError(f"vCenter did not shut {self.target} down: {exc.message}", target=self.host,
                                  hint="power it off through its BMC (add bmc: to its power: entry) or at the "
                                  "server" if in_maintenance else "it is not in maintenance mode: see vCenter "
                                  "(a VM still running on it?)") from None
            self._note["then"] = "its BMC's graceful off (the host is in maintenance mode)"
            self.bmc.power_off(name, graceful=True)

    def power_on(self, name: str) -> None:
        self._mine(name)
        if self.bmc is None:
            self._note = {"power_on": "nothing sent: no BMC; power it on at the server, vCenter is watched"}
            return
        if self.bmc.state(name) != "running":
            self.bmc.power_on(name)

    def exit_maintenance(self, name: str) -> None:
        self._mine(name)
        self._vcenter(lambda driver: driver.exit_maintenance(self.target))

    def evidence(self, name: str) -> dict[str, object]:
        """The controller and the ESXi host, what vCenter last said of it and did, and the BMC's evidence."""
        self._mine(name)
        said: dict[str, object] = {"controller": self.controller, "type": self.controller_type,
                                   "target": f"host {self.target}"}
        if self._seen:
            said["vcenter_host"] = dict(self._seen)
        driver = self._sessions.opened(self.controller)
        last = driver.evidence(self.target) if driver is not None else {}
        if last:
            said["last_operation"] = last
        if self._note:
            said.update(self._note)
        if self.bmc is not None:
            said["bmc"] = self.bmc.evidence(name)
        return said

"""VMware vSphere power through pyvmomi: one VM per target, one session per controller.

- ``state(vm)``: ``runtime.powerState`` (``poweredOff`` is stopped; on and suspended are not).
- ``power_off(vm, graceful=True)``: a guest OS shutdown through VMware Tools (``ShutdownGuest``)
  when Tools run in the guest; otherwise nothing is sent and ``GracefulRefusedError`` says why, so
  the caller escalates. It returns once the guest has been asked: whoever verifies waits for "stopped".
- ``power_off(vm, graceful=False)``: ``PowerOffVM_Task``, awaited; a fault is the error.
- ``power_on(vm)``: ``PowerOnVM_Task``, awaited, then (``tools_timeout_s``) waits for Tools; Tools
  not yet running is recorded in the evidence, not an error: the host's own probe decides.
- hypervisors: ``host_state``, ``shutdown_host`` (``EnterMaintenanceMode_Task`` then
  ``ShutdownHost_Task``), ``exit_maintenance``.

A target is a VM's inventory name or its moref (``vm-42``). Names are resolved once for the whole
inventory (a property collector over a container view) and again on a miss; a name held by two VMs
is refused (use the moref). Tasks are awaited with a deadline; their fault type and message are the
error and the evidence. The session is opened on first use, reused by every call (also from several
threads: pyvmomi's stub pools its connections), renewed once if vCenter expired it, and logged out by
``close()``. TLS is verified (system CAs, or the controller's ``ca_file``) unless ``verify_tls`` is off.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import re
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from orchestrator.drivers.base import PowerState
from orchestrator.drivers.power_controllers import (
    CONTROLLER_POLL_INTERVAL_S,
    GracefulRefusedError,
    NotSupportedError,
    PowerController,
    scrub,
)
from orchestrator.errors import AuthFailedError, DriverError, DriverTimeoutError, UnreachableError, exception_text

T = TypeVar("T")


def pyvmomi_modules() -> tuple[Any, Any]:
    """pyVmomi's ``vim`` and ``vmodl`` (dynamically typed: their types exist only at run time)."""
    module: Any = importlib.import_module("pyVmomi")
    return module.vim, module.vmodl


def _pyvim_connect() -> Any:
    return importlib.import_module("pyVim.connect")
MOREF = re.compile(r"^(vm|host)-\d+$")
POLL_S = 0.05


class VSpherePower:
    """Power for the VMs (and hypervisors) behind one vCenter or ESXi endpoint."""
    poll_interval_s = CONTROLLER_POLL_INTERVAL_S

    def __init__(self, controller: PowerController) -> None:
        if controller.type != "vsphere":
            raise DriverError(f"a {controller.type} controller given to the vSphere driver", target=controller.name)
        self.controller = controller
        self._lock = threading.Lock()
        self._si: Any = None
        self._secret = ""
        self._names: dict[str, dict[str, list[str]]] = {}  # kind -> name -> morefs
        self._names_lock = threading.Lock()
        self._evidence: dict[str, dict[str, object]] = {}

    # ---- session -------------------------------------------------------------------------------

    def _connect(self) -> Any:
        vim, _ = pyvmomi_modules()
        c = self.controller
        password = c.password()
        self._secret = password
        context: ssl.SSLContext | None = None
        if c.scheme == "https" and c.verify_tls:
            context = ssl.create_default_context(cafile=c.ca_file)
        elif c.scheme == "https":  # the controller says verify_tls: false
            context = ssl._create_unverified_context()
        try:
            return _pyvim_connect().SmartConnect(
                protocol=c.scheme, host=c.address, port=c.effective_port, user=c.username, pwd=password,
                sslContext=context, httpConnectionTimeout=c.connect_timeout_s)
        except vim.fault.InvalidLogin:
            raise AuthFailedError(f"{c.endpoint} refused the login of user {c.username!r}", target=c.name,
                                  hint="check the controller's username and the password its reference holds"
                                  ) from None
        except ssl.SSLCertVerificationError as exc:
            raise DriverError(f"{c.endpoint}: TLS certificate not trusted: {self._clean(exc.verify_message)}",
                              target=c.name, hint="set ca_file to the CA that signed the endpoint's certificate "
                              "(or check the address: the certificate may not be for it)") from None
        except ssl.SSLError as exc:
            raise DriverError(f"{c.endpoint}: TLS failed: {self._clean(str(exc))}", target=c.name,
                              hint="is it https? check the scheme and port") from None
        except (OSError, http.client.HTTPException) as exc:
            why = self._clean(exception_text(exc))
            raise UnreachableError(f"{c.endpoint} cannot be reached: {why}", target=c.name,
                                   hint="check the address, port and the route from here") from None
        except Exception as exc:  # noqa: BLE001 - a non-SDK endpoint fails in many types; each is "login failed"
            raise DriverError(f"{c.endpoint}: login failed: {self._describe(exc)}", target=c.name,
                              hint="check that the endpoint is a vCenter or ESXi SDK") from None

    def _service(self) -> Any:
        with self._lock:
            if self._si is None:
                self._si = self._connect()
            return self._si

    def _call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(service_instance)``; a session vCenter expired is renewed once."""
        vim, _ = pyvmomi_modules()
        si = self._service()
        try:
            return fn(si)
        except vim.fault.NotAuthenticated:
            with self._lock:
                if self._si is si:
                    self._si = None
            return fn(self._service())

    def close(self) -> None:
        """Log out (the session ends on the endpoint too) and close the pooled connections."""
        with self._lock:
            si, self._si = self._si, None
        if si is not None:
            # logging out of a session that is already gone is not an error
            with contextlib.suppress(Exception):
                _pyvim_connect().Disconnect(si)

    def __enter__(self) -> VSpherePower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- helpers -------------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        return scrub(text, self._secret)

    def _describe(self, exc: BaseException) -> str:
        """A fault as 'Type: message' (vSphere faults by their WSDL name), password removed."""
        name = getattr(exc, "_wsdlName", None) or type(exc).__name__
        msg = getattr(exc, "msg", None) or str(exc)
        return self._clean(f"{name}: {msg}" if msg else name)

    def _names_of(self, si: Any, kind: str) -> dict[str, list[str]]:
        vim, vmodl = pyvmomi_modules()
        vim_type = vim.VirtualMachine if kind == "vm" else vim.HostSystem
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim_type], True)
        try:
            spec = vmodl.query.PropertyCollector.FilterSpec(
                objectSet=[vmodl.query.PropertyCollector.ObjectSpec(
                    obj=view, skip=True, selectSet=[vmodl.query.PropertyCollector.TraversalSpec(
                        name="view", path="view", skip=False, type=vim.view.ContainerView)])],
                propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim_type, pathSet=["name"])])
            names: dict[str, list[str]] = {}
            result = content.propertyCollector.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector
                                                                    .RetrieveOptions())
            while result is not None:
                for obj in result.objects:
                    names.setdefault(obj.propSet[0].val, []).append(obj.obj._moId)
                if not result.token:
                    break
                result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
            return names
        finally:
            view.Destroy()

    def _find(self, si: Any, kind: str, target: str) -> Any:
        vim, _ = pyvmomi_modules()
        vim_type = vim.VirtualMachine if kind == "vm" else vim.HostSystem
        if MOREF.match(target) and target.startswith(kind + "-"):
            return vim_type(target, si._stub)
        for fresh in (False, True):
            with self._names_lock:  # one listing at a time, also when many threads start together
                if fresh or kind not in self._names:
                    self._names[kind] = self._names_of(si, kind)
                morefs = self._names[kind].get(target, [])
            if len(morefs) == 1:
                return vim_type(morefs[0], si._stub)
            if len(morefs) > 1:
                raise DriverError(f"{len(morefs)} {'VMs' if kind == 'vm' else 'hosts'} are named {target!r} "
                                  f"({', '.join(sorted(morefs))})", target=target,
                                  hint="name it by its moref in the host's power: entry")
        what = "VM" if kind == "vm" else "host"
        raise DriverError(f"{self.controller.name} has no {what} named {target!r}", target=target,
                          hint=f"check the {what} name (as vCenter shows it) or give its moref")

    def _props(self, si: Any, obj: Any, paths: list[str]) -> dict[str, Any]:
        _, vmodl = pyvmomi_modules()
        pc = si.RetrieveContent().propertyCollector
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj, skip=False)],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=type(obj), pathSet=paths)])
        try:
            result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
        except vmodl.fault.ManagedObjectNotFound:
            raise DriverError(f"{obj._moId} no longer exists on {self.controller.name}", target=obj._moId,
                              hint="the VM was removed or re-registered: update its power: entry") from None
        found: dict[str, Any] = dict.fromkeys(paths)
        for o in result.objects if result is not None else []:
            for p in o.propSet:
                found[p.name] = p.val
        return found

    def _wait(self, si: Any, task: Any, what: str, target: str) -> dict[str, object]:
        """Await a task until its deadline; its fault is the error. Returns the task's evidence."""
        deadline = time.monotonic() + self.controller.operation_timeout_s
        started = time.monotonic()
        while True:
            info = self._props(si, task, ["info.state", "info.error"])
            state = str(info["info.state"])
            if state == "success":
                return {"task": task._moId, "operation": what, "result": "success",
                        "seconds": round(time.monotonic() - started, 3)}
            if state == "error":
                fault = info["info.error"]
                text = self._describe(fault) if fault is not None else "no fault given"
                self._evidence[target] = {"task": task._moId, "operation": what, "result": "error", "fault": text}
                raise DriverError(f"{what} failed on {self.controller.name}: {text}", target=target,
                                  hint="see the task in vCenter; check the role's rights and the VM's state")
            if time.monotonic() > deadline:
                self._evidence[target] = {"task": task._moId, "operation": what, "result": state}
                raise DriverTimeoutError(f"{what} still {state} after {self.controller.operation_timeout_s:.0f} s",
                                         target=target, hint="see the task in vCenter")
            time.sleep(POLL_S)

    def _guarded(self, target: str, fn: Callable[[Any], T]) -> T:
        """Map a fault the endpoint raised during a call to a DriverError (password removed)."""
        _, vmodl = pyvmomi_modules()
        try:
            return self._call(fn)
        except DriverError:
            raise
        except vmodl.fault.MethodNotFound as exc:
            what = self._describe(exc)
            raise NotSupportedError(f"not supported by this endpoint ({self.controller.endpoint}): {what}",
                                    target=target, hint="do it another way (the server's BMC) or by hand") from None
        except vmodl.MethodFault as exc:
            raise DriverError(f"{self.controller.name}: {self._describe(exc)}", target=target,
                              hint="check the role's rights and the object's state in vCenter") from None
        except (OSError, http.client.HTTPException) as exc:
            raise UnreachableError(f"{self.controller.endpoint}: {self._clean(exception_text(exc))}",
                                   target=target, hint="check the route to the controller") from None

    def query(self, target: str, fn: Callable[[Any], T]) -> T:
        """Run a read-only ``fn(service_instance)`` on the session, faults mapped as for every call
        (used by ``inventory import vsphere`` to read the estate through the same login)."""
        return self._guarded(target, fn)

    # ---- the power-driver interface ------------------------------------------------------------

    def evidence(self, target: str) -> dict[str, object]:
        """What the last operation on ``target`` saw (task, fault, tools status)."""
        return dict(self._evidence.get(target, {}))

    def state(self, target: str) -> PowerState:
        def run(si: Any) -> PowerState:
            vm = self._find(si, "vm", target)
            power = self._props(si, vm, ["runtime.powerState"])["runtime.powerState"]
            if power is None:
                raise DriverError("vCenter reports no power state", target=target, hint="see the VM in vCenter")
            return "stopped" if str(power) == "poweredOff" else "running"

        return self._guarded(target, run)

    def power_off(self, target: str, graceful: bool) -> None:
        def run(si: Any) -> None:
            vm = self._find(si, "vm", target)
            now = self._props(si, vm, ["runtime.powerState", "guest.toolsRunningStatus"])
            power, tools = str(now["runtime.powerState"]), str(now["guest.toolsRunningStatus"])
            if power == "poweredOff":
                self._evidence[target] = {"operation": "none", "power_state": power, "result": "already off"}
                return
            if graceful:
                if tools != "guestToolsRunning":
                    self._evidence[target] = {"operation": "ShutdownGuest", "result": "refused",
                                              "tools": tools}
                    raise GracefulRefusedError(
                        f"VMware Tools are not running in the guest ({tools}): no guest shutdown is possible",
                        target=target, hint="a hard power off (PowerOffVM_Task) follows; install/start Tools")
                vm.ShutdownGuest()
                self._evidence[target] = {"operation": "ShutdownGuest", "result": "requested", "tools": tools}
                return
            evidence = self._wait(si, vm.PowerOffVM_Task(), "PowerOffVM_Task", target)
            self._evidence[target] = evidence

        self._guarded(target, run)

    def power_on(self, target: str) -> None:
        def run(si: Any) -> None:
            vm = self._find(si, "vm", target)
            if str(self._props(si, vm, ["runtime.powerState"])["runtime.powerState"]) == "poweredOn":
                self._evidence[target] = {"operation": "none", "result": "already on"}
                return
            evidence = self._wait(si, vm.PowerOnVM_Task(), "PowerOnVM_Task", target)
            deadline = time.monotonic() + self.controller.tools_timeout_s
            tools = "unknown"
            while True:
                tools = str(self._props(si, vm, ["guest.toolsRunningStatus"])["guest.toolsRunningStatus"])
                if tools == "guestToolsRunning" or time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
            self._evidence[target] = {**evidence, "tools": tools}

        self._guarded(target, run)

    # ---- hypervisors ---------------------------------------------------------------------------

    def host_state(self, host: str) -> dict[str, object]:
        """A hypervisor's ``runtime.powerState``, ``runtime.connectionState`` (connected, disconnected,
        notResponding: vCenter no longer hears the host's agent) and whether it is in maintenance mode."""
        def run(si: Any) -> dict[str, object]:
            h = self._find(si, "host", host)
            p = self._props(si, h, ["runtime.powerState", "runtime.connectionState", "runtime.inMaintenanceMode"])
            return {"power_state": str(p["runtime.powerState"]), "connection_state": str(p["runtime.connectionState"]),
                    "maintenance": bool(p["runtime.inMaintenanceMode"])}

        return self._guarded(host, run)

    def shutdown_host(self, host: str) -> None:
        """Maintenance mode (awaited), then a host shutdown (awaited). Every VM on the host must already
        be off: vCenter's maintenance mode would otherwise wait for them (or DRS would move them)."""
        def run(si: Any) -> None:
            h = self._find(si, "host", host)
            steps: list[dict[str, object]] = []
            if not self._props(si, h, ["runtime.inMaintenanceMode"])["runtime.inMaintenanceMode"]:
                steps.append(self._wait(si, h.EnterMaintenanceMode_Task(timeout=0, evacuatePoweredOffVms=False),
                                        "EnterMaintenanceMode_Task", host))
            self._evidence[host] = {"steps": steps}
            steps.append(self._wait(si, h.ShutdownHost_Task(force=False), "ShutdownHost_Task", host))
            self._evidence[host] = {"steps": steps}

        self._guarded(host, run)

    def exit_maintenance(self, host: str) -> None:
        def run(si: Any) -> None:
            h = self._find(si, "host", host)
            if self._props(si, h, ["runtime.inMaintenanceMode"])["runtime.inMaintenanceMode"]:
                self._evidence[host] = self._wait(si, h.ExitMaintenanceMode_Task(timeout=0),
                                                  "ExitMaintenanceMode_Task", host)

        self._guarded(host, run)

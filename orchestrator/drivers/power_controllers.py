"""Out-of-band power controllers: a vCenter/ESXi endpoint, a Redfish BMC, an IPMI BMC.

A ``PowerController`` describes one controller (where, how to log in, how to trust its TLS); the
drivers (``vsphere.VSpherePower``, ``redfish.RedfishPower``, ``ipmi.IpmiLanPower``) take one and
expose the same shape as ``orchestrator.drivers.power``: ``state(target)``, ``power_off(target,
graceful)``, ``power_on(target)``, plus ``close()`` (log out) and ``evidence(target)`` (what the last
operation on that target saw: task results, fault types, chosen reset types). A target is a VM name
or moref (vSphere), a Systems member id (Redfish) or the host's own name (IPMI: one BMC per server).

The password is a reference (an environment variable or a file), read when a session opens; it never
appears in an exception, a log or evidence (``scrub`` removes it from any text taken from a library).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from orchestrator.errors import AuthFailedError, DriverError
from orchestrator.masking import mask_text, secret_needles

# How often a wait asks a controller for a host's state: one vCenter or BMC answers for a whole estate
# (100 VMs polled every 0.1 s would be 1,000 requests a second).
CONTROLLER_POLL_INTERVAL_S = 1.0

if TYPE_CHECKING:
    from orchestrator.drivers.ipmi import IpmiLanPower
    from orchestrator.drivers.redfish import RedfishPower
    from orchestrator.drivers.vsphere import VSpherePower
    from orchestrator.model import Credential, PowerControllerSpec

ControllerType = Literal["vsphere", "redfish", "ipmi"]
_LABEL = r"[A-Za-z0-9][A-Za-z0-9-]{0,62}"
_HOST_NAME = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*\.?|[0-9A-Fa-f:.]+)$")  # a DNS name or an IP address
CONTROLLER_TYPES: tuple[ControllerType, ...] = ("vsphere", "redfish", "ipmi")
DEFAULT_PORTS: dict[ControllerType, int] = {"vsphere": 443, "redfish": 443, "ipmi": 623}


class GracefulRefusedError(DriverError):
    """A graceful power off is impossible for this target now (no VMware Tools, no GracefulShutdown):
    nothing was sent. The caller escalates to a hard power off."""

    code = "graceful-refused"


class NotSupportedError(DriverError):
    """The endpoint does not implement the operation (e.g. vcsim has no ShutdownHost_Task)."""

    code = "not-supported"


@dataclass(frozen=True)
class PowerController:
    """One power controller. ``address`` is a host name or IP address; ``port`` and ``scheme`` default
    by type (443 https, IPMI 623). ``http`` is refused unless ``allow_http`` (a lab simulator)."""

    name: str
    type: ControllerType
    address: str
    username: str
    password_env: str | None = None
    password_file: str | None = None
    port: int | None = None
    scheme: Literal["https", "http"] = "https"
    ca_file: str | None = None
    verify_tls: bool = True
    allow_http: bool = False
    connect_timeout_s: float = 10.0
    operation_timeout_s: float = 120.0  # a vSphere task, a Redfish task monitor, an IPMI state change
    tools_timeout_s: float = 0.0  # after a vSphere power on, wait this long for VMware Tools (0: do not)

    def __post_init__(self) -> None:
        if self.type not in CONTROLLER_TYPES:
            raise DriverError(f"unknown power controller type {self.type!r}", target=self.name,
                              hint=f"use one of: {', '.join(CONTROLLER_TYPES)}")
        if self.scheme == "http" and not self.allow_http:
            raise DriverError("plain http to a power controller is refused: it would send the password in clear",
                              target=self.name, hint="use https:// (http:// is only for a lab simulator)")
        if self.password_env is None and self.password_file is None:
            raise DriverError("no password reference", target=self.name,
                              hint="set password_env (an environment variable) or password_file")

    @classmethod
    def from_address(cls, name: str, type: ControllerType, address: str, username: str,
                     **kwargs: object) -> PowerController:
        """Build from an inventory-style address: ``host``, ``host:port``, ``https://host[:port]``."""
        text = address if "://" in address else f"//{address}"
        not_an_address = DriverError(f"not a controller address: {address!r}", target=name,
                                     hint="write host, host:port or https://host[:port]")
        try:
            parts = urlsplit(text)
        except ValueError:  # an unclosed IPv6 bracket
            raise not_an_address from None
        if "@" in parts.netloc:
            raise DriverError("the address carries a login (user@ or user:password@)", target=name,
                              hint="remove it: the login comes from the controller's credentials, by reference")
        scheme = parts.scheme or "https"
        if scheme not in ("https", "http") or not parts.hostname or parts.path.strip("/") or parts.query \
                or parts.fragment or not _HOST_NAME.match(parts.hostname):
            raise not_an_address
        if type == "ipmi" and parts.scheme:
            raise DriverError("an IPMI address has no scheme", target=name, hint="write host or host:port")
        try:
            port = parts.port
        except ValueError:
            raise DriverError(f"bad port in {address!r}", target=name, hint="a port is 1-65535") from None
        if port == 0:
            raise DriverError(f"bad port in {address!r}", target=name, hint="a port is 1-65535")
        return cls(name=name, type=type, address=parts.hostname, username=username,
                   port=port, scheme=scheme, **kwargs)  # type: ignore[arg-type]

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (80 if self.scheme == "http" else DEFAULT_PORTS[self.type])

    @property
    def endpoint(self) -> str:
        """``scheme://host:port`` (IPv6 literals bracketed), no credentials."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.effective_port}"

    def password(self) -> str:
        """Resolve the password reference. The error names the reference, never a value."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if not value:
                raise AuthFailedError(f"environment variable {self.password_env} is not set", target=self.name,
                                      hint=f"export {self.password_env} with this controller's password")
            return value
        assert self.password_file is not None
        path = Path(self.password_file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise AuthFailedError(f"cannot read the password file {path}: {exc.strerror}", target=self.name,
                                  hint="fix password_file (a file readable only by the orchestrator)") from None
        if not value:
            raise AuthFailedError(f"the password file {path} is empty", target=self.name,
                                  hint="put the controller's password in it")
        return value

    def verify(self) -> bool | str:
        """What ``requests``-style clients take: a CA file, True (system CAs) or False."""
        if not self.verify_tls:
            return False
        return str(Path(self.ca_file).expanduser()) if self.ca_file else True


def controller_from_inventory(spec: PowerControllerSpec, credential: Credential) -> PowerController:
    """The driver's ``PowerController`` for an inventory's ``power_controllers:`` entry, logging in with
    ``credential`` (its username and password reference). DriverError when the entry cannot work."""
    timeouts: dict[str, float] = {}
    if spec.connect_timeout_s is not None:
        timeouts["connect_timeout_s"] = spec.connect_timeout_s
    if spec.operation_timeout_s is not None:
        timeouts["operation_timeout_s"] = spec.operation_timeout_s
    controller = PowerController.from_address(
        spec.name, spec.type.value, spec.address, credential.username,
        password_env=credential.password_env, password_file=credential.password_file,
        ca_file=spec.ca_file, verify_tls=spec.verify_tls, allow_http=spec.allow_http, **timeouts)
    if spec.port is not None and controller.port is None:
        controller = replace(controller, port=spec.port)
    return controller


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every secret (and its URL-encoded forms) masked by the product's one masker."""
    return mask_text(text, secret_needles(secrets), cap=None, lines=False)


def open_driver(controller: PowerController) -> VSpherePower | RedfishPower | IpmiLanPower:
    """The driver for a controller's type (its session opens on first use; ``close()`` ends it)."""
    if controller.type == "vsphere":
        from orchestrator.drivers.vsphere import VSpherePower

        return VSpherePower(controller)
    if controller.type == "redfish":
        from orchestrator.drivers.redfish import RedfishPower

        return RedfishPower(controller)
    from orchestrator.drivers.ipmi import IpmiLanPower

    return IpmiLanPower(controller)

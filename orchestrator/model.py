"""Typed, frozen values: the inventory, the plan and step outcomes.

Everything beyond ``orchestrator.inventory`` works with these, never with raw dicts. Change with
``dataclasses.replace``; aggregate status is derived, not stored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network


# --------------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------------


class LinkKind(StrEnum):
    VENDOR = "vendor"
    INTERNET = "internet"
    WAN = "wan"
    PARTNER = "partner"


@dataclass(frozen=True)
class Site:
    name: str
    timezone: str = "UTC"


@dataclass(frozen=True)
class Credential:
    """How to log in. A reference only: the secret lives in a key file or an environment variable."""

    name: str
    username: str
    key_file: str | None = None
    password_env: str | None = None
    password_file: str | None = None  # a file holding the password (power controllers)
    known_hosts: str | None = None
    connect_timeout_s: float | None = None  # connect, banner and auth; None: the driver's default (5 s)
    # A password (password_env) may be sent to a host presumed compromised (restore-time checks)
    # only when the credential says so; key-based credentials need no opt-in.
    allow_password_on_suspect_hosts: bool = False

    def connect_timeout(self, default_s: float) -> float:
        """This credential's connect timeout, or the caller's default when it sets none."""
        return self.connect_timeout_s if self.connect_timeout_s is not None else default_s


@dataclass(frozen=True)
class Campus:
    name: str
    description: str = ""


@dataclass(frozen=True)
class Segment:
    name: str
    subnet: IPv4Network
    zone: str
    campus: str | None = None
    vlan: int | None = None
    gateway: str | None = None
    interface: str | None = None  # the gateway's interface facing this segment, when known
    gateway_address: IPv4Address | None = None  # the gateway's address inside the segment


@dataclass(frozen=True)
class Device:
    name: str
    platform: str  # a netmiko device_type
    address: IPv4Address
    role: str
    credentials: str
    campus: str | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Link:
    name: str
    kind: LinkKind
    device: str
    peer: IPv4Network
    description: str = ""
    interface: str | None = None
    peer_address: IPv4Address | None = None  # a reachable address on the far side (labs, probes)


class HostKind(StrEnum):
    SERVER = "server"
    HYPERVISOR = "hypervisor"  # runs VMs (``runs_on`` names it): stops after them, starts before them
    STORAGE = "storage"  # holds VMs' disks (``stored_on`` names it): stops last, starts first


class HostOs(StrEnum):
    LINUX = "linux"  # reached over SSH and Ansible (the default)
    WINDOWS = "windows"  # never over SSH or Ansible: stopped and started only through its power controller


WINDOWS_PORTS = (3389, 5985, 5986, 445)  # RDP, WinRM (http, https), SMB: an os: windows host's own probe
ESXI_PORTS = (22, 443, 902)  # SSH (when enabled), the host's HTTPS API, vpxa/NFC: a vCenter-powered ESXi's probe


class ControllerType(StrEnum):
    VSPHERE = "vsphere"
    REDFISH = "redfish"
    IPMI = "ipmi"


@dataclass(frozen=True)
class PowerControllerSpec:
    """A power controller as the inventory describes it (``power_controllers:``): where it is, which
    credential logs in, how its TLS is trusted. ``address`` is as written (``host``, ``host:port`` or,
    for vsphere and redfish, ``https://host[:port]``); ``ca_file`` is resolved against the inventory's
    directory. ``orchestrator.drivers.power_controllers.controller_from_inventory`` makes the driver's
    ``PowerController`` of it."""

    name: str
    type: ControllerType
    address: str
    credentials: str
    port: int | None = None
    ca_file: str | None = None
    verify_tls: bool = True
    allow_http: bool = False  # a lab simulator only
    connect_timeout_s: float | None = None
    operation_timeout_s: float | None = None


@dataclass(frozen=True)
class PowerTarget:
    """A host's structured ``power:``: its controller, and what it is called there (a vSphere VM's
    name or moref, a Redfish Systems member id; an IPMI BMC powers its one server)."""

    controller: str
    vm: str | None = None
    system: str | None = None
    host: str | None = None  # an ESXi host as its vSphere controller names it (a kind: hypervisor host)
    bmc: str | None = None  # with host: the redfish or ipmi controller that powers that ESXi host


@dataclass(frozen=True)
class Host:
    name: str
    segment: str
    address: IPv4Address
    management_address: IPv4Address
    credentials: str
    tier: int = 0
    campus: str | None = None
    role: str = ""
    depends_on: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    keep_running: bool = False
    power: str | None = None  # a short form: lab, vagrant, manual
    integrity: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict)
    kind: HostKind = HostKind.SERVER
    runs_on: tuple[str, ...] = ()  # the hypervisor(s) this VM runs on
    stored_on: tuple[str, ...] = ()  # the storage host(s) holding its disks
    power_target: PowerTarget | None = None  # a structured power: (a controller of power_controllers)
    os: HostOs = HostOs.LINUX
    health: tuple[str, ...] = ()  # health suites (pytest-testinfra files), resolved: its role's, then its own

    @property
    def never_ssh(self) -> bool:
        """Stopped and started only through its power controller, never by an SSH or Ansible command:
        an ``os: windows`` host, or a hypervisor powered through vCenter (``power: {host: ...}``)."""
        return self.os is HostOs.WINDOWS or (self.power_target is not None and self.power_target.host is not None)

    @property
    def needs(self) -> tuple[str, ...]:
        """Every host this one needs running: its dependencies, hypervisors and storage."""
        return tuple(dict.fromkeys((*self.depends_on, *self.runs_on, *self.stored_on)))


@dataclass(frozen=True)
class Island:
    name: str
    reason: str
    segments: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabPeer:
    """A lab machine standing on the far side of a link (the vendor, "the internet")."""

    link: str
    management_address: IPv4Address


@dataclass(frozen=True)
class LabSettings:
    """Lab-only facts: how the rehearsal lab wires what a real campus already has."""

    management_gateway: IPv4Address  # the root namespace's address on the management bridge
    backbone: IPv4Network  # transit network joining the lab's routers and firewalls
    peers: Mapping[str, LabPeer] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    path: str
    sha256: str
    site: Site
    management_segment: str
    campuses: Mapping[str, Campus]
    segments: Mapping[str, Segment]
    devices: Mapping[str, Device]
    links: Mapping[str, Link]
    hosts: Mapping[str, Host]
    islands: Mapping[str, Island]
    credentials: Mapping[str, Credential]
    version: int = 1
    lab: LabSettings | None = None
    power_controllers: Mapping[str, PowerControllerSpec] = field(default_factory=dict)
    base_dir: str = ""  # the directory relative paths were resolved against (the original inventory's)

    def keep_reasons(self) -> dict[str, str]:
        """Hosts that must never be powered off, each with why. A kept VM keeps the hypervisors it
        runs on and the storage holding it running too (and theirs, in turn)."""
        reasons: dict[str, str] = {}
        for host in self.hosts.values():
            if host.keep_running:
                reasons[host.name] = "keep_running: true"
        for island in self.islands.values():
            for host in self.hosts.values():
                if host.name in island.hosts or host.segment in island.segments:
                    reasons.setdefault(host.name, f"island {island.name}: {island.reason}")
        pending = sorted(reasons)
        while pending:
            kept = self.hosts[pending.pop(0)]
            for under, verb in [(h, "runs") for h in kept.runs_on] + [(h, "stores") for h in kept.stored_on]:
                if under in self.hosts and under not in reasons:
                    reasons[under] = f"{verb} kept host {kept.name}"
                    pending.append(under)
        return dict(sorted(reasons.items()))

    def hosts_in_segment(self, segment: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts.values() if h.segment == segment)


# --------------------------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------------------------


class Mode(StrEnum):
    CONTAIN = "contain"
    SHUTDOWN = "shutdown"
    RESTORE = "restore"


class Action(StrEnum):
    BACKUP_CONFIG = "backup-config"
    CUT_LINK = "cut-link"
    ISOLATE_SEGMENT = "isolate-segment"
    STOP_HOST = "stop-host"
    VERIFY = "verify"
    START_HOST = "start-host"
    CHECK_INTEGRITY = "check-integrity"
    CHECK_HEALTH = "check-health"
    GATE = "gate"
    RECONNECT_SEGMENT = "reconnect-segment"
    RESTORE_LINK = "restore-link"


class Phase(StrEnum):
    CONTAIN = "contain"
    SHUTDOWN = "shutdown"
    VERIFY = "verify"
    RESTORE = "restore"
    RECONNECT = "reconnect"


@dataclass(frozen=True)
class Scope:
    campuses: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()

    @property
    def is_whole_site(self) -> bool:
        return not (self.campuses or self.segments or self.hosts)

    def as_dict(self) -> dict[str, list[str]]:
        return {"campuses": list(self.campuses), "segments": list(self.segments), "hosts": list(self.hosts)}


@dataclass(frozen=True)
class Step:
    id: str  # "<action>:<target>", unique in a plan
    action: Action
    target: str
    verify: str  # what the independent probe checks, in words
    device: str | None = None
    requires: tuple[str, ...] = ()  # step ids that must have succeeded first
    tier: int | None = None
    reason: str | None = None  # why it is ordered where it is, when that is not obvious (hypervisors, storage)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "action": self.action.value, "target": self.target}
        if self.device is not None:
            out["device"] = self.device
        if self.tier is not None:
            out["tier"] = self.tier
        out["requires"] = list(self.requires)
        out["verify"] = self.verify
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class Wave:
    index: int
    phase: Phase
    steps: tuple[Step, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "phase": self.phase.value, "steps": [s.as_dict() for s in self.steps]}


PLAN_SCHEMA = "orchestrator.plan/v1"


@dataclass(frozen=True)
class Plan:
    mode: Mode
    site: str
    inventory_path: str
    inventory_sha256: str
    plan_id: str
    scope: Scope
    waves: tuple[Wave, ...]
    kept: Mapping[str, str]  # host -> why it keeps running

    def steps(self) -> tuple[Step, ...]:
        return tuple(s for w in self.waves for s in w.steps)

    def step(self, step_id: str) -> Step:
        for s in self.steps():
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA,
            "mode": self.mode.value,
            "site": self.site,
            "inventory": self.inventory_path,
            "inventory_sha256": self.inventory_sha256,
            "plan_id": self.plan_id,
            "scope": self.scope.as_dict(),
            "kept": dict(self.kept),
            "waves": [w.as_dict() for w in self.waves],
        }


# --------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------


class StepStatus(StrEnum):
    VERIFIED = "verified"  # done (or already in force) and proven by an independent probe
    FAILED = "failed"  # attempted, and the probe says it did not happen
    # done as far as the device says (the rule is in its running config), but no independent probe
    # could prove it (e.g. no host of the segment answered to probe from): never counted as verified
    UNPROVEN = "unproven"
    # passed on a named person's signed word (``orchestrator attest --claim clean``) where the tool
    # could not check (no baseline, a Windows host): what depends on it goes on, but it is never
    # counted as verified (the run ends "unproven", exit 1, and the report says "attested by X")
    ATTESTED = "attested"
    SKIPPED = "skipped"  # not attempted because something it requires failed
    PENDING = "pending"  # not reached (interrupted)
    DRY_RUN = "dry-run"


@dataclass(frozen=True)
class Verification:
    passed: bool
    check: str
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepResult:
    step_id: str
    status: StepStatus
    changed: bool = False
    already: bool = False  # the desired state was already in force before acting
    evidence: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    escalated: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in (StepStatus.VERIFIED, StepStatus.DRY_RUN, StepStatus.ATTESTED)

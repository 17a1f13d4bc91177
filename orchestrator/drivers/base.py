"""The driver interfaces: what the executor and the probes need from each kind of driver.

Structural interfaces (``typing.Protocol``, nornir's plugin style): a driver satisfies one by having
the methods, never by inheriting. mypy checks every real driver against its interface (the table at
the end of ``orchestrator/drivers/__init__.py``) and the test fakes too (``tests/fakes.py``).

* ``SshRunner``: commands on hosts and lab peers over SSH, and the bare "does port 22 answer"
  probe (``drivers.ssh.SshDriver``).
* ``DeviceDriver``: network devices: back up, change (``model.Action``, never a free string) and
  read back (``drivers.netmiko.NetmikoDriver``).
* ``HostStopper``: stop a wave of hosts from inside, reporting each host's power-off as soon as
  it is known (``drivers.ansible.AnsibleDriver``); or arm the stops of a whole shutdown ahead and
  release each host when it may go (``ArmedStops``).
* ``PowerDriver``: out-of-band power on, graceful or hard off, state, and what the last operation
  saw (``evidence``): the lab's containers and VMs (``drivers.power``), and a host's view onto its
  power controller (``drivers.controller_power.HostOnController``). A host with ``power: manual``
  (or none) has no power driver.
* ``PowerControllerDriver``: a real controller's driver behind those views, one session per
  controller (``drivers.vsphere``, ``drivers.redfish``, ``drivers.ipmi``).

The values the interfaces return live here too, so the interface costs no driver's import
(paramiko, netmiko, ansible-runner); the driver modules re-export them under their old names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from orchestrator.model import Action, Credential

PowerState = Literal["running", "stopped"]


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    """One command run over SSH."""

    host: str
    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True)
class CommandOutcome:
    """What was sent to a device and what it answered (no secrets: devices echo commands only)."""

    device: str
    commands: tuple[str, ...]
    output: str
    parts: tuple[tuple[str, ...], ...] = ()  # apply_many: the lines of each change, in order


@dataclass(frozen=True)
class HostOutcome:
    """One host's outcome of a playbook run."""

    host: str
    status: str  # "ok" | "changed" | "failed" | "unreachable" | "skipped"
    message: str
    results: Mapping[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status in ("ok", "changed")


@dataclass(frozen=True)
class PlaybookRun:
    """One ``ansible-playbook`` run over a wave of hosts."""

    playbook: str
    rc: int
    status: str  # ansible-runner's: "successful" | "failed" | "timeout" | "canceled"
    hosts: Mapping[str, HostOutcome]
    duration_s: float
    artifact_dir: str

    @property
    def failed_hosts(self) -> tuple[str, ...]:
        return tuple(h for h, o in self.hosts.items() if o.status in ("failed", "unreachable"))

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.failed_hosts


@dataclass(frozen=True)
class PowerOffReport:
    """One host's power-off, as the stop reports it the moment it is known (before the whole wave
    ends). ``status`` is the power-off task's: "ok" | "changed" | "failed" | "unreachable" |
    "skipped" ("unreachable" is expected: the connection drops while the machine goes down);
    ``message`` is short and masked. Whether the host is really off is for verification to judge."""

    host: str
    status: str
    message: str


PowerOffCallback = Callable[[PowerOffReport], None]


# --------------------------------------------------------------------------------------------
# Interfaces
# --------------------------------------------------------------------------------------------


class SshRunner(Protocol):
    """Commands over SSH (host keys checked) and the bare TCP probe of a port."""

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        """Run ``command`` on an inventory name (host, device or lab peer) by its management address."""
        ...

    def run_at(self, address: str, credential: Credential, command: str, timeout_s: float = 30.0, *,
               stdin: str | None = None, port: int | None = None) -> CommandResult:
        """Run ``command`` on a bare address (lab peers, probes) with the given credential."""
        ...

    def port_open(self, address: str, port: int = 22, timeout_s: float = 1.0) -> bool:
        """True when a TCP connection to ``address:port`` is accepted (no authentication)."""
        ...

    def treat_as_suspect(self, hosts: Iterable[str]) -> None:
        """``hosts`` are presumed compromised from now on: no password is sent to them."""
        ...

    def close(self) -> None: ...


class DeviceDriver(Protocol):
    """Network devices: back up, change, read back. Actions are ``model.Action`` values
    (cut-link, restore-link, isolate-segment, reconnect-segment); targets are inventory names."""

    def backup_config(self, device: str) -> str: ...

    def running_config(self, device: str, *, fresh: bool = True) -> str: ...

    def apply(self, device: str, action: Action, target: str) -> CommandOutcome: ...

    def apply_many(self, device: str, changes: Sequence[tuple[Action, str]]) -> CommandOutcome: ...

    def is_in_force(self, device: str, action: Action, target: str) -> bool: ...

    def in_force_map(self, device: str, checks: Sequence[tuple[Action, str]], *,
                     fresh: bool = True) -> dict[tuple[Action, str], bool]: ...

    def restore_config(self, device: str, backup: str) -> CommandOutcome: ...

    def close(self) -> None: ...


class HostStopper(Protocol):
    """Stops hosts from inside (their services, then power off), a whole wave at once."""

    def open_connections(self, hosts: Sequence[str]) -> None:
        """Start connecting to hosts that will be stopped later (a head start; returns at once)."""
        ...

    def stop_hosts(self, hosts: Sequence[str], timeout_s: float = 120,
                   on_power_off: PowerOffCallback | None = None) -> PlaybookRun:
        """Stop ``hosts``; ``on_power_off`` hears of each host's power-off the moment it is known.
        Refuses (``SafetyInterlock``) a host that must keep running."""
        ...

    def arm_stops(self, hosts: Sequence[str], *, wait_s: float,
                  on_power_off: PowerOffCallback | None = None) -> ArmedStops:
        """Start the stop of ``hosts`` ahead of time, sending nothing to any of them until each is
        released (``ArmedStops.release``); a host not released within ``wait_s`` is never stopped.
        Refuses (``SafetyInterlock``) a host that must keep running."""
        ...

    def close(self) -> None: ...


class ArmedStops(Protocol):
    """A stop started ahead for ``hosts`` (``HostStopper.arm_stops``): nothing reaches a host until
    it is released, and a host stood down (or never released) is never stopped by it."""

    hosts: frozenset[str]

    def running(self) -> bool:
        """Still able to stop a host when released (its run has not ended)."""
        ...

    def release(self, hosts: Sequence[str]) -> None:
        """Stop these hosts now (each at most once; a host not armed is refused: ``UsageError``)."""
        ...

    def stand_down(self, hosts: Sequence[str]) -> None:
        """These hosts are not to be stopped by this run: it ends for them without sending anything."""
        ...

    def add_done_callback(self, callback: Callable[[Future[PlaybookRun]], None]) -> None:
        """``callback`` gets the run's future once it has ended (each host's outcome, or why it failed)."""
        ...

    def close(self) -> None:
        """Stand down every host not released, then wait for the run to end. Idempotent."""
        ...


class PowerDriver(Protocol):
    """Out-of-band power for one kind of controller; ``name`` is the host's (or VM's) name there."""

    # How often a wait may ask for a state: a local read is cheap, a vCenter or BMC serves a whole estate.
    poll_interval_s: float

    def state(self, name: str) -> PowerState: ...

    def power_on(self, name: str) -> None: ...

    def power_off(self, name: str, graceful: bool) -> None: ...

    def evidence(self, name: str) -> dict[str, object]:
        """What the driver saw or did last for ``name``, for the journal (no secrets; empty when it
        has nothing to add to the state)."""
        ...


class PowerControllerDriver(PowerDriver, Protocol):
    """A real power controller's driver (``drivers.vsphere``, ``drivers.redfish``, ``drivers.ipmi``):
    one per controller, ``name`` being what the controller calls the machine (a VM's name or moref, a
    Redfish Systems id, the server an IPMI BMC powers); ``close()`` ends its session."""

    def close(self) -> None: ...

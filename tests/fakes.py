"""An in-memory campus behind fake drivers, for executor and run tests without a lab or a network.

``FakeCampus`` holds what the real drivers would reach: hosts (powered or not, sshd answering or
not, how they react to a stop), devices (the set of containment rules in force) and what each
probe would see, derived from that state:

* a host answers SSH on its management address when it is powered and its sshd runs; it answers
  ICMP when powered;
* from a host in segment S, another segment's gateway address answers unless S is isolated; a host
  in another segment answers unless S or its segment is isolated; the own segment always answers;
* a lab peer reaches inside unless its link is cut.

The fake drivers satisfy the driver interfaces of ``orchestrator/drivers/base.py`` (mypy checks it:
``FakeCampus.open_*`` return them typed as the interfaces). ``FakeCampus.install(monkeypatch)``
puts them behind ``orchestrator.drivers.open_*`` (the seam ``executor.Drivers`` opens them
through), replaces ICMP, the integrity check and baselines, gives ``verify.wait_until`` a virtual
clock (waits cost no real time) and refuses any real TCP connection.

Every action is appended to ``campus.log`` as a tuple, in order:
``("open", kind)``, ``("backup", device)``, ``("apply", device, action, target)``,
``("stop", host)``, ``("power_off", host, graceful)``, ``("power_on", host)``, ``("integrity", host)``;
and for the power controllers of ``power_controllers:`` (``FakePowerController``, one per controller
the run opens): ``("open", "controller", name)``, ``("login", name)`` (each login attempt),
``("logout", name)``, and the same ``power_off`` / ``power_on`` entries, by host name.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.drivers.base import (
    CommandOutcome,
    CommandResult,
    DeviceDriver,
    HostOutcome,
    HostStopper,
    PlaybookRun,
    PowerControllerDriver,
    PowerDriver,
    PowerOffCallback,
    PowerOffReport,
    PowerState,
    SshRunner,
)
from orchestrator.drivers.controller_power import target_on_controller
from orchestrator.drivers.power_controllers import GracefulRefusedError, PowerController
from orchestrator.errors import (
    AuthFailedError,
    DriverError,
    SafetyInterlock,
    UnknownDriverError,
    UnreachableError,
    UsageError,
)
from orchestrator.integrity import Difference, IntegrityResult
from orchestrator.model import Action, Credential, Inventory

CONTAINMENT = ("cut-link", "isolate-segment")
UNDO = {"restore-link": "cut-link", "reconnect-segment": "isolate-segment"}
_PING = re.compile(r"\bping\b[^&|;]*?'?(\d{1,3}(?:\.\d{1,3}){3})'?\s*>")


@dataclass
class FakeHost:
    name: str
    segment: str
    address: str
    management_address: str
    powered: bool = True
    sshd: bool = True  # sshd runs (answers on port 22) while the host is powered
    drops_icmp: bool = False  # a firewall inside drops echo requests (with sshd stopped: "playing dead")
    ignores_stop: bool = False  # the stop playbook reports success, the host keeps running
    ignores_graceful_power_off: bool = False  # the out-of-band "power button" does nothing
    power_on_fails: bool = False  # out-of-band power on raises DriverError
    power_off_fails: bool = False  # out-of-band power off raises DriverError (state still answers)
    graceful_refused: bool = False  # its power controller refuses a graceful off (a VM without VMware Tools)
    services: dict[str, str] = field(default_factory=dict)  # unit -> is-active answer
    ports: set[int] = field(default_factory=set)  # listening TCP ports while powered
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def ssh_up(self) -> bool:
        return self.powered and self.sshd


class VirtualClock:
    """``time`` for ``orchestrator.verify``: sleeping advances the clock instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
        time.sleep(0.0005)  # let other threads run


class FakeCampus:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.lock = threading.RLock()
        self.hosts: dict[str, FakeHost] = {
            h.name: FakeHost(h.name, h.segment, str(h.address), str(h.management_address),
                             services={s: "active" for s in h.services})
            for h in inventory.hosts.values()
        }
        self.rules: dict[str, set[tuple[str, str]]] = {d: set() for d in inventory.devices}
        self.log: list[tuple[Any, ...]] = []
        self.device_failures: dict[tuple[str, str, str], Exception] = {}  # (device, action, target) -> raised
        self.unreachable_devices: set[str] = set()
        self.integrity_findings: dict[str, tuple[Difference, ...]] = {}
        self.no_baseline: set[str] = set()  # hosts that have no baseline at all (what attest --claim clean covers)
        self.on_stop_hosts: Callable[[Sequence[str]], None] | None = None  # called as a stop playbook starts
        self.arm_stops = True  # False: arming fails, every batch gets a stop playbook of its own
        self.on_apply: Callable[[str, str, str], None] | None = None
        self.clock = VirtualClock()
        self.controller_password = "fake-Controller-pw"  # what every fake controller accepts
        self.unreachable_controllers: set[str] = set()
        self.unreadable_controllers: set[str] = set()  # answer with what their library cannot parse
        self.healthy_ports()

    # ---- shaping the campus ----------------------------------------------------------------

    def shut_down(self) -> None:
        """The state a whole-site shutdown leaves: every cut and isolation in force, every host that
        may stop is off."""
        kept = self.inventory.keep_reasons()
        for host in self.hosts.values():
            host.powered = host.name in kept
        for seg in self.inventory.segments.values():
            if seg.gateway is not None:
                self.rules[seg.gateway].add(("isolate-segment", seg.name))
        for link in self.inventory.links.values():
            self.rules[link.device].add(("cut-link", link.name))

    def contained(self) -> None:
        """Every cut and isolation in force, every host running."""
        for seg in self.inventory.segments.values():
            if seg.gateway is not None:
                self.rules[seg.gateway].add(("isolate-segment", seg.name))
        for link in self.inventory.links.values():
            self.rules[link.device].add(("cut-link", link.name))

    def in_force(self, device: str, action: str, target: str) -> bool:
        with self.lock:
            return (action, target) in self.rules[device]

    def isolated(self, segment: str) -> bool:
        seg = self.inventory.segments[segment]
        return seg.gateway is not None and self.in_force(seg.gateway, "isolate-segment", segment)

    def record(self, *entry: Any) -> None:
        with self.lock:
            self.log.append(entry)

    def entries(self, kind: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [e for e in self.log if e[0] == kind]

    def index(self, *entry: Any) -> int:
        with self.lock:
            return self.log.index(entry)

    # ---- what probes see --------------------------------------------------------------------

    def host_at(self, management_address: str) -> FakeHost | None:
        for host in self.hosts.values():
            if host.management_address == management_address:
                return host
        return None

    def icmp_answers(self, address: str) -> bool:
        host = self.host_at(address)
        return bool(host is not None and host.powered and not host.drops_icmp)

    def reaches(self, from_host: FakeHost, address: str) -> bool:
        with self.lock:
            if not from_host.powered:
                return False
            here = from_host.segment
            for seg in self.inventory.segments.values():
                if seg.gateway_address is not None and str(seg.gateway_address) == address:
                    return seg.name == here or not self.isolated(here)
            for host in self.hosts.values():
                if host.address == address:
                    if not host.powered:
                        return False
                    return host.segment == here or not (self.isolated(here) or self.isolated(host.segment))
            return False

    def peer_reaches(self, link: str, address: str) -> bool:
        del address  # what is inside answers unless the link is cut
        device = self.inventory.links[link].device
        return not self.in_force(device, "cut-link", link)

    # ---- installing the fakes ----------------------------------------------------------------

    def open_ssh(self, inventory: Inventory) -> SshRunner:
        return FakeSshDriver(self, inventory)

    def open_devices(self, inventory: Inventory) -> DeviceDriver:
        return FakeNetmikoDriver(self, inventory)

    def open_host_stopper(self, inventory: Inventory, work_dir: Path, forks: int,
                          event_sink: Callable[[dict[str, Any]], None] | None) -> HostStopper:
        return FakeAnsibleDriver(self, inventory, work_dir, forks, event_sink)

    def open_power(self, name: str) -> PowerDriver:
        if name != "lab":
            raise UnknownDriverError(f"unknown power driver '{name}'", target=name)
        return FakeLabPower(self)

    def open_power_controller(self, controller: PowerController) -> PowerControllerDriver:
        return FakePowerController(self, controller)

    def check_host(self, ssh: Any, inventory: Inventory, host: str, settings: Any) -> IntegrityResult:
        del ssh, inventory, settings
        if not self.hosts[host].ssh_up:  # the real check collects over SSH
            raise UnreachableError("SSH does not answer", target=host)
        self.record("integrity", host)
        return IntegrityResult(host=host, differences=self.integrity_findings.get(host, ()),
                               baseline_taken="2026-01-12T09:00:00Z", checked="2026-01-13T09:00:00Z")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeCampus:
        import socket

        import orchestrator.drivers
        import orchestrator.drivers.icmp
        import orchestrator.integrity
        import orchestrator.verify

        monkeypatch.setattr(orchestrator.drivers, "open_ssh", self.open_ssh)
        monkeypatch.setattr(orchestrator.drivers, "open_devices", self.open_devices)
        monkeypatch.setattr(orchestrator.drivers, "open_host_stopper", self.open_host_stopper)
        monkeypatch.setattr(orchestrator.drivers, "open_power", self.open_power)
        monkeypatch.setattr(orchestrator.drivers, "open_power_controller", self.open_power_controller)
        monkeypatch.setattr(orchestrator.drivers.icmp, "echo", lambda address, *a, **k: self.icmp_answers(address))
        monkeypatch.setattr(orchestrator.integrity, "check_host", self.check_host)
        monkeypatch.setattr(orchestrator.integrity, "load_baseline", lambda host, settings: {"host": host})
        monkeypatch.setattr(orchestrator.integrity, "baseline_versions",
                            lambda host, settings: [] if host in self.no_baseline else [f"fake/{host}.json"])
        monkeypatch.setattr(orchestrator.integrity, "listening_tcp_ports",
                            lambda baseline: tuple(sorted(self.expected_ports(baseline["host"]))))
        monkeypatch.setattr(orchestrator.verify, "time",
                            SimpleNamespace(monotonic=self.clock.monotonic, sleep=self.clock.sleep))

        def no_network(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"a unit test tried to open a real connection: {args}")

        monkeypatch.setattr(socket, "create_connection", no_network)
        return self

    def expected_ports(self, host: str) -> set[int]:
        """What the host's baseline says listens (what it listens on when healthy)."""
        return {22} | {8000 + i for i, _ in enumerate(sorted(self.hosts[host].services))}

    def healthy_ports(self) -> None:
        for host in self.hosts.values():
            host.ports = self.expected_ports(host.name)


# --------------------------------------------------------------------------------------------
# Drivers, each bound to its campus, opened by FakeCampus.open_*.
# --------------------------------------------------------------------------------------------


class FakeSshDriver:
    def __init__(self, campus: FakeCampus, inventory: Inventory) -> None:
        self.campus = campus
        self._inventory = inventory
        self.campus.record("open", "ssh")

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        fake = self.campus.hosts.get(host)
        if fake is None:
            raise DriverError(f"no host {host!r} in the fake campus", target=host)
        if not fake.ssh_up:
            raise UnreachableError("SSH does not answer", target=host)
        return self._answer(fake, command)

    def run_at(self, address: str, credential: Credential, command: str, timeout_s: float = 30.0, *,
               stdin: str | None = None, port: int | None = None) -> CommandResult:
        lab = self.campus.inventory.lab
        peers = {str(p.management_address): name for name, p in (lab.peers if lab else {}).items()}
        if address not in peers:
            raise UnreachableError("nothing answers SSH here", target=address)
        answers = {t: self.campus.peer_reaches(peers[address], t) for t in _ping_targets(command)}
        ok = bool(answers) and all(answers.values())
        return CommandResult(address, command, 0 if ok else 1, _ping_lines(answers), "", 0.01)

    def treat_as_suspect(self, hosts: Iterable[str]) -> None:
        self.suspect = frozenset(hosts)

    def port_open(self, address: str, port: int = 22, timeout_s: float = 1.0) -> bool:
        host = self.campus.host_at(address)
        return bool(host is not None and port == 22 and host.ssh_up)

    def close(self) -> None:
        pass

    def _answer(self, fake: FakeHost, command: str) -> CommandResult:
        def result(code: int, out: str = "") -> CommandResult:
            return CommandResult(fake.name, command, code, out, "", 0.01)

        if command == "cat /proc/sys/kernel/random/boot_id":
            return result(0, fake.boot_id + "\n")
        if "ping " in command:
            answers = {t: self.campus.reaches(fake, t) for t in _ping_targets(command)}
            return result(0 if answers and all(answers.values()) else 1, _ping_lines(answers))
        if command.startswith("systemctl is-active "):
            units = [u for u in command.split()[2:] if u != "--"]
            return result(0, "".join(f"{fake.services.get(u, 'inactive')}\n" for u in units))
        if command == "ss -ltnH":
            return result(0, "".join(f"LISTEN 0 128 0.0.0.0:{p} 0.0.0.0:*\n" for p in sorted(fake.ports)))
        return result(127)


def _ping_targets(command: str) -> list[str]:
    """The addresses a probe command pings (``verify._parallel_ping``: one ping job per address)."""
    targets = [m.group(1) for m in _PING.finditer(command)]
    for t in targets:
        ipaddress.IPv4Address(t)
    return list(dict.fromkeys(targets))


def _ping_lines(answers: Mapping[str, bool]) -> str:
    return "".join(f"reach {t} {'yes' if ok else 'no'}\n" for t, ok in answers.items())


class FakeNetmikoDriver:
    def __init__(self, campus: FakeCampus, inventory: Inventory) -> None:
        self.campus = campus
        self._inventory = inventory
        self.campus.record("open", "netmiko")

    def _reachable(self, device: str) -> None:
        if device not in self._inventory.devices:
            raise DriverError(f"no device {device!r} in the inventory", target=device)
        if device in self.campus.unreachable_devices:
            raise UnreachableError("the device does not answer SSH", target=device)

    def backup_config(self, device: str) -> str:
        self._reachable(device)
        self.campus.record("backup", device)
        return self.running_config(device)

    def running_config(self, device: str, *, fresh: bool = True) -> str:
        self._reachable(device)
        with self.campus.lock:
            rules = sorted(self.campus.rules[device])
        return f"hostname {device}\n" + "".join(f"orchestrator {a} {t}\n" for a, t in rules)

    def apply(self, device: str, action: Action, target: str) -> CommandOutcome:
        self._reachable(device)
        self._check_target(device, action, target)
        if self.campus.on_apply is not None:
            self.campus.on_apply(device, action, target)
        failure = self.campus.device_failures.get((device, action, target))
        if failure is not None:
            raise failure
        with self.campus.lock:
            if action in CONTAINMENT:
                self.campus.rules[device].add((action, target))
            else:
                self.campus.rules[device].discard((UNDO[action], target))
            self.campus.log.append(("apply", device, action, target))
        return CommandOutcome(device, (f"orchestrator {action} {target}",), "")

    def apply_many(self, device: str, changes: Sequence[tuple[Action, str]]) -> CommandOutcome:
        """Like the real driver: targets checked first, then the changes in order, stopping at a refusal."""
        self._reachable(device)
        for action, target in changes:
            self._check_target(device, action, target)
        self.campus.record("batch", device, tuple(changes))
        parts = [self.apply(device, action, target).commands for action, target in changes]
        return CommandOutcome(device, tuple(line for part in parts for line in part), "", tuple(parts))

    def is_in_force(self, device: str, action: Action, target: str) -> bool:
        self._reachable(device)
        self._check_target(device, action, target)
        return self.campus.in_force(device, action, target)

    def in_force_map(self, device: str, checks: Sequence[tuple[Action, str]], *,
                     fresh: bool = True) -> dict[tuple[Action, str], bool]:
        return {(action, target): self.is_in_force(device, action, target) for action, target in checks}

    def restore_config(self, device: str, backup: str) -> CommandOutcome:
        self._reachable(device)
        with self.campus.lock:
            undone = sorted(self.campus.rules[device])
            self.campus.rules[device].clear()
        return CommandOutcome(device, tuple(f"no orchestrator {a} {t}" for a, t in undone), "")

    def close(self) -> None:
        pass

    def _check_target(self, device: str, action: str, target: str) -> None:
        if action in ("cut-link", "restore-link"):
            link = self._inventory.links.get(target)
            ok = link is not None and link.device == device
        elif action in ("isolate-segment", "reconnect-segment"):
            seg = self._inventory.segments.get(target)
            ok = seg is not None and seg.gateway == device
        else:
            raise DriverError(f"unknown device action {action!r}", target=device)
        if not ok:
            raise DriverError(f"{target} is not handled by {device}", target=device)


class FakeAnsibleDriver:
    name = "ansible"

    def __init__(self, campus: FakeCampus, inventory: Inventory, work_dir: Path, forks: int = 50,
                 event_sink: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.campus = campus
        self.inventory = inventory
        self.work_dir = Path(work_dir)
        self.event_sink = event_sink
        self.campus.record("open", "ansible")

    def run_playbook(self, playbook: str, hosts: Sequence[str], extravars: Mapping[str, Any] | None = None,
                     timeout_s: float = 120, *, host_vars: Mapping[str, Mapping[str, Any]] | None = None,
                     on_result: Callable[[Mapping[str, Any]], None] | None = None,
                     control_dir: Path | None = None) -> PlaybookRun:
        raise DriverError(f"the fake campus runs no playbook {playbook!r}", target=playbook)

    def open_connections(self, hosts: Sequence[str]) -> None:
        self.campus.record("open_connections", tuple(hosts))

    def close(self) -> None:
        self.campus.record("close", "ansible")

    def stop_hosts(self, hosts: Sequence[str], timeout_s: float = 120,
                   on_power_off: PowerOffCallback | None = None) -> PlaybookRun:
        self._refuse_kept(hosts)
        outcomes = self.stop_now(hosts, on_power_off)
        return PlaybookRun("stop-host.yml", 4 if outcomes else 0, "failed", outcomes, 0.01,
                           str(self.work_dir / "artifacts"))

    def arm_stops(self, hosts: Sequence[str], *, wait_s: float,
                  on_power_off: PowerOffCallback | None = None) -> FakeArmedStops:
        self._refuse_kept(hosts)
        self.campus.record("arm_stops", tuple(hosts))
        if not self.campus.arm_stops:
            raise DriverError("the fake campus arms no stops (campus.arm_stops is off)", target="stop-host.yml")
        return FakeArmedStops(self, hosts, on_power_off)

    def _refuse_kept(self, hosts: Sequence[str]) -> None:
        kept = self.inventory.keep_reasons()
        refused = [h for h in hosts if h in kept]
        if refused:
            raise SafetyInterlock("refusing to power off host(s) that must keep running: " + ", ".join(refused),
                                  target=",".join(refused))

    def stop_now(self, hosts: Sequence[str], on_power_off: PowerOffCallback | None) -> dict[str, HostOutcome]:
        """What the stop playbook does to ``hosts`` on the fake campus, each host's power-off reported."""
        if self.campus.on_stop_hosts is not None:
            self.campus.on_stop_hosts(hosts)
        outcomes: dict[str, HostOutcome] = {}
        with self.campus.lock:
            for name in hosts:
                host = self.campus.hosts[name]
                self.campus.log.append(("stop", name))
                if not host.ssh_up:
                    outcomes[name] = HostOutcome(name, "unreachable", "SSH does not answer")
                elif host.ignores_stop:
                    outcomes[name] = HostOutcome(name, "changed", "poweroff requested")
                else:
                    host.powered = False
                    outcomes[name] = HostOutcome(name, "unreachable", "connection dropped during power-off")
        for name, outcome in outcomes.items():  # as the real driver: each host's power-off as it arrives
            if on_power_off is not None:
                on_power_off(PowerOffReport(name, outcome.status, outcome.message))
        return outcomes

    def check_health(self, hosts: Sequence[str], expected_ports: Mapping[str, Sequence[int]],
                     timeout_s: float = 60) -> PlaybookRun:
        raise DriverError("the fake campus runs no health playbook", target="check-health.yml")


class FakeArmedStops:
    """The fake campus's armed stop run: a released host is stopped at once (``stop_now``), a host
    stood down is left alone; the run ends once every host is decided (or at ``close``)."""

    def __init__(self, driver: FakeAnsibleDriver, hosts: Sequence[str], on_power_off: PowerOffCallback | None) -> None:
        self.driver = driver
        self.hosts = frozenset(hosts)
        self.on_power_off = on_power_off
        self.outcomes: dict[str, HostOutcome] = {}
        self.future: Future[PlaybookRun] = Future()
        self._lock = threading.Lock()
        self._stopping = 0  # releases whose stops have not reported yet

    def running(self) -> bool:
        return not self.future.done()

    def release(self, hosts: Sequence[str]) -> None:
        """Returns at once, as the real one: the hosts' stops (and their power-off reports) follow."""
        with self._lock:
            again = [h for h in hosts if h in self.outcomes or h not in self.hosts]
            if again:
                raise UsageError(f"cannot release {', '.join(again)}", target="stop-host.yml")
            self.outcomes.update({h: HostOutcome(h, "skipped", "released") for h in hosts})
        self.driver.campus.record("release", tuple(hosts))

        def stop() -> None:
            outcomes = self.driver.stop_now(hosts, self.on_power_off)
            with self._lock:
                self.outcomes.update(outcomes)
                self._stopping -= 1
            self._end_when_decided()

        with self._lock:
            self._stopping += 1
        threading.Thread(target=stop, name="fake-armed-release").start()

    def stand_down(self, hosts: Sequence[str]) -> None:
        with self._lock:
            for host in hosts:
                if host in self.hosts and host not in self.outcomes:
                    self.outcomes[host] = HostOutcome(host, "skipped", "stood down: nothing was sent")
        self._end_when_decided()

    def add_done_callback(self, callback: Callable[[Future[PlaybookRun]], None]) -> None:
        self.future.add_done_callback(callback)

    def close(self) -> None:
        self.stand_down(sorted(self.hosts))
        self.future.result(timeout=60)

    def _end_when_decided(self) -> None:
        with self._lock:
            if set(self.outcomes) != self.hosts or self._stopping or self.future.done():
                return
            run = PlaybookRun("stop-host.yml", 2, "failed", dict(self.outcomes), 0.01,
                              str(self.driver.work_dir / "artifacts"))
        self.future.set_result(run)


class FakeLabPower:
    poll_interval_s = 0.1
    def __init__(self, campus: FakeCampus) -> None:
        self.campus = campus
        self.campus.record("open", "power")

    def evidence(self, name: str) -> dict[str, object]:
        return {}

    def _host(self, name: str) -> FakeHost:
        if name not in self.campus.hosts:
            raise DriverError("not a machine of the running lab", target=name)
        return self.campus.hosts[name]

    def state(self, name: str) -> PowerState:
        return "running" if self._host(name).powered else "stopped"

    def power_on(self, name: str) -> None:
        host = self._host(name)
        if host.power_on_fails:
            raise DriverError("the power controller refused", target=name)
        with self.campus.lock:
            self.campus.log.append(("power_on", name))
            if not host.powered:
                host.powered = True
                host.sshd = True
                host.boot_id = uuid.uuid4().hex

    def power_off(self, name: str, graceful: bool) -> None:
        host = self._host(name)
        if host.power_off_fails:
            raise DriverError("the power controller refused", target=name)
        with self.campus.lock:
            self.campus.log.append(("power_off", name, graceful))
            if not (graceful and host.ignores_graceful_power_off):
                host.powered = False


class FakePowerController:
    """One power controller of the inventory's ``power_controllers:`` (vSphere, Redfish or IPMI alike):
    its targets are what the inventory's hosts are called on it. It logs in on first use with the
    password its reference holds (``campus.controller_password`` is the right one; a wrong one is
    refused and the refusal is not remembered: each call logs in again, as the real drivers do), is
    unreachable when named in ``campus.unreachable_controllers``, and keeps per target what its last
    operation did (``evidence``), as the real drivers do."""
    poll_interval_s = 0.1

    def __init__(self, campus: FakeCampus, controller: PowerController) -> None:
        self.campus = campus
        self.controller = controller
        self.logged_in = False
        self._evidence: dict[str, dict[str, object]] = {}
        self._tasks = itertools.count(1)
        inventory = campus.inventory
        self.hosts = {target_on_controller(h, inventory.power_controllers[controller.name]): h.name
                      for h in inventory.hosts.values()
                      if h.power_target is not None and h.power_target.controller == controller.name}
        campus.record("open", "controller", controller.name)

    def _session(self) -> None:
        if self.logged_in:
            return
        self.campus.record("login", self.controller.name)
        if self.controller.name in self.campus.unreachable_controllers:
            raise UnreachableError(f"{self.controller.endpoint} cannot be reached: connection refused",
                                   target=self.controller.name)
        if self.controller.password() != self.campus.controller_password:
            raise AuthFailedError(f"{self.controller.endpoint} refused the login of user "
                                  f"{self.controller.username!r}", target=self.controller.name,
                                  hint="check the controller's username and the password its reference holds")
        self.logged_in = True

    def _host(self, target: str) -> FakeHost:
        self._session()
        if self.controller.name in self.campus.unreadable_controllers:
            raise ValueError(f"unexpected answer for {target}")
        if target not in self.hosts:
            raise DriverError(f"{self.controller.name} has no machine named {target!r}", target=target)
        return self.campus.hosts[self.hosts[target]]

    def evidence(self, name: str) -> dict[str, object]:
        return dict(self._evidence.get(name, {}))

    def state(self, name: str) -> PowerState:
        return "running" if self._host(name).powered else "stopped"

    def power_on(self, name: str) -> None:
        host = self._host(name)
        if host.power_on_fails:
            self._evidence[name] = {"operation": "power-on", "result": "error", "fault": "InvalidPowerState"}
            raise DriverError("power on failed: InvalidPowerState", target=name)
        with self.campus.lock:
            self.campus.log.append(("power_on", host.name))
            if not host.powered:
                host.powered = True
                host.sshd = True
                host.boot_id = uuid.uuid4().hex
        self._evidence[name] = {"operation": "power-on", "task": f"task-{next(self._tasks)}", "result": "success"}

    def power_off(self, name: str, graceful: bool) -> None:
        host = self._host(name)
        if graceful and host.graceful_refused:
            self._evidence[name] = {"operation": "graceful-off", "result": "refused", "tools": "guestToolsNotRunning"}
            raise GracefulRefusedError("VMware Tools are not running in the guest", target=name,
                                       hint="a hard power off follows")
        if host.power_off_fails:
            self._evidence[name] = {"operation": "hard-off", "result": "error", "fault": "TaskInProgress"}
            raise DriverError("power off failed: TaskInProgress", target=name)
        with self.campus.lock:
            self.campus.log.append(("power_off", host.name, graceful))
            if not (graceful and host.ignores_graceful_power_off):
                host.powered = False
        self._evidence[name] = ({"operation": "graceful-off", "result": "requested"} if graceful else
                                {"operation": "hard-off", "task": f"task-{next(self._tasks)}", "result": "success"})

    def close(self) -> None:
        if self.logged_in:
            self.campus.record("logout", self.controller.name)
            self.logged_in = False

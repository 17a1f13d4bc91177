"""Probes: what they knock on, and in which order (pure logic: a stub SSH driver and power driver)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from orchestrator.drivers.base import CommandResult, PowerState
from orchestrator.inventory import load_inventory
from orchestrator.model import Credential, Host, Inventory
from orchestrator.verify import Probes

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"


class Knocks:
    """A stub SSH driver (``SshRunner``) that counts port knocks and answers from a set of addresses;
    these probes never run a command."""

    def __init__(self, answering: set[str]) -> None:
        self.answering = answering
        self.knocked: list[str] = []

    def port_open(self, address: str, port: int = 22, timeout_s: float = 1.0) -> bool:
        self.knocked.append(address)
        return address in self.answering

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        raise AssertionError(f"no command expected, got {command!r} on {host}")

    def run_at(self, address: str, credential: Credential, command: str, timeout_s: float = 30.0, *,
               stdin: str | None = None, port: int | None = None) -> CommandResult:
        raise AssertionError(f"no command expected, got {command!r} at {address}")

    def treat_as_suspect(self, hosts: Iterable[str]) -> None:
        pass

    def close(self) -> None:
        pass


class Power:
    """A stub power driver that always reports one state and is never asked to act."""
    poll_interval_s = 0.1

    def __init__(self, state: PowerState) -> None:
        self.value: PowerState = state

    def state(self, name: str) -> PowerState:
        return self.value

    def power_on(self, name: str) -> None:
        raise AssertionError("a probe never powers on")

    def power_off(self, name: str, graceful: bool) -> None:
        raise AssertionError("a probe never powers off")

    def evidence(self, name: str) -> dict[str, object]:
        return {}


@pytest.fixture
def inventory() -> Inventory:
    return load_inventory(FIXTURE)


def a_host(inventory: Inventory) -> Host:
    return next(iter(inventory.hosts.values()))


def test_a_host_the_power_driver_says_runs_is_not_off_and_ssh_is_not_knocked_on(inventory: Inventory) -> None:
    host = a_host(inventory)
    ssh = Knocks({str(host.management_address)})
    v = Probes(inventory, ssh, lambda _h: Power("running")).host_off(host)
    assert not v.passed and v.evidence["power"] == "running"
    assert ssh.knocked == []


def test_off_needs_the_power_driver_off_and_ssh_closed(inventory: Inventory) -> None:
    host = a_host(inventory)
    still_answering = Knocks({str(host.management_address)})
    v = Probes(inventory, still_answering, lambda _h: Power("stopped")).host_off(host)
    assert not v.passed and v.evidence == {"power": "stopped", "ssh_port_22": "answers"}
    closed = Knocks(set())
    v = Probes(inventory, closed, lambda _h: Power("stopped")).host_off(host)
    assert v.passed and v.evidence == {"power": "stopped", "ssh_port_22": "closed"}
    assert closed.knocked == [str(host.management_address)]


def test_running_hosts_in_stops_knocking_once_it_has_enough(inventory: Inventory) -> None:
    segment = max(inventory.segments, key=lambda s: len(inventory.hosts_in_segment(s)))
    first, second = inventory.hosts_in_segment(segment)[:2]
    ssh = Knocks({str(first.management_address), str(second.management_address)})
    found = Probes(inventory, ssh, lambda _h: None).running_hosts_in(segment, limit=1)
    assert [h.name for h in found] == [first.name] and ssh.knocked == [str(first.management_address)]
    ssh = Knocks({str(second.management_address)})  # the first one is down: the next one is tried
    found = Probes(inventory, ssh, lambda _h: None).running_hosts_in(segment, limit=1)
    assert [h.name for h in found] == [second.name]
    assert ssh.knocked == [str(first.management_address), str(second.management_address)]

"""Device isolation for real: the netmiko driver against the lab's nftables gateway and FRR router.

Every check is made from where it matters: from a host inside the segment (over SSH on its
management address, with the lab's pinned keys), or from the peer beyond a link. Each test undoes
what it changed, so the shared lab is left as it was found.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pinned_ssh import RemoteResult

from orchestrator import lab
from orchestrator.drivers.netmiko import CommandRejectedError, NetmikoDriver
from orchestrator.errors import DriverError
from orchestrator.model import Action, Host, Inventory, Link, LinkKind

Run = Callable[..., RemoteResult]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def driver(lab_inventory: Inventory, lab_up_status: lab.LabStatus) -> Iterator[NetmikoDriver]:
    d = NetmikoDriver(lab_inventory, timeout_s=20.0)
    yield d
    d.close()


def _ping(run: Run, machine: str, address: object) -> bool:
    return run(machine, f"ping -c1 -W1 {address}", check=False).rc == 0


def _eventually(check: Callable[[], bool], expected: bool, timeout: float = 10.0) -> bool:
    """True once ``check()`` returns ``expected`` (links coming back up take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        if check() == expected:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)


@dataclasses.dataclass(frozen=True)
class Probe:
    segment: str
    inside: Host  # probes from here
    neighbour: Host  # same segment: must stay reachable
    across: Host  # another segment behind the same gateway: must become unreachable


def _probe_for(inventory: Inventory, gateway: str) -> Probe:
    segments = sorted(s.name for s in inventory.segments.values() if s.gateway == gateway)
    for name in segments:
        hosts = sorted(inventory.hosts_in_segment(name), key=lambda h: h.name)
        others = [h for s in segments if s != name for h in sorted(inventory.hosts_in_segment(s), key=lambda h: h.name)]
        if len(hosts) >= 2 and others:
            return Probe(name, hosts[0], hosts[1], others[0])
    raise AssertionError(f"the lab inventory has no segment on {gateway} fit for an isolation probe")


@pytest.mark.parametrize("gateway", ["deu-core", "ant-core"])  # linux (nftables), cisco_ios (FRR)
def test_isolate_and_reconnect_a_segment(
    gateway: str, driver: NetmikoDriver, lab_inventory: Inventory, lab_run: Run
) -> None:
    probe = _probe_for(lab_inventory, gateway)
    platform = lab_inventory.devices[gateway].platform
    inside = probe.inside.name
    assert _ping(lab_run, inside, probe.across.address), "precondition: routing across the gateway works"
    assert not driver.is_in_force(gateway, Action.ISOLATE_SEGMENT, probe.segment)

    backup = driver.backup_config(gateway)
    assert ("table inet labguard" in backup) if platform == "linux" else (f"hostname {gateway}" in backup)

    started = time.monotonic()
    outcome = driver.apply(gateway, Action.ISOLATE_SEGMENT, probe.segment)
    try:
        applied_s = time.monotonic() - started
        assert outcome.device == gateway and outcome.commands
        assert driver.is_in_force(gateway, Action.ISOLATE_SEGMENT, probe.segment)
        assert not _ping(lab_run, inside, probe.across.address), "crossing the gateway still works"
        assert _ping(lab_run, inside, probe.neighbour.address), "hosts inside the segment must still talk"
        # management still works: every lab_run above went over it; the gateway itself is cut off too
        gateway_address = lab_inventory.segments[probe.segment].gateway_address
        assert not _ping(lab_run, inside, gateway_address)
        # applying twice changes nothing
        driver.apply(gateway, Action.ISOLATE_SEGMENT, probe.segment)
        if platform == "linux":
            marker = f'comment "orchestrator:isolate-segment:{probe.segment}"'
            assert driver.running_config(gateway).count(marker) == 3
    finally:
        driver.apply(gateway, Action.RECONNECT_SEGMENT, probe.segment)
    assert not driver.is_in_force(gateway, Action.ISOLATE_SEGMENT, probe.segment)
    assert _eventually(lambda: _ping(lab_run, inside, probe.across.address), True), "not reconnected"
    assert applied_s < 10.0
    # undoing again when nothing is in force is fine
    driver.apply(gateway, Action.RECONNECT_SEGMENT, probe.segment)


def test_cut_and_restore_the_vendor_link(driver: NetmikoDriver, lab_inventory: Inventory, lab_run: Run) -> None:
    link = lab_inventory.links["vendor-registration"]
    victim = sorted(lab_inventory.hosts.values(), key=lambda h: h.name)[0]
    other = next(n for n, lk in lab_inventory.links.items() if n != link.name and lk.device == link.device)
    assert _ping(lab_run, link.name, victim.address), "precondition: the vendor reaches the hospital"
    assert _ping(lab_run, other, victim.address), "precondition: the other peer reaches the hospital"

    driver.apply(link.device, Action.CUT_LINK, link.name)
    try:
        assert driver.is_in_force(link.device, Action.CUT_LINK, link.name)
        assert not _ping(lab_run, link.name, victim.address), "the vendor still reaches a hospital host"
        assert _ping(lab_run, other, victim.address), "cutting one link must not cut another"
    finally:
        driver.apply(link.device, Action.RESTORE_LINK, link.name)
    assert not driver.is_in_force(link.device, Action.CUT_LINK, link.name)
    assert _eventually(lambda: _ping(lab_run, link.name, victim.address), True)


def test_a_rejected_command_raises_with_evidence_and_changes_nothing(
    lab_inventory: Inventory, lab_up_status: lab.LabStatus
) -> None:
    # FRR has no IOS interface ACLs: asking the FRR router for the ACL method is refused by vtysh.
    router = dataclasses.replace(lab_inventory.devices["ant-core"], vars={"cut_link_method": "acl"})
    link = Link(
        "acl-probe",
        LinkKind.WAN,
        "ant-core",
        ipaddress.IPv4Network("10.201.0.0/24"),
        interface=lab_inventory.segments["ant-clinical"].interface,
    )
    inventory = dataclasses.replace(
        lab_inventory,
        devices={**lab_inventory.devices, "ant-core": router},
        links={**lab_inventory.links, "acl-probe": link},
    )
    driver = NetmikoDriver(inventory, timeout_s=20.0)
    try:
        before = driver.running_config("ant-core")
        with pytest.raises(CommandRejectedError) as err:
            driver.apply("ant-core", Action.CUT_LINK, "acl-probe")
        assert err.value.target == "ant-core"
        assert "access-list" in err.value.command
        assert "%" in err.value.output  # the device's own words
        assert driver.running_config("ant-core") == before
    finally:
        driver.close()


def test_a_nonexistent_interface_is_refused_before_acting(
    lab_inventory: Inventory, lab_up_status: lab.LabStatus
) -> None:
    for gateway, segment in (("ant-core", "ant-servers"), ("deu-core", "deu-servers")):
        ghost = dataclasses.replace(lab_inventory.segments[segment], interface="vlan999")
        inventory = dataclasses.replace(lab_inventory, segments={**lab_inventory.segments, segment: ghost})
        driver = NetmikoDriver(inventory, timeout_s=20.0)
        try:
            with pytest.raises(DriverError, match="interface vlan999 does not exist"):
                driver.apply(gateway, Action.ISOLATE_SEGMENT, segment)
            assert not driver.is_in_force(gateway, Action.ISOLATE_SEGMENT, segment)
        finally:
            driver.close()


def test_fallback_playbook_renders_the_same_templates(
    driver: NetmikoDriver, lab_inventory: Inventory, lab_run: Run, tmp_path: Path
) -> None:
    probe = _probe_for(lab_inventory, "deu-core")
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "playbooks" / "ansible.cfg")}
    scope = json.dumps({"only_segments": [probe.segment], "only_links": []})
    base = [
        str(REPO / ".venv" / "bin" / "ansible-playbook"),
        "-e",
        f"inventory_file={REPO / 'inventories' / 'lab.yml'}",
        "-e",
        scope,
        "-e",
        f"network_backup_dir={tmp_path}",
    ]
    isolate = subprocess.run(
        [*base, str(REPO / "playbooks" / "network-isolate.yml")], env=env, capture_output=True, text=True, timeout=180
    )
    try:
        assert isolate.returncode == 0, isolate.stdout[-3000:] + isolate.stderr[-2000:]
        assert driver.is_in_force("deu-core", Action.ISOLATE_SEGMENT, probe.segment)
        assert not _ping(lab_run, probe.inside.name, probe.across.address)
        assert list(tmp_path.glob("deu-core-*.txt")), "the playbook stores a backup first"
    finally:
        restore = subprocess.run(
            [*base, str(REPO / "playbooks" / "network-restore.yml")],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert restore.returncode == 0, restore.stdout[-3000:] + restore.stderr[-2000:]
    assert not driver.is_in_force("deu-core", Action.ISOLATE_SEGMENT, probe.segment)
    assert _eventually(lambda: _ping(lab_run, probe.inside.name, probe.across.address), True)

"""The rehearsal lab, end to end: real containers, real SSH, real routing (DESIGN.md §9, issue 3)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
import pytest
from testinfra.host import Host

from orchestrator import lab
from orchestrator.drivers.power import LabPower
from orchestrator.errors import LabError
from orchestrator.lab import machines
from orchestrator.lab.topology import FORBIDDEN, MGMT_IF, Topology, topology
from orchestrator.model import Inventory

Run = Callable[..., Any]
OUTSIDE = str(FORBIDDEN[1])  # the lab machine's own network: must be unreachable from every lab machine


def _topo(inv: Inventory) -> Topology:
    return topology(inv)


def _ping(run: Run, machine: str, address: str) -> bool:
    return bool(run(machine, f"ping -c1 -W1 {address}", check=False).rc == 0)


def _wait_state(power: LabPower, name: str, state: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while power.state(name) != state:
        assert time.monotonic() < deadline, f"{name} did not become {state} within {timeout} s"
        time.sleep(0.1)


def test_status_is_the_contract(lab_status: lab.LabStatus, lab_inventory: Inventory) -> None:
    data = lab_status.as_dict()
    assert set(data) == {"machines"}
    names = [m["name"] for m in data["machines"]]
    assert set(names) == set(lab_inventory.hosts) | set(lab_inventory.devices) | set(lab_inventory.links)
    for m in data["machines"]:
        assert set(m) == {"name", "kind", "state", "pid", "management_address", "ssh"}
        assert m["kind"] in {"host", "device", "peer"}
        assert m["state"] == "running"
        assert isinstance(m["pid"], int) and Path(f"/proc/{m['pid']}").exists()
        assert set(m["ssh"]) == {"user", "key_file", "known_hosts"}
        assert Path(m["ssh"]["key_file"]).is_file() and Path(m["ssh"]["known_hosts"]).is_file()
    json.dumps(data)


def test_every_machine_answers_ssh_with_pinned_keys_and_runs_systemd(
    lab_status: lab.LabStatus, lab_run: Run, lab_ssh: Any, tmp_path: Path
) -> None:
    for m in lab_status.machines:
        out = lab_run(m.name, "cat /proc/1/comm; hostname; systemctl is-system-running").stdout.split()
        assert out == ["systemd", m.name, "running"], m.name
    # A client that does not know the host key is refused (RejectPolicy), never silently trusting it.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException):
        lab_ssh.client(lab_status.machines[0].management_address, known_hosts=empty).close()


def test_testinfra_sees_services(lab_inventory: Inventory, lab_host: Callable[[str], Host]) -> None:
    for host in lab_inventory.hosts.values():
        h = lab_host(host.name)
        for svc in host.services:
            assert h.service(svc).is_running, f"{host.name}: {svc}"
        for port in dict(host.vars.get("service_ports", {})).values():
            assert h.socket(f"tcp://0.0.0.0:{port}").is_listening, f"{host.name}: {port}"


def test_addresses_and_routes_are_the_inventory(lab_inventory: Inventory, lab_run: Run) -> None:
    topo = _topo(lab_inventory)
    for m in topo.machines:
        addrs = json.loads(lab_run(m.name, "ip -j -4 addr show").stdout)
        have = {(a["ifname"], f"{i['local']}/{i['prefixlen']}") for a in addrs for i in a["addr_info"]}
        want = {(i.name, str(i.address)) for i in m.interfaces} | {("lo", "127.0.0.1/8")}
        assert have == want, m.name
        routes = json.loads(lab_run(m.name, "ip -j -4 route show").stdout)
        have_routes = {(r["dst"], r["gateway"]) for r in routes if "gateway" in r}
        want_routes = {
            ("default" if r.destination.prefixlen == 0 else str(r.destination), str(r.via)) for r in m.routes
        }
        assert have_routes == want_routes, m.name
        # the management interface carries nothing beyond the management subnet
        mgmt_routes = [r for r in routes if r.get("dev") == MGMT_IF]
        assert [r["dst"] for r in mgmt_routes] == [str(topo.management_bridge.subnet)], m.name
    for host in lab_inventory.hosts.values():
        seg = lab_inventory.segments[host.segment]
        assert lab_run(host.name, "ip -4 route show default").stdout.split()[2] == str(seg.gateway_address)


def test_hosts_in_one_segment_reach_each_other(lab_inventory: Inventory, lab_run: Run) -> None:
    for seg in lab_inventory.segments:
        hosts = lab_inventory.hosts_in_segment(seg)
        for other in hosts[1:]:
            assert _ping(lab_run, hosts[0].name, str(other.address)), f"{hosts[0].name} -> {other.name}"


def test_crossing_segments_goes_through_the_gateway(lab_inventory: Inventory, lab_run: Run) -> None:
    src, dst = lab_inventory.hosts["ant-ad1"], lab_inventory.hosts["ant-portal1"]
    far = lab_inventory.hosts["deu-ws1"]
    seg_src = lab_inventory.segments[src.segment]
    seg_dst = lab_inventory.segments[dst.segment]
    route = lab_run(src.name, f"ip -4 route get {dst.address}").stdout
    assert f"via {seg_src.gateway_address}" in route
    assert _ping(lab_run, src.name, str(dst.address))
    assert _ping(lab_run, src.name, str(far.address))  # across campuses, over the backbone
    # Shut the gateway's leg into the destination segment (through the router's own CLI): no way round.
    vtysh = "vtysh -c 'configure terminal' -c 'interface {ifname}' -c '{verb}'"
    gateway = seg_dst.gateway
    assert gateway == "ant-core"
    lab_run(gateway, vtysh.format(ifname=seg_dst.interface, verb="shutdown"))
    try:
        assert not _ping(lab_run, src.name, str(dst.address))
        assert _ping(lab_run, src.name, str(far.address))  # the rest still works
    finally:
        lab_run(gateway, vtysh.format(ifname=seg_dst.interface, verb="no shutdown"))
    deadline = time.monotonic() + 10
    while not _ping(lab_run, src.name, str(dst.address)):
        assert time.monotonic() < deadline, "no shutdown did not restore the path"


def test_network_operator_gets_the_router_cli(lab_inventory: Inventory, lab_ssh: Any) -> None:
    device = lab_inventory.devices["ant-core"]
    cred = lab_inventory.credentials[device.credentials]
    client = lab_ssh.client(str(device.address), username=cred.username)
    try:
        _in, out, _err = client.exec_command("show interface brief")
        text = out.read().decode()
    finally:
        client.close()
    for seg in lab_inventory.segments.values():
        if seg.gateway == device.name:
            assert seg.interface in text


def test_vendor_reaches_the_hospital_only_through_the_firewall(lab_inventory: Inventory, lab_run: Run) -> None:
    link = lab_inventory.links["vendor-registration"]
    target = lab_inventory.hosts["ant-emr-app1"]
    fw_if = link.interface
    assert "via 10.200.0.1 dev eth0" in lab_run(link.name, f"ip -4 route get {target.address}").stdout
    assert _ping(lab_run, link.name, str(target.address))
    # Not over management: the peer's management port reaches only the management station.
    assert _ping(lab_run, link.name, str(lab_inventory.lab.management_gateway))  # type: ignore[union-attr]
    assert not _ping(lab_run, link.name, str(target.management_address))
    # Cut the link on the firewall: the vendor no longer reaches anything in the hospital.
    lab_run(link.device, f"ip link set {fw_if} down")
    try:
        assert not _ping(lab_run, link.name, str(target.address))
    finally:
        lab_run(link.device, f"ip link set {fw_if} up")
        lab_run(link.device, "networkctl reconfigure " + str(fw_if))
    deadline = time.monotonic() + 10
    while not _ping(lab_run, link.name, str(target.address)):
        assert time.monotonic() < deadline, "the vendor link did not come back"


def test_management_reaches_everything_and_is_no_path(
    lab_inventory: Inventory, lab_status: lab.LabStatus, lab_run: Run
) -> None:
    for m in lab_status.machines:
        with socket.create_connection((m.management_address, 22), timeout=3):
            pass
    a, b = lab_inventory.hosts["ant-ad1"], lab_inventory.hosts["deu-ad1"]
    assert not _ping(lab_run, a.name, str(b.management_address))  # machines never meet on management
    topo = _topo(lab_inventory)
    for device in topo.machines:
        if device.kind == "device":
            rules = lab_run(device.name, "nft list table inet labguard").stdout
            assert 'iifname "mgmt0" drop' in rules and 'oifname "mgmt0" drop' in rules


def test_nothing_leaves_the_lab(lab_inventory: Inventory, lab_run: Run) -> None:
    topo = _topo(lab_inventory)
    # the far ends have no route out at all, so nothing goes beyond them
    for m in topo.machines:
        if m.kind == "peer":
            assert lab_run(m.name, f"ip -4 route get {OUTSIDE}", check=False).rc != 0, m.name
            assert lab_run(m.name, "sysctl -n net.ipv4.ip_forward").stdout.strip() == "0"
        if m.kind == "host":
            assert lab_run(m.name, "sysctl -n net.ipv4.ip_forward").stdout.strip() == "0"
        # every machine has exactly its lab interfaces, all plugged into lab bridges
        links = json.loads(lab_run(m.name, "ip -j link show").stdout)
        assert {lk["ifname"] for lk in links} == {i.name for i in m.interfaces} | {"lo"}, m.name
    # root namespace: blackholes for every data range, no forwarding from the lab bridges
    root_routes = json.loads(machines_ip("-j", "route", "show", "type", "blackhole"))
    assert {r["dst"] for r in root_routes} >= {str(n) for n in topo.data_ranges}
    for bridge in topo.bridges:
        assert Path(f"/proc/sys/net/ipv4/conf/{bridge.name}/forwarding").read_text().strip() == "0"
        assert Path(f"/proc/sys/net/ipv6/conf/{bridge.name}/disable_ipv6").read_text().strip() == "1"
    for m in topo.machines:
        for i in m.interfaces:
            master = Path(f"/sys/class/net/{i.host_name}/master").resolve().name
            assert master == i.bridge, i.host_name
    # a probe from deep inside gets nowhere
    assert not _ping(lab_run, "ant-ad1", OUTSIDE)


def _alive(pid: int, settle: float = 5.0) -> bool:
    """A process that still runs (a zombie waiting for its reaper, the host's PID 1, does not)."""
    deadline = time.monotonic() + settle
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("Z", "X") or time.monotonic() > deadline:
            return state not in ("Z", "X")
        time.sleep(0.1)


def machines_ip(*args: str) -> str:
    from orchestrator.lab import network

    return network.run_ip(*args).stdout


def test_poweroff_inside_stops_it_and_power_on_brings_it_back(
    lab_run: Run, lab_inventory: Inventory, lab_ssh: Any
) -> None:
    name = "deu-ws2"
    address = str(lab_inventory.hosts[name].management_address)
    power = LabPower()
    assert power.state(name) == "running"
    boot_id = lab_run(name, "echo kept > /root/state-survives; cat /proc/sys/kernel/random/boot_id").stdout
    lab_run(name, "systemctl poweroff", check=False)
    _wait_state(power, name, "stopped")
    status = lab.lab_status(lab_inventory).machine(name)
    assert (status.state, status.pid) == ("stopped", None)
    with pytest.raises(OSError):
        socket.create_connection((address, 22), timeout=2).close()
    power.power_on(name)
    assert power.state(name) == "running"
    lab_ssh.wait(address)
    out = lab_ssh.run_at(address, name, "cat /root/state-survives /proc/sys/kernel/random/boot_id").stdout.split()
    assert out[0] == "kept" and out[1] != boot_id.strip()
    lab_run(name, "rm /root/state-survives; systemctl is-system-running --wait")


def test_hard_power_off_and_graceful_power_off(lab_run: Run, lab_inventory: Inventory, lab_ssh: Any) -> None:
    name = "deu-ws1"
    address = str(lab_inventory.hosts[name].management_address)
    power = LabPower()
    power.power_off(name, graceful=False)
    assert power.state(name) == "stopped"
    assert not machines.pids(name)
    power.power_on(name)
    lab_ssh.wait(address)
    lab_run(name, "systemctl is-system-running --wait")
    power.power_off(name, graceful=True)
    _wait_state(power, name, "stopped")
    power.power_on(name)
    lab_ssh.wait(address)
    assert lab_run(name, "systemctl is-system-running --wait").stdout.strip() == "running"


def test_reboot_inside_boots_again(lab_run: Run, lab_inventory: Inventory, lab_ssh: Any) -> None:
    name = "deu-files1"
    address = str(lab_inventory.hosts[name].management_address)
    before = lab_run(name, "cat /proc/sys/kernel/random/boot_id").stdout
    lab_run(name, "systemctl reboot", check=False)
    deadline = time.monotonic() + 60
    while True:
        try:
            after = lab_ssh.run_at(address, name, "cat /proc/sys/kernel/random/boot_id").stdout
            if after != before:
                break
        except (OSError, paramiko.SSHException, EOFError):
            pass
        assert time.monotonic() < deadline, "no second boot after reboot"
        time.sleep(0.3)
    assert LabPower().state(name) == "running"
    # Once (CI of c670fd0, a loaded machine) the next connection, right after the new boot had
    # answered, was refused: a connection that fails is tried again, for a minute, and the boot
    # must still end "running".
    state = lab_ssh.run_when_answering(address, name, "systemctl is-system-running --wait", timeout=60)
    assert state.rc == 0 and state.stdout.strip() == "running", state


def test_lab_up_is_idempotent_and_refuses_another_lab(lab_inventory: Inventory, lab_status: lab.LabStatus) -> None:
    again = lab.lab_up(lab_inventory)
    assert [m.pid for m in again.machines] == [m.pid for m in lab_status.machines]
    host = lab_inventory.hosts["ant-ws1"]
    moved = dataclasses.replace(host, address=ipaddress.IPv4Address("10.10.3.99"))
    other = dataclasses.replace(lab_inventory, hosts={**lab_inventory.hosts, host.name: moved})
    with pytest.raises(LabError, match="different lab"):
        lab.lab_up(other)


def test_lab_down_leaves_nothing_behind(lab_inventory: Inventory, lab_status: lab.LabStatus) -> None:
    """Runs last in this module: takes the lab down, checks, and brings it back for later tests."""
    topo = _topo(lab_inventory)
    lab.lab_down()
    for m in topo.machines:
        assert not machines.pids(m.name)
        for i in m.interfaces:
            assert not Path("/sys/class/net", i.host_name).exists()
    for pid in (m.pid for m in lab_status.machines):
        assert pid is not None and not _alive(pid), pid
    for bridge in topo.bridges:
        assert not Path("/sys/class/net", bridge.name).exists()
    assert str(lab.LAB_ROOT) not in Path("/proc/self/mounts").read_text()
    for h in machines.cgroup_hierarchies():
        assert not (h / machines.CGROUP_NAME).exists()
    assert "blackhole" not in machines_ip("route", "show", "type", "blackhole") or not any(
        str(n) in machines_ip("route", "show", "type", "blackhole") for n in topo.data_ranges
    )
    assert not (lab.LAB_ROOT / "machines").exists()
    # host keys are kept: the same lab comes back with the same pinned keys
    known = (lab.LAB_ROOT / "ssh" / "known_hosts").read_text()
    status = lab.lab_up(lab_inventory)
    assert all(m.state == "running" for m in status.machines)
    assert (lab.LAB_ROOT / "ssh" / "known_hosts").read_text() == known

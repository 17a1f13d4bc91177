"""The lab's wiring, derived from an inventory (pure: no containers, no network)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path

import pytest

from orchestrator.errors import LabError
from orchestrator.inventory import load_inventory
from orchestrator.lab import LabStatus, MachineStatus, SshLogin, missing_system_packages
from orchestrator.lab.topology import FORBIDDEN, MGMT_IF, topology, topology_json
from orchestrator.model import Inventory

LAB_YML = Path(__file__).resolve().parents[2] / "inventories" / "lab.yml"


@pytest.fixture(scope="module")
def inv() -> Inventory:
    return load_inventory(LAB_YML, strict=True)


def test_lab_yml_follows_issue_3(inv: Inventory) -> None:
    assert set(inv.campuses) == {"antwerp", "deurne"}
    assert 12 <= len(inv.hosts) <= 20
    for campus in inv.campuses:
        segs = [s for s in inv.segments.values() if s.campus == campus and s.name != inv.management_segment]
        assert len(segs) >= 2
        assert all(len(inv.hosts_in_segment(s.name)) >= 2 for s in segs)
    platforms = {d.platform for d in inv.devices.values() if d.role == "core"}
    assert platforms == {"cisco_ios", "linux"}
    assert {lk.kind.value for lk in inv.links.values()} >= {"vendor", "internet"}
    assert "emergency-department" in inv.islands
    assert all(h.power == "lab" for h in inv.hosts.values())

    def depth(name: str) -> int:
        return 1 + max((depth(d) for d in inv.hosts[name].depends_on), default=0)

    deep = [h for h in inv.hosts.values() if depth(h.name) >= 4]
    assert any(len({inv.hosts[h.name].segment} | {inv.hosts[d].segment for d in h.depends_on}) > 1 for h in deep)


def test_every_machine_and_address(inv: Inventory) -> None:
    topo = topology(inv)
    kinds = {m.name: m.kind for m in topo.machines}
    assert kinds == {
        **{h: "host" for h in inv.hosts},
        **{d: "device" for d in inv.devices},
        **{lk: "peer" for lk in inv.links},
    }
    for host in inv.hosts.values():
        m = topo.machine(host.name)
        assert m.management_address == host.management_address
        assert str(m.interface("eth0").address.ip) == str(host.address)
        seg = inv.segments[host.segment]
        assert [(str(r.destination), r.via) for r in m.routes] == [("0.0.0.0/0", seg.gateway_address)]
    for seg in inv.segments.values():
        if seg.gateway:
            leg = topo.machine(seg.gateway).interface(seg.interface or "")
            assert leg.address.ip == seg.gateway_address and leg.address.network == seg.subnet
    addresses = [i.address.ip for m in topo.machines for i in m.interfaces]
    assert len(addresses) == len(set(addresses))
    assert not any(a in FORBIDDEN for a in addresses)
    for m in topo.machines:
        assert all(len(i.name) <= 15 and "/" not in i.name and len(i.host_name) <= 15 for i in m.interfaces)
        assert m.interface(MGMT_IF).routes == ()  # management carries no routes


def test_devices_route_everything_and_peers_only_the_hospital(inv: Inventory) -> None:
    topo = topology(inv)
    data = {s.subnet for s in inv.segments.values() if s.name != inv.management_segment}
    for dev in inv.devices.values():
        m = topo.machine(dev.name)
        reach = {r.destination for r in m.routes} | {i.address.network for i in m.interfaces}
        assert data <= reach, dev.name
        assert m.forwarding
        assert any(r.destination.prefixlen == 0 for r in m.routes), dev.name
    for link in inv.links.values():
        peer = topo.machine(link.name)
        assert not peer.forwarding
        assert all(r.destination.prefixlen > 0 for r in peer.routes)  # no default: nothing leaves
        assert {r.destination for r in peer.routes} >= data
    assert topo.machine("ant-core").frr and not topo.machine("deu-core").frr
    assert topo.machine("ant-core").device_user == "netops"


def test_deterministic_and_identity(inv: Inventory) -> None:
    assert topology_json(inv) == topology_json(inv)
    assert json.loads(topology_json(inv))["schema"] == "orchestrator.lab-topology/v1"
    host = inv.hosts["ant-ws1"]
    moved = dataclasses.replace(host, address=ipaddress.IPv4Address("10.10.3.99"))
    other = dataclasses.replace(inv, hosts={**inv.hosts, host.name: moved})
    assert topology(other).lab_id != topology(inv).lab_id
    assert dataclasses.replace(inv, sha256="x" * 64).sha256 != inv.sha256
    assert topology(dataclasses.replace(inv, sha256="x" * 64)).lab_id == topology(inv).lab_id


def test_refuses_what_cannot_be_a_lab(inv: Inventory) -> None:
    with pytest.raises(LabError, match="no `lab:` block"):
        topology(dataclasses.replace(inv, lab=None))
    host = inv.hosts["ant-ws1"]
    bad = {
        **inv.hosts,
        host.name: dataclasses.replace(host, management_address=host.address, services=("ssh", "mystery")),
    }
    with pytest.raises(LabError) as err:
        topology(dataclasses.replace(inv, hosts=bad))
    assert "management_address" in err.value.message and "mystery" in err.value.message


def test_legs_without_an_interface_name_are_named_by_vlan_or_position(inv: Inventory) -> None:
    segments = dict(inv.segments)
    segments["ant-ed"] = dataclasses.replace(segments["ant-ed"], interface=None)  # vlan 150
    segments["ant-servers"] = dataclasses.replace(segments["ant-servers"], interface=None, vlan=None)
    links = {"vendor-registration": dataclasses.replace(inv.links["vendor-registration"], interface=None)}
    topo = topology(dataclasses.replace(inv, segments=segments, links={**inv.links, **links}))
    core = [i.name for i in topo.machine("ant-core").interfaces]
    assert core == [MGMT_IF, "backbone", "vlan130", "vlan150", "seg4"]  # legs in segment order, from 2
    fw = [i.name for i in topo.machine("ant-fw").interfaces]
    assert fw == [MGMT_IF, "backbone", "inet0", "link3"]


def test_a_gateway_without_an_address_takes_the_first_of_its_subnet(inv: Inventory) -> None:
    seg = dataclasses.replace(inv.segments["ant-ed"], gateway_address=None)
    topo = topology(dataclasses.replace(inv, segments={**inv.segments, seg.name: seg}))
    assert topo.machine("ant-core").interface("vlan150").address == ipaddress.IPv4Interface("10.10.5.1/24")
    host = next(h for h in inv.hosts.values() if h.segment == "ant-ed")
    assert topo.machine(host.name).routes[0].via == ipaddress.IPv4Address("10.10.5.1")


def test_a_single_address_segment_without_a_gateway_address_is_refused_not_a_crash(inv: Inventory) -> None:
    seg = dataclasses.replace(inv.segments["ant-ed"], subnet=ipaddress.IPv4Network("10.10.5.7/32"),
                              gateway_address=None)
    with pytest.raises(LabError, match=r"address 10\.10\.5\.\d+ is outside 10\.10\.5\.7/32"):
        topology(dataclasses.replace(inv, segments={**inv.segments, seg.name: seg}))


def test_a_single_address_link_peer_is_reached_over_the_24_around_it(inv: Inventory) -> None:
    vendor = dataclasses.replace(inv.links["vendor-registration"], peer=ipaddress.IPv4Network("10.200.0.10/32"))
    topo = topology(dataclasses.replace(inv, links={**inv.links, vendor.name: vendor}))
    leg = topo.machine(vendor.device).interface("vendor0")
    assert leg.address == ipaddress.IPv4Interface("10.200.0.1/24")
    assert [(str(r.destination), str(r.via)) for r in leg.routes] == [("10.200.0.10/32", "10.200.0.10")]
    assert topo.machine(vendor.name).interface("eth0").address == ipaddress.IPv4Interface("10.200.0.10/24")


def test_a_host_on_the_management_segment_has_only_its_management_leg(inv: Inventory) -> None:
    host = dataclasses.replace(inv.hosts["ant-ws1"], segment=inv.management_segment,
                               address=ipaddress.IPv4Address("10.99.40.1"),
                               management_address=ipaddress.IPv4Address("10.99.40.1"))
    topo = topology(dataclasses.replace(inv, hosts={**inv.hosts, host.name: host}))
    m = topo.machine(host.name)
    assert [(i.name, str(i.address)) for i in m.interfaces] == [(MGMT_IF, "10.99.40.1/16")]
    assert m.routes == ()


def test_the_internet_device_routes_default_to_its_peer_and_the_others_to_it(inv: Inventory) -> None:
    topo = topology(inv)
    internet = inv.links["internet"]
    default = ipaddress.IPv4Network("0.0.0.0/0")
    fw = topo.machine(internet.device)
    assert [r.via for r in fw.routes if r.destination == default] == [internet.peer_address]
    fw_backbone = fw.interface("backbone").address.ip
    for dev in inv.devices.values():
        if dev.name != internet.device:
            assert [r.via for r in topo.machine(dev.name).routes if r.destination == default] == [fw_backbone]


def test_every_reason_a_lab_is_refused_comes_at_once_in_wiring_order(inv: Inventory) -> None:
    links = {**inv.links, "vendor-registration": dataclasses.replace(inv.links["vendor-registration"],
                                                                     peer_address=None)}
    lab = dataclasses.replace(inv.lab, management_gateway=ipaddress.IPv4Address("10.1.1.1"),
                              peers={**inv.lab.peers, "ghost": inv.lab.peers["internet"]}) if inv.lab else None
    host = dataclasses.replace(inv.hosts["ant-ws1"], address=ipaddress.IPv4Address("10.10.99.5"),
                               management_address=inv.devices["ant-core"].address)
    with pytest.raises(LabError) as err:
        topology(dataclasses.replace(inv, links=links, lab=lab, hosts={**inv.hosts, host.name: host}))
    assert err.value.message.splitlines()[1:] == [
        "  lab.management_gateway 10.1.1.1 is outside 10.99.0.0/16",
        "  links.vendor-registration: a lab link needs peer_address",
        "  lab.peers.ghost: no link of that name",
        "  hosts.ant-ws1: address 10.10.99.5 is outside 10.10.3.0/24",
        f"  ant-ws1: address {inv.devices['ant-core'].address} is also used by ant-core",
    ]


@pytest.mark.parametrize("backbone", ["10.98.0.0/30", "10.98.0.0/31", "10.98.0.7/32"])
def test_a_backbone_too_small_for_the_devices_is_refused_not_a_crash(inv: Inventory, backbone: str) -> None:
    assert inv.lab is not None and len(inv.devices) > 2
    lab = dataclasses.replace(inv.lab, backbone=ipaddress.IPv4Network(backbone))
    with pytest.raises(LabError) as err:
        topology(dataclasses.replace(inv, lab=lab))
    assert f"lab.backbone {backbone} has room for " in err.value.message
    assert f"devices, the inventory has {len(inv.devices)}" in err.value.message


def test_status_is_the_cli_contract() -> None:
    login = SshLogin("root", "/k", "/kh")
    status = LabStatus(
        (
            MachineStatus("a", "host", "running", 42, "10.99.0.2", login),
            MachineStatus("b", "peer", "stopped", None, "10.99.0.3", login),
        )
    )
    assert status.as_dict() == {
        "machines": [
            {
                "name": "a",
                "kind": "host",
                "state": "running",
                "pid": 42,
                "management_address": "10.99.0.2",
                "ssh": {"user": "root", "key_file": "/k", "known_hosts": "/kh"},
            },
            {
                "name": "b",
                "kind": "peer",
                "state": "stopped",
                "pid": None,
                "management_address": "10.99.0.3",
                "ssh": {"user": "root", "key_file": "/k", "known_hosts": "/kh"},
            },
        ]
    }


def test_missing_system_packages_names_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda cmd: None if cmd == "debootstrap" else "/usr/bin/" + cmd)
    assert missing_system_packages() == ["debootstrap"]

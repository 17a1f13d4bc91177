"""From an inventory to the lab's wiring: machines, their interfaces, addresses and routes, bridges.

Pure: no I/O. Every lab builds from this one description, so they cannot drift apart: the nspawn lab
(``orchestrator.lab``), the VM lab (``orchestrator.lab.vm``) and ``vagrant/Vagrantfile``, which reads
:func:`orchestrator.lab.vagrant.vagrant_json` (this topology plus what each VM needs).

Wiring rules:
- one bridge per non-management segment, one per link (firewall <-> peer), one backbone bridge joining
  every device, one management bridge; the lab machine itself sits on the management bridge only, at
  ``lab.management_gateway``.
- hosts: ``mgmt0`` at ``management_address`` and ``eth0`` at ``address``, default route via the
  segment's ``gateway_address`` (the first address of its subnet if not given; none when the segment
  has no gateway); a host on the management segment has ``mgmt0`` only. No forwarding.
- devices: ``mgmt0`` at ``address``, ``backbone`` on the backbone (addresses handed out in inventory
  order), a leg per segment they gateway (named ``segment.interface``, else ``vlanVLAN`` or ``segK``)
  and per link they carry (``link.interface``, else ``linkK``); routes over the backbone to what other
  devices gateway or carry, and a default route towards the device carrying the internet link (that
  device's own default route goes to the link's peer); forwarding on (the lab's guard table, in
  ``machines.py``, never forwards from or to ``mgmt0``).
- peers (the far end of a link): ``mgmt0`` at ``lab.peers.LINK.management_address`` and ``eth0`` at the
  link's ``peer_address``; routes for the hospital's ranges (its segments and the backbone) via the
  firewall; no forwarding and no default route: nothing leaves the lab.

An inventory that cannot be wired (a link without ``peer_address``, a host without a management
address, a name or an address used twice, a service the image lacks without a stub port, anything in
TEST-NET-1) is refused with every reason at once; a backbone too small for the devices stops it early.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from orchestrator.errors import LabError
from orchestrator.model import Device, Host, Inventory, IPv4Address, IPv4Network, LabSettings, Link, LinkKind, Segment

Kind = Literal["host", "device", "peer"]

MGMT_IF = "mgmt0"
DATA_IF = "eth0"
BACKBONE_IF = "backbone"
BRIDGE_PREFIX = "ol-"
VETH_PREFIX = "ov"
MAX_IFNAME = 15
DEFAULT_ROUTE = ipaddress.IPv4Network("0.0.0.0/0")
# TEST-NET-1 (RFC 5737) is the lab machine's own network here: a lab never uses it, nor routes to it.
FORBIDDEN = ipaddress.IPv4Network((0xC0000200, 24))

# Units that exist in the lab image; any other service a host lists becomes a small stub unit.
IMAGE_SERVICES = frozenset({"ssh", "sshd", "cron", "dbus", "systemd-networkd", "systemd-journald", "nftables", "frr"})
STUB_PORTS_VAR = "service_ports"  # hosts.X.vars.service_ports: {SERVICE: PORT} for stub services


@dataclass(frozen=True)
class Route:
    destination: IPv4Network
    via: IPv4Address

    def as_dict(self) -> dict[str, str]:
        return {"destination": str(self.destination), "via": str(self.via)}


@dataclass(frozen=True)
class Interface:
    name: str  # inside the machine
    bridge: str  # the lab bridge it is plugged into
    network: str  # what the bridge stands for: "management", "backbone", a segment or a link name
    address: ipaddress.IPv4Interface
    routes: tuple[Route, ...] = ()
    host_name: str = ""  # the root namespace's end of the veth pair
    management: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bridge": self.bridge,
            "network": self.network,
            "address": str(self.address.ip),
            "prefix": self.address.network.prefixlen,
            "netmask": str(self.address.netmask),
            "management": self.management,
            "routes": [r.as_dict() for r in self.routes],
        }


@dataclass(frozen=True)
class Machine:
    name: str
    kind: Kind
    index: int
    platform: str  # "linux" for hosts and peers; a device's platform
    management_address: IPv4Address
    interfaces: tuple[Interface, ...]
    forwarding: bool = False
    frr: bool = False  # an FRR router whose device user's login shell is vtysh
    device_user: str | None = None  # the inventory's login user for a device, when not root
    stub_services: Mapping[str, int] = field(default_factory=dict)  # unit name -> TCP port

    @property
    def routes(self) -> tuple[Route, ...]:
        return tuple(r for i in self.interfaces for r in i.routes)

    def interface(self, name: str) -> Interface:
        for i in self.interfaces:
            if i.name == name:
                return i
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "platform": self.platform,
            "management_address": str(self.management_address),
            "forwarding": self.forwarding,
            "frr": self.frr,
            "device_user": self.device_user,
            "stub_services": dict(sorted(self.stub_services.items())),
            "interfaces": [i.as_dict() for i in self.interfaces],
        }


@dataclass(frozen=True)
class Bridge:
    name: str
    network: str  # "management", "backbone", a segment or link name
    subnet: IPv4Network
    management: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "network": self.network, "subnet": str(self.subnet), "management": self.management}


@dataclass(frozen=True)
class Topology:
    site: str
    management_gateway: ipaddress.IPv4Interface
    bridges: tuple[Bridge, ...]
    machines: tuple[Machine, ...]
    data_ranges: tuple[IPv4Network, ...]  # every non-management range: blackholed in the root namespace

    @property
    def management_bridge(self) -> Bridge:
        return next(b for b in self.bridges if b.management)

    def machine(self, name: str) -> Machine:
        for m in self.machines:
            if m.name == name:
                return m
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": "orchestrator.lab-topology/v1",
            "site": self.site,
            "management_gateway": str(self.management_gateway.ip),
            "management_subnet": str(self.management_gateway.network),
            "bridges": [b.as_dict() for b in self.bridges],
            "data_ranges": [str(r) for r in self.data_ranges],
            "machines": [m.as_dict() for m in self.machines],
        }

    @property
    def lab_id(self) -> str:
        """Identifies the wiring: two inventories with the same machines and addresses are one lab."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def topology_json(inventory: Inventory) -> str:
    return json.dumps(topology(inventory).as_dict(), indent=2, sort_keys=True) + "\n"


def link_transit(peer: IPv4Network, peer_address: IPv4Address) -> tuple[IPv4Network, IPv4Address]:
    """The network joining a link's device and its peer, and the device's address on it: the peer network
    itself when it is small (a /16 or longer) and holds both, else the /24 around the peer's address."""
    if 16 <= peer.prefixlen <= 31 and peer_address in peer:  # a /32 has no room for the device
        transit = peer
    else:
        transit = ipaddress.IPv4Network(f"{peer_address}/24", strict=False)
    hosts = iter(transit.hosts())
    mine = next(hosts)
    if mine == peer_address:
        mine = next(hosts)
    return transit, mine


def _bridge_names(kinds_names: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    names: dict[tuple[str, str], str] = {}
    used: set[str] = set()
    for index, (kind, name) in enumerate(kinds_names):
        short = {"segment": "", "link": "l-", "special": ""}[kind]
        candidate = f"{BRIDGE_PREFIX}{short}{name}"[:MAX_IFNAME].rstrip("-")
        if candidate in used:
            candidate = f"{BRIDGE_PREFIX}{kind[0]}{index}"
        used.add(candidate)
        names[(kind, name)] = candidate
    return names


@dataclass
class _Wiring:
    """What every machine is wired from, worked out once, and the problems found so far."""

    inventory: Inventory
    lab: LabSettings
    management: Segment
    data_segments: list[Segment]  # every segment but the management one
    bridge_names: dict[tuple[str, str], str]  # (kind, name) -> bridge
    transits: dict[str, tuple[IPv4Network, IPv4Address]]  # link -> its transit network, the device's address
    backbone_addr: dict[str, IPv4Address]  # device -> its backbone address
    internet_device: str | None  # the device carrying the internet link
    problems: list[str]

    @property
    def mgmt_net(self) -> IPv4Network:
        return self.management.subnet

    def gateway_address(self, seg: Segment) -> IPv4Address | None:
        """The segment's gateway address (the first in its subnet unless given), None without a gateway."""
        if seg.gateway is None:
            return None
        if seg.gateway_address is not None:
            return seg.gateway_address
        return next(iter(seg.subnet.hosts()))  # a /32's hosts() is a list

    def mgmt_iface(self, index: int, address: IPv4Address, owner: str) -> Interface:
        if address not in self.mgmt_net:
            self.problems.append(
                f"{owner}: management address {address} is outside the management subnet {self.mgmt_net}"
            )
        return Interface(
            MGMT_IF,
            self.bridge_names[("special", "mgmt")],
            "management",
            ipaddress.IPv4Interface(f"{address}/{self.mgmt_net.prefixlen}"),
            host_name=_veth(index, 0),
            management=True,
        )


def _veth(index: int, k: int) -> str:
    return f"{VETH_PREFIX}{index}-{k}"


def topology(inventory: Inventory) -> Topology:
    """Describe the lab for ``inventory``. Raises LabError naming every reason it cannot be a lab."""
    wiring = _wiring(inventory)
    lab, mgmt_net = wiring.lab, wiring.mgmt_net
    bridges = _bridges(wiring)
    machines: list[Machine] = []
    for dev in inventory.devices.values():
        machines.append(_device(wiring, dev, len(machines)))
    for link in inventory.links.values():
        peer = _peer(wiring, link, len(machines))
        if peer is not None:
            machines.append(peer)
    for name in lab.peers:
        if name not in inventory.links:
            wiring.problems.append(f"lab.peers.{name}: no link of that name")
    for host in inventory.hosts.values():
        machines.append(_host(wiring, host, len(machines)))
    _check_machines(machines, lab.management_gateway, wiring.problems)
    data_ranges = sorted(
        {b.subnet for b in bridges if not b.management}
        | {lk.peer for lk in inventory.links.values() if lk.peer != DEFAULT_ROUTE},
        key=lambda n: (int(n.network_address), n.prefixlen),
    )
    for net in [*data_ranges, mgmt_net]:
        if net.overlaps(FORBIDDEN):
            wiring.problems.append(f"{net} overlaps {FORBIDDEN}, which the lab must never use")
    if wiring.problems:
        _refuse(inventory, wiring.problems)
    return Topology(
        site=inventory.site.name,
        management_gateway=ipaddress.IPv4Interface(f"{lab.management_gateway}/{mgmt_net.prefixlen}"),
        bridges=tuple(bridges),
        machines=tuple(machines),
        data_ranges=tuple(data_ranges),
    )


def _refuse(inventory: Inventory, problems: list[str]) -> NoReturn:
    raise LabError(
        "the inventory cannot be built as a lab:\n" + "\n".join(f"  {p}" for p in problems),
        target=inventory.path,
        hint="fix the inventory (see inventories/lab.yml for a complete example)",
    )


def _wiring(inventory: Inventory) -> _Wiring:
    """The facts every machine is wired from; LabError at once when there is no lab to describe
    (no lab block, no management segment, a backbone too small for the devices)."""
    lab = inventory.lab
    if lab is None:
        raise LabError(
            "the inventory has no `lab:` block",
            target=inventory.path,
            hint="add lab: {management_gateway: ..., backbone: ..., peers: {...}} (see inventories/lab.yml)",
        )
    mgmt_segment = inventory.segments.get(inventory.management_segment)
    if mgmt_segment is None:
        raise LabError(
            "the management segment is not defined", target=inventory.path, hint="define segments.<management.segment>"
        )
    problems: list[str] = []
    if lab.management_gateway not in mgmt_segment.subnet:
        problems.append(f"lab.management_gateway {lab.management_gateway} is outside {mgmt_segment.subnet}")
    data_segments = [s for s in inventory.segments.values() if s.name != mgmt_segment.name]
    specials = [("special", "mgmt"), ("special", "bb")]
    bridge_names = _bridge_names(
        specials + [("segment", s.name) for s in data_segments] + [("link", n) for n in inventory.links]
    )
    transits: dict[str, tuple[IPv4Network, IPv4Address]] = {}
    for link in inventory.links.values():
        if link.peer_address is None:
            problems.append(f"links.{link.name}: a lab link needs peer_address")
            continue
        transits[link.name] = link_transit(link.peer, link.peer_address)
    # Backbone addresses: one per device, in inventory order.
    backbone_hosts = list(itertools.islice(lab.backbone.hosts(), len(inventory.devices)))
    if len(backbone_hosts) < len(inventory.devices):
        problems.append(f"lab.backbone {lab.backbone} has room for {len(backbone_hosts)} devices, the inventory "
                        f"has {len(inventory.devices)}: give it a larger range")
        _refuse(inventory, problems)  # no device could be wired
    backbone_addr = dict(zip(inventory.devices, backbone_hosts, strict=True))
    internet_device = next(
        (lk.device for lk in inventory.links.values() if lk.peer == DEFAULT_ROUTE or lk.kind == LinkKind.INTERNET),
        None,
    )
    return _Wiring(inventory, lab, mgmt_segment, data_segments, bridge_names, transits, backbone_addr,
                   internet_device, problems)


def _bridges(w: _Wiring) -> list[Bridge]:
    """Management, backbone, one per data segment, one per link with a transit network (in that order)."""
    bridges = [
        Bridge(w.bridge_names[("special", "mgmt")], "management", w.mgmt_net, management=True),
        Bridge(w.bridge_names[("special", "bb")], "backbone", w.lab.backbone),
    ]
    for s in w.data_segments:
        bridges.append(Bridge(w.bridge_names[("segment", s.name)], s.name, s.subnet))
    for name in w.inventory.links:
        if name in w.transits:
            bridges.append(Bridge(w.bridge_names[("link", name)], name, w.transits[name][0]))
    return bridges


def _device(w: _Wiring, dev: Device, index: int) -> Machine:
    """A router or firewall: management, backbone, a leg per segment it gateways and per link it carries."""
    ifaces = [w.mgmt_iface(index, dev.address, f"devices.{dev.name}")]
    routes_bb, has_default = _backbone_routes(w, dev.name)
    ifaces.append(
        Interface(
            BACKBONE_IF,
            w.bridge_names[("special", "bb")],
            "backbone",
            ipaddress.IPv4Interface(f"{w.backbone_addr[dev.name]}/{w.lab.backbone.prefixlen}"),
            tuple(routes_bb),
            host_name=_veth(index, 1),
        )
    )
    k = 2
    for seg in w.data_segments:
        if seg.gateway == dev.name:
            ifaces.append(_segment_leg(w, seg, index, k))
            k += 1
    for link in w.inventory.links.values():
        if link.device != dev.name or link.name not in w.transits or link.peer_address is None:
            continue
        leg, has_default = _link_leg(w, link, link.peer_address, index, k, has_default)
        ifaces.append(leg)
        k += 1
    cred = w.inventory.credentials.get(dev.credentials)
    user = cred.username if cred and cred.username != "root" else None
    frr = dev.platform != "linux"
    return Machine(
        dev.name, "device", index, dev.platform, dev.address, tuple(ifaces), forwarding=True, frr=frr,
        device_user=user,
    )


def _backbone_routes(w: _Wiring, device: str) -> tuple[list[Route], bool]:
    """Routes over the backbone to what the other devices gateway or carry (the default route towards
    the device carrying the internet link), and whether a default route is among them."""
    routes: list[Route] = []
    for seg in w.data_segments:
        if seg.gateway and seg.gateway != device and seg.gateway in w.backbone_addr:
            routes.append(Route(seg.subnet, w.backbone_addr[seg.gateway]))
    for link in w.inventory.links.values():
        if link.device == device or link.device not in w.backbone_addr or link.name not in w.transits:
            continue
        if link.peer == DEFAULT_ROUTE:
            continue
        routes.append(Route(link.peer, w.backbone_addr[link.device]))
        if w.transits[link.name][0] != link.peer:
            routes.append(Route(w.transits[link.name][0], w.backbone_addr[link.device]))
    internet = w.internet_device
    if internet and internet != device and internet in w.backbone_addr:
        routes.append(Route(DEFAULT_ROUTE, w.backbone_addr[internet]))
        return routes, True
    return routes, False


def _segment_leg(w: _Wiring, seg: Segment, index: int, k: int) -> Interface:
    """A device's leg on a segment it gateways, at the segment's gateway address."""
    gw = w.gateway_address(seg)
    assert gw is not None
    if gw not in seg.subnet:
        w.problems.append(f"segments.{seg.name}: gateway_address {gw} is outside {seg.subnet}")
    name = seg.interface or (f"vlan{seg.vlan}" if seg.vlan is not None else f"seg{k}")
    return Interface(
        name,
        w.bridge_names[("segment", seg.name)],
        seg.name,
        ipaddress.IPv4Interface(f"{gw}/{seg.subnet.prefixlen}"),
        host_name=_veth(index, k),
    )


def _link_leg(
    w: _Wiring, link: Link, peer_address: IPv4Address, index: int, k: int, has_default: bool
) -> tuple[Interface, bool]:
    """A device's leg on a link it carries, routing the link's peer network (or the default route,
    unless the device has one already) to the peer; and whether the device now has a default route."""
    transit, mine = w.transits[link.name]
    routes: list[Route] = []
    if link.peer == DEFAULT_ROUTE:
        if not has_default:
            routes.append(Route(DEFAULT_ROUTE, peer_address))
            has_default = True
    elif link.peer != transit:
        routes.append(Route(link.peer, peer_address))
    leg = Interface(
        link.interface or f"link{k}",
        w.bridge_names[("link", link.name)],
        link.name,
        ipaddress.IPv4Interface(f"{mine}/{transit.prefixlen}"),
        tuple(routes),
        host_name=_veth(index, k),
    )
    return leg, has_default


def _peer(w: _Wiring, link: Link, index: int) -> Machine | None:
    """The machine at the far end of ``link``, routing the hospital's ranges back through the firewall."""
    peer = w.lab.peers.get(link.name)
    if peer is None:
        w.problems.append(f"lab.peers.{link.name}: every link needs a peer machine (management_address)")
        return None
    if link.name not in w.transits or link.peer_address is None:
        return None
    transit, fw_addr = w.transits[link.name]
    hospital = [s.subnet for s in w.data_segments] + [w.lab.backbone]
    peer_routes = tuple(Route(net, fw_addr) for net in hospital)
    ifaces = [
        w.mgmt_iface(index, peer.management_address, f"lab.peers.{link.name}"),
        Interface(
            DATA_IF,
            w.bridge_names[("link", link.name)],
            link.name,
            ipaddress.IPv4Interface(f"{link.peer_address}/{transit.prefixlen}"),
            peer_routes,
            host_name=_veth(index, 1),
        ),
    ]
    return Machine(link.name, "peer", index, "linux", peer.management_address, tuple(ifaces))


def _host(w: _Wiring, host: Host, index: int) -> Machine:
    """A server: on the management network, and (off the management segment) on its own segment."""
    seg = w.inventory.segments[host.segment]
    if host.segment == w.management.name:
        ifaces = [w.mgmt_iface(index, host.address, f"hosts.{host.name}")]
    else:
        if host.management_address == host.address:
            w.problems.append(
                f"hosts.{host.name}: a lab host needs a management_address in {w.mgmt_net} (the lab reaches "
                "hosts only over the management network)"
            )
        if host.address not in seg.subnet:
            w.problems.append(f"hosts.{host.name}: address {host.address} is outside {seg.subnet}")
        gw = w.gateway_address(seg)
        host_routes = (Route(DEFAULT_ROUTE, gw),) if gw is not None else ()
        ifaces = [
            w.mgmt_iface(index, host.management_address, f"hosts.{host.name}"),
            Interface(
                DATA_IF,
                w.bridge_names[("segment", seg.name)],
                seg.name,
                ipaddress.IPv4Interface(f"{host.address}/{seg.subnet.prefixlen}"),
                host_routes,
                host_name=_veth(index, 1),
            ),
        ]
    stubs = _stub_services(host, w.problems)
    return Machine(host.name, "host", index, "linux", host.management_address, tuple(ifaces), stub_services=stubs)


def _stub_services(host: Host, problems: list[str]) -> dict[str, int]:
    """The host's services the lab image lacks, each with the port its stub answers on."""
    ports_var = host.vars.get(STUB_PORTS_VAR, {}) if isinstance(host.vars, Mapping) else {}
    stubs: dict[str, int] = {}
    for svc in host.services:
        unit = svc.removesuffix(".service")
        if unit in IMAGE_SERVICES:
            continue
        port = ports_var.get(unit) if isinstance(ports_var, Mapping) else None
        if not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(
                f"hosts.{host.name}: service {unit!r} is not in the lab image; give it a port in "
                f"vars.{STUB_PORTS_VAR}.{unit} so the lab can run a stub of it"
            )
            continue
        stubs[unit] = port
    return stubs


def _check_machines(machines: list[Machine], management_gateway: IPv4Address, problems: list[str]) -> None:
    """Names and addresses the lab can use: each once, short enough, never in FORBIDDEN."""
    seen_names: set[str] = set()
    seen_addrs: dict[IPv4Address, str] = {management_gateway: "lab.management_gateway"}
    for m in machines:
        if m.name in seen_names:
            problems.append(f"machine name {m.name!r} is used twice (a host, device or link)")
        seen_names.add(m.name)
        if len(m.name) > 64:
            problems.append(f"{m.name}: machine names are at most 64 characters")
        for i in m.interfaces:
            if len(i.name) > MAX_IFNAME or "/" in i.name:
                problems.append(f"{m.name}: interface name {i.name!r} must be at most 15 characters without '/'")
            if i.address.ip in seen_addrs:
                problems.append(f"{m.name}: address {i.address.ip} is also used by {seen_addrs[i.address.ip]}")
            seen_addrs[i.address.ip] = m.name
            if i.address.ip in FORBIDDEN:
                problems.append(f"{m.name}: {i.address.ip} is in {FORBIDDEN}, which the lab must never use")

"""From an inventory to the lab's wiring: machines, their interfaces, addresses and routes, bridges.

Pure: no I/O. Both the nspawn lab and ``vagrant/Vagrantfile`` build from this one description (the
Vagrantfile reads :func:`topology_json`), so the two cannot drift apart.

Wiring rules:
- one bridge per non-management segment, one per link (firewall <-> peer), one backbone bridge joining
  every device, one management bridge; the root namespace sits on the management bridge only.
- hosts: ``mgmt0`` at ``management_address`` and ``eth0`` at ``address``, default route via the
  segment's ``gateway_address``; no forwarding.
- devices: ``mgmt0`` at ``address``, ``backbone`` on the backbone, a leg per segment they gateway
  (named ``segment.interface``) and per link they carry (``link.interface``); static routes to what
  other devices gateway; a default route towards the device carrying the internet link; forwarding on,
  never from or to ``mgmt0``.
- peers (the far end of a link): ``mgmt0`` and ``eth0`` at the link's ``peer_address``; routes for the
  hospital's ranges via the firewall; no forwarding and no default route: nothing leaves the lab.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.errors import LabError
from orchestrator.model import Inventory, IPv4Address, IPv4Network, LinkKind

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
    """The network joining a link's device and its peer, and the device's address on it."""
    if peer.prefixlen >= 16 and peer_address in peer:
        transit = peer
    else:
        transit = ipaddress.IPv4Network(f"{peer_address}/24", strict=False)
    hosts = transit.hosts()
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


def topology(inventory: Inventory) -> Topology:
    """Describe the lab for ``inventory``. Raises LabError naming every reason it cannot be a lab."""
    problems: list[str] = []
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
    mgmt_net = mgmt_segment.subnet
    if lab.management_gateway not in mgmt_net:
        problems.append(f"lab.management_gateway {lab.management_gateway} is outside {mgmt_net}")

    data_segments = [s for s in inventory.segments.values() if s.name != mgmt_segment.name]
    specials = [("special", "mgmt"), ("special", "bb")]
    bridge_names = _bridge_names(
        specials + [("segment", s.name) for s in data_segments] + [("link", n) for n in inventory.links]
    )
    bridges: list[Bridge] = [
        Bridge(bridge_names[("special", "mgmt")], "management", mgmt_net, management=True),
        Bridge(bridge_names[("special", "bb")], "backbone", lab.backbone),
    ]
    for s in data_segments:
        bridges.append(Bridge(bridge_names[("segment", s.name)], s.name, s.subnet))
    transits: dict[str, tuple[IPv4Network, IPv4Address]] = {}
    for link in inventory.links.values():
        if link.peer_address is None:
            problems.append(f"links.{link.name}: a lab link needs peer_address")
            continue
        transits[link.name] = link_transit(link.peer, link.peer_address)
        bridges.append(Bridge(bridge_names[("link", link.name)], link.name, transits[link.name][0]))

    # Backbone addresses: one per device, in inventory order.
    backbone_hosts = lab.backbone.hosts()
    backbone_addr: dict[str, IPv4Address] = {d: next(backbone_hosts) for d in inventory.devices}

    def gateway_address(seg_name: str) -> IPv4Address | None:
        seg = inventory.segments[seg_name]
        if seg.gateway is None:
            return None
        if seg.gateway_address is not None:
            return seg.gateway_address
        return next(seg.subnet.hosts())

    internet_device = next(
        (lk.device for lk in inventory.links.values() if lk.peer == DEFAULT_ROUTE or lk.kind == LinkKind.INTERNET),
        None,
    )
    machines: list[Machine] = []
    index = 0

    def veth(i: int, k: int) -> str:
        return f"{VETH_PREFIX}{i}-{k}"

    def mgmt_iface(i: int, address: IPv4Address, owner: str) -> Interface:
        if address not in mgmt_net:
            problems.append(f"{owner}: management address {address} is outside the management subnet {mgmt_net}")
        return Interface(
            MGMT_IF,
            bridges[0].name,
            "management",
            ipaddress.IPv4Interface(f"{address}/{mgmt_net.prefixlen}"),
            host_name=veth(i, 0),
            management=True,
        )

    # Devices
    for dev in inventory.devices.values():
        ifaces = [mgmt_iface(index, dev.address, f"devices.{dev.name}")]
        routes_bb: list[Route] = []
        has_default = False
        # routes to what other devices gateway or carry
        for seg in data_segments:
            if seg.gateway and seg.gateway != dev.name and seg.gateway in backbone_addr:
                routes_bb.append(Route(seg.subnet, backbone_addr[seg.gateway]))
        for link in inventory.links.values():
            if link.device == dev.name or link.device not in backbone_addr or link.name not in transits:
                continue
            if link.peer == DEFAULT_ROUTE:
                continue
            routes_bb.append(Route(link.peer, backbone_addr[link.device]))
            if transits[link.name][0] != link.peer:
                routes_bb.append(Route(transits[link.name][0], backbone_addr[link.device]))
        if internet_device and internet_device != dev.name and internet_device in backbone_addr:
            routes_bb.append(Route(DEFAULT_ROUTE, backbone_addr[internet_device]))
            has_default = True
        ifaces.append(
            Interface(
                BACKBONE_IF,
                bridges[1].name,
                "backbone",
                ipaddress.IPv4Interface(f"{backbone_addr[dev.name]}/{lab.backbone.prefixlen}"),
                tuple(routes_bb),
                host_name=veth(index, 1),
            )
        )
        k = 2
        for seg in data_segments:
            if seg.gateway != dev.name:
                continue
            gw = gateway_address(seg.name)
            assert gw is not None
            if gw not in seg.subnet:
                problems.append(f"segments.{seg.name}: gateway_address {gw} is outside {seg.subnet}")
            name = seg.interface or (f"vlan{seg.vlan}" if seg.vlan is not None else f"seg{k}")
            ifaces.append(
                Interface(
                    name,
                    bridge_names[("segment", seg.name)],
                    seg.name,
                    ipaddress.IPv4Interface(f"{gw}/{seg.subnet.prefixlen}"),
                    host_name=veth(index, k),
                )
            )
            k += 1
        for link in inventory.links.values():
            if link.device != dev.name or link.name not in transits or link.peer_address is None:
                continue
            transit, mine = transits[link.name]
            routes: list[Route] = []
            if link.peer == DEFAULT_ROUTE:
                if not has_default:
                    routes.append(Route(DEFAULT_ROUTE, link.peer_address))
                    has_default = True
            elif link.peer != transit:
                routes.append(Route(link.peer, link.peer_address))
            name = link.interface or f"link{k}"
            ifaces.append(
                Interface(
                    name,
                    bridge_names[("link", link.name)],
                    link.name,
                    ipaddress.IPv4Interface(f"{mine}/{transit.prefixlen}"),
                    tuple(routes),
                    host_name=veth(index, k),
                )
            )
            k += 1
        cred = inventory.credentials.get(dev.credentials)
        user = cred.username if cred and cred.username != "root" else None
        frr = dev.platform != "linux"
        machines.append(
            Machine(
                dev.name,
                "device",
                index,
                dev.platform,
                dev.address,
                tuple(ifaces),
                forwarding=True,
                frr=frr,
                device_user=user,
            )
        )
        index += 1

    # Peers: the far end of each link
    hospital = [s.subnet for s in data_segments] + [lab.backbone]
    for link in inventory.links.values():
        peer = lab.peers.get(link.name)
        if peer is None:
            problems.append(f"lab.peers.{link.name}: every link needs a peer machine (management_address)")
            continue
        if link.name not in transits or link.peer_address is None:
            continue
        transit, fw_addr = transits[link.name]
        peer_routes = tuple(Route(net, fw_addr) for net in hospital)
        ifaces = [
            mgmt_iface(index, peer.management_address, f"lab.peers.{link.name}"),
            Interface(
                DATA_IF,
                bridge_names[("link", link.name)],
                link.name,
                ipaddress.IPv4Interface(f"{link.peer_address}/{transit.prefixlen}"),
                peer_routes,
                host_name=veth(index, 1),
            ),
        ]
        machines.append(Machine(link.name, "peer", index, "linux", peer.management_address, tuple(ifaces)))
        index += 1
    for name in lab.peers:
        if name not in inventory.links:
            problems.append(f"lab.peers.{name}: no link of that name")

    # Hosts
    for host in inventory.hosts.values():
        seg = inventory.segments[host.segment]
        if host.segment == mgmt_segment.name:
            ifaces = [mgmt_iface(index, host.address, f"hosts.{host.name}")]
        else:
            if host.management_address == host.address:
                problems.append(
                    f"hosts.{host.name}: a lab host needs a management_address in {mgmt_net} (the lab reaches "
                    "hosts only over the management network)"
                )
            if host.address not in seg.subnet:
                problems.append(f"hosts.{host.name}: address {host.address} is outside {seg.subnet}")
            gw = gateway_address(seg.name)
            host_routes = (Route(DEFAULT_ROUTE, gw),) if gw is not None else ()
            ifaces = [
                mgmt_iface(index, host.management_address, f"hosts.{host.name}"),
                Interface(
                    DATA_IF,
                    bridge_names[("segment", seg.name)],
                    seg.name,
                    ipaddress.IPv4Interface(f"{host.address}/{seg.subnet.prefixlen}"),
                    host_routes,
                    host_name=veth(index, 1),
                ),
            ]
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
        machines.append(
            Machine(host.name, "host", index, "linux", host.management_address, tuple(ifaces), stub_services=stubs)
        )
        index += 1

    # Cross-checks
    seen_names: set[str] = set()
    seen_addrs: dict[IPv4Address, str] = {lab.management_gateway: "lab.management_gateway"}
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
    data_ranges = sorted(
        {b.subnet for b in bridges if not b.management}
        | {lk.peer for lk in inventory.links.values() if lk.peer != DEFAULT_ROUTE},
        key=lambda n: (int(n.network_address), n.prefixlen),
    )
    for net in [*data_ranges, mgmt_net]:
        if net.overlaps(FORBIDDEN):
            problems.append(f"{net} overlaps {FORBIDDEN}, which the lab must never use")
    if problems:
        raise LabError(
            "the inventory cannot be built as a lab:\n" + "\n".join(f"  {p}" for p in problems),
            target=inventory.path,
            hint="fix the inventory (see inventories/lab.yml for a complete example)",
        )
    return Topology(
        site=inventory.site.name,
        management_gateway=ipaddress.IPv4Interface(f"{lab.management_gateway}/{mgmt_net.prefixlen}"),
        bridges=tuple(bridges),
        machines=tuple(machines),
        data_ranges=tuple(data_ranges),
    )

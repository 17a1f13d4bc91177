"""The same lab as Vagrant VMs: what ``vagrant/Vagrantfile`` reads.

:func:`vagrant_json` is the topology (``orchestrator.lab.topology``) plus, per machine, its libvirt
domain name, a MAC address and a libvirt network per interface, and the files its provisioner
writes: the very networkd, sysctl, nftables, FRR and stand-in service files the nspawn lab writes
into its overlays, plus ``.link`` files that name each interface by its MAC (VM interface order is
not stable). One source of truth for both labs.

Given a ``lab_root`` it also makes the lab's SSH keys there (``orchestrator.lab.keys``: one client
key, one host key per machine, a known_hosts pinning them) and names, per machine, the host key file
and the client's public key that the provisioner installs. Key contents never enter the JSON: only
the public key and the path of the private host key file (which Vagrant's file provisioner uploads).
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from pathlib import Path
from typing import Any

from orchestrator.errors import LabError
from orchestrator.lab import keys
from orchestrator.lab.machines import GUARD_NFT, frr_config, network_files, stub_unit
from orchestrator.lab.topology import MGMT_IF, Machine, Topology, topology
from orchestrator.model import Inventory

DOMAIN_PREFIX = "olab-"  # libvirt domain of machine NAME: olab-NAME (vagrant-libvirt's default_prefix)
NETWORK_PREFIX = "olv-"  # libvirt networks: olv-SITE-NETWORK
VAGRANT_NETWORK = "olv-vagrant"  # Vagrant's own network (its SSH and DHCP), isolated too
VAGRANT_NETWORK_ADDRESS = "10.151.250.0/24"  # outside every range of inventories/lab.yml and vm-lab.yml
DOMAIN_UUID_NAMESPACE = uuid.UUID("6f1c2b8e-54a3-4c1e-9d0e-0a5b1c7e3f21")  # this lab's domains (domain_uuid)
VAGRANT_NIC_GLOB = "en*"  # the box names Vagrant's NIC predictably (ens5, ...); lab NICs are renamed

# On top of the nspawn lab's guard: Vagrant's own NIC is never a path between networks either.
VM_GUARD_NFT = GUARD_NFT.replace(
    '        oifname "%(mgmt)s" drop\n',
    '        oifname "%(mgmt)s" drop\n'
    '        iifname "%(vagrant)s" drop\n'
    '        oifname "%(vagrant)s" drop\n',
)


def mac_address(machine_index: int, interface_index: int) -> str:
    """Locally administered, stable per machine and interface."""
    return f"52:54:0a:{(machine_index >> 8) & 0xFF:02x}:{machine_index & 0xFF:02x}:{interface_index:02x}"


def domain_name(machine: str) -> str:
    """The libvirt domain of a lab machine."""
    return DOMAIN_PREFIX + machine


def domain_uuid(site: str, machine: str) -> str:
    """The libvirt domain's UUID, fixed per site and machine (not libvirt's random one): what a Redfish
    BMC in front of the lab calls the machine (its Systems member id), written in the inventory."""
    return str(uuid.uuid5(DOMAIN_UUID_NAMESPACE, f"{site}/{machine}"))


def network_name(site: str, network: str) -> str:
    """The libvirt network standing for a lab network ("management", "backbone", a segment, a link)."""
    short = {"management": "mgmt", "backbone": "bb"}.get(network, network)
    return re.sub(r"[^a-z0-9-]", "-", f"{NETWORK_PREFIX}{site}-{short}".lower())


def network_names(topo: Topology) -> list[str]:
    """Every libvirt network of the lab, Vagrant's own included."""
    return [network_name(topo.site, b.network) for b in topo.bridges] + [VAGRANT_NETWORK]


def machine_files(m: Machine) -> dict[str, str]:
    files: dict[str, str] = {}
    for k, iface in enumerate(m.interfaces):
        files[f"/etc/systemd/network/05-{iface.name}.link"] = (
            f"[Match]\nMACAddress={mac_address(m.index, k)}\n\n[Link]\nName={iface.name}\n"
        )
    for name, text in network_files(m, frr_routes=m.frr).items():
        files[f"/etc/systemd/network/{name}"] = text
    files["/etc/sysctl.d/90-lab.conf"] = (
        "net.ipv6.conf.all.disable_ipv6 = 1\nnet.ipv6.conf.default.disable_ipv6 = 1\n"
        f"net.ipv4.ip_forward = {1 if m.forwarding else 0}\n"
    )
    if m.kind == "device":
        files["/etc/nftables.conf"] = VM_GUARD_NFT % {"mgmt": MGMT_IF, "vagrant": VAGRANT_NIC_GLOB}
        files["/etc/systemd/networkd.conf.d/10-lab.conf"] = (
            "[Network]\nManageForeignRoutes=no\nManageForeignRoutingPolicyRules=no\n"
        )
    if m.frr:
        files["/etc/frr/frr.conf"] = frr_config(m)
    for svc, port in m.stub_services.items():
        files[f"/etc/systemd/system/{svc}.service"] = stub_unit(svc, port)
        files[f"/srv/{svc}/index.html"] = f"{svc} on {m.name}: ok\n"
    return files


def vagrant_dict(inventory: Inventory, lab_root: Path | None = None) -> dict[str, Any]:
    topo = topology(inventory)
    out = topo.as_dict()
    vagrant_net = ipaddress.ip_network(VAGRANT_NETWORK_ADDRESS)
    for seg in inventory.segments.values():
        if ipaddress.ip_network(str(seg.subnet)).overlaps(vagrant_net):
            raise LabError(
                f"segment {seg.name} ({seg.subnet}) overlaps Vagrant's own network {vagrant_net}",
                target=inventory.path,
                hint="the VM lab keeps Vagrant's network apart from the lab's: choose another subnet",
            )
    out["vagrant_network"] = {"name": VAGRANT_NETWORK, "address": VAGRANT_NETWORK_ADDRESS}
    if lab_root is not None:
        keys.ensure_keys(lab_root, topo)
        out["known_hosts"] = str(keys.known_hosts_path(lab_root))
        out["client_key"] = str(keys.client_key_path(lab_root))
    by_name = {m.name: m for m in topo.machines}
    for md in out["machines"]:
        m = by_name[md["name"]]
        md["domain"] = domain_name(m.name)
        md["uuid"] = domain_uuid(topo.site, m.name)
        for k, iface in enumerate(md["interfaces"]):
            iface["mac"] = mac_address(m.index, k)
            iface["libvirt_network"] = network_name(topo.site, iface["network"])
        md["files"] = machine_files(m)
        enable = ["systemd-networkd"] + (["nftables"] if m.kind == "device" else [])
        enable += ["frr"] if m.frr else []
        md["enable"] = enable + sorted(m.stub_services)
        if lab_root is not None:
            md["ssh"] = {
                "authorized_key": keys.public_key(keys.client_key_path(lab_root)) + " orchestrator-lab",
                "host_key": str(keys.host_key_path(lab_root, m.name)),
            }
    return out


def vagrant_json(inventory: Inventory, lab_root: Path | None = None) -> str:
    return json.dumps(vagrant_dict(inventory, lab_root), indent=2, sort_keys=True) + "\n"

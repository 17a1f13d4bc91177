"""The same lab as Vagrant VMs: what ``vagrant/Vagrantfile`` reads.

:func:`vagrant_json` is the topology (``orchestrator.lab.topology``) plus, per machine, a MAC address
per interface and the files its provisioner writes: the very networkd, sysctl, nftables, FRR and
stand-in service files the nspawn lab writes into its overlays, plus ``.link`` files that name each
interface by its MAC (VM interface order is not stable). One source of truth for both labs.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.lab.machines import GUARD_NFT, frr_config, network_files, stub_unit
from orchestrator.lab.topology import MGMT_IF, Machine, topology
from orchestrator.model import Inventory


def mac_address(machine_index: int, interface_index: int) -> str:
    """Locally administered, stable per machine and interface."""
    return f"52:54:0a:{(machine_index >> 8) & 0xFF:02x}:{machine_index & 0xFF:02x}:{interface_index:02x}"


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
        files["/etc/nftables.conf"] = GUARD_NFT % {"mgmt": MGMT_IF}
    if m.frr:
        files["/etc/frr/frr.conf"] = frr_config(m)
    for svc, port in m.stub_services.items():
        files[f"/etc/systemd/system/{svc}.service"] = stub_unit(svc, port)
        files[f"/srv/{svc}/index.html"] = f"{svc} on {m.name}: ok\n"
    return files


def vagrant_dict(inventory: Inventory) -> dict[str, Any]:
    topo = topology(inventory)
    out = topo.as_dict()
    by_name = {m.name: m for m in topo.machines}
    for md in out["machines"]:
        m = by_name[md["name"]]
        for k, iface in enumerate(md["interfaces"]):
            iface["mac"] = mac_address(m.index, k)
        md["files"] = machine_files(m)
        enable = ["systemd-networkd"] + (["nftables"] if m.kind == "device" else [])
        enable += ["frr"] if m.frr else []
        md["enable"] = enable + sorted(m.stub_services)
    return out


def vagrant_json(inventory: Inventory) -> str:
    return json.dumps(vagrant_dict(inventory), indent=2, sort_keys=True) + "\n"

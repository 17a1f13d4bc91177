"""Write a generated lab inventory with N hosts (default 100), for timing `lab up` at scale.

    .venv/bin/python bench/lab_inventory.py 100 > /tmp/lab-100.yml
    .venv/bin/orchestrator lab up /tmp/lab-100.yml

Two campuses, five server segments each behind a linux core router, a firewall with a vendor and an
internet link, and a dependency chain in every segment. Uses the lab's key paths (inventories/lab.yml).
"""

from __future__ import annotations

import sys


def generate(hosts: int) -> str:
    out = [
        "version: 1",
        "site: {name: bench-hospital, timezone: Europe/Brussels}",
        "management: {segment: mgmt}",
        "campuses: {antwerp: {}, deurne: {}}",
        "segments:",
        "  mgmt: {subnet: 10.99.0.0/16, zone: management}",
    ]
    segs = []
    for c, (campus, core) in enumerate((("antwerp", "ant-core"), ("deurne", "deu-core"))):
        for s in range(5):
            name = f"{campus[:3]}-seg{s}"
            net = f"10.{10 + c * 10}.{s + 1}"
            segs.append((name, campus, net))
            out.append(
                f"  {name}: {{campus: {campus}, subnet: {net}.0/24, zone: servers, gateway: {core},"
                f" interface: seg{s}, gateway_address: {net}.1}}"
            )
    out += [
        "devices:",
        "  ant-core: {campus: antwerp, platform: linux, address: 10.99.1.1, role: core, credentials: lab}",
        "  ant-fw: {campus: antwerp, platform: linux, address: 10.99.1.2, role: firewall, credentials: lab}",
        "  deu-core: {campus: deurne, platform: linux, address: 10.99.1.3, role: core, credentials: lab}",
        "links:",
        "  vendor: {kind: vendor, device: ant-fw, peer: 10.200.0.0/24, interface: vendor0, peer_address: 10.200.0.10}",
        "  internet: {kind: internet, device: ant-fw, peer: 0.0.0.0/0, interface: inet0, peer_address: 10.97.0.10}",
        "hosts:",
    ]
    previous: dict[str, str] = {}
    for i in range(hosts):
        name, campus, net = segs[i % len(segs)]
        n = i // len(segs)
        host = f"{name}-h{n}"
        dep = f", depends_on: [{previous[name]}]" if name in previous else ""
        out.append(
            f"  {host}: {{campus: {campus}, segment: {name}, address: {net}.{10 + n},"
            f" management_address: 10.99.{100 + i // 200}.{10 + i % 200}, tier: {n}{dep},"
            f" services: [ssh], power: lab, credentials: lab}}"
        )
        previous[name] = host
    out += [
        "credentials:",
        "  lab: {username: root, key_file: /var/lib/orchestrator-lab/ssh/id_ed25519,"
        " known_hosts: /var/lib/orchestrator-lab/ssh/known_hosts}",
        "lab:",
        "  management_gateway: 10.99.0.1",
        "  backbone: 10.98.0.0/24",
        "  peers: {vendor: {management_address: 10.99.9.10}, internet: {management_address: 10.99.9.20}}",
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(generate(int(sys.argv[1]) if len(sys.argv) > 1 else 100))

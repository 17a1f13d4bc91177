"""Generate large, valid inventories for benchmarks and tests (deterministic: same arguments, same bytes).

The shape follows what the benchmark needs (issue 6): campuses named like the example hospital, each
with a core router and a firewall (both platforms: ``cisco_ios`` and ``linux``), hosts spread over
segments of at most 200 hosts, a dependency chain exactly ``depth`` deep with ``tier`` equal to the
level in it, an emergency-department segment per campus that forms one island (its hosts depend only
on one another, so validation stays warning-free), and the first campus's firewall carrying a vendor
and an internet link.

Without ``lab`` the result is a plain inventory (5,000 hosts in well under a second). With ``lab`` it
is shaped like ``inventories/lab.yml`` so that ``orchestrator lab up`` can build it: a ``lab:`` block
with a peer per link, ``power: lab`` on every host, the lab's credentials, interface names of at most
15 characters and only services that exist in the lab image (or stubs with a port).

    python bench/generate_inventory.py --hosts 100 --lab -o /tmp/lab-100.yml
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CAMPUS_NAMES = ("antwerp", "deurne")
CAMPUS_PREFIXES = ("ant", "deu")
MAX_CAMPUSES = 8  # campus i uses 10.(10 + 10 i).0.0/16; 10.98 and 10.99 are the backbone and management
ZONES = ("servers", "database", "clinical", "imaging", "laboratory", "admin", "printing", "backup")
SEGMENT_SHORT = {
    "servers": "srv", "database": "db", "clinical": "clin", "imaging": "img", "laboratory": "lab",
    "admin": "adm", "printing": "prn", "backup": "bak",
}
HOSTS_PER_SEGMENT = 200  # addresses .10 to .209 of a /24
MIN_SEGMENTS = 4  # ordinary segments per campus, besides the emergency department
ED_SHARE = 10  # one host in ten (per campus) lives in the emergency department
MAX_DEPS = 3
MGMT_FIRST_OCTET = 16  # hosts' management addresses start at 10.99.16.10
MGMT_PER_OCTET = 200
MAX_HOSTS = (256 - MGMT_FIRST_OCTET) * MGMT_PER_OCTET

ROLES = ("infrastructure", "database", "application", "frontend")  # by dependency level (last repeats)

# Plain inventories: service names as a real campus would list them.
PLAIN_SERVICES = {"infrastructure": ("sshd",), "database": ("postgresql",), "application": ("nginx",),
                  "frontend": ("nginx",)}
# Lab inventories, as inventories/lab.yml does it: `ssh` (in the lab image) plus a stand-in unit the
# lab creates, answering HTTP on the port in vars.service_ports, so health checks see an application.
LAB_SERVICES = {"infrastructure": ("ssh", "directory"), "database": ("ssh", "db"), "application": ("ssh", "app"),
                "frontend": ("ssh",)}
LAB_STUB_PORTS = {"directory": 8389, "db": 5432, "app": 8080}

LAB_CREDENTIALS = {
    # As inventories/lab.yml: the lab's own key pair and pinned host keys, written at `lab up`. Linux
    # machines log in as root; FRR routers (platform cisco_ios) as netops, whose login shell is vtysh.
    "lab": "{username: root, key_file: /var/lib/orchestrator-lab/ssh/id_ed25519, "
           "known_hosts: /var/lib/orchestrator-lab/ssh/known_hosts}",
    "netops": "{username: netops, key_file: /var/lib/orchestrator-lab/ssh/id_ed25519, "
              "known_hosts: /var/lib/orchestrator-lab/ssh/known_hosts}",
}
PLAIN_CREDENTIALS = {
    "servers": "{username: orchestrator, key_file: ~/.ssh/orchestrator_servers, "
               "known_hosts: ~/.config/orchestrator/known_hosts}",
    "network": "{username: svc-orchestrator, key_file: ~/.ssh/orchestrator_network, "
               "known_hosts: ~/.config/orchestrator/known_hosts}",
}


@dataclass
class _Host:
    name: str
    campus: str
    segment: str
    address: str
    management_address: str
    level: int
    ed: bool
    depends_on: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Segment:
    name: str
    campus: str
    subnet: str
    vlan: int
    zone: str
    gateway: str
    third_octet: int
    first_octet_pair: str  # "10.10"


def _campus(i: int) -> tuple[str, str]:
    if i < len(CAMPUS_NAMES):
        return CAMPUS_NAMES[i], CAMPUS_PREFIXES[i]
    return f"campus{i + 1}", f"c{i + 1}"


def _levels(count: int, depth: int) -> list[int]:
    """``count`` levels in 0..depth-1, non-decreasing, every level used when count allows."""
    used = min(depth, count)
    return [j * used // count for j in range(count)] if count else []


def _pick_dependencies(rng: random.Random, hosts: Sequence[_Host], pools: dict[int, list[_Host]]) -> None:
    """Each host at level L > 0 needs one host at level L-1 (so the chain is exactly as deep as the
    levels) and maybe more from any lower level of the same pool."""
    for host in hosts:
        if host.level == 0:
            continue
        below = pools[host.level - 1]
        first = below[rng.randrange(len(below))]
        deps = [first.name]
        lower = [h for lv in range(host.level) for h in pools[lv]] if rng.random() < 0.5 else below
        for _ in range(rng.randrange(MAX_DEPS)):
            extra = lower[rng.randrange(len(lower))]
            if extra.name not in deps:
                deps.append(extra.name)
        host.depends_on = deps


def _place(segments: Sequence[_Segment], levels: Sequence[int], mgmt_address: Callable[[], str], *,
           ed: bool) -> list[_Host]:
    """Hosts at ``levels``, dealt round-robin over ``segments`` (so each segment mixes levels)."""
    placed: list[_Host] = []
    filled = [0] * len(segments)
    for j, level in enumerate(levels):
        s = j % len(segments)
        seg = segments[s]
        k = filled[s]
        filled[s] += 1
        placed.append(_Host(f"{seg.name}-{k + 1}", seg.campus, seg.name,
                            f"{seg.first_octet_pair}.{seg.third_octet}.{10 + k}", mgmt_address(), level, ed=ed))
    return placed


def _pools(hosts: Sequence[_Host]) -> dict[int, list[_Host]]:
    pools: dict[int, list[_Host]] = {}
    for h in hosts:
        pools.setdefault(h.level, []).append(h)
    return pools


def _flow_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(items) + "]"


def generate(  # noqa: C901 - one straight pass writing each inventory section in file order; its branches are the options
    hosts: int, *, campuses: int = 2, depth: int = 4, seed: int = 0, lab: bool = False
) -> str:
    """Inventory YAML text with ``hosts`` hosts over ``campuses`` campuses, dependency depth ``depth``.

    Deterministic: the same arguments give the same text. Raises ValueError for sizes it cannot
    address (more than MAX_HOSTS hosts, more than MAX_CAMPUSES campuses, depth below 1).
    """
    if hosts < 1 or hosts > MAX_HOSTS:
        raise ValueError(f"hosts must be between 1 and {MAX_HOSTS}, not {hosts}")
    if campuses < 1 or campuses > MAX_CAMPUSES:
        raise ValueError(f"campuses must be between 1 and {MAX_CAMPUSES}, not {campuses}")
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    rng = random.Random(seed)

    segments: list[_Segment] = []
    devices: list[str] = []
    all_hosts: list[_Host] = []
    ed_segments: list[str] = []
    mgmt_index = 0
    host_cred = "lab" if lab else "servers"

    def mgmt_address() -> str:
        nonlocal mgmt_index
        octet, last = divmod(mgmt_index, MGMT_PER_OCTET)
        mgmt_index += 1
        return f"10.99.{MGMT_FIRST_OCTET + octet}.{10 + last}"

    for c in range(campuses):
        campus, prefix = _campus(c)
        net = f"10.{10 + 10 * c}"
        core, firewall = f"{prefix}-core", f"{prefix}-fw"
        # Both platforms in both roles: even campuses route on cisco_ios and filter on linux (the
        # firewall carrying the links is real nftables in the lab); odd campuses the other way round.
        core_platform, fw_platform = ("cisco_ios", "linux") if c % 2 == 0 else ("linux", "cisco_ios")
        dev_cred = {"cisco_ios": "netops" if lab else "network", "linux": "lab" if lab else "network"}
        devices.append(f"  {core}: {{campus: {campus}, platform: {core_platform}, address: 10.99.1.{1 + 2 * c}, "
                       f"role: core, credentials: {dev_cred[core_platform]}}}")
        devices.append(f"  {firewall}: {{campus: {campus}, platform: {fw_platform}, "
                       f"address: 10.99.1.{2 + 2 * c}, role: firewall, credentials: {dev_cred[fw_platform]}}}")

        count = hosts // campuses + (1 if c < hosts % campuses else 0)
        n_ed = max(count // ED_SHARE, 1 if count > 1 else 0)
        n_plain = count - n_ed
        n_seg = max(MIN_SEGMENTS, math.ceil(n_plain / HOSTS_PER_SEGMENT))
        n_ed_seg = max(1, math.ceil(n_ed / HOSTS_PER_SEGMENT))
        if n_seg + n_ed_seg > 250:
            raise ValueError(f"campus {campus} would need more than 250 segments")
        campus_segments: list[_Segment] = []
        for s in range(n_seg):
            zone = ZONES[s % len(ZONES)]
            rounds = s // len(ZONES)
            name = f"{prefix}-{SEGMENT_SHORT[zone]}" + (str(rounds + 1) if rounds else "")
            octet = s + 1
            campus_segments.append(_Segment(name, campus, f"{net}.{octet}.0/24", 100 + 400 * c + octet,
                                            zone, core, octet, net))
        # Emergency-department segments count down from .250, routed (and isolated) by the firewall.
        campus_ed = [
            _Segment(f"{prefix}-ed" + (str(e + 1) if e else ""), campus, f"{net}.{250 - e}.0/24",
                     100 + 400 * c + 250 - e, "emergency", firewall, 250 - e, net)
            for e in range(n_ed_seg)
        ]
        segments.extend(campus_segments + campus_ed)
        ed_segments.extend(seg.name for seg in campus_ed)

        plain_hosts = _place(campus_segments, _levels(n_plain, depth), mgmt_address, ed=False)
        ed_hosts = _place(campus_ed, _levels(n_ed, depth), mgmt_address, ed=True)
        _pick_dependencies(rng, plain_hosts, _pools(plain_hosts))
        _pick_dependencies(rng, ed_hosts, _pools(ed_hosts))  # kept hosts depend only on kept hosts
        all_hosts.extend(plain_hosts + ed_hosts)

    # Cross-campus dependencies, as a real site has (the second campus uses the first one's databases):
    # a few non-ED hosts of later campuses also need a host one level lower on the first campus.
    first_pools = _pools([h for h in all_hosts if h.campus == _campus(0)[0] and not h.ed])
    for host in all_hosts:
        if host.campus != _campus(0)[0] and not host.ed and host.level > 0 and rng.random() < 0.1:
            below = first_pools.get(host.level - 1)
            if below:
                extra = below[rng.randrange(len(below))].name
                if extra not in host.depends_on:
                    host.depends_on.append(extra)

    _, first_prefix = _campus(0)
    link_device = f"{first_prefix}-fw"
    lines: list[str] = [
        f"# Generated by bench/generate_inventory.py (hosts={hosts}, campuses={campuses}, depth={depth}, "
        f"seed={seed}{', lab' if lab else ''}).",
        "# Deterministic: regenerate it rather than edit it.",
        "version: 1",
        f"site: {{name: {'bench-lab' if lab else 'bench-hospital'}-{hosts}, timezone: Europe/Brussels}}",
        "management: {segment: mgmt}",
        "campuses:",
    ]
    lines += [f"  {_campus(c)[0]}: {{}}" for c in range(campuses)]
    lines += ["segments:", "  mgmt: {subnet: 10.99.0.0/16, zone: management}"]
    for seg in segments:
        lines.append(
            f"  {seg.name}: {{campus: {seg.campus}, subnet: {seg.subnet}, vlan: {seg.vlan}, zone: {seg.zone}, "
            f"gateway: {seg.gateway}, interface: vlan{seg.vlan}, "
            f"gateway_address: {seg.first_octet_pair}.{seg.third_octet}.1}}"
        )
    lines += ["devices:", *devices]
    lines += [
        "links:",
        f"  vendor-registration: {{kind: vendor, device: {link_device}, peer: 10.200.0.0/24, interface: vendor0, "
        "peer_address: 10.200.0.10, description: patient registration software provider}",
        f"  internet: {{kind: internet, device: {link_device}, peer: 0.0.0.0/0, interface: inet0, "
        "peer_address: 10.97.0.10, description: upstream ISP}",
    ]
    lines.append("hosts:")
    for h in all_hosts:
        role = ROLES[min(h.level, len(ROLES) - 1)]
        services = (LAB_SERVICES if lab else PLAIN_SERVICES)[role]
        parts = [
            f"campus: {h.campus}", f"segment: {h.segment}", f"address: {h.address}",
            f"management_address: {h.management_address}", f"role: {role}", f"tier: {h.level}",
        ]
        if h.depends_on:
            parts.append(f"depends_on: {_flow_list(h.depends_on)}")
        parts.append(f"services: {_flow_list(services)}")
        if lab:
            parts.append("power: lab")
            stubs = [f"{s}: {LAB_STUB_PORTS[s]}" for s in services if s in LAB_STUB_PORTS]
            if stubs:
                parts.append(f"vars: {{service_ports: {{{', '.join(stubs)}}}}}")
        parts.append(f"credentials: {host_cred}")
        lines.append(f"  {h.name}: {{{', '.join(parts)}}}")
    lines += [
        "islands:",
        f"  emergency-department: {{segments: {_flow_list(ed_segments)}, "
        "reason: the emergency departments keep operating at reduced capacity}",
        "credentials:",
    ]
    for name, text in (LAB_CREDENTIALS if lab else PLAIN_CREDENTIALS).items():
        lines.append(f"  {name}: {text}")
    if lab:
        lines += [
            "lab:",
            "  management_gateway: 10.99.0.1",
            "  backbone: 10.98.0.0/24",
            "  peers:",
            "    vendor-registration: {management_address: 10.99.9.10}",
            "    internet: {management_address: 10.99.9.20}",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate a deterministic inventory for benchmarks.")
    parser.add_argument("--hosts", type=int, required=True, help="number of hosts")
    parser.add_argument("--campuses", type=int, default=2, help="number of campuses (default 2)")
    parser.add_argument("--depth", type=int, default=4, help="dependency depth, also the number of tiers")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--lab", action="store_true", help="shape it for `orchestrator lab up`")
    parser.add_argument("-o", "--output", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    try:
        text = generate(args.hosts, campuses=args.campuses, depth=args.depth, seed=args.seed, lab=args.lab)
    except ValueError as exc:
        parser.error(str(exc))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

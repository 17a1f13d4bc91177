"""Hypothesis strategies: random *valid* inventories, as YAML text, and random scopes over them.

The generator builds the inventory the way an engineer writes one, then dumps it as YAML in a random
style, so the property tests go through the real loader. What it varies:

* one to three campuses; one to six data segments, each with or without a campus, on one of several
  gateway devices (devices with or without a campus); sometimes hosts on the management segment;
* hosts whose names are a random permutation (so name order never equals dependency order), a random
  DAG of ``depends_on`` (each host may depend on up to three earlier hosts) with tiers consistent by
  construction (a host's tier is at least each dependency's), optional management addresses;
* ``keep_running`` hosts and islands by segment and by host;
* links of every kind, with or without ``peer_address`` and ``interface``;
* scopes: the whole site, or any mix of campuses, segments and hosts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import strategies as st

from orchestrator.model import LinkKind, Scope

MGMT = "mgmt"
LINK_KINDS = [kind.value for kind in LinkKind]


@dataclass(frozen=True)
class GeneratedInventory:
    text: str
    data: dict[str, Any]
    campuses: tuple[str, ...]
    segments: tuple[str, ...]  # data segments, never the management one
    hosts: tuple[str, ...]


def _subset(draw: st.DrawFn, items: list[str], *, min_size: int = 0, max_size: int | None = None) -> list[str]:
    if not items:
        return []
    chosen = draw(st.lists(st.sampled_from(items), min_size=min_size, max_size=max_size, unique=True))
    return sorted(chosen)


@st.composite
def inventory_data(  # noqa: C901 - a hypothesis draw sequence: each branch is one optional inventory part
    draw: st.DrawFn, max_hosts: int = 24
) -> dict[str, Any]:
    campuses = [f"campus-{c}" for c in "abc"[: draw(st.integers(1, 3))]]

    n_devices = draw(st.integers(1, 3))
    devices: dict[str, Any] = {}
    for i in range(n_devices):
        device: dict[str, Any] = {
            "platform": draw(st.sampled_from(["linux", "cisco_ios", "arista_eos"])),
            "address": f"10.99.0.{2 + i}",
            "role": draw(st.sampled_from(["core", "firewall", "router"])),
            "credentials": "lab",
        }
        if draw(st.booleans()):
            device["campus"] = draw(st.sampled_from(campuses))
        devices[f"dev{i}"] = device
    device_names = sorted(devices)

    segments: dict[str, Any] = {MGMT: {"subnet": "10.99.0.0/16", "zone": "management"}}
    n_segments = draw(st.integers(1, 6))
    data_segments = [f"seg{i}" for i in range(n_segments)]
    for i, name in enumerate(data_segments):
        seg: dict[str, Any] = {
            "subnet": f"10.{10 + i}.0.0/24",
            "zone": draw(st.sampled_from(["servers", "clinical", "emergency", "imaging"])),
            "gateway": draw(st.sampled_from(device_names)),
        }
        if draw(st.integers(0, 3)):  # mostly on a campus, sometimes shared between campuses
            seg["campus"] = draw(st.sampled_from(campuses))
        if draw(st.booleans()):
            seg["vlan"] = 100 + i
        if draw(st.booleans()):
            seg["gateway_address"] = f"10.{10 + i}.0.1"
            seg["interface"] = f"eth{i + 1}"
        segments[name] = seg

    n_hosts = draw(st.integers(1, max_hosts))
    # names are a random permutation of the indices: name order must never equal dependency order
    numbering = draw(st.permutations(range(n_hosts)))
    names = [f"h{number:02d}" for number in numbering]
    tiers: list[int] = []
    hosts: dict[str, Any] = {}
    per_segment: dict[str, int] = {}
    for i, name in enumerate(names):
        on_mgmt = draw(st.integers(0, 9)) == 0
        seg_name = MGMT if on_mgmt else draw(st.sampled_from(data_segments))
        deps = draw(st.lists(st.integers(0, i - 1), max_size=min(3, i), unique=True)) if i else []
        floor = max((tiers[d] for d in deps), default=0)
        tier = floor + draw(st.integers(0, 1 if deps else 2))
        tiers.append(tier)
        host: dict[str, Any] = {"segment": seg_name, "credentials": "lab"}
        if on_mgmt:
            host["address"] = f"10.99.50.{10 + i}"
        else:
            k = per_segment.get(seg_name, 0)
            per_segment[seg_name] = k + 1
            host["address"] = f"10.{10 + data_segments.index(seg_name)}.0.{10 + k}"
            if draw(st.integers(0, 4)):
                host["management_address"] = f"10.99.{1 + i // 200}.{10 + i % 200}"
        seg_campus = segments[seg_name].get("campus")
        if seg_campus is not None:
            if draw(st.booleans()):
                host["campus"] = seg_campus
        elif draw(st.booleans()):
            host["campus"] = draw(st.sampled_from(campuses))
        if tier or draw(st.booleans()):
            host["tier"] = tier
        if deps:
            host["depends_on"] = [names[d] for d in deps]
        if draw(st.integers(0, 9)) == 0:
            host["keep_running"] = True
        if draw(st.integers(0, 3)) == 0:
            host["services"] = ["sshd"]
        if draw(st.integers(0, 5)) == 0:
            host["power"] = draw(st.sampled_from(["lab", "vagrant", "manual"]))  # ipmi: refused (no driver)
        hosts[name] = host

    islands: dict[str, Any] = {}
    for j in range(draw(st.integers(0, 2))):
        island: dict[str, Any] = {"reason": f"keeps operating ({j})"}
        island_segments = _subset(draw, data_segments, max_size=2)
        island_hosts = _subset(draw, names, min_size=0 if island_segments else 1, max_size=3)
        if island_segments:
            island["segments"] = island_segments
        if island_hosts:
            island["hosts"] = island_hosts
        islands[f"island-{j}"] = island

    links: dict[str, Any] = {}
    for j in range(draw(st.integers(0, 5))):
        link: dict[str, Any] = {
            "kind": draw(st.sampled_from(LINK_KINDS)),
            "device": draw(st.sampled_from(device_names)),
            "peer": f"10.{200 + j}.0.0/24",
        }
        if draw(st.booleans()):
            link["peer_address"] = f"10.{200 + j}.0.1"
        if draw(st.booleans()):
            link["interface"] = f"wan{j}"
        links[f"link-{j}"] = link

    return {
        "version": 1,
        "site": {"name": "generated-hospital", "timezone": "Europe/Brussels"},
        "management": {"segment": MGMT},
        "campuses": {c: {} for c in campuses},
        "segments": segments,
        "devices": devices,
        "links": links,
        "hosts": hosts,
        "islands": islands,
        "credentials": {"lab": {"username": "root", "key_file": "~/.ssh/orchestrator_lab"}},
    }


def dump(data: dict[str, Any], *, flow: bool | None = False, sort_keys: bool = True) -> str:
    return yaml.safe_dump(data, default_flow_style=flow, sort_keys=sort_keys, width=100)


@st.composite
def inventories(draw: st.DrawFn, max_hosts: int = 24) -> GeneratedInventory:
    data = draw(inventory_data(max_hosts=max_hosts))
    text = dump(data, flow=draw(st.sampled_from([False, None])), sort_keys=draw(st.booleans()))
    return GeneratedInventory(
        text=text,
        data=data,
        campuses=tuple(sorted(data["campuses"])),
        segments=tuple(sorted(s for s in data["segments"] if s != MGMT)),
        hosts=tuple(sorted(data["hosts"])),
    )


@st.composite
def scopes(draw: st.DrawFn, gen: GeneratedInventory) -> Scope:
    if draw(st.integers(0, 3)) == 0:
        return Scope()
    campuses = _subset(draw, list(gen.campuses), max_size=2)
    segments = _subset(draw, list(gen.segments), max_size=3)
    hosts = _subset(draw, list(gen.hosts), max_size=4)
    return Scope(campuses=tuple(campuses), segments=tuple(segments), hosts=tuple(hosts))


@st.composite
def scoped_inventories(draw: st.DrawFn, max_hosts: int = 24) -> tuple[GeneratedInventory, Scope]:
    gen = draw(inventories(max_hosts=max_hosts))
    return gen, draw(scopes(gen))

"""YAML inventory -> typed Inventory, validated once, at the edge.

Every problem is collected (never just the first) with the file, the line, the key path, what is wrong
and how to fix it. Structure is checked against the JSON Schema that ships with the package
(``orchestrator/schema/inventory.schema.json``, also printed by ``orchestrator inventory schema``);
references, addresses, dependency cycles and tiers are checked here. Duplicate keys are errors:
a YAML loader would silently keep the last one, a safety tool must not.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import yaml

from orchestrator.errors import InventoryError, Problem
from orchestrator.gcutil import gc_paused
from orchestrator.model import (
    Campus,
    Credential,
    Device,
    Host,
    Inventory,
    Island,
    LabPeer,
    LabSettings,
    Link,
    LinkKind,
    Segment,
    Site,
)

KeyPath = tuple[str | int, ...]


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


@cache
def inventory_schema() -> dict[str, Any]:
    text = resources.files("orchestrator").joinpath("schema/inventory.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


# --------------------------------------------------------------------------------------------
# YAML with line numbers and duplicate-key detection
# --------------------------------------------------------------------------------------------


@dataclass
class _Parsed:
    data: Any
    lines: dict[KeyPath, int]
    duplicates: list[tuple[KeyPath, int, int]]  # path, line of the repeat, line of the first


class _Builder:
    """Turns a composed YAML node tree into plain data while recording each key's line."""

    def __init__(self) -> None:
        self.lines: dict[KeyPath, int] = {}
        self.duplicates: list[tuple[KeyPath, int, int]] = []
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self._constructor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | bool | float) and key is not None:
                    key = str(key)
                skey = key if isinstance(key, str) else str(key)
                child: KeyPath = (*path, skey)
                line = key_node.start_mark.line + 1
                if skey in out:
                    self.duplicates.append((child, line, self.lines.get(child, 0)))
                    continue
                self.lines[child] = line
                out[skey] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._constructor.construct_object(node, deep=True)


class _DuplicateKeyError(Exception):
    """A mapping repeats a key: the fast path gives way to the one that records lines."""


_CLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster


_STR_TAG = "tag:yaml.org,2002:str"


def _plain(node: yaml.Node, constructor: yaml.constructor.SafeConstructor) -> Any:
    """Plain data from a composed node, with no line map: what ``_Builder`` makes, keys made strings
    the same way. Strings (nearly every scalar here) are taken as they are; anything else goes
    through PyYAML's constructor. A repeated key raises, so that the file takes the slow path and
    its duplicate is reported with its line."""
    if isinstance(node, yaml.ScalarNode):
        return node.value if node.tag == _STR_TAG else constructor.construct_object(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, constructor) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG:
                key = key_node.value
            else:
                key = constructor.construct_object(key_node, deep=True)
            skey = key if isinstance(key, str) else str(key)
            if skey in out:
                raise _DuplicateKeyError(skey)
            out[skey] = _plain(value_node, constructor)
        return out
    return constructor.construct_object(node, deep=True)


def _parse_yaml_fast(text: str) -> Any | None:
    """The data of a well-formed file without duplicate keys, or None (then use ``_parse_yaml``)."""
    try:
        root = yaml.compose(text, Loader=_CLoader)
        return None if root is None else _plain(root, yaml.SafeLoader(""))
    except (yaml.YAMLError, _DuplicateKeyError, RecursionError):
        return None


def _parse_yaml(text: str, file: str) -> _Parsed:
    try:
        root = yaml.compose(text, Loader=_CLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        raise InventoryError(
            [Problem(file, line, "(yaml)", f"not valid YAML: {exc.problem}",
                     "check indentation and quoting around this line")]
        ) from None
    except yaml.YAMLError as exc:
        raise InventoryError([Problem(file, None, "(yaml)", f"not valid YAML: {exc}", "check the syntax")]) from None
    if root is None:
        raise InventoryError([Problem(file, 1, "(top level)", "the file is empty",
                                      "start from inventories/example-hospital.yml")])
    builder = _Builder()
    data = builder.build(root, ())
    return _Parsed(data, builder.lines, builder.duplicates)


# --------------------------------------------------------------------------------------------
# Problem collection
# --------------------------------------------------------------------------------------------


class _Problems:
    """Problems found, each with its line. The line map is built only when a first problem needs it
    (``lines`` may be a function producing it): a clean file never pays for it."""

    def __init__(self, file: str, lines: Mapping[KeyPath, int] | Callable[[], Mapping[KeyPath, int]]) -> None:
        self.file = file
        self._lines = lines
        self.items: list[Problem] = []

    @property
    def lines(self) -> Mapping[KeyPath, int]:
        if callable(self._lines):
            self._lines = self._lines()
        return self._lines

    def line_of(self, path: KeyPath) -> int | None:
        lines = self.lines
        probe = path
        while probe:
            if probe in lines:
                return lines[probe]
            probe = probe[:-1]
        return lines.get((), None)

    def add(self, path: KeyPath, message: str, hint: str, severity: str = "error") -> None:
        self.items.append(Problem(self.file, self.line_of(path), format_path(path), message, hint, severity))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "error"]


def _schema_at(schema: Mapping[str, Any], path: Iterable[Any]) -> Mapping[str, Any]:
    node: Mapping[str, Any] = schema
    for part in path:
        if isinstance(node.get("properties"), dict) and part in node["properties"]:
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif isinstance(node.get("items"), dict):
            node = node["items"]
        else:
            return {}
    return node


@cache
def _fast_validator() -> Callable[[Any], Any]:
    compiled: Callable[[Any], Any] = fastjsonschema.compile(inventory_schema())
    return compiled


def _check_schema(data: Any, problems: _Problems) -> None:
    """fastjsonschema answers "valid?" quickly (a 5,000-host inventory in milliseconds); only an
    invalid inventory pays for jsonschema's full walk, which lists every error with its path."""
    try:
        _fast_validator()(data)
        return
    except fastjsonschema.JsonSchemaException:
        pass
    schema = inventory_schema()
    validator = jsonschema.Draft202012Validator(schema)
    for err in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        path: KeyPath = tuple(err.absolute_path)
        kind = "propertyNames" if "propertyNames" in err.relative_schema_path else err.validator
        if kind == "additionalProperties" and isinstance(err.instance, dict):
            allowed = sorted(_schema_at(schema, path).get("properties", {}))
            for extra in sorted(set(err.instance) - set(allowed)):
                hint = f"remove it or correct its spelling; allowed keys here: {', '.join(allowed)}"
                if extra in ("password", "secret", "private_key", "token"):
                    hint = ("secrets never go in the inventory: reference them with password_env "
                            "(an environment variable) or key_file")
                problems.add((*path, extra), f"unknown key '{extra}'", hint)
        elif kind == "required":
            missing = str(err.message).split("'")[1] if "'" in err.message else err.message
            problems.add(path, f"missing required key '{missing}'", f"add '{missing}:' here")
        elif kind == "propertyNames":
            bad = err.instance
            problems.add((*path, str(bad)), f"name '{bad}' is not allowed",
                         "names use lowercase letters, digits and '-', starting with a letter or digit")
        elif kind == "enum":
            allowed_values = ", ".join(str(v) for v in err.validator_value)
            problems.add(path, f"'{err.instance}' is not one of the allowed values",
                         f"use one of: {allowed_values}")
        elif kind == "const":
            problems.add(path, f"must be {err.validator_value!r}, found {err.instance!r}",
                         f"set it to {err.validator_value!r}")
        elif kind == "type":
            problems.add(path, f"expected {err.validator_value}, found {type(err.instance).__name__} "
                         f"{err.instance!r}", f"write a {err.validator_value} here")
        elif kind == "pattern":
            problems.add(path, f"'{err.instance}' does not match the expected form ({err.validator_value})",
                         "names use lowercase letters, digits and '-'; paths start with '/'")
        elif kind == "uniqueItems":
            problems.add(path, "lists the same entry twice", "remove the repeated entry")
        else:
            problems.add(path, err.message, "see `orchestrator inventory schema` for the format")


# --------------------------------------------------------------------------------------------
# Cross-reference and semantic checks
# --------------------------------------------------------------------------------------------


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")


@functools.lru_cache(maxsize=65536)
def ipv4(text: str) -> ipaddress.IPv4Address:
    """``ipaddress.IPv4Address(text)``, 5x faster for plain dotted quads (the usual case) and
    remembered: every address is read twice (checks, then the model). Anything else, including
    what ipaddress refuses (leading zeros, out-of-range octets), goes to ipaddress itself."""
    if _DOTTED_QUAD.match(text):
        a, b, c, d = text.split(".")
        return ipaddress.IPv4Address((int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d))
    return ipaddress.IPv4Address(text)


def _address(value: Any, path: KeyPath, problems: _Problems) -> ipaddress.IPv4Address | None:
    try:
        return ipv4(str(value))
    except ValueError:
        problems.add(path, f"'{value}' is not an IPv4 address", "write four numbers 0-255, e.g. 10.10.2.10")
        return None


def _network(value: Any, path: KeyPath, problems: _Problems) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        hint = "write the network in CIDR form with host bits zero, e.g. 10.10.2.0/24"
        with contextlib.suppress(ValueError):
            hint = f"did you mean {ipaddress.IPv4Network(str(value), strict=False)}?"
        problems.add(path, f"'{value}' is not an IPv4 network ({exc})", hint)
        return None


def _ref(value: Any, kind: str, known: Mapping[str, Any], path: KeyPath, problems: _Problems) -> bool:
    if value is None or value in known:
        return True
    choices = ", ".join(sorted(known)) or "(none defined)"
    section = "campuses" if kind == "campus" else f"{kind}s"
    problems.add(path, f"unknown {kind} '{value}'", f"define it under '{section}:' or use one of: {choices}")
    return False


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node depending on itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    cycles.append(sorted(component))
    return sorted(cycles)


def _check_semantics(data: Mapping[str, Any], problems: _Problems, strict: bool) -> None:
    campuses = data.get("campuses") or {}
    segments = data.get("segments") or {}
    devices = data.get("devices") or {}
    links = data.get("links") or {}
    hosts = data.get("hosts") or {}
    islands = data.get("islands") or {}
    credentials = data.get("credentials") or {}

    mgmt_name = (data.get("management") or {}).get("segment")
    if mgmt_name is not None and mgmt_name not in segments:
        problems.add(("management", "segment"), f"management segment '{mgmt_name}' is not defined",
                     f"add it under 'segments:' or use one of: {', '.join(sorted(segments))}")

    subnets: dict[str, ipaddress.IPv4Network] = {}
    for name, seg in segments.items():
        base: KeyPath = ("segments", name)
        subnet = _network(seg.get("subnet"), (*base, "subnet"), problems) if "subnet" in seg else None
        if subnet is not None:
            subnets[name] = subnet
        _ref(seg.get("campus"), "campus", campuses, (*base, "campus"), problems)
        _ref(seg.get("gateway"), "device", devices, (*base, "gateway"), problems)
        if name != mgmt_name and seg.get("gateway") is None:
            problems.add(base, "segment has no gateway, so nothing can isolate it",
                         "add 'gateway: DEVICE' naming the router or firewall that routes it")
        if name == mgmt_name and seg.get("gateway") is not None:
            problems.add((*base, "gateway"), "the management segment is never isolated; a gateway here is unused",
                         "remove the gateway from the management segment", "warning")
        if "gateway_address" in seg:
            gw = _address(seg["gateway_address"], (*base, "gateway_address"), problems)
            if gw is not None and subnet is not None and gw not in subnet:
                problems.add((*base, "gateway_address"), f"{gw} is outside the segment's subnet {subnet}",
                             f"use an address inside {subnet}")
    names_seen = sorted(subnets.items(), key=lambda kv: kv[0])
    for i, (a_name, a_net) in enumerate(names_seen):
        for b_name, b_net in names_seen[i + 1:]:
            if a_net.overlaps(b_net):
                problems.add(("segments", b_name, "subnet"),
                             f"subnet {b_net} overlaps segment '{a_name}' ({a_net})",
                             "give every segment its own, non-overlapping subnet")
    mgmt_net = subnets.get(mgmt_name) if isinstance(mgmt_name, str) else None

    used_addresses: dict[ipaddress.IPv4Address, str] = {}

    def claim(addr: ipaddress.IPv4Address | None, owner: str, path: KeyPath) -> None:
        if addr is None:
            return
        if addr in used_addresses:
            problems.add(path, f"address {addr} is already used by {used_addresses[addr]}",
                         "give every host, device and peer its own address")
        else:
            used_addresses[addr] = owner

    for name, cred in credentials.items():
        if not cred.get("key_file") and not cred.get("password_env"):
            problems.add(("credentials", name), "credential has neither key_file nor password_env",
                         "add 'key_file: PATH' (preferred) or 'password_env: ENV_VAR_NAME'")

    for name, dev in devices.items():
        base = ("devices", name)
        _ref(dev.get("campus"), "campus", campuses, (*base, "campus"), problems)
        _ref(dev.get("credentials"), "credential", credentials, (*base, "credentials"), problems)
        if "address" in dev:
            addr = _address(dev["address"], (*base, "address"), problems)
            claim(addr, f"device {name}", (*base, "address"))

    for name, link in links.items():
        base = ("links", name)
        _ref(link.get("device"), "device", devices, (*base, "device"), problems)
        peer = _network(link.get("peer"), (*base, "peer"), problems) if "peer" in link else None
        if "peer_address" in link:
            paddr = _address(link["peer_address"], (*base, "peer_address"), problems)
            if paddr is not None and peer is not None and paddr not in peer:
                problems.add((*base, "peer_address"), f"{paddr} is outside the link's peer network {peer}",
                             f"use an address inside {peer}")

    for name, host in hosts.items():
        base = ("hosts", name)
        _ref(host.get("campus"), "campus", campuses, (*base, "campus"), problems)
        _ref(host.get("credentials"), "credential", credentials, (*base, "credentials"), problems)
        seg_name = host.get("segment")
        seg_ok = _ref(seg_name, "segment", segments, (*base, "segment"), problems)
        if seg_ok and seg_name is not None:
            seg = segments[seg_name]
            if host.get("campus") and seg.get("campus") and host["campus"] != seg["campus"]:
                problems.add((*base, "campus"),
                             f"host is on campus '{host['campus']}' but its segment '{seg_name}' is on "
                             f"'{seg['campus']}'", "make the host's campus match its segment's campus")
        addr = _address(host["address"], (*base, "address"), problems) if "address" in host else None
        if addr is not None and seg_name in subnets and addr not in subnets[seg_name]:
            problems.add((*base, "address"), f"{addr} is outside segment '{seg_name}' ({subnets[seg_name]})",
                         f"use an address inside {subnets[seg_name]} or move the host to the right segment")
        if "management_address" in host:
            maddr = _address(host["management_address"], (*base, "management_address"), problems)
            if maddr is not None and mgmt_net is not None and maddr not in mgmt_net:
                problems.add((*base, "management_address"),
                             f"{maddr} is outside the management segment ({mgmt_net})",
                             f"use an address inside {mgmt_net}")
            claim(maddr, f"host {name} (management)", (*base, "management_address"))
            claim(addr, f"host {name}", (*base, "address"))
        else:
            claim(addr, f"host {name}", (*base, "address"))
            if seg_name != mgmt_name:
                problems.add(base, "no management_address: once its segment is isolated the orchestrator "
                             "cannot reach this host to verify it", "add 'management_address:' on the "
                             "management segment", "warning")
        for i, dep in enumerate(host.get("depends_on") or []):
            if dep == name:
                problems.add((*base, "depends_on", i), "host depends on itself", "remove it from depends_on")
            elif _ref(dep, "host", hosts, (*base, "depends_on", i), problems):
                dep_tier = int(hosts[dep].get("tier", 0) or 0)
                tier = int(host.get("tier", 0) or 0)
                if isinstance(hosts[dep].get("tier", 0), int) and isinstance(host.get("tier", 0), int) \
                        and tier < dep_tier:
                    problems.add((*base, "tier"),
                                 f"tier {tier} is lower than tier {dep_tier} of '{dep}', which it depends on",
                                 f"set tier to {dep_tier} or more, or lower '{dep}''s tier")

    graph = {name: [d for d in (h.get("depends_on") or []) if d != name] for name, h in hosts.items()}
    for cycle in find_cycles(graph):
        problems.add(("hosts", cycle[0], "depends_on"),
                     f"dependency cycle between hosts {', '.join(cycle)}",
                     "break the cycle: a host cannot need, directly or through others, a host that needs it")

    for name, island in islands.items():
        base = ("islands", name)
        for i, seg_name in enumerate(island.get("segments") or []):
            _ref(seg_name, "segment", segments, (*base, "segments", i), problems)
            if seg_name == mgmt_name:
                problems.add((*base, "segments", i), "the management segment cannot be an island",
                             "remove it: management is never isolated nor powered off anyway", "warning")
        for i, host_name in enumerate(island.get("hosts") or []):
            _ref(host_name, "host", hosts, (*base, "hosts", i), problems)
        if not island.get("segments") and not island.get("hosts"):
            problems.add(base, "island has no segments and no hosts", "add 'segments: [...]' or 'hosts: [...]'")

    kept: set[str] = set()
    for name, host in hosts.items():
        if host.get("keep_running") is True:
            kept.add(name)
    for island in islands.values():
        for name, host in hosts.items():
            if name in (island.get("hosts") or []) or host.get("segment") in (island.get("segments") or []):
                kept.add(name)
    for name in sorted(kept):
        for i, dep in enumerate(hosts[name].get("depends_on") or []):
            if dep in hosts and dep not in kept:
                problems.add(("hosts", name, "depends_on", i),
                             f"kept host '{name}' depends on '{dep}', which a shutdown will power off",
                             f"keep '{dep}' running too (keep_running: true or add it to the island), "
                             "or accept that it runs degraded", "error" if strict else "warning")

    lab = data.get("lab")
    if isinstance(lab, dict):
        if "management_gateway" in lab:
            gw = _address(lab["management_gateway"], ("lab", "management_gateway"), problems)
            if gw is not None and mgmt_net is not None and gw not in mgmt_net:
                problems.add(("lab", "management_gateway"), f"{gw} is outside the management segment",
                             f"use an address inside {mgmt_net}")
            claim(gw, "the lab's management gateway", ("lab", "management_gateway"))
        if "backbone" in lab:
            backbone = _network(lab["backbone"], ("lab", "backbone"), problems)
            for seg_name, subnet in subnets.items():
                if backbone is not None and backbone.overlaps(subnet):
                    problems.add(("lab", "backbone"), f"backbone {backbone} overlaps segment '{seg_name}'",
                                 "pick a backbone range no segment uses")
        for name, peer in (lab.get("peers") or {}).items():
            base = ("lab", "peers", name)
            _ref(name, "link", links, base, problems)
            if name in links and not links[name].get("peer_address"):
                problems.add(base, f"link '{name}' has no peer_address for its lab peer",
                             f"add 'peer_address:' to links.{name}")
            if "management_address" in peer:
                addr = _address(peer["management_address"], (*base, "management_address"), problems)
                claim(addr, f"lab peer {name}", (*base, "management_address"))


# --------------------------------------------------------------------------------------------
# Building the model
# --------------------------------------------------------------------------------------------


def _build(data: Mapping[str, Any], path: str, sha256: str) -> Inventory:
    def addr(value: Any) -> ipaddress.IPv4Address:
        return ipv4(str(value))

    def opt_addr(value: Any) -> ipaddress.IPv4Address | None:
        return None if value is None else addr(value)

    site_data = data["site"]
    segments = {
        name: Segment(
            name=name, subnet=ipaddress.IPv4Network(str(s["subnet"])), zone=str(s["zone"]),
            campus=s.get("campus"), vlan=s.get("vlan"), gateway=s.get("gateway"),
            interface=s.get("interface"), gateway_address=opt_addr(s.get("gateway_address")),
        )
        for name, s in sorted((data.get("segments") or {}).items())
    }
    hosts = {}
    for name, h in sorted((data.get("hosts") or {}).items()):
        address = addr(h["address"])
        hosts[name] = Host(
            name=name, segment=h["segment"], address=address,
            management_address=opt_addr(h.get("management_address")) or address,
            credentials=h["credentials"], tier=int(h.get("tier", 0)),
            campus=h.get("campus") or segments[h["segment"]].campus, role=str(h.get("role", "")),
            depends_on=tuple(h.get("depends_on") or ()), services=tuple(h.get("services") or ()),
            keep_running=bool(h.get("keep_running", False)), power=h.get("power"),
            integrity=tuple(h.get("integrity") or ()), vars=dict(h.get("vars") or {}),
        )
    lab_data = data.get("lab")
    lab = None
    if lab_data:
        lab = LabSettings(
            management_gateway=addr(lab_data["management_gateway"]),
            backbone=ipaddress.IPv4Network(str(lab_data["backbone"])),
            peers={n: LabPeer(link=n, management_address=addr(p["management_address"]))
                   for n, p in sorted((lab_data.get("peers") or {}).items())},
        )
    return Inventory(
        path=path,
        sha256=sha256,
        site=Site(name=site_data["name"], timezone=site_data.get("timezone", "UTC")),
        management_segment=data["management"]["segment"],
        campuses={n: Campus(n, str((c or {}).get("description", "")))
                  for n, c in sorted((data.get("campuses") or {}).items())},
        segments=segments,
        devices={
            n: Device(name=n, platform=d["platform"], address=addr(d["address"]), role=d["role"],
                      credentials=d["credentials"], campus=d.get("campus"), vars=dict(d.get("vars") or {}))
            for n, d in sorted((data.get("devices") or {}).items())
        },
        links={
            n: Link(name=n, kind=LinkKind(k["kind"]), device=k["device"],
                    peer=ipaddress.IPv4Network(str(k["peer"])), description=str(k.get("description", "")),
                    interface=k.get("interface"), peer_address=opt_addr(k.get("peer_address")))
            for n, k in sorted((data.get("links") or {}).items())
        },
        hosts=hosts,
        islands={
            n: Island(name=n, reason=str(i["reason"]), segments=tuple(i.get("segments") or ()),
                      hosts=tuple(i.get("hosts") or ()))
            for n, i in sorted((data.get("islands") or {}).items())
        },
        credentials={
            n: Credential(name=n, username=str(c["username"]), key_file=c.get("key_file"),
                          password_env=c.get("password_env"), known_hosts=c.get("known_hosts"),
                          connect_timeout_s=(float(c["connect_timeout_s"]) if c.get("connect_timeout_s") is not None
                                             else None))
            for n, c in sorted((data.get("credentials") or {}).items())
        },
        version=int(data["version"]),
        lab=lab,
    )


@dataclass(frozen=True)
class ValidationResult:
    inventory: Inventory
    warnings: tuple[Problem, ...]


def validate_text(text: str, file: str, *, strict: bool = False) -> ValidationResult:
    """Validate inventory text. Raises InventoryError with every problem; returns the model and warnings."""
    with gc_paused():
        return _validate_text(text, file, strict)


def _validate_text(text: str, file: str, strict: bool) -> ValidationResult:
    fast = _parse_yaml_fast(text)
    if isinstance(fast, dict):
        # Lines are looked up only if something is wrong: then the text is parsed again, with marks.
        parsed = _Parsed(fast, {}, [])
        problems = _Problems(file, lambda: _parse_yaml(text, file).lines)
    else:
        parsed = _parse_yaml(text, file)
        problems = _Problems(file, parsed.lines)
    for path, line, first in parsed.duplicates:
        problems.items.append(Problem(
            file, line, format_path(path),
            f"duplicate key '{path[-1]}' (first defined on line {first})",
            "remove or rename one of them: YAML would silently keep only the last one",
        ))
    if not isinstance(parsed.data, dict):
        problems.add((), "the top level must be a mapping of sections", "start from inventories/example-hospital.yml")
        raise InventoryError(problems.items)
    _check_schema(parsed.data, problems)
    structurally_sound = not problems.errors
    try:
        _check_semantics(parsed.data, problems, strict)
    except (AttributeError, KeyError, TypeError, ValueError):
        # malformed structure already reported by the schema check; report what could be checked
        if structurally_sound:
            raise
    problems.items.sort(key=lambda p: (p.line or 0, p.key))
    if problems.errors:
        raise InventoryError(problems.items)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    inventory = _build(parsed.data, file, sha)
    return ValidationResult(inventory, tuple(problems.items))


def validate_file(path: str | Path, *, strict: bool = False) -> ValidationResult:
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InventoryError([Problem(file, None, "(file)", f"cannot read the inventory: {exc.strerror}",
                                      "check the path")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InventoryError([Problem(file, None, "(file)", "not UTF-8 text", "save the file as UTF-8")]) from None
    return validate_text(text, file, strict=strict)


def load_inventory(path: str | Path, *, strict: bool = False) -> Inventory:
    return validate_file(path, strict=strict).inventory


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

"""Cross-reference and semantic checks of the inventory data, after the schema check.

References (every name a key points to exists), addresses (each parses, lies in its network, and
belongs to one host, device or peer only), dependency cycles and tiers, what kept hosts need, the lab
block. Values that reach hosts and devices are checked as they will be used: host ``vars`` never set
Ansible connection variables, credential paths are plain paths, a power driver that cannot work is
refused, and (on the built model) every segment and link renders to device commands.

One function per section (``_check_segments``, ``_check_devices``, ...), called in a fixed order; they
share one :class:`AddressBook` (each segment's subnet, the owner of each address seen so far).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.inventory.problems import KeyPath, Problems
from orchestrator.model import Inventory

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


def _address(value: Any, path: KeyPath, problems: Problems) -> ipaddress.IPv4Address | None:
    try:
        return ipv4(str(value))
    except ValueError:
        problems.add(path, f"'{value}' is not an IPv4 address", "write four numbers 0-255, e.g. 10.10.2.10")
        return None


def _network(value: Any, path: KeyPath, problems: Problems) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        hint = "write the network in CIDR form with host bits zero, e.g. 10.10.2.0/24"
        with contextlib.suppress(ValueError):
            hint = f"did you mean {ipaddress.IPv4Network(str(value), strict=False)}?"
        problems.add(path, f"'{value}' is not an IPv4 network ({exc})", hint)
        return None


def _ref(value: Any, kind: str, known: Mapping[str, Any], path: KeyPath, problems: Problems) -> bool:
    if value is None or value in known:
        return True
    choices = ", ".join(k if k.isprintable() else repr(k) for k in sorted(known)) or "(none defined)"
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


# Host ``vars:`` go to Ansible as host variables. How Ansible connects (ansible_host, ansible_port,
# ansible_user, ansible_ssh_common_args, ansible_host_key_checking, ansible_become*, the interpreters
# and shells it runs, ...) is an ``ansible_`` variable: the whole prefix is refused, since the
# orchestrator alone decides how a host is reached. So are Ansible's magic variables and the
# playbook keywords that choose a connection, and the variables the export itself owns.
_ANSIBLE_MAGIC_VARS = frozenset({
    "hostvars", "groups", "group_names", "inventory_hostname", "inventory_hostname_short", "inventory_dir",
    "inventory_file", "omit", "play_hosts", "playbook_dir", "role_name", "role_names", "role_path",
    "environment", "vars", "connection", "remote_user", "port", "become", "become_user", "become_method",
    "become_flags", "become_exe", "delegate_to", "gather_facts",
})
_EXPORT_VARS = frozenset({"services", "depends_on"})


def _var_key_problem(key: str) -> tuple[str, str] | None:
    """Why a host ``vars:`` key is refused (message, hint), or None."""
    low = key.lower()
    if low.startswith("ansible_"):
        return (f"'{key}' would change how Ansible connects to or runs on this host (every ansible_* "
                "variable is a connection, privilege or interpreter setting)",
                "remove it: the address comes from management_address, the login and host-key checking "
                "from the host's credentials")
    if low in _ANSIBLE_MAGIC_VARS:
        return (f"'{key}' is an Ansible magic variable or playbook keyword",
                "rename the variable")
    if low.startswith("orchestrator_") or low in _EXPORT_VARS:
        return (f"'{key}' is set by the orchestrator from the inventory itself",
                "remove it; use the host's own keys (services:, depends_on:, tier:, ...)")
    if low.startswith("stop_host_release_"):
        return (f"'{key}' is set by the orchestrator to release each host's stop (stop-host.yml); set by "
                "hand, it would hold the playbook waiting for a release that never comes",
                "remove it")
    return None


# A credential path goes to paramiko, netmiko, OpenSSH (-i, -o UserKnownHostsFile=) and Ansible:
# what each of them reads the same way and nothing an option parser could split or expand.
_PATH_FORBIDDEN = re.compile(r"""[\s"'\\%$\x00-\x1f\x7f]""")


def _path_problem(value: str) -> tuple[str, str] | None:
    if not value:
        return "the path is empty", "write the file's path, or remove the key"
    if value.startswith("-"):
        return (f"{value!r} starts with '-', which SSH would read as an option",
                "write the file's path (relative paths are taken from the inventory's directory)")
    bad = _PATH_FORBIDDEN.search(value)
    if bad is not None:
        char = bad.group()
        what = "whitespace" if char.isspace() else f"{char!r}"
        return (f"{value!r} contains {what}, which SSH option parsing would split, quote or expand",
                "move the file to a path of letters, digits and / . _ - ~ only")
    if len(value) > 4096:
        return "the path is longer than 4096 characters", "use a shorter path"
    return None


# Power drivers that the schema names but that cannot power anything in this version.
_NO_WORKING_POWER_DRIVER: Mapping[str, str] = {
    "ipmi": "the ipmi power driver is not implemented yet: it refuses every request, so this host "
            "could never be forced off nor proven off by its power state",
}


# --------------------------------------------------------------------------------------------
# The semantic checks, one per section
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sections:
    """The inventory's sections as written (each a mapping, empty when absent)."""

    campuses: Mapping[str, Any]
    segments: Mapping[str, Any]
    devices: Mapping[str, Any]
    links: Mapping[str, Any]
    hosts: Mapping[str, Any]
    islands: Mapping[str, Any]
    credentials: Mapping[str, Any]
    power_controllers: Mapping[str, Any]
    management: Any  # the management segment's name, as written (None when absent)

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> _Sections:
        return cls(
            campuses=data.get("campuses") or {}, segments=data.get("segments") or {},
            devices=data.get("devices") or {}, links=data.get("links") or {}, hosts=data.get("hosts") or {},
            islands=data.get("islands") or {}, credentials=data.get("credentials") or {},
            power_controllers=data.get("power_controllers") or {},
            management=(data.get("management") or {}).get("segment"),
        )


@dataclass
class AddressBook:
    """What the checks have seen so far: each segment's subnet, and who owns each address."""

    problems: Problems
    management: Any  # the management segment's name, as written
    subnets: dict[str, ipaddress.IPv4Network] = field(default_factory=dict)
    owners: dict[ipaddress.IPv4Address, str] = field(default_factory=dict)

    @property
    def management_net(self) -> ipaddress.IPv4Network | None:
        return self.subnets.get(self.management) if isinstance(self.management, str) else None

    def claim(self, addr: ipaddress.IPv4Address | None, owner: str, path: KeyPath) -> None:
        """``owner`` uses ``addr``: a problem at ``path`` when another host, device or peer has it."""
        if addr is None:
            return
        if addr in self.owners:
            self.problems.add(path, f"address {addr} is already used by {self.owners[addr]}",
                              "give every host, device and peer its own address")
        else:
            self.owners[addr] = owner


def check_semantics(data: Mapping[str, Any], problems: Problems, strict: bool) -> None:
    """Every cross-reference and semantic problem of ``data`` (already checked against the schema).

    The order of the checks is the order problems on one line and key are reported in. A value of
    the wrong type (reported by the schema check) may raise AttributeError, KeyError, TypeError or
    ValueError part way: the caller keeps what was found until then."""
    sections = _Sections.of(data)
    book = AddressBook(problems, sections.management)
    _check_management(sections, problems)
    _check_segments(sections, book, problems)
    _check_overlaps(book.subnets, problems)
    _check_credentials(sections.credentials, problems)
    _check_power_controllers(sections, problems, strict)
    _check_devices(sections, book, problems)
    _check_links(sections, book, problems)
    _check_hosts(sections, book, problems)
    _check_password_file_only(sections, problems)
    _check_power_targets_unique(sections, problems)
    _check_cycles(sections.hosts, problems)
    _check_islands(sections, problems)
    _check_kept(sections, problems, strict)
    _check_kept_placement(sections, problems, strict)
    lab = data.get("lab")
    if isinstance(lab, dict):
        _check_lab_addresses(lab, book, problems)
        _check_lab_peers(lab, sections.links, book, problems)


def _check_management(s: _Sections, problems: Problems) -> None:
    if s.management is not None and s.management not in s.segments:
        problems.add(("management", "segment"), f"management segment '{s.management}' is not defined",
                     f"add it under 'segments:' or use one of: {', '.join(sorted(s.segments))}")


def _check_segments(s: _Sections, book: AddressBook, problems: Problems) -> None:
    for name, seg in s.segments.items():
        base: KeyPath = ("segments", name)
        subnet = _network(seg.get("subnet"), (*base, "subnet"), problems) if "subnet" in seg else None
        if subnet is not None:
            book.subnets[name] = subnet
        _ref(seg.get("campus"), "campus", s.campuses, (*base, "campus"), problems)
        _ref(seg.get("gateway"), "device", s.devices, (*base, "gateway"), problems)
        if name != s.management and seg.get("gateway") is None:
            problems.add(base, "segment has no gateway, so nothing can isolate it",
                         "add 'gateway: DEVICE' naming the router or firewall that routes it")
        if name == s.management and seg.get("gateway") is not None:
            problems.add((*base, "gateway"), "the management segment is never isolated; a gateway here is unused",
                         "remove the gateway from the management segment", "warning")
        if "gateway_address" in seg:
            gw = _address(seg["gateway_address"], (*base, "gateway_address"), problems)
            if gw is not None and subnet is not None and gw not in subnet:
                problems.add((*base, "gateway_address"), f"{gw} is outside the segment's subnet {subnet}",
                             f"use an address inside {subnet}")


def _check_overlaps(subnets: Mapping[str, ipaddress.IPv4Network], problems: Problems) -> None:
    names_seen = sorted(subnets.items(), key=lambda kv: kv[0])
    for i, (a_name, a_net) in enumerate(names_seen):
        for b_name, b_net in names_seen[i + 1:]:
            if a_net.overlaps(b_net):
                problems.add(("segments", b_name, "subnet"),
                             f"subnet {b_net} overlaps segment '{a_name}' ({a_net})",
                             "give every segment its own, non-overlapping subnet")


def _check_credentials(credentials: Mapping[str, Any], problems: Problems) -> None:
    for name, cred in credentials.items():
        if not cred.get("key_file") and not cred.get("password_env") and not cred.get("password_file"):
            problems.add(("credentials", name), "credential has neither key_file nor password_env",
                         "add 'key_file: PATH' (preferred) or 'password_env: ENV_VAR_NAME' "
                         "(power controllers may use 'password_file: PATH')")
        for key in ("key_file", "known_hosts", "password_file"):
            if isinstance(cred.get(key), str):
                bad_path = _path_problem(cred[key])
                if bad_path is not None:
                    problems.add(("credentials", name, key), *bad_path)


def _check_devices(s: _Sections, book: AddressBook, problems: Problems) -> None:
    for name, dev in s.devices.items():
        base: KeyPath = ("devices", name)
        _ref(dev.get("campus"), "campus", s.campuses, (*base, "campus"), problems)
        _ref(dev.get("credentials"), "credential", s.credentials, (*base, "credentials"), problems)
        if "address" in dev:
            addr = _address(dev["address"], (*base, "address"), problems)
            book.claim(addr, f"device {name}", (*base, "address"))


def _check_links(s: _Sections, book: AddressBook, problems: Problems) -> None:
    for name, link in s.links.items():
        base: KeyPath = ("links", name)
        _ref(link.get("device"), "device", s.devices, (*base, "device"), problems)
        peer = _network(link.get("peer"), (*base, "peer"), problems) if "peer" in link else None
        if "peer_address" in link:
            paddr = _address(link["peer_address"], (*base, "peer_address"), problems)
            if paddr is not None and peer is not None and paddr not in peer:
                problems.add((*base, "peer_address"), f"{paddr} is outside the link's peer network {peer}",
                             f"use an address inside {peer}")


def _check_hosts(s: _Sections, book: AddressBook, problems: Problems) -> None:
    for name, host in s.hosts.items():
        base: KeyPath = ("hosts", name)
        _ref(host.get("campus"), "campus", s.campuses, (*base, "campus"), problems)
        _check_host_vars_and_power(host, base, problems)
        _check_host_power_target(s, host, base, problems)
        _check_host_os(host, base, problems)
        _ref(host.get("credentials"), "credential", s.credentials, (*base, "credentials"), problems)
        _check_host_segment(s, host, base, problems)
        _check_host_addresses(name, host, base, book, problems)
        _check_host_dependencies(name, host, s.hosts, base, problems)
        _check_host_placement(name, host, s.hosts, base, problems)


def _check_host_vars_and_power(host: Mapping[str, Any], base: KeyPath, problems: Problems) -> None:
    for key in host.get("vars") or {}:
        refused = _var_key_problem(str(key))
        if refused is not None:
            problems.add((*base, "vars", key), *refused)
    power = host.get("power")
    if isinstance(power, str) and power in _NO_WORKING_POWER_DRIVER:
        problems.add((*base, "power"), f"no working power driver for '{power}': "
                     f"{_NO_WORKING_POWER_DRIVER[power]}",
                     "write 'power: manual' (a person at the rack or the BMC console powers it) or "
                     "remove 'power:' (graceful stop only)")


def _check_host_segment(s: _Sections, host: Mapping[str, Any], base: KeyPath, problems: Problems) -> None:
    seg_name = host.get("segment")
    seg_ok = _ref(seg_name, "segment", s.segments, (*base, "segment"), problems)
    if seg_ok and seg_name is not None:
        seg = s.segments[seg_name]
        if host.get("campus") and seg.get("campus") and host["campus"] != seg["campus"]:
            problems.add((*base, "campus"),
                         f"host is on campus '{host['campus']}' but its segment '{seg_name}' is on "
                         f"'{seg['campus']}'", "make the host's campus match its segment's campus")


def _check_host_addresses(name: str, host: Mapping[str, Any], base: KeyPath, book: AddressBook,
                          problems: Problems) -> None:
    seg_name = host.get("segment")
    subnets = book.subnets
    addr = _address(host["address"], (*base, "address"), problems) if "address" in host else None
    if addr is not None and seg_name in subnets and addr not in subnets[seg_name]:
        problems.add((*base, "address"), f"{addr} is outside segment '{seg_name}' ({subnets[seg_name]})",
                     f"use an address inside {subnets[seg_name]} or move the host to the right segment")
    if "management_address" in host:
        maddr = _address(host["management_address"], (*base, "management_address"), problems)
        mgmt_net = book.management_net
        if maddr is not None and mgmt_net is not None and maddr not in mgmt_net:
            problems.add((*base, "management_address"),
                         f"{maddr} is outside the management segment ({mgmt_net})",
                         f"use an address inside {mgmt_net}")
        book.claim(maddr, f"host {name} (management)", (*base, "management_address"))
        book.claim(addr, f"host {name}", (*base, "address"))
    else:
        book.claim(addr, f"host {name}", (*base, "address"))
        if seg_name != book.management:
            problems.add(base, "no management_address: once its segment is isolated the orchestrator "
                         "cannot reach this host to verify it", "add 'management_address:' on the "
                         "management segment", "warning")


def _check_host_dependencies(name: str, host: Mapping[str, Any], hosts: Mapping[str, Any], base: KeyPath,
                             problems: Problems) -> None:
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


def _check_cycles(hosts: Mapping[str, Any], problems: Problems) -> None:
    """A cycle through depends_on, runs_on and stored_on (each is "needs this host running")."""
    graph = {name: [d for d in needed_hosts(h) if d != name] for name, h in hosts.items()}
    for cycle in find_cycles(graph):
        first = hosts[cycle[0]]
        key = next((k for k in ("depends_on", "runs_on", "stored_on")
                    if any(d in cycle for d in placement_names(first.get(k)))), "depends_on")
        placed = any(d in cycle for h in cycle for k in ("runs_on", "stored_on")
                     for d in placement_names(hosts[h].get(k)))
        problems.add(("hosts", cycle[0], key),
                     f"dependency cycle between hosts {', '.join(cycle)}"
                     + (" (through depends_on, runs_on and stored_on)" if placed else ""),
                     "break the cycle: a host cannot need, directly or through others, a host that needs it")


def _check_islands(s: _Sections, problems: Problems) -> None:
    for name, island in s.islands.items():
        base: KeyPath = ("islands", name)
        for i, seg_name in enumerate(island.get("segments") or []):
            _ref(seg_name, "segment", s.segments, (*base, "segments", i), problems)
            if seg_name == s.management:
                problems.add((*base, "segments", i), "the management segment cannot be an island",
                             "remove it: management is never isolated nor powered off anyway", "warning")
        for i, host_name in enumerate(island.get("hosts") or []):
            _ref(host_name, "host", s.hosts, (*base, "hosts", i), problems)
        if not island.get("segments") and not island.get("hosts"):
            problems.add(base, "island has no segments and no hosts", "add 'segments: [...]' or 'hosts: [...]'")


def _check_kept(s: _Sections, problems: Problems, strict: bool) -> None:
    """A kept host (keep_running, or on an island) that depends on a host a shutdown stops."""
    kept = _kept_names(s)
    for name in sorted(kept):
        for i, dep in enumerate(s.hosts[name].get("depends_on") or []):
            if dep in s.hosts and dep not in kept:
                problems.add(("hosts", name, "depends_on", i),
                             f"kept host '{name}' depends on '{dep}', which a shutdown will power off",
                             f"keep '{dep}' running too (keep_running: true or add it to the island), "
                             "or accept that it runs degraded", "error" if strict else "warning")


def _check_lab_addresses(lab: Mapping[str, Any], book: AddressBook, problems: Problems) -> None:
    if "management_gateway" in lab:
        gw = _address(lab["management_gateway"], ("lab", "management_gateway"), problems)
        mgmt_net = book.management_net
        if gw is not None and mgmt_net is not None and gw not in mgmt_net:
            problems.add(("lab", "management_gateway"), f"{gw} is outside the management segment",
                         f"use an address inside {mgmt_net}")
        book.claim(gw, "the lab's management gateway", ("lab", "management_gateway"))
    if "backbone" in lab:
        backbone = _network(lab["backbone"], ("lab", "backbone"), problems)
        for seg_name, subnet in book.subnets.items():
            if backbone is not None and backbone.overlaps(subnet):
                problems.add(("lab", "backbone"), f"backbone {backbone} overlaps segment '{seg_name}'",
                             "pick a backbone range no segment uses")


def _check_lab_peers(lab: Mapping[str, Any], links: Mapping[str, Any], book: AddressBook,
                     problems: Problems) -> None:
    for name, peer in (lab.get("peers") or {}).items():
        base: KeyPath = ("lab", "peers", name)
        _ref(name, "link", links, base, problems)
        if name in links and not links[name].get("peer_address"):
            problems.add(base, f"link '{name}' has no peer_address for its lab peer",
                         f"add 'peer_address:' to links.{name}")
        if "management_address" in peer:
            addr = _address(peer["management_address"], (*base, "management_address"), problems)
            book.claim(addr, f"lab peer {name}", (*base, "management_address"))


# --------------------------------------------------------------------------------------------
# On the built model: the commands each device would be sent
# --------------------------------------------------------------------------------------------


def check_device_commands(inventory: Inventory, problems: Problems, strict: bool) -> None:
    """Render, for every segment with a gateway and every link, the commands its device would be sent
    (isolate/reconnect, cut/restore), with the renderer's own per-platform checks, so that what would
    fail every step on that device in the middle of an emergency is found here. An interface name a
    device CLI would misread is an error; with --strict, so is an interface the platform needs and the
    inventory does not give (that segment or link could not be cut)."""
    from orchestrator.drivers import devices as device_commands
    from orchestrator.errors import DriverError

    def attempt(path: KeyPath, platform: str, actions: tuple[str, str], **kw: Any) -> None:
        target = kw.get("segment") or kw.get("link")
        missing = target is not None and target.interface is None
        for action in actions:
            try:
                device_commands.render_commands(platform, action, **kw)
            except DriverError as exc:
                if missing and not strict:
                    return
                problems.add(path, f"{action} on {platform} device '{kw['device'].name}': {exc.message}",
                             exc.hint or "fix the interface name")
                return

    for name, segment in inventory.segments.items():
        device = inventory.devices.get(segment.gateway or "")
        if device is None or name == inventory.management_segment:
            continue
        path: KeyPath = ("segments", name, "interface") if segment.interface else ("segments", name, "gateway")
        attempt(path, device.platform, ("isolate-segment", "reconnect-segment"), device=device, segment=segment)
    for name, link in inventory.links.items():
        device = inventory.devices.get(link.device)
        if device is None:
            continue
        path = ("links", name, "interface") if link.interface else ("links", name)
        attempt(path, device.platform, ("cut-link", "restore-link"), device=device, link=link)


# --------------------------------------------------------------------------------------------
# The estate: power controllers, structured power, hypervisors and storage
# --------------------------------------------------------------------------------------------

# What each controller type calls a host (the key of a host's power: besides controller), if anything.
_TARGET_KEY: Mapping[str, str | None] = {"vsphere": "vm", "redfish": "system", "ipmi": None}
_TARGET_HINT: Mapping[str, str] = {
    "vsphere": "write {controller: NAME, vm: \"VM name or moref\"}",
    "redfish": "write {controller: NAME, system: \"Systems member id\"} (system may be left out when the BMC "
               "has one system)",
    "ipmi": "write {controller: NAME}: an IPMI BMC powers its one server",
}
_KIND_OF_KEY: Mapping[str, str] = {"runs_on": "hypervisor", "stored_on": "storage"}


def placement_names(value: Any) -> list[str]:
    """The host names a ``runs_on``/``stored_on`` value gives: one name or a list of them."""
    if isinstance(value, str):
        return [value]
    return [v for v in value or [] if isinstance(v, str)]


def needed_hosts(host: Mapping[str, Any]) -> list[str]:
    """Every host ``host`` needs running: its depends_on, runs_on and stored_on."""
    return [*(host.get("depends_on") or []), *placement_names(host.get("runs_on")),
            *placement_names(host.get("stored_on"))]


def _placement_paths(host: Mapping[str, Any], base: KeyPath, key: str) -> list[tuple[str, KeyPath]]:
    value = host.get(key)
    if isinstance(value, str):
        return [(value, (*base, key))]
    return [(v, (*base, key, i)) for i, v in enumerate(value or []) if isinstance(v, str)]


def _check_power_controllers(s: _Sections, problems: Problems, strict: bool) -> None:
    from orchestrator.drivers.power_controllers import PowerController
    from orchestrator.errors import DriverError

    for name, spec in s.power_controllers.items():
        base: KeyPath = ("power_controllers", name)
        if _ref(spec.get("credentials"), "credential", s.credentials, (*base, "credentials"), problems):
            cred = s.credentials[spec["credentials"]]
            if not cred.get("password_env") and not cred.get("password_file"):
                problems.add((*base, "credentials"),
                             f"credential '{spec['credentials']}' has no password reference: a power controller "
                             "logs in with a user name and a password",
                             "give that credential 'password_env: ENV_VAR_NAME' or 'password_file: PATH'")
        if spec.get("type") not in _TARGET_KEY or not isinstance(spec.get("address"), str):
            continue  # reported by the schema check
        try:
            parsed = PowerController.from_address(name, spec["type"], spec["address"], "check",
                                                  password_env="CHECK", allow_http=True)
        except DriverError as exc:
            problems.add((*base, "address"), exc.message, exc.hint or "write host, host:port or https://host[:port]")
            continue
        _check_controller_transport(spec, parsed.scheme, parsed.port, base, problems, strict)


def _check_controller_transport(spec: Mapping[str, Any], scheme: str, port_in_address: int | None, base: KeyPath,
                                problems: Problems, strict: bool) -> None:
    severity = "error" if strict else "warning"
    if port_in_address is not None and spec.get("port") is not None and port_in_address != spec["port"]:
        problems.add((*base, "port"), f"port {spec['port']} differs from the port in the address ({port_in_address})",
                     "give the port once: in the address or as port:")
    if scheme == "http" and not spec.get("allow_http"):
        problems.add((*base, "address"), "plain http to a power controller would send its password in clear",
                     "write https:// (allow_http: true is only for a lab simulator)")
    elif scheme == "http":
        problems.add((*base, "allow_http"), "plain http: the controller's password crosses the network in clear",
                     "only for a lab simulator: use https:// for a real controller", severity)
    if spec.get("verify_tls") is False:
        problems.add((*base, "verify_tls"), "TLS verification is off: anyone on the path could pose as this "
                     "controller and receive its password", "give its CA with 'ca_file: PATH' instead", severity)
    if isinstance(spec.get("ca_file"), str):
        bad_path = _path_problem(spec["ca_file"])
        if bad_path is not None:
            problems.add((*base, "ca_file"), *bad_path)


def _check_host_power_target(s: _Sections, host: Mapping[str, Any], base: KeyPath, problems: Problems) -> None:
    power = host.get("power")
    if not isinstance(power, dict):
        return
    name = power.get("controller")
    if not isinstance(name, str):
        return  # reported by the schema check
    if name not in s.power_controllers:
        choices = ", ".join(sorted(s.power_controllers)) or "(none defined)"
        problems.add((*base, "power", "controller"), f"unknown power controller '{name}'",
                     f"define it under 'power_controllers:' or use one of: {choices}")
        return
    kind = s.power_controllers[name].get("type")
    if kind == "vsphere" and "host" in power:
        _check_hypervisor_power(s, host, power, base, problems)
        return
    wanted = _TARGET_KEY.get(kind)
    for key in ("vm", "system", "host", "bmc"):
        if key in power and key != wanted:
            problems.add((*base, "power", key), f"'{key}' does not fit controller '{name}', a {kind} controller",
                         _TARGET_HINT.get(kind, "see `orchestrator inventory schema`") if key != "bmc" else
                         "bmc: goes with host: (an ESXi host powered through vCenter); remove it here")
    if kind == "vsphere" and "vm" not in power:
        problems.add((*base, "power"), f"controller '{name}' is a vsphere controller: which VM is this host?",
                     _TARGET_HINT["vsphere"])


def _check_hypervisor_power(s: _Sections, host: Mapping[str, Any], power: Mapping[str, Any], base: KeyPath,
                            problems: Problems) -> None:
    """``{controller: VCENTER, host: ESXI[, bmc: BMC[, system: ID]]}``: a hypervisor through vCenter."""
    at = (*base, "power")
    if "vm" in power:
        problems.add((*at, "vm"), "give either vm: (a VM) or host: (an ESXi host), not both",
                     "a hypervisor keeps host:; a VM keeps vm:")
    if host.get("kind") != "hypervisor":
        problems.add((*at, "host"), "power: host: names an ESXi host, but this host is not a hypervisor",
                     "set 'kind: hypervisor' on it, or write vm: for a VM")
    bmc = power.get("bmc")
    bmc_kind = s.power_controllers.get(bmc, {}).get("type") if isinstance(bmc, str) else None
    if isinstance(bmc, str) and bmc not in s.power_controllers:
        choices = ", ".join(sorted(k for k, v in s.power_controllers.items() if v.get("type") != "vsphere"))
        problems.add((*at, "bmc"), f"unknown power controller '{bmc}'",
                     "define it under 'power_controllers:' (type redfish or ipmi) or use one of: "
                     f"{choices or '(none)'}")
    elif isinstance(bmc, str) and bmc_kind not in ("redfish", "ipmi"):
        problems.add((*at, "bmc"), f"'{bmc}' is a {bmc_kind} controller, not a server's BMC",
                     "name a redfish or ipmi controller here")
    if "system" in power and bmc_kind != "redfish":
        problems.add((*at, "system"), "system: is the Redfish Systems id of the bmc: controller, and there is no "
                     "redfish bmc: here", "remove system:, or give 'bmc: NAME' of a redfish controller")


def _check_host_os(host: Mapping[str, Any], base: KeyPath, problems: Problems) -> None:
    """A Windows host never gets an SSH or Ansible command: only its power controller can stop it."""
    if host.get("os") != "windows" or isinstance(host.get("power"), dict):
        return
    where = (*base, "power") if "power" in host else (*base, "os")
    problems.add(where, "a windows host is stopped and started only through its power controller "
                 "(it never receives an SSH or Ansible command), and this one has none",
                 "give it 'power: {controller: NAME, vm: VM}' (vsphere), '{controller: NAME, system: ID}' "
                 "(redfish) or '{controller: NAME}' (ipmi), with NAME under power_controllers:")


def _check_power_targets_unique(s: _Sections, problems: Problems) -> None:
    """Two hosts powered through the same VM, Redfish system or IPMI BMC: powering one off would take
    the other down with it."""
    owners: dict[tuple[str, str], str] = {}
    for name, host in s.hosts.items():
        power = host.get("power")
        if not isinstance(power, dict) or power.get("controller") not in s.power_controllers:
            continue
        for target in _power_targets(power):
            if target in owners:
                what = f"VM/system {target[1]!r} of" if target[1] else "the BMC of"
                problems.add(("hosts", name, "power"), f"{what} controller '{target[0]}' already powers host "
                             f"'{owners[target]}'", "give each host its own VM, Redfish system or BMC")
            else:
                owners[target] = name


def _power_targets(power: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(controller, what it calls the host) for each controller powering it: an ESXi host's vCenter
    entry and, with ``bmc:``, its BMC's."""
    if power.get("host"):
        out = [(str(power["controller"]), f"host {power['host']}")]
        return out + ([(str(power["bmc"]), str(power.get("system") or ""))] if power.get("bmc") else [])
    return [(str(power["controller"]), str(power.get("vm") or power.get("system") or ""))]


def _check_host_placement(name: str, host: Mapping[str, Any], hosts: Mapping[str, Any], base: KeyPath,
                          problems: Problems) -> None:
    """runs_on names hypervisors, stored_on storage hosts; neither the host itself; tiers follow them."""
    for key, wanted in _KIND_OF_KEY.items():
        for other, path in _placement_paths(host, base, key):
            if other == name:
                problems.add(path, f"host {key.replace('_', ' ')} itself", f"remove it from {key}")
            elif _ref(other, "host", hosts, path, problems):
                kind = hosts[other].get("kind", "server")
                if kind != wanted:
                    problems.add(path, f"'{other}' is a {kind} host, not a {wanted}",
                                 f"set 'kind: {wanted}' on '{other}' or name a {wanted} host here")
                _check_tier_against(host, other, hosts[other], (*base, "tier"), problems)


def _check_tier_against(host: Mapping[str, Any], other: str, other_host: Mapping[str, Any], path: KeyPath,
                        problems: Problems) -> None:
    tier, other_tier = host.get("tier", 0), other_host.get("tier", 0)
    if isinstance(tier, int) and isinstance(other_tier, int) and tier < other_tier:
        problems.add(path, f"tier {tier} is lower than tier {other_tier} of '{other}', which it needs running",
                     f"set tier to {other_tier} or more, or lower '{other}''s tier")


def _check_password_file_only(s: _Sections, problems: Problems) -> None:
    """SSH (hosts and devices) reads key_file or password_env: a password_file alone is for power controllers."""
    users = [(("hosts", n), h) for n, h in s.hosts.items()] + [(("devices", n), d) for n, d in s.devices.items()]
    for base, entry in users:
        cred = s.credentials.get(entry.get("credentials"))
        if isinstance(cred, dict) and cred.get("password_file") and not cred.get("key_file") \
                and not cred.get("password_env"):
            problems.add((*base, "credentials"), f"credential '{entry['credentials']}' has only a password_file, "
                         "which SSH logins do not use", "use a credential with key_file (or password_env) here")


def _kept_names(s: _Sections) -> set[str]:
    kept = {name for name, host in s.hosts.items() if host.get("keep_running") is True}
    for island in s.islands.values():
        for name, host in s.hosts.items():
            if name in (island.get("hosts") or []) or host.get("segment") in (island.get("segments") or []):
                kept.add(name)
    return kept


def _kept_with_placement(s: _Sections, kept: set[str]) -> set[str]:
    """``kept`` and, in turn, the hypervisors and storage each of them runs on or is stored on."""
    running, todo = set(kept), sorted(kept)
    while todo:
        host = s.hosts[todo.pop()]
        for under in placement_names(host.get("runs_on")) + placement_names(host.get("stored_on")):
            if under in s.hosts and under not in running:
                running.add(under)
                todo.append(under)
    return running


def _check_kept_placement(s: _Sections, problems: Problems, strict: bool) -> None:
    """A kept VM keeps its hypervisors and storage running (said, so that it is not a surprise); a VM
    that a shutdown stops on a hypervisor that keeps running is said too. Both name both hosts."""
    kept = _kept_names(s)
    running = _kept_with_placement(s, kept)  # what a shutdown keeps running: kept hosts and what they run on
    severity = "error" if strict else "warning"
    for name, host in sorted(s.hosts.items()):
        for key, what in (("runs_on", "hypervisor"), ("stored_on", "storage")):
            for other, path in _placement_paths(host, ("hosts", name), key):
                if other not in s.hosts or other == name:
                    continue
                if name in kept and other not in kept:
                    problems.add(path, f"kept host '{name}' {key.replace('_', ' ')} '{other}', which is not kept: "
                                 f"a shutdown keeps that {what} running for it",
                                 f"keep '{other}' running explicitly (keep_running: true or its island), or do "
                                 f"not keep '{name}'", severity)
                elif name not in running and other in running and what == "hypervisor":
                    problems.add(path, f"'{name}' will be stopped while its hypervisor '{other}' keeps running",
                                 f"keep '{name}' running too, or confirm that only '{other}' must stay up",
                                 severity)

"""Network device commands as data: one Jinja2 template per platform and action.

The templates under ``orchestrator/templates/devices/<platform>/<action>.j2`` are the single source
of truth for what is sent to a switch, router or firewall. The netmiko driver renders them here;
the fallback playbooks (``playbooks/network-isolate.yml``, ``network-restore.yml``) render the very
same files with Ansible's ``template`` lookup. Both pass the same small context of plain values::

    device:  {name, platform, address, role, vars}
    segment: {name, subnet, interface, gateway_address, vlan}     # segment actions
    link:    {name, kind, peer, interface, peer_address}          # link actions
    comment: "orchestrator:<action>:<target>"                     # the marker rules carry

Undo actions (``reconnect-segment``, ``restore-link``) carry the marker of what they undo
(``orchestrator:isolate-segment:<segment>``), so they find and remove exactly that.

Everything here is pure: no I/O besides reading the packaged templates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from orchestrator.errors import DriverError, UnknownDriverError
from orchestrator.model import Device, Link, Segment

TEMPLATE_DIR = Path(__file__).parents[1] / "templates" / "devices"

PLATFORMS: tuple[str, ...] = (
    "linux",
    "cisco_ios",
    "cisco_nxos",
    "arista_eos",
    "juniper_junos",
    "fortinet",
    "paloalto_panos",
)

# Actions that change a device, and what undoes each.
UNDO: Mapping[str, str] = {
    "cut-link": "restore-link",
    "isolate-segment": "reconnect-segment",
}
CHANGE_ACTIONS: tuple[str, ...] = ("cut-link", "restore-link", "isolate-segment", "reconnect-segment")
READ_ACTIONS: tuple[str, ...] = ("backup-config", "show")
ACTIONS: tuple[str, ...] = (*READ_ACTIONS, *CHANGE_ACTIONS)
SEGMENT_ACTIONS = frozenset({"isolate-segment", "reconnect-segment"})

# Platforms whose candidate configuration must be committed after the change.
COMMIT_PLATFORMS = frozenset({"juniper_junos", "paloalto_panos"})

# Platforms that refer to the device's interface by name in a segment or link action. Isolating a
# segment on paloalto_panos is done with security rules on the subnet, so it needs no interface.
_NEEDS_INTERFACE: Mapping[str, frozenset[str]] = {
    "linux": frozenset({"isolate-segment", "reconnect-segment"}),
    "cisco_ios": frozenset(CHANGE_ACTIONS),
    "cisco_nxos": frozenset(CHANGE_ACTIONS),
    "arista_eos": frozenset(CHANGE_ACTIONS),
    "juniper_junos": frozenset(CHANGE_ACTIONS),
    "fortinet": frozenset(CHANGE_ACTIONS),
    "paloalto_panos": frozenset(),
}

# An interface name goes into shell lines and device CLIs: allow what real names use, nothing else.
# \Z, not $: Python's $ also matches before a final newline, and "eth0\n" is not an interface name.
_INTERFACE_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_./:-]{0,63}\Z")
_NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9-]*\Z")


def marker(action: str, target: str) -> str:
    """The comment a change carries: ``orchestrator:isolate-segment:ant-servers``.

    For an undo action this is the marker of the change it undoes.
    """
    forward = {undo: do for do, undo in UNDO.items()}.get(action, action)
    return f"orchestrator:{forward}:{target}"


@dataclass(frozen=True)
class Rendered:
    """Commands for one device, ready to send, and what they are for."""

    platform: str
    action: str
    commands: tuple[str, ...]
    comment: str | None


def _unknown(what: str, value: str, valid: tuple[str, ...]) -> UnknownDriverError:
    return UnknownDriverError(
        f"unknown {what} {value!r}; valid: {', '.join(valid)}",
        target=value,
        hint=f"use one of: {', '.join(valid)}",
    )


def check_platform_action(platform: str, action: str) -> None:
    """Raise UnknownDriverError, listing the valid names, for an unknown platform or action."""
    if platform not in PLATFORMS:
        raise _unknown("platform", platform, PLATFORMS)
    if action not in ACTIONS:
        raise _unknown("action", action, ACTIONS)


@cache
def _environment(platform: str) -> jinja2.Environment:
    # One environment per platform, rooted at the platform's directory: a template imports its
    # helpers by bare name ('_macros.j2'), exactly as under Ansible's template lookup, which puts
    # the template's own directory on the search path.
    # Command text, not HTML: autoescape would corrupt quotes in nft and CLI lines.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR / platform)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )


def template_path(platform: str, action: str) -> Path:
    check_platform_action(platform, action)
    return TEMPLATE_DIR / platform / f"{action}.j2"


def device_context(device: Device) -> dict[str, Any]:
    return {
        "name": device.name,
        "platform": device.platform,
        "address": str(device.address),
        "role": device.role,
        "vars": dict(device.vars),
    }


def segment_context(segment: Segment) -> dict[str, Any]:
    return {
        "name": segment.name,
        "subnet": str(segment.subnet),
        "interface": segment.interface,
        "gateway_address": str(segment.gateway_address) if segment.gateway_address else None,
        "vlan": segment.vlan,
    }


def link_context(link: Link) -> dict[str, Any]:
    return {
        "name": link.name,
        "kind": link.kind.value,
        "peer": str(link.peer),
        "interface": link.interface,
        "peer_address": str(link.peer_address) if link.peer_address else None,
    }


def _check_context(
    platform: str, action: str, device: Device | None, segment: Segment | None, link: Link | None
) -> str | None:
    """Validate what the template will need; return the target's name (None for read actions)."""
    if device is not None and device.platform != platform:
        raise DriverError(
            f"device {device.name} is {device.platform}, not {platform}",
            target=device.name,
            hint="render with the device's own platform",
        )
    where = device.name if device else platform
    if action in READ_ACTIONS:
        return None
    if action in SEGMENT_ACTIONS:
        if segment is None:
            raise DriverError(f"{action} needs a segment", target=where, hint="pass segment=")
        name, interface, what = segment.name, segment.interface, f"segments.{segment.name}.interface"
    else:
        if link is None:
            raise DriverError(f"{action} needs a link", target=where, hint="pass link=")
        name, interface, what = link.name, link.interface, f"links.{link.name}.interface"
        if platform == "linux" and interface is None and link.peer.prefixlen == 0:
            raise DriverError(
                f"link {link.name} has no interface and its peer is {link.peer}: cutting it by "
                "prefix would drop every forwarded packet",
                target=f"{where}:{link.name}",
                hint=f"set {what} to the interface facing the peer",
            )
    if not _NAME_RE.match(name):
        raise DriverError(f"invalid name {name!r}", target=where, hint="names match [a-z0-9][a-z0-9-]*")
    if interface is None:
        if action in _NEEDS_INTERFACE[platform]:
            raise DriverError(
                f"{action} on {platform} needs the interface facing {name}, and none is known",
                target=f"{where}:{name}",
                hint=f"set {what} in the inventory",
            )
    elif not _INTERFACE_RE.match(interface):
        raise DriverError(
            f"interface name {interface!r} has characters a device CLI or shell would misread",
            target=f"{where}:{name}",
            hint=f"fix {what} (letters, digits and _ . / : - only)",
        )
    return name


def render(
    platform: str,
    action: str,
    *,
    device: Device | None = None,
    segment: Segment | None = None,
    link: Link | None = None,
    comment: str | None = None,
) -> list[str]:
    """Render ``<platform>/<action>.j2`` to command lines (stripped, blank lines dropped).

    Unknown platform or action raises UnknownDriverError listing the valid ones; a context that
    lacks what the template needs (a segment, an interface) raises DriverError naming the
    inventory key to set. Rendering is deterministic.
    """
    return list(render_commands(platform, action, device=device, segment=segment, link=link, comment=comment).commands)


def render_commands(
    platform: str,
    action: str,
    *,
    device: Device | None = None,
    segment: Segment | None = None,
    link: Link | None = None,
    comment: str | None = None,
) -> Rendered:
    check_platform_action(platform, action)
    target = _check_context(platform, action, device, segment, link)
    if comment is None and target is not None:
        comment = marker(action, target)
    context: dict[str, Any] = {
        "device": device_context(device) if device else {"name": platform, "platform": platform, "vars": {}},
        "segment": segment_context(segment) if segment else None,
        "link": link_context(link) if link else None,
        "comment": comment,
    }
    try:
        text = _environment(platform).get_template(f"{action}.j2").render(context)
    except jinja2.TemplateError as exc:
        raise DriverError(
            f"template {platform}/{action}.j2 failed to render: {exc}",
            target=device.name if device else platform,
            hint="check the template and the inventory values it uses",
        ) from exc
    return Rendered(platform, action, tuple(split_lines(text)), comment)


def split_lines(text: str) -> list[str]:
    """Rendered text to command lines: each stripped, blank lines dropped (the playbooks do the same)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# Reading a running configuration: is a change in force?
# --------------------------------------------------------------------------------------------


def acl_name(link: str) -> str:
    """The access-list / filter name the vendor templates use for a cut link."""
    return f"ORCH-CUT-{link}"


def interface_block(config: str, interface: str) -> list[str] | None:
    """The lines under ``interface NAME`` in an IOS-style config (IOS, NX-OS, EOS, FRR), or None."""
    lines = config.splitlines()
    header = re.compile(rf"^interface\s+{re.escape(interface)}\s*$", re.IGNORECASE)
    for i, line in enumerate(lines):
        if header.match(line.rstrip()):
            block: list[str] = []
            for sub in lines[i + 1 :]:
                if not sub.strip() or not sub[0].isspace():
                    break
                block.append(sub.strip())
            return block
    return None


def _fortinet_block(config: str, section: str, entry: str) -> list[str] | None:
    in_section = False
    block: list[str] | None = None
    for raw in config.splitlines():
        line = raw.strip()
        if line.startswith("config "):
            in_section = line == f"config {section}"
            continue
        if not in_section:
            continue
        if block is None and line == f'edit "{entry}"':
            block = []
        elif block is not None:
            if line in ("next", "end"):
                return block
            block.append(line)
    return block


def _interface_shut(platform: str, config: str, interface: str) -> bool:
    if platform in ("cisco_ios", "cisco_nxos", "arista_eos"):
        block = interface_block(config, interface)
        return block is not None and "shutdown" in block
    if platform == "juniper_junos":
        ifd, unit = (interface + ".0").split(".")[:2]
        return f"set interfaces {ifd} unit {unit} disable" in (line.strip() for line in config.splitlines())
    if platform == "fortinet":
        block = _fortinet_block(config, "system interface", interface)
        return block is not None and "set status down" in block
    raise AssertionError(platform)


def uses_acl(platform: str, device: Device | None) -> bool:
    """How an IOS-style router cuts a link: an ACL, or shutting the link's interface.

    ``cisco_ios`` shuts the interface unless the device says ``vars: {cut_link_method: acl}``
    (the lab's FRR router has no interface ACLs); NX-OS and EOS use an ACL unless told
    ``cut_link_method: shutdown``. The templates make the same choice.
    """
    default = "shutdown" if platform == "cisco_ios" else "acl"
    method = device.vars.get("cut_link_method", default) if device is not None else default
    return bool(method == "acl")


def in_force(
    platform: str,
    action: str,
    config: str,
    *,
    device: Device | None = None,
    segment: Segment | None = None,
    link: Link | None = None,
) -> bool:
    """Does ``config`` (the output of the ``show`` action) show ``action`` in force?

    ``action`` is a change (``isolate-segment`` / ``cut-link``); for an undo action the answer is
    whether the undo is in force, i.e. the change is absent.
    """
    check_platform_action(platform, action)
    if action not in CHANGE_ACTIONS:
        raise DriverError(f"{action} is not a change", target=platform, hint="ask about a change action")
    target = _check_context(platform, action, device, segment, link)
    assert target is not None
    forward = {undo: do for do, undo in UNDO.items()}.get(action, action)
    present = _change_present(platform, forward, config, device, segment, link, target)
    return present if forward == action else not present


def _change_present(
    platform: str,
    action: str,
    config: str,
    device: Device | None,
    segment: Segment | None,
    link: Link | None,
    target: str,
) -> bool:
    comment = marker(action, target)
    if platform == "linux":
        return f'comment "{comment}"' in config
    if platform == "paloalto_panos":
        prefix = "orch-iso-" if action == "isolate-segment" else "orch-cut-"
        return re.search(rf"(?<![\w-]){re.escape(prefix + target)}(-out)?(?![\w-])", config) is not None
    if action == "isolate-segment":
        assert segment is not None and segment.interface is not None
        return _interface_shut(platform, config, segment.interface)
    assert link is not None and link.interface is not None
    if platform in ("cisco_ios", "cisco_nxos", "arista_eos"):
        if uses_acl(platform, device):
            block = interface_block(config, link.interface) or []
            return any(line.startswith(f"ip access-group {acl_name(target)}") for line in block)
        return _interface_shut(platform, config, link.interface)
    if platform == "juniper_junos":
        return f"filter input {acl_name(target)}" in config
    return _interface_shut(platform, config, link.interface)


def restore_commands(platform: str, backup: str, running: str) -> list[str]:
    """Undo every orchestrator change visible in ``running`` (best effort), using ``backup``.

    linux: the product's own nftables table is dropped (everything in it is ours).
    IOS-style (cisco_ios, cisco_nxos, arista_eos): interfaces shut now but not in the backup are
    brought up; ORCH-CUT access-groups and lists are removed. Other platforms: DriverError.
    """
    check_platform_action(platform, "show")
    if platform == "linux":
        return split_lines(_environment("linux").get_template("restore-config.j2").render())
    if platform not in ("cisco_ios", "cisco_nxos", "arista_eos"):
        raise DriverError(
            f"restoring a whole configuration is not automated for {platform}",
            target=platform,
            hint="run reconnect-segment / restore-link per target, or reload the saved backup by hand",
        )
    commands: list[str] = []
    acls: list[str] = []
    for name in _interfaces(running):
        now = interface_block(running, name) or []
        before = interface_block(backup, name)
        undo: list[str] = []
        if "shutdown" in now and (before is None or "shutdown" not in before):
            undo.append("no shutdown")
        for line in now:
            m = re.match(r"^ip access-group (ORCH-CUT-[a-z0-9-]+)\s+(in|out)$", line)
            if m:
                undo.append(f"no {line}")
                acls.append(m.group(1))
        if undo:
            commands += [f"interface {name}", *undo]
    acl_prefix = "ip access-list extended" if platform == "cisco_ios" else "ip access-list"
    listed = re.findall(r"access-list (?:extended )?(ORCH-CUT-[a-z0-9-]+)", running)
    for acl in sorted(set(acls) | set(listed)):
        commands.append(f"no {acl_prefix} {acl}")
    return commands


def _interfaces(config: str) -> list[str]:
    return re.findall(r"^interface\s+(\S+)\s*$", config, flags=re.MULTILINE)

"""Checked inventory data -> the typed, frozen model (``orchestrator.model.Inventory``)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.inventory.checks import ipv4, placement_names
from orchestrator.inventory.health import host_suites
from orchestrator.model import (
    Campus,
    ControllerType,
    Credential,
    Device,
    Host,
    HostKind,
    HostOs,
    Inventory,
    Island,
    LabPeer,
    LabSettings,
    Link,
    LinkKind,
    PowerControllerSpec,
    PowerTarget,
    Segment,
    Site,
)


def resolve_credential_path(path: str, base_dir: Path) -> str:
    """A credential's file as every client must read it: relative paths taken from ``base_dir``
    (the inventory's directory), once, here; ``~`` left for each client to expand as before."""
    if path.startswith("~") or os.path.isabs(path):
        return path
    return os.path.normpath(base_dir / path)


def build_inventory(data: Mapping[str, Any], path: str, sha256: str, base_dir: Path) -> Inventory:
    """The model of inventory data that passed every check (``sha256``: of the text it was read from).
    Every mapping of the model is sorted by name."""
    site_data = data["site"]
    segments = {name: _segment(name, s) for name, s in _section(data, "segments")}
    return Inventory(
        path=path,
        sha256=sha256,
        site=Site(name=site_data["name"], timezone=site_data.get("timezone", "UTC")),
        management_segment=data["management"]["segment"],
        campuses={n: Campus(n, str((c or {}).get("description", ""))) for n, c in _section(data, "campuses")},
        segments=segments,
        devices={n: _device(n, d) for n, d in _section(data, "devices")},
        links={n: _link(n, k) for n, k in _section(data, "links")},
        hosts={n: _host(n, h, segments, host_suites(data, h, base_dir)) for n, h in _section(data, "hosts")},
        islands={
            n: Island(name=n, reason=str(i["reason"]), segments=tuple(i.get("segments") or ()),
                      hosts=tuple(i.get("hosts") or ()))
            for n, i in _section(data, "islands")
        },
        credentials={n: _credential(n, c, base_dir) for n, c in _section(data, "credentials")},
        version=int(data["version"]),
        lab=_lab(data.get("lab")),
        power_controllers={n: _power_controller(n, p, base_dir) for n, p in _section(data, "power_controllers")},
        base_dir=str(base_dir),
    )


def _section(data: Mapping[str, Any], name: str) -> list[tuple[str, Any]]:
    """A section's entries, sorted by name (none when the section is absent or empty)."""
    return sorted((data.get(name) or {}).items())


def _addr(value: Any) -> ipaddress.IPv4Address:
    return ipv4(str(value))


def _opt_addr(value: Any) -> ipaddress.IPv4Address | None:
    return None if value is None else _addr(value)


def _segment(name: str, s: Mapping[str, Any]) -> Segment:
    return Segment(
        name=name, subnet=ipaddress.IPv4Network(str(s["subnet"])), zone=str(s["zone"]),
        campus=s.get("campus"), vlan=s.get("vlan"), gateway=s.get("gateway"),
        interface=s.get("interface"), gateway_address=_opt_addr(s.get("gateway_address")),
    )


def _device(name: str, d: Mapping[str, Any]) -> Device:
    return Device(name=name, platform=d["platform"], address=_addr(d["address"]), role=d["role"],
                  credentials=d["credentials"], campus=d.get("campus"), vars=dict(d.get("vars") or {}))


def _link(name: str, k: Mapping[str, Any]) -> Link:
    return Link(name=name, kind=LinkKind(k["kind"]), device=k["device"],
                peer=ipaddress.IPv4Network(str(k["peer"])), description=str(k.get("description", "")),
                interface=k.get("interface"), peer_address=_opt_addr(k.get("peer_address")))


def _host(name: str, h: Mapping[str, Any], segments: Mapping[str, Segment], health: tuple[str, ...]) -> Host:
    """A host; its management address defaults to its address, its campus to its segment's."""
    address = _addr(h["address"])
    power = h.get("power")
    return Host(
        name=name, segment=h["segment"], address=address,
        management_address=_opt_addr(h.get("management_address")) or address,
        credentials=h["credentials"], tier=int(h.get("tier", 0)),
        campus=h.get("campus") or segments[h["segment"]].campus, role=str(h.get("role", "")),
        depends_on=tuple(h.get("depends_on") or ()), services=tuple(h.get("services") or ()),
        keep_running=bool(h.get("keep_running", False)), power=power if isinstance(power, str) else None,
        integrity=tuple(h.get("integrity") or ()), vars=dict(h.get("vars") or {}),
        kind=HostKind(h.get("kind", "server")), runs_on=tuple(placement_names(h.get("runs_on"))),
        stored_on=tuple(placement_names(h.get("stored_on"))),
        power_target=PowerTarget(str(power["controller"]), vm=power.get("vm"), system=power.get("system"),
                                 host=power.get("host"), bmc=power.get("bmc"))
        if isinstance(power, dict) else None,
        os=HostOs(h.get("os", "linux")),
        health=health,
    )


def _credential(name: str, c: Mapping[str, Any], base_dir: Path) -> Credential:
    """A credential: references only (a key file, an environment variable), never a secret."""
    return Credential(
        name=name, username=str(c["username"]),
        key_file=resolve_credential_path(c["key_file"], base_dir) if c.get("key_file") else None,
        password_env=c.get("password_env"),
        password_file=resolve_credential_path(c["password_file"], base_dir) if c.get("password_file") else None,
        known_hosts=resolve_credential_path(c["known_hosts"], base_dir) if c.get("known_hosts") else None,
        connect_timeout_s=float(c["connect_timeout_s"]) if c.get("connect_timeout_s") is not None else None,
        allow_password_on_suspect_hosts=c.get("allow_password_on_suspect_hosts") is True,
    )


def _power_controller(name: str, p: Mapping[str, Any], base_dir: Path) -> PowerControllerSpec:
    """A power controller: where it is and which credential logs in (a reference, never a secret)."""
    return PowerControllerSpec(
        name=name, type=ControllerType(p["type"]), address=str(p["address"]), credentials=str(p["credentials"]),
        port=p.get("port"), ca_file=resolve_credential_path(p["ca_file"], base_dir) if p.get("ca_file") else None,
        verify_tls=p.get("verify_tls", True) is not False, allow_http=p.get("allow_http") is True,
        connect_timeout_s=float(p["connect_timeout_s"]) if p.get("connect_timeout_s") is not None else None,
        operation_timeout_s=float(p["operation_timeout_s"]) if p.get("operation_timeout_s") is not None else None,
    )


def _lab(lab_data: Any) -> LabSettings | None:
    if not lab_data:
        return None
    return LabSettings(
        management_gateway=_addr(lab_data["management_gateway"]),
        backbone=ipaddress.IPv4Network(str(lab_data["backbone"])),
        peers={n: LabPeer(link=n, management_address=_addr(p["management_address"]))
               for n, p in sorted((lab_data.get("peers") or {}).items())},
    )

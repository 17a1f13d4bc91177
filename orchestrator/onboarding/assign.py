"""Decisions an import takes only when they are certain: an inventory name for a VM, an address's
segment. Anything else is a TODO with the reason (never a silent guess)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.onboarding.base import Base

_NOT_NAME = re.compile(r"[^a-z0-9-]+")


def inventory_name(text: str) -> str:
    """``EMR_DB1.example.org`` -> ``emr-db1-example-org``: lowercase, other characters become '-'."""
    return _NOT_NAME.sub("-", text.strip().lower()).strip("-")[:63].strip("-")


@dataclass(frozen=True)
class Placement:
    """Where a host's addresses put it. ``todo`` says what could not be decided."""

    segment: str | None = None
    address: str | None = None
    management_address: str | None = None
    campus: str | None = None
    todo: str | None = None


def ipv4s(texts: Sequence[str]) -> list[ipaddress.IPv4Address]:
    """The usable IPv4 addresses among ``texts`` (IPv6, link-local and loopback dropped), in order."""
    out: list[ipaddress.IPv4Address] = []
    for text in texts:
        try:
            ip = ipaddress.ip_address(text.split("%")[0].strip())
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv4Address) and not (ip.is_link_local or ip.is_loopback
                                                          or ip.is_unspecified) and ip not in out:
            out.append(ip)
    return out


def place(base: Base, addresses: Sequence[ipaddress.IPv4Address], primary: ipaddress.IPv4Address | None = None
          ) -> Placement:
    """The segment and address for a host with ``addresses``: one address in one non-management
    segment (or the primary, when several share it); one in the management segment is its
    management address. No address, an address in no segment or a choice between segments: a TODO."""
    if not addresses:
        return Placement(todo="no IPv4 address known (guest info empty: VMware Tools not running, or the VM off)")
    mgmt: list[ipaddress.IPv4Address] = []
    by_segment: dict[str, list[ipaddress.IPv4Address]] = {}
    stray: list[ipaddress.IPv4Address] = []
    campus: dict[str, str | None] = {}
    for ip in addresses:
        seg = base.segment_of(ip)
        if seg is None:
            stray.append(ip)
        elif seg.name == base.management_segment:
            mgmt.append(ip)
        else:
            by_segment.setdefault(seg.name, []).append(ip)
            campus[seg.name] = seg.campus
    management = str(mgmt[0]) if len(mgmt) == 1 else None
    if not by_segment:
        what = ", ".join(map(str, stray)) if stray else ", ".join(map(str, mgmt))
        why = "in no segment of the inventory" if stray else "only on the management segment"
        return Placement(management_address=management,
                         todo=f"address {what} {why}: add its segment, or set segment and address")
    if len(by_segment) > 1:
        choices = "; ".join(f"{s}: {', '.join(map(str, ips))}" for s, ips in sorted(by_segment.items()))
        return Placement(management_address=management,
                         todo=f"addresses in several segments ({choices}): choose the one a shutdown isolates")
    (segment, ips), = by_segment.items()
    if len(ips) > 1 and primary not in ips:
        return Placement(segment=segment, management_address=management,
                         todo=f"several addresses in {segment} ({', '.join(map(str, ips))}): choose one")
    address = primary if primary in ips else ips[0]
    return Placement(segment=segment, address=str(address), management_address=management, campus=campus[segment])

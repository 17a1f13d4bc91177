"""The document an import starts from: an inventory (``--into``), a skeleton or a segments file.

Read with ruamel.yaml's round-trip loader, so what is written back keeps its comments, order and
every hand-written key. Only what an import needs is extracted (segments by subnet, credentials,
power controllers, hosts); the whole inventory is checked later by ``orchestrator validate``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from orchestrator.errors import InventoryError, Problem
from orchestrator.onboarding.where import problem

NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    subnet: ipaddress.IPv4Network
    campus: str | None = None
    vlan: int | None = None


@dataclass
class Base:
    """The starting document and what an import reads from it."""

    path: str | None
    doc: CommentedMap
    segments: list[SegmentInfo] = field(default_factory=list)
    management_segment: str | None = None
    credentials: set[str] = field(default_factory=set)
    controllers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> raw entry

    @property
    def hosts(self) -> CommentedMap:
        hosts = self.doc.get("hosts")
        return hosts if isinstance(hosts, CommentedMap) else CommentedMap()

    def segment_of(self, address: ipaddress.IPv4Address) -> SegmentInfo | None:
        """The most specific segment holding ``address`` (None: no segment)."""
        found = [s for s in self.segments if address in s.subnet]
        return max(found, key=lambda s: s.subnet.prefixlen) if found else None

    def segment_by_vlan(self, vlan: int) -> SegmentInfo | None:
        found = [s for s in self.segments if s.vlan == vlan]
        return found[0] if len(found) == 1 else None


def round_trip() -> YAML:
    yaml = YAML(typ="rt")
    yaml.width = 4096  # never wrap a host's line
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def read_yaml(path: str) -> CommentedMap:
    """A YAML mapping read round-trip; InventoryError (file, line, fix) when it is not one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InventoryError([Problem(path, None, "(file)", f"cannot read it: {why}", "check the path")]) from None
    try:
        doc = round_trip().load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InventoryError([Problem(path, line, "(file)", f"not valid YAML: {getattr(exc, 'problem', exc)}",
                                      "fix the YAML syntax at that line")]) from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise InventoryError([Problem(path, 1, "(top level)", "not a mapping", "write key: value pairs")])
    return doc


def load_base(into: str | None, segments_file: str | None) -> Base:
    """The base of an import: ``into`` (an inventory, possibly unfinished) or a segments file.

    Every problem in its segments is reported at once (InventoryError)."""
    if into is None and segments_file is None:
        raise InventoryError([Problem("(command line)", None, "--into / --segments",
                                      "an import needs the site's segments: addresses are assigned by subnet",
                                      "give --into INVENTORY (or a skeleton with segments:) or --segments FILE")])
    path = into if into is not None else segments_file
    assert path is not None
    doc = read_yaml(path)
    base = Base(path=path, doc=doc)
    problems: list[Problem] = []
    raw_segments = doc.get("segments")
    if not isinstance(raw_segments, dict) or not raw_segments:
        problems.append(problem(path, doc, ("segments",), "no segments: (a mapping of segments by name)",
                                "add segments: {NAME: {subnet: 10.10.2.0/24, zone: servers}}"))
    else:
        for name, seg in raw_segments.items():
            info = _segment(path, doc, str(name), seg, problems)
            if info is not None:
                base.segments.append(info)
    management = doc.get("management")
    if isinstance(management, dict) and isinstance(management.get("segment"), str):
        base.management_segment = management["segment"]
    credentials = doc.get("credentials")
    if isinstance(credentials, dict):
        base.credentials = {str(k) for k in credentials}
    controllers = doc.get("power_controllers")
    if isinstance(controllers, dict):
        base.controllers = {str(k): dict(v) for k, v in controllers.items() if isinstance(v, dict)}
    if problems:
        raise InventoryError(problems)
    return base


def _segment(path: str, doc: CommentedMap, name: str, seg: object, problems: list[Problem]) -> SegmentInfo | None:
    key = ("segments", name)
    if not isinstance(seg, dict):
        problems.append(problem(path, doc, key, "not a mapping", "write {subnet: ..., zone: ...}"))
        return None
    try:
        subnet = ipaddress.IPv4Network(str(seg.get("subnet")), strict=False)
    except ValueError:
        problems.append(problem(path, doc, (*key, "subnet"), f"not an IPv4 subnet: {seg.get('subnet')!r}",
                                "write it as 10.10.2.0/24"))
        return None
    vlan = seg.get("vlan")
    campus = seg.get("campus")
    return SegmentInfo(name, subnet, campus if isinstance(campus, str) else None,
                       vlan if isinstance(vlan, int) and not isinstance(vlan, bool) else None)


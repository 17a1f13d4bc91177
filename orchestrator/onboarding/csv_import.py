"""A CMDB or spreadsheet export (CSV) as host records. The mapping file names the columns.

A wrong cell is an error with its row (as a spreadsheet numbers it: the header is row 1) and
column, all of them reported at once (InventoryError, nothing written). What is missing rather
than wrong (no address, no OS, no credential) is a TODO of that host, like the vSphere import's.
"""

from __future__ import annotations

import csv
import io
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import InventoryError, Problem
from orchestrator.onboarding.assign import inventory_name, place
from orchestrator.onboarding.base import NAME, Base
from orchestrator.onboarding.mapping import Mapping
from orchestrator.onboarding.records import TODO, HostRecord, ImportResult

SHORT_POWER = ("lab", "manual", "vagrant", "ipmi")
TARGET_KEY = {"vsphere": "vm", "redfish": "system"}
KINDS = ("server", "hypervisor", "storage")
YES = {"yes": True, "true": True, "y": True, "1": True, "no": False, "false": False, "n": False, "0": False}


class _Row:
    """One row being read: its cells by inventory key, and where to report a wrong cell."""

    def __init__(self, file: str, line: int, cells: dict[str, str], mapping: Mapping,
                 problems: list[Problem]) -> None:
        self.file, self.line, self.cells, self.mapping, self.problems = file, line, cells, mapping, problems

    def get(self, key: str) -> str:
        return self.cells.get(key, "").strip()

    def bad(self, key: str, message: str, hint: str) -> None:
        column = self.mapping.columns[key]
        self.problems.append(Problem(self.file, self.line, f"row {self.line}, column {column!r}",
                                     message, hint))


def read_csv(path: str, mapping: Mapping, base: Base) -> ImportResult:
    """Every row as a host record; every wrong cell reported at once."""
    for key in ("name",):
        if key not in mapping.columns:
            raise InventoryError([Problem(mapping.file, None, "columns", f"no column is mapped to {key}",
                                          f"add columns: {{{key}: COLUMN TITLE}}")])
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InventoryError([Problem(path, None, "(file)", f"cannot read it: {why}",
                                      "export the sheet as UTF-8 CSV")]) from None
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=mapping.delimiter)
    titles = reader.fieldnames or []
    missing = [f"{key} -> {title!r}" for key, title in mapping.columns.items() if title not in titles]
    if missing:
        raise InventoryError([Problem(path, 1, "(header)", f"no such column: {', '.join(missing)}",
                                      f"the header has: {', '.join(map(repr, titles))}; fix columns: in "
                                      f"{mapping.file}")])
    problems: list[Problem] = []
    rows: list[tuple[_Row, HostRecord]] = []
    seen: dict[str, int] = {}
    line = 1
    for raw in reader:
        row = _Row(path, line + 1, {k: raw.get(t) or "" for k, t in mapping.columns.items()}, mapping, problems)
        line = reader.line_num
        if not any(row.cells.values()):
            continue
        record = _record(row, base)
        if record is None:
            continue
        if record.name in seen:
            row.bad("name", f"{record.name!r} is also on row {seen[record.name]}", "one row per host")
            continue
        seen[record.name] = row.line
        rows.append((row, record))
    known = set(seen) | {str(h) for h in base.hosts}
    for row, record in rows:
        for dep in record.fields.get("depends_on", []):
            if dep not in known:
                row.bad("depends_on", f"{dep!r} is neither a row of this file nor a host of the inventory",
                        "name a host by its name column")
    if problems:
        raise InventoryError(problems)
    return ImportResult(source=path, records=[r for _, r in rows])


def _record(row: _Row, base: Base) -> HostRecord | None:
    raw_name = row.get("name")
    name = inventory_name(raw_name)
    if not name:
        row.bad("name", f"no host name ({raw_name!r})", "give every row a name")
        return None
    record = HostRecord(name=name, source=f"row {row.line}")
    for key, reader in READERS:
        if key in row.mapping.columns and row.get(key):
            value = reader(row, record, base)
            if value is not None:
                record.fields[key] = value
    _placement(row, record, base)
    if "os" not in record.fields:
        record.fields["os"] = TODO
        record.todos.append("no OS: set os: linux or windows")
    if record.fields.get("os") == "windows" and not isinstance(record.fields.get("power"), dict):
        record.fields["power"] = {"controller": TODO, "vm": TODO}
        record.todos.append("a windows host is stopped only through its power controller: set power: "
                            "{controller: NAME, vm: VM} (vsphere), {controller: NAME, system: ID} (redfish) or "
                            "{controller: NAME} (ipmi)")
    if "credentials" not in record.fields:
        credential = row.mapping.credential("vm")
        record.fields["credentials"] = credential or TODO
        if credential is None:
            record.todos.append("which credential logs in to it: a credentials column or defaults: "
                                "{credentials: NAME} in the mapping file")
    return record


def _placement(row: _Row, record: HostRecord, base: Base) -> None:
    """segment from its column (or the VLAN's), checked against the address; else by the address."""
    address = record.fields.get("address")
    by_column, by_vlan = record.fields.pop("segment", None), record.fields.pop("vlan", None)
    named = by_column or by_vlan
    if isinstance(named, str) and address is not None:
        seg = next(s for s in base.segments if s.name == named)
        if ipaddress.IPv4Address(address) not in seg.subnet:
            key = "segment" if row.get("segment") else "vlan"
            row.bad(key, f"address {address} is not in {named} ({seg.subnet})", "fix the address or the segment")
    if address is None:
        record.fields.update({"segment": named or TODO, "address": TODO})
        record.todos.append("no address: set address (and segment)")
    elif named:
        record.fields.update({"segment": named, "address": address})
    else:
        where = place(base, [ipaddress.IPv4Address(address)])
        record.fields.update({"segment": where.segment or TODO, "address": address})
        if where.todo:
            record.todos.append(where.todo)
    seg_campus = next((s.campus for s in base.segments if s.name == record.fields["segment"]), None)
    if "campus" not in record.fields and seg_campus:
        record.fields["campus"] = seg_campus
    record.fields = record.ordered()


def _ip(row: _Row, _record: HostRecord, _base: Base, key: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(row.get(key)))
    except ValueError:
        row.bad(key, f"not an IPv4 address: {row.get(key)!r}", "write it as 10.10.2.10")
        return None


def _name_cell(row: _Row, _record: HostRecord, _base: Base, key: str) -> str | None:
    value = row.get(key)
    if not NAME.match(value):
        row.bad(key, f"not a {key} name: {value!r}", "lowercase letters, digits and '-'")
        return None
    return value


def _segment(row: _Row, _record: HostRecord, base: Base) -> str | None:
    value = row.get("segment")
    if not any(s.name == value for s in base.segments):
        row.bad("segment", f"no segment {value!r} in {base.path}",
                f"use one of: {', '.join(s.name for s in base.segments)}")
        return None
    return value


def _vlan(row: _Row, _record: HostRecord, base: Base) -> str | None:
    value = row.get("vlan")
    if not value.isdigit():
        row.bad("vlan", f"not a VLAN number: {value!r}", "a whole number 1-4094")
        return None
    seg = base.segment_by_vlan(int(value))
    if seg is None:
        row.bad("vlan", f"VLAN {value} is the vlan: of no segment (or of several) in {base.path}",
                "add vlan: to its segment, or map a segment column instead")
        return None
    return seg.name


def _tier(row: _Row, _record: HostRecord, _base: Base) -> int | None:
    value = row.get("tier")
    if not value.isdigit() or int(value) > 99:
        row.bad("tier", f"not a tier: {value!r}", "a whole number 0-99 (0 starts first)")
        return None
    return int(value)


def _depends_on(row: _Row, _record: HostRecord, _base: Base) -> list[str] | None:
    names = [inventory_name(part) for part in row.get("depends_on").split(row.mapping.separator) if part.strip()]
    if not all(names):
        row.bad("depends_on", f"not a list of host names: {row.get('depends_on')!r}",
                f"host names joined by {row.mapping.separator!r}")
        return None
    return list(dict.fromkeys(names))


def _os(row: _Row, record: HostRecord, _base: Base) -> str | None:
    value = row.get("os")
    family = row.mapping.os_values.get(value) or {"linux": "linux", "windows": "windows"}.get(value.lower())
    if family is None:
        record.todos.append(f"OS {value!r} is neither linux nor windows: set os (or map it: os_values: in the "
                            "mapping file)")
    return family


def _power(row: _Row, _record: HostRecord, base: Base) -> Any:
    value = row.get("power")
    if value in SHORT_POWER:
        return value
    controller, _, target = value.partition(":")
    entry = base.controllers.get(controller)
    if entry is None:
        row.bad("power", f"{controller!r} is no power controller of {base.path}",
                "write lab, manual, vagrant, ipmi, CONTROLLER or CONTROLLER:VM-OR-SYSTEM with CONTROLLER under "
                "power_controllers:")
        return None
    key = TARGET_KEY.get(str(entry.get("type")))
    if key is None:
        return {"controller": controller}
    if not target:
        row.bad("power", f"a {entry.get('type')} controller needs the {key}: {controller}:{key.upper()}",
                f"write {controller}:NAME")
        return None
    return {"controller": controller, key: target}


def _kind(row: _Row, _record: HostRecord, _base: Base) -> str | None:
    value = row.get("kind").lower()
    if value not in KINDS:
        row.bad("kind", f"not a kind: {value!r}", "server, hypervisor or storage")
        return None
    return value


def _keep(row: _Row, _record: HostRecord, _base: Base) -> bool | None:
    value = YES.get(row.get("keep_running").lower())
    if value is None:
        row.bad("keep_running", f"not yes or no: {row.get('keep_running')!r}", "write yes or no")
    return value


Reader = Callable[[_Row, HostRecord, Base], Any]
READERS: tuple[tuple[str, Reader], ...] = (
    ("kind", _kind),
    ("campus", lambda r, h, b: _name_cell(r, h, b, "campus")),
    ("segment", _segment),
    ("vlan", _vlan),
    ("address", lambda r, h, b: _ip(r, h, b, "address")),
    ("management_address", lambda r, h, b: _ip(r, h, b, "management_address")),
    ("role", lambda r, h, b: _name_cell(r, h, b, "role")),
    ("tier", _tier),
    ("os", _os),
    ("depends_on", _depends_on),
    ("keep_running", _keep),
    ("power", _power),
    ("credentials", lambda r, h, b: _name_cell(r, h, b, "credentials")),
)

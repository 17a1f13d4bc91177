"""Records merged into the base document and written as the draft inventory.

The base is read round-trip (ruamel.yaml), so its comments, key order, islands, tiers and every
hand-written key survive. An import owns only what the estate says: ``segment``, ``address``,
``management_address``, ``os``, ``kind``, ``power``, ``runs_on``, ``stored_on`` of the hosts it finds
(``campus``, ``role`` and ``tier`` only where the host has none). A host it could not decide is
written commented out, under a ``# TODO(import)`` line saying what is missing, inside ``hosts:``:
fill it in, uncomment it, and ``orchestrator validate`` checks the whole.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from orchestrator.onboarding.base import Base, round_trip
from orchestrator.onboarding.records import TODO, HostRecord, ImportResult
from orchestrator.storage import atomic_write

OWNED = ("kind", "segment", "address", "management_address", "os", "power", "runs_on", "stored_on")
ONLY_IF_ABSENT = ("campus", "role", "tier", "credentials")
LISTS = ("runs_on", "stored_on", "depends_on")
MARK = "# TODO(import)"
TOP_LEVEL = re.compile(r"^[A-Za-z_][^:#]*:")
REQUIRED_TOP = {"version": "version: 1", "site": "site: {name: NAME, timezone: Europe/Brussels}",
                "management": "management: {segment: SEGMENT}",
                "credentials": "credentials: {NAME: {username: USER, key_file: PATH, known_hosts: PATH}}"}


@dataclass
class Draft:
    text: str
    added: list[str] = field(default_factory=list)
    updated: dict[str, list[str]] = field(default_factory=dict)  # host -> the keys changed
    undecided: list[HostRecord] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # hosts of this controller the estate no longer has
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"added": self.added, "updated": self.updated, "gone": self.gone, "skipped": self.skipped,
                "undecided": [{"host": r.name, "source": r.source, "todo": r.todos} for r in self.undecided]}


def plain(value: Any) -> Any:
    """A round-trip value as plain Python (for comparing)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _norm(key: str, value: Any) -> Any:
    value = plain(value)
    if key in LISTS and isinstance(value, str):
        return [value]
    return value


def _flow(value: Any) -> Any:
    if isinstance(value, dict):
        out = CommentedMap((k, _flow(v)) for k, v in value.items())
        out.fa.set_flow_style()
        return out
    if isinstance(value, list):
        seq = CommentedSeq(_flow(v) for v in value)
        seq.fa.set_flow_style()
        return seq
    return value


def existing_by_vm(hosts: CommentedMap, controller: str | None) -> dict[str, str]:
    """VM (or ESXi host) name on ``controller`` -> the inventory host powered through it."""
    out: dict[str, str] = {}
    for name, host in hosts.items():
        power = host.get("power") if isinstance(host, dict) else None
        if isinstance(power, dict) and power.get("controller") == controller:
            target = power.get("vm") or power.get("host")
            if target is not None:
                out[str(target)] = str(name)
    return out


def merge(base: Base, result: ImportResult) -> Draft:
    """The base with ``result`` merged in (see the module's docstring)."""
    doc = base.doc
    if result.controller_entry is not None and result.controller not in base.controllers:
        if not isinstance(doc.get("power_controllers"), dict):
            doc["power_controllers"] = CommentedMap()
        doc["power_controllers"][result.controller] = _flow(result.controller_entry)
    if not isinstance(doc.get("hosts"), dict):
        doc["hosts"] = CommentedMap()
    hosts: CommentedMap = doc["hosts"]
    by_vm = existing_by_vm(hosts, result.controller)
    draft = Draft(text="", skipped=list(result.skipped))
    for record in result.records:
        name = by_vm.get(record.vm or "") or (record.name if record.name in hosts else None)
        if name is None and record.todos:
            draft.undecided.append(record)
        elif name is None:
            hosts[record.name] = _flow(record.ordered())
            draft.added.append(record.name)
        else:
            changed = _update(hosts[name], record)
            if changed:
                draft.updated[name] = changed
            if record.todos:
                draft.undecided.append(record)
    if result.controller is not None:
        seen = {r.vm for r in result.records if r.vm} | {
            str(target) for r in result.records if isinstance(r.fields.get("power"), dict)
            for target in (r.fields["power"].get("vm"), r.fields["power"].get("host")) if target}
        draft.gone = sorted(name for target, name in by_vm.items() if target not in seen)
    draft.text = render(base, [r for r in draft.undecided if r.name not in hosts])
    return draft


def _update(host: Any, record: HostRecord) -> list[str]:
    changed: list[str] = []
    for key, value in record.ordered().items():
        if TODO in (value, *(value.values() if isinstance(value, dict) else value if isinstance(value, list) else ())):
            continue
        if key in OWNED and _norm(key, host.get(key)) != _norm(key, value):
            if key == "management_address" and key not in host and str(host.get("address")) == value:
                continue
            host[key] = _flow(value)
            changed.append(key)
        elif key in ONLY_IF_ABSENT and key not in host:
            host[key] = _flow(value)
            changed.append(key)
    return changed


def entry_line(record: HostRecord) -> str:
    """``name: {key: value, ...}`` as YAML (quoted where YAML needs it), one line."""
    out = io.StringIO()
    round_trip().dump(CommentedMap([(record.name, _flow(record.ordered()))]), out)
    return out.getvalue().strip()


def render(base: Base, undecided: Iterable[HostRecord]) -> str:
    """The document as text, old TODO(import) entries dropped and the undecided ones written at the
    end of ``hosts:`` (commented out), missing top-level keys named at the top."""
    out = io.StringIO()
    round_trip().dump(base.doc, out)
    lines = _drop_old_todos(out.getvalue().splitlines())
    todo_lines: list[str] = []
    for r in undecided:
        todo_lines.append(f"  {MARK} {r.name} ({_one_line(r.source)}): " + "; ".join(map(_one_line, r.todos)))
        todo_lines.append(f"  # {entry_line(r)}")
    start = next(i for i, line in enumerate(lines) if line.startswith("hosts:"))
    if todo_lines and lines[start].strip() == "hosts: {}":
        lines[start] = "hosts:"
    end = next((i for i in range(start + 1, len(lines)) if TOP_LEVEL.match(lines[i])), len(lines))
    while end - 1 > start and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    lines[end:end] = todo_lines
    missing = [f"{MARK}: add {example}" for key, example in REQUIRED_TOP.items() if key not in base.doc]
    return "\n".join([*missing, *lines]) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _drop_old_todos(lines: list[str]) -> list[str]:
    out: list[str] = []
    skip_next = False
    for line in lines:
        if skip_next:
            skip_next = False
            if line.lstrip().startswith("# "):
                continue
        if line.lstrip().startswith(MARK):
            skip_next = line.startswith("  ")
            continue
        out.append(line)
    return out


def write_draft(path: str, text: str) -> None:
    """Written atomically, 0600 (an inventory names credentials and the whole estate)."""
    atomic_write(Path(path), text)

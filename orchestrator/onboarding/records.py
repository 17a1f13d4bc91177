"""What an import found: one record per host, with what it could not decide (never guessed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TODO = "TODO"  # the placeholder an undecided value is written as (the entry stays commented out)

# The order keys are written in (as in inventories/lab.yml).
FIELD_ORDER = ("kind", "campus", "segment", "address", "management_address", "role", "tier", "os",
               "depends_on", "keep_running", "power", "runs_on", "stored_on", "credentials")


@dataclass
class HostRecord:
    """A host as the estate describes it: the inventory keys an import decides."""

    name: str
    source: str  # where it came from: "VM 'EMR-DB1' (vm-42)", "row 7"
    fields: dict[str, Any] = field(default_factory=dict)
    todos: list[str] = field(default_factory=list)  # what a person must decide (empty: complete)
    vm: str | None = None  # the VM's name in vCenter (how the inventory's power: names it)

    def ordered(self) -> dict[str, Any]:
        known = [k for k in FIELD_ORDER if k in self.fields]
        return {k: self.fields[k] for k in (*known, *(k for k in self.fields if k not in FIELD_ORDER))}


@dataclass
class ImportResult:
    """Every host found, what was skipped (templates) and the controller entry the draft needs."""

    source: str
    records: list[HostRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    controller: str | None = None  # the power_controllers name the records' power: use
    controller_entry: dict[str, Any] | None = None  # to add when the base has no such controller

    @property
    def undecided(self) -> list[HostRecord]:
        return [r for r in self.records if r.todos]

    def by_name(self) -> dict[str, HostRecord]:
        return {r.name: r for r in self.records}

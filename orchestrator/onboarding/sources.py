"""The import and diff commands' work, source by source (the CLI only parses and renders)."""

from __future__ import annotations

from orchestrator.drivers.power_controllers import controller_from_inventory
from orchestrator.errors import UsageError
from orchestrator.model import ControllerType, Inventory
from orchestrator.onboarding.base import Base, load_base
from orchestrator.onboarding.csv_import import read_csv
from orchestrator.onboarding.diff import Drift, drift
from orchestrator.onboarding.draft import Draft, merge, write_draft
from orchestrator.onboarding.mapping import load_mapping
from orchestrator.onboarding.vsphere_import import controller_for, read_estate, vsphere_records


def import_vsphere(url: str, credential: str, output: str, *, into: str | None, segments: str | None,
                   mapping_file: str | None, controller_name: str | None, ca_file: str | None,
                   allow_http: bool) -> Draft:
    base = load_base(into, segments)
    mapping = load_mapping(mapping_file)
    name, controller, entry = controller_for(base, url, credential, name=controller_name, ca_file=ca_file,
                                             allow_http=allow_http)
    result = vsphere_records(read_estate(controller), base, mapping, name)
    result.controller_entry = entry
    draft = merge(base, result)
    write_draft(output, draft.text)
    return draft


def import_csv(file: str, mapping_file: str, output: str, *, into: str | None, segments: str | None) -> Draft:
    base = load_base(into, segments)
    result = read_csv(file, load_mapping(mapping_file), base)
    draft = merge(base, result)
    write_draft(output, draft.text)
    return draft


def _vsphere_controller(inventory: Inventory, name: str | None) -> str:
    names = [n for n, c in inventory.power_controllers.items() if c.type == ControllerType.VSPHERE]
    if name is not None:
        if name not in names:
            raise UsageError(f"no vsphere controller {name!r} in {inventory.path}",
                             hint=f"use one of: {', '.join(names) or '(none: add power_controllers:)'}")
        return name
    if len(names) != 1:
        raise UsageError(f"{len(names)} vsphere controllers in {inventory.path}: say which",
                         hint="--controller NAME (" + (", ".join(names) or "add one under power_controllers:") + ")")
    return names[0]


def diff_vsphere(inventory: Inventory, controller_name: str | None, mapping_file: str | None) -> Drift:
    name = _vsphere_controller(inventory, controller_name)
    spec = inventory.power_controllers[name]
    controller = controller_from_inventory(spec, inventory.credentials[spec.credentials])
    base: Base = load_base(inventory.path, None)
    return drift(inventory, vsphere_records(read_estate(controller), base, load_mapping(mapping_file), name))


def diff_csv(inventory: Inventory, file: str | None, mapping_file: str | None) -> Drift:
    if file is None or mapping_file is None:
        raise UsageError("a CSV diff needs the export and its mapping", hint="--file EXPORT.csv --map MAPPING.yml")
    return drift(inventory, read_csv(file, load_mapping(mapping_file), load_base(inventory.path, None)))

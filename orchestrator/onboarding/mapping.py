"""The mapping file: how a CMDB export's columns, and vSphere's folders, custom attributes and
datastores, become inventory keys. Every problem is reported at once, with its line.

    defaults: {credentials: ops, hypervisor_credentials: esx-root}   # which login new hosts get
    columns: {name: Hostname, address: IP, segment: Network, vlan: VLAN, role: Role, tier: Tier,
              depends_on: Depends on, os: OS, campus: Site, power: Power}      # CSV only
    separator: ";"          # joins depends_on in one cell (CSV)
    delimiter: ","          # between CSV columns
    os_values: {"Windows Server 2019": windows, "RHEL 8": linux}   # besides linux / windows
    folders: {Antwerp: {campus: antwerp}, Antwerp/Clinical/PACS: {role: pacs}}  # longest prefix wins
    attributes: {Role: role, Campus: campus, Tier: tier}   # vSphere custom attribute -> key
    datastores: {san1-ds: san1}                            # datastore -> the storage host holding it
"""

from __future__ import annotations

import re
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import InventoryError, Problem
from orchestrator.onboarding.base import read_yaml
from orchestrator.onboarding.where import problem

NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
COLUMN_KEYS = ("name", "address", "management_address", "segment", "vlan", "role", "tier", "depends_on", "os",
               "campus", "power", "credentials", "kind", "keep_running")
FOLDER_KEYS = ("campus", "role", "tier")
TOP_KEYS = ("defaults", "columns", "separator", "delimiter", "os_values", "folders", "attributes", "datastores")
DEFAULT_KEYS = ("credentials", "hypervisor_credentials", "storage_credentials")


@dataclass(frozen=True)
class Mapping:
    file: str = "(no mapping file)"
    defaults: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # inventory key -> column title
    separator: str = ";"
    delimiter: str = ","
    os_values: dict[str, str] = field(default_factory=dict)  # cell / guest text -> linux|windows
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)  # custom attribute -> campus|role|tier
    datastores: dict[str, str] = field(default_factory=dict)

    def for_folder(self, path: str) -> dict[str, Any]:
        """campus / role / tier for a VM folder path: each key from the longest prefix that sets it."""
        out: dict[str, Any] = {}
        for prefix in sorted(self.folders, key=len):
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                out.update(self.folders[prefix])
        return out

    def credential(self, kind: str) -> str | None:
        return self.defaults.get(f"{kind}_credentials") or self.defaults.get("credentials")


def load_mapping(path: str | None) -> Mapping:
    if path is None:
        return Mapping()
    doc = read_yaml(path)
    problems: list[Problem] = []

    def bad(key: tuple[str | int, ...], message: str, hint: str) -> None:
        problems.append(problem(path, doc, key, message, hint))

    for key in doc:
        if key not in TOP_KEYS:
            bad((str(key),), f"unknown key {key!r}", f"use one of: {', '.join(TOP_KEYS)}")
    defaults, columns, os_values, attributes, datastores = (
        _strings(doc, key, bad) for key in ("defaults", "columns", "os_values", "attributes", "datastores"))
    _check_values(defaults, columns, os_values, attributes, datastores, bad)
    folders = _folders(doc, bad)
    separator = _one_char(doc, "separator", ";", bad)
    delimiter = _one_char(doc, "delimiter", ",", bad)
    if problems:
        raise InventoryError(problems)
    return Mapping(path, defaults, columns, separator, delimiter, os_values, folders, attributes, datastores)


def _check_values(defaults: dict[str, str], columns: dict[str, str], os_values: dict[str, str],
                  attributes: dict[str, str], datastores: dict[str, str], bad: Any) -> None:
    for key, value in defaults.items():
        if key not in DEFAULT_KEYS:
            bad(("defaults", key), f"unknown key {key!r}", f"use one of: {', '.join(DEFAULT_KEYS)}")
        elif not NAME.match(value):
            bad(("defaults", key), f"not a credential name: {value!r}", "a name under credentials:")
    for key in columns:
        if key not in COLUMN_KEYS:
            bad(("columns", key), f"unknown inventory key {key!r}", f"use one of: {', '.join(COLUMN_KEYS)}")
    for key, value in os_values.items():
        if value not in ("linux", "windows"):
            bad(("os_values", key), f"{value!r} is not an OS", "write linux or windows")
    for key, value in attributes.items():
        if value not in FOLDER_KEYS:
            bad(("attributes", key), f"{value!r} is not a key an attribute can set", "write campus, role or tier")
    for key, value in datastores.items():
        if not NAME.match(value):
            bad(("datastores", key), f"not a host name: {value!r}", "lowercase letters, digits and '-'")


def _strings(doc: Any, key: str, bad: Any) -> dict[str, str]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, AbcMapping):
        bad((key,), "not a mapping", f"write {key}: {{KEY: VALUE, ...}}")
        return {}
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, str) or not v:
            bad((key, str(k)), f"not a text value: {v!r}", "write a non-empty text")
            continue
        out[str(k)] = v
    return out


def _folders(doc: Any, bad: Any) -> dict[str, dict[str, Any]]:
    value = doc.get("folders")
    if value is None:
        return {}
    if not isinstance(value, AbcMapping):
        bad(("folders",), "not a mapping", "write folders: {FOLDER/PATH: {campus: NAME, role: ROLE}}")
        return {}
    out: dict[str, dict[str, Any]] = {}
    for path, sets in value.items():
        key = ("folders", str(path))
        if not isinstance(sets, AbcMapping) or not sets:
            bad(key, "not a mapping of campus / role / tier", "write {campus: NAME} or {role: ROLE}")
            continue
        good: dict[str, Any] = {}
        for k, v in sets.items():
            if k not in FOLDER_KEYS:
                bad((*key, str(k)), f"unknown key {k!r}", "use campus, role or tier")
            elif k == "tier" and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 99):
                bad((*key, k), f"not a tier: {v!r}", "a whole number 0-99")
            elif k != "tier" and not (isinstance(v, str) and NAME.match(v)):
                bad((*key, str(k)), f"not a name: {v!r}", "lowercase letters, digits and '-'")
            else:
                good[str(k)] = v
        out[str(path).strip("/")] = good
    return out


def _one_char(doc: Any, key: str, default: str, bad: Any) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str) or len(value) != 1:
        bad((key,), f"not one character: {value!r}", f"write {key}: {default!r}")
        return default
    return value

"""What a vCenter knows: every VM (name, guest OS, addresses from guest info, hypervisor, datastores,
folder, custom attributes), every hypervisor and its management address. Read-only: one property
collector per kind over a container view, through the vSphere driver's session (TLS verified unless
the controller says otherwise; the password by reference, never shown).

``vsphere_records`` turns that into host records for an inventory: VMs with ``power: {controller,
vm}``, ``runs_on`` their hypervisor and ``stored_on`` the storage hosts of their datastores,
hypervisors with ``kind: hypervisor``; what it cannot decide is a TODO.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.drivers.power_controllers import PowerController
from orchestrator.drivers.vsphere import VSpherePower, pyvmomi_modules
from orchestrator.onboarding.assign import inventory_name, ipv4s, place
from orchestrator.onboarding.base import Base
from orchestrator.onboarding.mapping import Mapping as ImportMapping
from orchestrator.onboarding.records import TODO, HostRecord, ImportResult

VM_PATHS = ["name", "config.guestId", "config.template", "guest.guestFamily", "guest.net", "guest.ipAddress",
            "runtime.host", "datastore", "parent", "customValue"]

# config.guestId prefixes of Linux guests (VMware's GuestOsIdentifier list); "other*" is unknown.
LINUX_IDS = ("rhel", "centos", "debian", "ubuntu", "sles", "suse", "opensuse", "oracleLinux", "fedora", "rocky",
             "almalinux", "photon", "amazonlinux", "coreos", "asianux", "mandrake", "mandriva", "turboLinux",
             "redhat", "genericLinux", "other24xLinux", "other26xLinux", "other3xLinux", "other4xLinux",
             "other5xLinux", "other6xLinux", "otherLinux", "vmwarePhoton", "crxPod", "sjds")


@dataclass(frozen=True)
class EstateVm:
    name: str
    moref: str
    guest_id: str | None = None
    guest_family: str | None = None  # what VMware Tools report (windowsGuest, linuxGuest, ...)
    ips: tuple[str, ...] = ()
    primary_ip: str | None = None
    hypervisor: str | None = None
    datastores: tuple[str, ...] = ()
    folder: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    template: bool = False


@dataclass(frozen=True)
class EstateHypervisor:
    name: str
    moref: str
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Estate:
    endpoint: str
    vms: tuple[EstateVm, ...]
    hypervisors: tuple[EstateHypervisor, ...]


def os_family(guest_family: str | None, guest_id: str | None) -> str | None:
    """linux / windows from what Tools report, else from the configured guest id; None: unknown."""
    if guest_family in ("windowsGuest", "linuxGuest"):
        return guest_family.removesuffix("Guest")
    gid = guest_id or ""
    if gid.startswith("win"):
        return "windows"
    if gid.startswith(LINUX_IDS):
        return "linux"
    return None


class VSphereReader(VSpherePower):
    """The vSphere driver's session, used to read the whole estate (nothing is changed)."""

    def read_estate(self) -> Estate:
        return self.query(self.controller.name, self._read)

    def _collect(self, si: Any, kind: str, paths: list[str]) -> dict[str, dict[str, Any]]:
        vim, vmodl = pyvmomi_modules()
        vim_type = getattr(vim, kind)
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim_type], True)
        pc = vmodl.query.PropertyCollector
        try:
            spec = pc.FilterSpec(
                objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[pc.TraversalSpec(
                    name="view", path="view", skip=False, type=vim.view.ContainerView)])],
                propSet=[pc.PropertySpec(type=vim_type, pathSet=paths)])
            out: dict[str, dict[str, Any]] = {}
            result = content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
            while result is not None:
                for obj in result.objects:
                    out[obj.obj._moId] = {p.name: p.val for p in obj.propSet}
                if not result.token:
                    break
                result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
            return out
        finally:
            view.Destroy()

    def _read(self, si: Any) -> Estate:
        content = si.RetrieveContent()
        fields = {f.key: f.name for f in (content.customFieldsManager.field or [])} \
            if content.customFieldsManager is not None else {}
        hosts = self._collect(si, "HostSystem", ["name", "config.network.vnic"])
        stores = self._collect(si, "Datastore", ["name"])
        folders = self._collect(si, "Folder", ["name", "parent"])
        vms = self._collect(si, "VirtualMachine", VM_PATHS)
        hypervisors = tuple(
            EstateHypervisor(str(p.get("name")), moref, tuple(
                str(v.spec.ip.ipAddress) for v in (p.get("config.network.vnic") or [])
                if v.spec is not None and v.spec.ip is not None and v.spec.ip.ipAddress))
            for moref, p in sorted(hosts.items()))
        host_names = {moref: str(p.get("name")) for moref, p in hosts.items()}
        store_names = {moref: str(p.get("name")) for moref, p in stores.items()}
        out = [self._vm(moref, p, host_names, store_names, folders, fields) for moref, p in vms.items()]
        return Estate(self.controller.endpoint, tuple(sorted(out, key=lambda v: v.name)), hypervisors)

    @staticmethod
    def _vm(moref: str, p: dict[str, Any], host_names: dict[str, str], store_names: dict[str, str],
            folders: dict[str, dict[str, Any]], fields: dict[int, str]) -> EstateVm:
        ips: list[str] = []
        for nic in p.get("guest.net") or []:
            ips.extend(str(a) for a in (nic.ipAddress or []))
        primary = p.get("guest.ipAddress")
        if primary and str(primary) not in ips:
            ips.insert(0, str(primary))
        host = p.get("runtime.host")
        parts: list[str] = []
        parent = p.get("parent")
        while parent is not None and parent._moId in folders:
            f = folders[parent._moId]
            up = f.get("parent")
            if up is None or up._moId not in folders:
                break  # the datacenter's root VM folder ("vm") is not part of the path
            parts.append(str(f.get("name")))
            parent = up
        attributes = {fields.get(v.key, str(v.key)): str(v.value) for v in (p.get("customValue") or [])
                      if getattr(v, "value", None) not in (None, "")}
        return EstateVm(
            name=str(p.get("name")), moref=moref, guest_id=p.get("config.guestId") or None,
            guest_family=p.get("guest.guestFamily") or None, ips=tuple(ips),
            primary_ip=str(primary) if primary else None,
            hypervisor=host_names.get(host._moId) if host is not None else None,
            datastores=tuple(sorted(store_names.get(d._moId, d._moId) for d in (p.get("datastore") or []))),
            folder="/".join(reversed(parts)), attributes=attributes, template=bool(p.get("config.template")))


def read_estate(controller: PowerController) -> Estate:
    reader = VSphereReader(controller)
    try:
        return reader.read_estate()
    finally:
        reader.close()


# ---- records --------------------------------------------------------------------------------------

def vsphere_records(estate: Estate, base: Base, mapping: ImportMapping, controller: str) -> ImportResult:
    """Host records for every hypervisor and (non-template) VM; storage hosts named by the mapping."""
    result = ImportResult(source=f"vSphere {estate.endpoint}", controller=controller)
    hypervisor_names = {h.name: inventory_name(h.name) for h in estate.hypervisors}
    for h in estate.hypervisors:
        result.records.append(_hypervisor(h, hypervisor_names[h.name], base, mapping, controller))
    counts: dict[str, int] = {}
    for vm in estate.vms:
        counts[vm.name] = counts.get(vm.name, 0) + 1
    storage: dict[str, str] = {}
    for vm in estate.vms:
        if vm.template:
            result.skipped.append(f"template {vm.name!r} ({vm.moref})")
            continue
        record = _vm(vm, counts[vm.name] > 1, base, mapping, controller, hypervisor_names)
        for ds in vm.datastores:
            storage.setdefault(ds, mapping.datastores.get(ds) or inventory_name(ds))
        record.fields["stored_on"] = sorted({storage[ds] for ds in vm.datastores}) or TODO
        if not vm.datastores:
            record.todos.append("no datastore: set stored_on to the storage host holding its disks")
        result.records.append(record)
    for ds, name in sorted(storage.items()):
        if name in base.hosts or any(r.name == name for r in result.records):
            continue
        result.records.append(HostRecord(
            name=name, source=f"datastore {ds!r}",
            fields={"kind": "storage", "segment": TODO, "address": TODO,
                    "credentials": mapping.credential("storage") or TODO},
            todos=[f"the storage host holding datastore {ds!r}: set its segment and address"
                   + ("" if ds in mapping.datastores else f" (or name it: datastores: {{{ds}: NAME}} in the "
                      "mapping file)")]))
    _unique(result)
    return result


def _hypervisor(h: EstateHypervisor, name: str, base: Base, mapping: ImportMapping, controller: str) -> HostRecord:
    record = HostRecord(name=name, source=f"hypervisor {h.name!r} ({h.moref})")
    where = place(base, ipv4s(h.addresses))
    record.fields.update({"kind": "hypervisor", "segment": where.segment or TODO, "address": where.address or TODO})
    if where.campus:
        record.fields["campus"] = where.campus
    if where.management_address:
        record.fields["management_address"] = where.management_address
    record.fields["power"] = {"controller": controller, "host": h.name}
    _credential(record, mapping, "hypervisor")
    if where.todo:
        record.todos.append(where.todo)
    if not name:
        record.name = TODO
        record.todos.append(f"the name {h.name!r} has no letter or digit: give it an inventory name")
    return record


def _vm(vm: EstateVm, duplicate: bool, base: Base, mapping: ImportMapping, controller: str,
        hypervisors: dict[str, str]) -> HostRecord:
    name = inventory_name(vm.name)
    record = HostRecord(name=name or TODO, source=f"VM {vm.name!r} ({vm.moref})", vm=vm.name)
    if not name:
        record.todos.append(f"the name {vm.name!r} has no letter or digit: give it an inventory name")
    primary = ipaddress.IPv4Address(vm.primary_ip) if vm.primary_ip and ipv4s([vm.primary_ip]) else None
    where = place(base, ipv4s(vm.ips), primary)
    decided = mapping.for_folder(vm.folder) if vm.folder else {}
    for attribute, key in mapping.attributes.items():
        if attribute in vm.attributes:
            decided[key] = _attribute_value(key, vm.attributes[attribute], record, attribute)
    campus = decided.get("campus") or where.campus
    if campus:
        record.fields["campus"] = campus
    record.fields.update({"segment": where.segment or TODO, "address": where.address or TODO})
    if where.management_address:
        record.fields["management_address"] = where.management_address
    for key in ("role", "tier"):
        if decided.get(key) is not None:
            record.fields[key] = decided[key]
    family = os_family(vm.guest_family, vm.guest_id)
    record.fields["os"] = family or TODO
    if family is None:
        record.todos.append(f"unknown guest OS (guest id {vm.guest_id or 'none'}, Tools report "
                            f"{vm.guest_family or 'nothing'}): set os: linux or windows")
    record.fields["power"] = {"controller": controller, "vm": vm.moref if duplicate else vm.name}
    if vm.hypervisor:
        record.fields["runs_on"] = [hypervisors[vm.hypervisor]]
    _credential(record, mapping, "vm")
    if where.todo:
        record.todos.append(where.todo)
    if duplicate:
        record.todos.append(f"several VMs are named {vm.name!r}: named by its moref {vm.moref}; give it a "
                            "name of its own")
    return record


def _attribute_value(key: str, value: str, record: HostRecord, attribute: str) -> object:
    if key == "tier":
        if value.isdigit() and int(value) <= 99:
            return int(value)
        record.todos.append(f"custom attribute {attribute!r} = {value!r} is not a tier (0-99)")
        return None
    name = inventory_name(value)
    if not name:
        record.todos.append(f"custom attribute {attribute!r} = {value!r} is not a {key} name")
        return None
    return name


def _credential(record: HostRecord, mapping: ImportMapping, kind: str) -> None:
    credential = mapping.credential(kind)
    record.fields["credentials"] = credential or TODO
    if credential is None:
        record.todos.append(f"which credential logs in to it: set defaults: {{{kind}_credentials: NAME}} or "
                            "{credentials: NAME} in the mapping file")


def _unique(result: ImportResult) -> None:
    """Two records with one inventory name (EMR_DB1 and emr-db1): both become TODOs."""
    seen: dict[str, list[HostRecord]] = {}
    for r in result.records:
        seen.setdefault(r.name, []).append(r)
    for name, same in seen.items():
        if len(same) > 1 and name != TODO:
            for r in same:
                r.todos.append(f"{len(same)} estate objects become {name!r} ("
                               + ", ".join(o.source for o in same) + "): give each a name of its own")


# ---- the controller an import logs in to --------------------------------------------------------

def controller_for(base: Base, url: str, credential: str, *, name: str | None = None, ca_file: str | None = None,
                   allow_http: bool = False) -> tuple[str, PowerController, dict[str, Any]]:
    """The controller's inventory name, the driver's ``PowerController`` (password by the reference of
    the base's ``credentials.NAME``) and the ``power_controllers:`` entry a draft gets."""
    from orchestrator.errors import UsageError

    raw = base.doc.get("credentials", {}).get(credential) if isinstance(base.doc.get("credentials"), dict) else None
    if not isinstance(raw, dict) or not raw.get("username"):
        raise UsageError(f"no credential {credential!r} with a username in {base.path}",
                         hint=f"add credentials: {{{credential}: {{username: USER, password_env: VAR}}}} "
                         "(or password_file: PATH): the password by reference, never in the file")
    chosen = name or next((n for n, c in base.controllers.items()
                           if c.get("type") == "vsphere" and str(c.get("address")) == url), None) or "vcenter"
    controller = PowerController.from_address(
        chosen, "vsphere", url, str(raw["username"]), password_env=raw.get("password_env"),
        password_file=raw.get("password_file"), ca_file=ca_file, allow_http=allow_http)
    entry: dict[str, Any] = {"type": "vsphere", "address": url, "credentials": credential}
    if ca_file:
        entry["ca_file"] = str(Path(ca_file).resolve())  # absolute: the inventory resolves against its own dir
    if allow_http:
        entry["allow_http"] = True
    return chosen, controller, entry

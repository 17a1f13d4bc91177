"""The VM lab's lifecycle: ``lab up`` (box, libvirt, ``vagrant up``, every VM answering SSH with its
pinned key), ``lab status`` and ``lab down`` (VMs, the lab's libvirt networks, the daemons it
started, the blackhole routes that guard the lab's ranges). A failed up removes what it started."""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import LabError
from orchestrator.lab import LabStatus, MachineStatus, SshLogin, keys, network, reach
from orchestrator.lab.topology import Machine, Topology, topology
from orchestrator.lab.vagrant import VAGRANT_NETWORK, domain_name, network_names
from orchestrator.lab.vm import box as box_mod
from orchestrator.lab.vm import domains, host, libvirt, vagrant_up
from orchestrator.lab.vm.host import Progress, note, run, state, tail, virsh, vm_lab_root
from orchestrator.model import Inventory

GUARDS_FILE = "guard-routes"  # the lab ranges guarded by a blackhole, one per line, under vm_lab_root()


def _login() -> SshLogin:
    root = vm_lab_root()
    return SshLogin("root", str(keys.client_key_path(root)), str(keys.known_hosts_path(root)))


def _status(topo: Topology, timings: dict[str, float] | None = None) -> LabStatus:
    login = _login()

    def one(m: Machine) -> MachineStatus:
        running = domains.is_running(m.name)
        pid = domains.qemu_pid(m.name) if running else None
        return MachineStatus(m.name, m.kind, "running" if running else "stopped", pid, str(m.management_address), login)

    with ThreadPoolExecutor(max_workers=8) as pool:
        machines = tuple(pool.map(one, topo.machines))
    return LabStatus(machines, topo.lab_id, dict(timings or {}))


def vm_lab_status(inventory: Inventory) -> LabStatus:
    """Each VM of the inventory's lab: running or stopped, its qemu pid, how to log in."""
    topo = topology(inventory)
    lab = state()
    lab.refuse_other(lab.read(), topo.lab_id, inventory)
    if not libvirt.libvirt_answers():  # no libvirt, no VM runs
        login = _login()
        stopped = [MachineStatus(m.name, m.kind, "stopped", None, str(m.management_address), login)
                   for m in topo.machines]
        return LabStatus(tuple(stopped), topo.lab_id)
    return _status(topo)


# --------------------------------------------------------------------------------------------
# up
# --------------------------------------------------------------------------------------------


def vm_lab_up(inventory: Inventory, timeout: float | None = None, progress: Progress | None = None) -> LabStatus:
    """Bring the inventory's lab up as VMs and wait until each answers SSH with its pinned key. Idempotent.

    ``timeout`` limits ``vagrant up``; by default it follows from the work (:class:`UpBudget`;
    ``ORCHESTRATOR_VM_LAB_UP_TIMEOUT`` overrides it). ``progress`` receives a line per step and per
    change of a VM's stage. A failed up removes what it started (VMs, the lab's libvirt networks,
    the daemons it started) and keeps the console logs (ROOT/console/NAME.log) and vagrant's log.

    ``timings`` (seconds): box (build or cache), box_built (1/0), box_upload (1/0), vagrant_up,
    vagrant_up_limit, ssh, total.
    """
    missing = host.missing_vm_packages()
    if missing:
        raise LabError(
            "missing system packages: " + " ".join(missing),
            target="vm lab",
            hint="apt-get install " + " ".join(missing) + " (scripts/vagrant-tier.sh --setup-only does it)",
        )
    topo = topology(inventory)
    root = vm_lab_root()
    started = time.monotonic()
    lab = state()
    with lab.locked():
        lab.refuse_other(lab.read(), topo.lab_id, inventory)
        _guard_lab_ranges(inventory)
        try:
            status = _up_locked(inventory, topo, timeout, progress, started)
            note("up: " + ", ".join(f"{k} {v:.0f}" for k, v in status.timings.items()), progress)
            return status
        except BaseException as exc:
            note(f"lab up failed ({type(exc).__name__}): removing the VMs, networks and daemons it started",
                 progress)
            left = _remove_locked(inventory, stop_daemons=True)
            if isinstance(exc, LabError):
                removed = ("removed the VMs, networks and daemons it started" if not left
                           else "could not remove: " + ", ".join(left))
                raise LabError(
                    f"{exc.message}; {removed}",
                    target=exc.target,
                    hint="; ".join(filter(None, (exc.hint, f"console logs kept: {root / 'console'}/NAME.log, "
                                                           f"vagrant's log: {root / 'vagrant-up.log'}"))),
                ) from exc
            raise


@dataclass(frozen=True)
class _Prepared:
    """What ``vagrant up`` starts from: its environment, the machines, the management network."""

    env: dict[str, str]
    machines: list[str]
    mgmt_net: str
    budget: vagrant_up.UpBudget


def _up_locked(
    inventory: Inventory, topo: Topology, timeout: float | None, progress: Progress | None, started: float
) -> LabStatus:
    keys.ensure_keys(vm_lab_root(), topo)
    if not box_mod.box_path().exists():
        note(f"building the box {box_mod.box_path().name} (1-3 minutes, once per recipe)", progress)
    box = box_mod.ensure_box()
    box_done = time.monotonic()
    prepared = _prepare(inventory, topo, box, progress)
    limit = timeout if timeout is not None else vagrant_up.up_timeout(prepared.budget)
    note(prepared.budget.describe() + (f" (limit set to {limit:.0f} s)" if limit != prepared.budget.seconds else ""),
         progress)
    up_started = time.monotonic()
    _vagrant_up(inventory, prepared, limit, progress)
    up_done = time.monotonic()
    for m in topo.machines:
        domains.isolate_management_ports(m.name, (prepared.mgmt_net, VAGRANT_NETWORK))
    note("waiting for every VM to answer SSH with its pinned host key", progress)
    _wait_for_ssh(inventory, topo)
    done = time.monotonic()
    timings = {
        "box": round(box_done - started if box.built else 0.0, 2),
        "box_built": 1.0 if box.built else 0.0,
        "box_upload": 1.0 if prepared.budget.upload else 0.0,
        "vagrant_up": round(up_done - up_started, 2),
        "vagrant_up_limit": float(limit),
        "ssh": round(done - up_done, 2),
        "total": round(done - started, 2),
    }
    return _status(topo, timings)


def _prepare(inventory: Inventory, topo: Topology, box: box_mod.Box, progress: Progress | None) -> _Prepared:
    """libvirt running with the lab's pool, the box added to Vagrant, the lab's state written."""
    daemons = libvirt.ensure_libvirt(progress)
    libvirt.ensure_pool()
    env = vagrant_up.vagrant_env(inventory.path)
    machines = [m.name for m in topo.machines]
    box_mod.ensure_box_added(box, env, machines)
    mgmt_net = next(n for n in network_names(topo) if n.endswith("-mgmt"))
    lab = state()
    previous = lab.read() or {}
    lab.write(
        {
            "lab_id": topo.lab_id,
            "inventory": str(Path(inventory.path).resolve()),
            "machines": machines,
            "domains": [domain_name(m) for m in machines],
            "addresses": {m.name: str(m.management_address) for m in topo.machines},
            "networks": network_names(topo),
            "management_networks": [mgmt_net, VAGRANT_NETWORK],
            "started_libvirt": bool(daemons or previous.get("started_libvirt")),
            "box": str(box.path),
        }
    )
    budget = vagrant_up.UpBudget(len(machines), env["ORCHESTRATOR_LAB_LIBVIRT_DRIVER"], os.cpu_count() or 1,
                                 upload=not box_mod.box_volume_in_pool(), box_mb=box.path.stat().st_size / 1e6)
    return _Prepared(env, machines, mgmt_net, budget)


def _vagrant_up(inventory: Inventory, prepared: _Prepared, limit: float, progress: Progress | None) -> None:
    log = vm_lab_root() / "vagrant-up.log"
    rc = vagrant_up.run_vagrant_up(log, prepared.machines, timeout=limit, env=prepared.env, progress=progress)
    if rc != 0:
        raise LabError(
            f"`vagrant up` failed (exit {rc}; log: {log}):\n{tail(log.read_text(errors='replace'))}",
            target=inventory.path,
            hint="the VMs' console logs say why",
        )


def _wait_for_ssh(inventory: Inventory, topo: Topology) -> None:
    root = vm_lab_root()
    results = reach.wait_all(
        {m.name: str(m.management_address) for m in topo.machines},
        keys.client_key_path(root),
        keys.known_hosts_path(root),
        timeout=300.0,
    )
    failed = [r for r in results if not r.ready]
    if failed:
        detail = "; ".join(f"{r.name}: {r.error or r.system_state}" for r in failed)
        raise LabError(
            f"{len(failed)} VM(s) did not answer SSH with their pinned host key: {detail}",
            target=inventory.path,
            hint="the VMs' console logs say why",
        )


# --------------------------------------------------------------------------------------------
# the guard routes
# --------------------------------------------------------------------------------------------


def lab_ranges(inventory: Inventory) -> list[ipaddress.IPv4Network]:
    """The ranges to guard: each range the VM lab's machines use (segments, the far sides of links, never
    0.0.0.0/0), widened by one bit. libvirt refuses to start a network whose exact prefix is already
    routed, so the guard never has the lab's own prefix; nested guards are kept once."""
    used = {seg.subnet for seg in inventory.segments.values()}
    used |= {link.peer for link in inventory.links.values() if link.peer.prefixlen > 1}
    wide = {net.supernet() for net in used}
    return sorted(n for n in wide if not any(n != o and n.subnet_of(o) for o in wide))


def _guard_lab_ranges(inventory: Inventory) -> None:
    """Before anything of the lab exists, and until `lab down`: traffic for a lab range never takes the
    machine's default route, also while the lab is half up or after a failed up (network.guard_range)."""
    ranges = lab_ranges(inventory)
    root = vm_lab_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    known = _guarded()
    (root / GUARDS_FILE).write_text("".join(f"{n}\n" for n in sorted({*known, *map(str, ranges)})))
    for net in ranges:
        network.guard_range(net)


def _guarded() -> list[str]:
    path = vm_lab_root() / GUARDS_FILE
    return path.read_text().split() if path.exists() else []


def _unguard_lab_ranges() -> list[str]:
    left = [f"route blackhole {n}" for n in _guarded() if not network.unguard_range(ipaddress.IPv4Network(n))]
    if not left:
        (vm_lab_root() / GUARDS_FILE).unlink(missing_ok=True)
    return left


# --------------------------------------------------------------------------------------------
# down
# --------------------------------------------------------------------------------------------


def vm_lab_down(inventory: Inventory | None = None, stop_daemons: bool = True) -> None:
    """Remove the VM lab: its VMs (``vagrant destroy``, then any domain left), its libvirt networks,
    and the libvirt daemons it started. Works from the state file, so it also cleans up after a
    failed up; an inventory adds its machines and networks. SSH keys, the box and the console logs stay."""
    with state().locked():
        left = _remove_locked(inventory, stop_daemons=stop_daemons)
        left += _unguard_lab_ranges()  # only an explicit down lifts the guard, never a failed up's cleanup
    if left:
        raise LabError(
            "could not remove: " + ", ".join(left),
            target="vm lab",
            hint="run `orchestrator lab down --provider vagrant` again; see `virsh -c qemu:///system list --all`",
        )


@dataclass(frozen=True)
class _Leftovers:
    """What a down removes: the state file's machines and networks, and the inventory's."""

    machines: set[str]
    networks: list[str]
    inventory_path: str | None

    @classmethod
    def of(cls, current: dict[str, Any], inventory: Inventory | None) -> _Leftovers:
        machines: set[str] = set(current.get("machines", []))
        networks: list[str] = list(current.get("networks", []))
        inventory_path = current.get("inventory")
        if inventory is not None:
            topo = topology(inventory)
            machines |= {m.name for m in topo.machines}
            networks += [n for n in network_names(topo) if n not in networks]
            inventory_path = inventory_path or inventory.path
        return cls(machines, networks, inventory_path)


def _remove_locked(inventory: Inventory | None, *, stop_daemons: bool) -> list[str]:
    """What :func:`vm_lab_down` does, under the lab's lock already held. Returns what is left."""
    root = vm_lab_root()
    lab = state()
    what = _Leftovers.of(lab.read() or {}, inventory)
    left: list[str] = []
    if what.machines or what.networks:
        libvirt.ensure_libvirt()  # VMs outlive a stopped libvirtd: it must run to remove them
    if libvirt.libvirt_answers():
        left += _remove_domains_and_networks(what)
    shutil.rmtree(root / "dotvagrant", ignore_errors=True)
    if stop_daemons:
        started_here = libvirt.daemons_started_here()
        left += libvirt.stop_libvirt()
        if started_here and not left:
            libvirt.remove_libvirt_chains()
    if not left:
        lab.remove()
    return left


def _remove_domains_and_networks(what: _Leftovers) -> list[str]:
    left: list[str] = []
    if what.inventory_path and Path(what.inventory_path).exists() and (vm_lab_root() / "dotvagrant").exists():
        run(["vagrant", "destroy", "-f"], timeout=600, env=vagrant_up.vagrant_env(what.inventory_path))
    for m in sorted(what.machines):
        dom = domain_name(m)
        if virsh("dominfo", dom).returncode == 0:
            virsh("destroy", dom)
            virsh("undefine", dom, "--remove-all-storage", "--nvram")
            if virsh("dominfo", dom).returncode == 0:
                left.append(f"domain {dom}")
    for net in what.networks:
        if virsh("net-info", net).returncode == 0:
            virsh("net-destroy", net)
            virsh("net-undefine", net)
            if virsh("net-info", net).returncode == 0:
                left.append(f"network {net}")
    return left

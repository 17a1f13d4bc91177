"""The rehearsal lab: any valid inventory as real systemd-nspawn machines.

``lab_up`` builds (or reuses) the cached image, the bridges, one overlay and one container per host,
device and link peer, and waits until each answers SSH with its pinned host key. ``lab_down`` removes
every container, overlay, bridge, cgroup, route and process, also after a failed ``lab_up``. The SSH
keys under ``LAB_ROOT/ssh/`` are kept, so host keys stay stable across a down and up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import LabError
from orchestrator.lab import image as image_mod
from orchestrator.lab import keys, machines, network, reach, statefile
from orchestrator.lab.topology import Kind, Topology, topology, topology_json
from orchestrator.model import Inventory

__all__ = [
    "LAB_ROOT",
    "LAB_ROOT_ENV",
    "LabStatus",
    "MachineStatus",
    "SshLogin",
    "lab_down",
    "lab_status",
    "lab_up",
    "missing_system_packages",
    "topology",
    "topology_json",
]

LAB_ROOT_ENV = "ORCHESTRATOR_LAB_ROOT"
LAB_ROOT = Path(os.environ.get(LAB_ROOT_ENV) or "/var/lib/orchestrator-lab")
STATE_FILE = "lab.json"

# command -> Debian package that provides it
_REQUIRED_COMMANDS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "nft": "nftables",
    "ip": "iproute2",
    "bridge": "iproute2",
    "setsid": "util-linux",
    "mount": "mount",
}


@dataclass(frozen=True)
class SshLogin:
    user: str
    key_file: str
    known_hosts: str

    def as_dict(self) -> dict[str, str]:
        return {"user": self.user, "key_file": self.key_file, "known_hosts": self.known_hosts}


@dataclass(frozen=True)
class MachineStatus:
    name: str
    kind: Kind
    state: str  # "running" | "stopped"
    pid: int | None
    management_address: str
    ssh: SshLogin

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "pid": self.pid,
            "management_address": self.management_address,
            "ssh": self.ssh.as_dict(),
        }


@dataclass(frozen=True)
class LabStatus:
    machines: tuple[MachineStatus, ...]
    lab_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds: image, boot, total (lab_up only)

    def as_dict(self) -> dict[str, Any]:
        """Exactly the `lab status --json` contract (DESIGN.md §5)."""
        return {"machines": [m.as_dict() for m in self.machines]}

    def machine(self, name: str) -> MachineStatus:
        for m in self.machines:
            if m.name == name:
                return m
        raise KeyError(name)


def missing_system_packages() -> list[str]:
    """Debian packages the lab needs that are not installed (by the commands they provide)."""
    return sorted({pkg for cmd, pkg in _REQUIRED_COMMANDS.items() if shutil.which(cmd) is None})


def _require_host() -> None:
    missing = missing_system_packages()
    if missing:
        raise LabError(
            "missing system packages: " + " ".join(missing),
            target="lab",
            hint="run `make setup` (or apt-get install " + " ".join(missing) + ")",
        )
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root (containers, bridges, mounts)", target="lab", hint="run it as root, e.g. with sudo"
        )


def _state() -> statefile.LabStateFile:
    """The lab's state file and lock (the code the VM lab shares)."""
    return statefile.LabStateFile(LAB_ROOT, STATE_FILE, label="lab", target="lab", down="orchestrator lab down",
                                  up_hint="run `orchestrator lab up` first")


@contextmanager
def _lock() -> Iterator[None]:
    with _state().locked():
        yield


def _read_state() -> dict[str, Any] | None:
    return _state().read()


def _write_state(state: dict[str, Any]) -> None:
    _state().write(state)


def _ssh_login() -> SshLogin:
    return SshLogin("root", str(keys.client_key_path(LAB_ROOT)), str(keys.known_hosts_path(LAB_ROOT)))


def _status(topo: Topology, timings: dict[str, float] | None = None) -> LabStatus:
    login = _ssh_login()
    out = []
    for m in topo.machines:
        running = machines.is_running(m.name)
        out.append(
            MachineStatus(
                m.name,
                m.kind,
                "running" if running else "stopped",
                machines.leader_pid(m.name) if running else None,
                str(m.management_address),
                login,
            )
        )
    return LabStatus(tuple(out), topo.lab_id, dict(timings or {}))


def _refuse_other(state: dict[str, Any] | None, topo: Topology, inventory: Inventory) -> None:
    _state().refuse_other(state, topo.lab_id, inventory)


MACHINE_UMASK = 0o022


def lab_up(inventory: Inventory) -> LabStatus:
    """Bring the inventory's lab up and wait until every machine answers SSH. Idempotent."""
    _require_host()
    topo = topology(inventory)
    started = time.monotonic()
    with _lock():
        state = _read_state()
        _refuse_other(state, topo, inventory)
        # The machines' files (image, overlays, their networkd and dbus configuration) must be readable
        # by the machines' own services: built with the usual 022, never the CLI's private 077.
        previous_umask = os.umask(MACHINE_UMASK)
        try:
            return _up_locked(inventory, topo, state, started)
        except BaseException as exc:
            # A failed up leaves nothing running: every machine, bridge and route it made goes,
            # the consoles are kept for the reason.
            kept = _keep_consoles()
            left = _remove_locked(inventory)
            if isinstance(exc, LabError):
                removed = "removed everything it started" if not left else "could not remove: " + ", ".join(left)
                raise LabError(
                    f"{exc.message}; {removed}",
                    target=exc.target,
                    hint=f"consoles kept in {kept}/NAME.log; `orchestrator lab up` tries again",
                ) from exc
            raise
        finally:
            os.umask(previous_umask)


def _keep_consoles() -> Path:
    """Copy every machine's console log to LAB_ROOT/failed-up/ (the machines' folders go)."""
    kept = LAB_ROOT / "failed-up"
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True, mode=0o700)
    mdir = LAB_ROOT / "machines"
    for log in sorted(mdir.glob("*/console.log")) if mdir.is_dir() else []:
        with contextlib.suppress(OSError):
            shutil.copyfile(log, kept / f"{log.parent.name}.log")
            (kept / f"{log.parent.name}.log").chmod(0o600)
    return kept


def _up_locked(inventory: Inventory, topo: Topology, state: dict[str, Any] | None, started: float) -> LabStatus:
    img = image_mod.ensure_image()
    if (
        state is not None
        and state.get("image") != str(img.path)
        and any(machines.is_running(m.name) for m in topo.machines)
    ):
        img = image_mod.Image(Path(state["image"]), "", built=False, seconds=0.0)
    image_done = time.monotonic()
    _write_state(
        {
            "lab_id": topo.lab_id,
            "inventory": inventory.path,
            "image": str(img.path),
            "bridges": [b.name for b in topo.bridges],
            "blackholes": [str(n) for n in topo.data_ranges],
            "machines": [m.name for m in topo.machines],
            "topology": topo.as_dict(),
        }
    )
    keys.ensure_keys(LAB_ROOT, topo)
    network.setup(topo)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda m: machines.prepare(LAB_ROOT, img.path, m), topo.machines))
    # A few launches at a time: all at once makes every boot wait on the same CPUs and locks.
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda m: machines.start(LAB_ROOT, img.path, m), topo.machines))
    launched = time.monotonic()
    timeout = 90.0 + 1.5 * len(topo.machines)
    results = reach.wait_all(
        {m.name: str(m.management_address) for m in topo.machines},
        keys.client_key_path(LAB_ROOT),
        keys.known_hosts_path(LAB_ROOT),
        timeout,
    )
    failed = [r for r in results if not r.ready]
    if failed:
        detail = "; ".join(f"{r.name}: {r.error or r.system_state}" for r in failed)
        raise LabError(
            f"{len(failed)} machine(s) did not come up: {detail}",
            target=inventory.path,
            hint="see the machines' console logs",
        )
    done = time.monotonic()
    timings = {
        "image": round(img.seconds, 2),
        "image_built": 1.0 if img.built else 0.0,
        "boot": round(done - launched, 2),
        "total": round(done - started, 2),
        "network_and_overlays": round(launched - image_done, 2),
    }
    return _status(topo, timings)


def lab_status(inventory: Inventory) -> LabStatus:
    """Each machine of the inventory's lab: running or stopped, its leader pid, how to log in."""
    topo = topology(inventory)
    _refuse_other(_read_state(), topo, inventory)
    return _status(topo)


def lab_down(inventory: Inventory | None = None) -> None:
    """Remove the lab: every container, overlay, bridge, cgroup, blackhole route and process.

    Works from the lab's state file, so it needs no inventory and also cleans up after a failed up;
    an inventory adds its machines and bridges to what is removed.
    """
    if os.geteuid() != 0:
        raise LabError("the lab needs root", target="lab", hint="run it as root, e.g. with sudo")
    with _lock():
        left = _remove_locked(inventory)
    if left:
        raise LabError(
            "could not remove: " + ", ".join(left),
            target="lab",
            hint="run `orchestrator lab down` again; check `mount` and `ip link` for leftovers",
        )


def _remove_locked(inventory: Inventory | None) -> list[str]:
    """What :func:`lab_down` does, under the lab's lock already held. Returns what is left."""
    state = _read_state() or {}
    names: set[str] = set(state.get("machines", [])) | set(machines.known_machines(LAB_ROOT))
    bridges: list[str] = list(state.get("bridges", []))
    blackholes: list[str] = list(state.get("blackholes", []))
    if inventory is not None:
        topo = topology(inventory)
        names |= {m.name for m in topo.machines}
        bridges += [b.name for b in topo.bridges if b.name not in bridges]
        blackholes += [str(n) for n in topo.data_ranges if str(n) not in blackholes]
    left: list[str] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for rest in pool.map(lambda n: machines.remove(LAB_ROOT, n), sorted(names)):
            left.extend(rest)
    machines.remove_cgroup_parents()
    left += network.teardown(bridges, blackholes)
    if not left:
        (LAB_ROOT / STATE_FILE).unlink(missing_ok=True)
        shutil.rmtree(LAB_ROOT / "machines", ignore_errors=True)
    return left


# The last answer of running_machines, by what stat said of the state file then. The power driver asks
# at every poll of every host it waits for (10 times a second each): parsing the 120 KB state of a
# 100-host lab each time was 40 % of the executor's Python time in a shutdown (py-spy). The file is only ever replaced
# whole (write_state: a new inode), so an unchanged stat means unchanged content.
_RUNNING: dict[Path, tuple[tuple[int, int, int, int], tuple[Path, tuple[str, ...]]]] = {}
_RUNNING_LOCK = threading.Lock()


def running_machines() -> tuple[Path, list[str]]:
    """The running lab's image and machine names, from its state file (for the power driver); read
    again only when the file has changed since the last call."""
    state_file = _state()
    try:
        st = os.stat(state_file.path)
        signature: tuple[int, int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        signature = None  # no lab (require says so), or unreadable (read says why)
    with _RUNNING_LOCK:
        known = _RUNNING.get(state_file.path)
    if signature is not None and known is not None and known[0] == signature:
        image, names = known[1]
        return image, list(names)
    state = state_file.require()
    answer = (Path(state["image"]), tuple(state.get("machines", [])))
    if signature is not None:
        with _RUNNING_LOCK:
            _RUNNING[state_file.path] = (signature, answer)
    return answer[0], list(answer[1])

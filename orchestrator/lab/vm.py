"""The lab as Vagrant VMs on libvirt: ``orchestrator lab up|down|status --provider vagrant``.

The same contract as the nspawn lab (:class:`orchestrator.lab.LabStatus`, DESIGN.md §5): every
machine of the inventory's topology, running or stopped, its hypervisor (qemu) pid while it runs, its
management address and how to log in with the lab's pinned keys. ``vm_lab_up`` builds the box once
per recipe (``vagrant/build-box.sh``, cached as ``CACHE/vagrant-box-HASH.box``), starts the libvirt
daemons by hand where no systemd runs them, runs ``vagrant up`` on ``vagrant/Vagrantfile`` and waits
until every VM answers SSH with its pinned host key. ``vm_lab_down`` destroys the VMs and the lab's
libvirt networks, and stops the daemons it started (by PID).

Everything of the VM lab lives under ``ORCHESTRATOR_VM_LAB_ROOT`` (default
``/var/lib/orchestrator-vm-lab``): ``ssh/`` (keys, kept across down and up), ``vagrant.d/`` (Vagrant's
home: the box), ``dotvagrant/`` (Vagrant's machine state), ``pool/`` (the libvirt storage pool
``orchestrator-vm-lab``), ``console/NAME.log``, ``run/`` (daemon pid files), ``vm-lab.json``.
Nothing here touches the nspawn lab (its bridges, its LAB_ROOT): both can run at once.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import LabError
from orchestrator.lab import LabStatus, MachineStatus, SshLogin, keys, reach, statefile
from orchestrator.lab.image import cache_dir, mirror
from orchestrator.lab.topology import Topology, topology
from orchestrator.lab.vagrant import VAGRANT_NETWORK, domain_name, network_names
from orchestrator.model import Inventory

__all__ = [
    "VM_LAB_ROOT_ENV",
    "Box",
    "box_recipe_hash",
    "ensure_box",
    "ensure_libvirt",
    "lab_machines",
    "libvirt_driver",
    "missing_vm_packages",
    "qemu_pid",
    "start_machine",
    "stop_libvirt",
    "stop_machine",
    "vm_lab_down",
    "vm_lab_root",
    "vm_lab_status",
    "vm_lab_up",
    "vm_state",
    "wait_booted",
]

VM_LAB_ROOT_ENV = "ORCHESTRATOR_VM_LAB_ROOT"
DEFAULT_VM_LAB_ROOT = Path("/var/lib/orchestrator-vm-lab")
VAGRANT_DIR_ENV = "ORCHESTRATOR_VAGRANT_DIR"
DRIVER_ENV = "ORCHESTRATOR_LAB_LIBVIRT_DRIVER"
BOX_NAME = "orchestrator-lab/debian12"
STATE_FILE = "vm-lab.json"
POOL = "orchestrator-vm-lab"
LIBVIRT_URI = "qemu:///system"
DAEMONS = ("virtlogd", "libvirtd")  # started in this order, stopped in reverse

# command -> Debian package that provides it
_REQUIRED_COMMANDS = {
    "vagrant": "vagrant",
    "virsh": "libvirt-clients",
    "libvirtd": "libvirt-daemon-system",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "extlinux": "extlinux",
    "dnsmasq": "dnsmasq-base",
    "iptables": "iptables",
    "debootstrap": "debootstrap",
    "sfdisk": "fdisk",
}


def vm_lab_root() -> Path:
    return Path(os.environ.get(VM_LAB_ROOT_ENV) or DEFAULT_VM_LAB_ROOT)


def vagrant_dir() -> Path:
    """The Vagrantfile's directory: ``vagrant/`` beside the package (a source checkout)."""
    configured = os.environ.get(VAGRANT_DIR_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "vagrant"


def missing_vm_packages() -> list[str]:
    """Debian packages the VM lab needs that are not installed (by the commands they provide)."""
    found = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return sorted({pkg for cmd, pkg in _REQUIRED_COMMANDS.items() if shutil.which(cmd, path=found) is None})


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


def _run(
    argv: list[str], *, timeout: float = 60.0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout, env=env, check=False
        )
    except FileNotFoundError as exc:
        raise LabError(
            f"{argv[0]} is not installed", target="vm lab", hint="run scripts/vagrant-tier.sh --setup-only"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(
            f"`{' '.join(argv[:3])} ...` did not finish within {timeout:.0f} s",
            target="vm lab",
            hint="is libvirtd running and answering? see `virsh -c qemu:///system list --all`",
        ) from exc


def virsh(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return _run(["virsh", "-q", "-c", LIBVIRT_URI, *args], timeout=timeout)


def _virsh_ok(*args: str, what: str, tolerate: tuple[str, ...] = ()) -> None:
    result = virsh(*args)
    if result.returncode != 0 and not any(t in result.stderr for t in tolerate):
        raise LabError(
            f"`virsh {' '.join(args)}` failed: {result.stderr.strip()}",
            target=what,
            hint="see `virsh -c qemu:///system list --all` and the VM's console log",
        )


# --------------------------------------------------------------------------------------------
# libvirt daemons
# --------------------------------------------------------------------------------------------


def _pidfile(daemon: str) -> Path:
    return vm_lab_root() / "run" / f"{daemon}.pid"


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def libvirt_answers() -> bool:
    try:
        return virsh("uri", timeout=15).returncode == 0
    except LabError:
        return False


def ensure_libvirt() -> bool:
    """libvirt answers on qemu:///system. Where nothing runs it (no systemd as PID 1), start
    virtlogd and libvirtd by hand with pid files under the VM lab root. True when started here."""
    if libvirt_answers():
        return False
    if Path("/run/systemd/system").is_dir():
        raise LabError(
            "libvirt does not answer on qemu:///system",
            target="vm lab",
            hint="start it: `sudo systemctl start libvirtd` (and add yourself to the libvirt group)",
        )
    if os.geteuid() != 0:
        raise LabError("starting libvirt needs root", target="vm lab", hint="run it as root, e.g. with sudo")
    kvm = Path("/dev/kvm")
    if kvm.exists() and (kvm.stat().st_mode & 0o060) != 0o060:
        # Without udev /dev/kvm is 0600 root: libvirt then re-probes qemu on every call (~50 s each).
        subprocess.run(["chgrp", "kvm", str(kvm)], check=False, capture_output=True)
        os.chmod(kvm, 0o660)
    # Never bring up libvirt's NAT network ("default"): the lab has no way out.
    Path("/etc/libvirt/qemu/networks/autostart/default.xml").unlink(missing_ok=True)
    (vm_lab_root() / "run").mkdir(parents=True, exist_ok=True)
    Path("/run/libvirt").mkdir(parents=True, exist_ok=True)
    for daemon in DAEMONS:
        if _pid_alive(_pidfile(daemon)) is None:
            result = _run([daemon, "-d", "-p", str(_pidfile(daemon))], timeout=30)
            if result.returncode != 0:
                raise LabError(
                    f"{daemon} did not start: {result.stderr.strip()}",
                    target="vm lab",
                    hint="apt-get install libvirt-daemon-system; see /var/log/libvirt/",
                )
    deadline = time.monotonic() + 30
    while not libvirt_answers():
        if time.monotonic() > deadline:
            raise LabError("libvirtd started but does not answer", target="vm lab", hint="see /var/log/libvirt/")
        time.sleep(0.3)
    return True


def stop_libvirt(timeout: float = 20.0) -> list[str]:
    """Stop the daemons this module started (by the PIDs in its pid files). Returns those left."""
    left: list[str] = []
    for daemon in reversed(DAEMONS):
        pidfile = _pidfile(daemon)
        pid = _pid_alive(pidfile)
        if pid is None:
            pidfile.unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pidfile) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pidfile) == pid:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        if _pid_alive(pidfile) == pid:
            left.append(f"{daemon} (pid {pid})")
        else:
            pidfile.unlink(missing_ok=True)
    return left


def _ensure_pool() -> None:
    if virsh("pool-info", POOL).returncode == 0:
        _virsh_ok("pool-start", POOL, what=POOL, tolerate=("already active",))
        return
    path = vm_lab_root() / "pool"
    path.mkdir(parents=True, exist_ok=True)
    _virsh_ok("pool-define-as", POOL, "dir", "--target", str(path), what=POOL)
    _virsh_ok("pool-start", POOL, what=POOL)


def libvirt_driver() -> str:
    """``kvm`` where the CPU offers hardware virtualisation, else ``qemu`` (software emulation).

    A /dev/kvm without VT-x/AMD-V in the CPU flags (as on PVM cloud machines) boots only specially
    built kernels: stock Debian ones hang, so it counts as no KVM. ORCHESTRATOR_LAB_LIBVIRT_DRIVER wins.
    """
    configured = os.environ.get(DRIVER_ENV)
    if configured in ("kvm", "qemu"):
        return configured
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "kvm" if Path("/dev/kvm").exists() and re.search(r"\b(vmx|svm)\b", flags) else "qemu"


# --------------------------------------------------------------------------------------------
# the box
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    path: Path
    recipe_hash: str
    built: bool  # built by this call (False: from the cache)
    seconds: float


def box_recipe_hash() -> str:
    """A hash of the box recipe (the build script) and the mirror it installs from."""
    recipe = (vagrant_dir() / "build-box.sh").read_bytes()
    return hashlib.sha256(recipe + b"\n" + mirror().encode()).hexdigest()[:16]


def box_path() -> Path:
    return cache_dir() / f"vagrant-box-{box_recipe_hash()}.box"


def ensure_box() -> Box:
    """The cached box for the current recipe, built first when missing (about 3-4 minutes)."""
    started = time.monotonic()
    final = box_path()
    with statefile.locked(cache_dir() / "vagrant-box.lock"):
        if final.exists():
            return Box(final, box_recipe_hash(), built=False, seconds=0.0)
        log = final.with_suffix(".log")
        with log.open("wb") as out:
            result = subprocess.run(
                ["bash", str(vagrant_dir() / "build-box.sh"), str(final), mirror()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0 or not final.exists():
            raise LabError(
                f"building the box failed (exit {result.returncode}; log: {log})",
                target="vagrant box",
                hint="build-box.sh needs root, debootstrap, qemu-utils, extlinux and a reachable Debian mirror",
            )
        for old in cache_dir().glob("vagrant-box-*.box"):
            if old != final:
                old.unlink(missing_ok=True)
    return Box(final, box_recipe_hash(), built=True, seconds=time.monotonic() - started)


def _box_volume_prefix() -> str:
    return BOX_NAME.replace("/", "-VAGRANTSLASH-")


def _ensure_box_added(box: Box, env: Mapping[str, str], machines: list[str]) -> None:
    """``vagrant box add`` the box unless this recipe's box is already there. A replaced box also
    drops the image vagrant-libvirt uploaded into the pool (it would otherwise reuse the old one).
    While VMs of the lab exist (their disks are overlays of the old image) the old box stays."""
    marker = Path(env["VAGRANT_HOME"]) / "orchestrator-box"
    if marker.exists() and marker.read_text().strip() == box.recipe_hash:
        return
    if marker.exists() and any(virsh("dominfo", domain_name(m)).returncode == 0 for m in machines):
        return
    for volume in virsh("vol-list", POOL).stdout.split("\n"):
        fields = volume.split()
        if fields and fields[0].startswith(_box_volume_prefix()):
            virsh("vol-delete", fields[0], "--pool", POOL)
    result = _run(["vagrant", "box", "add", "--force", "--name", BOX_NAME, str(box.path)], timeout=600, env=env)
    if result.returncode != 0:
        raise LabError(
            f"`vagrant box add` failed: {_tail(result.stdout + result.stderr)}",
            target="vagrant box",
            hint=f"remove {box.path} to rebuild it",
        )
    marker.write_text(box.recipe_hash + "\n")


# --------------------------------------------------------------------------------------------
# VMs
# --------------------------------------------------------------------------------------------


def vm_state(machine: str) -> str | None:
    """libvirt's state of the machine's domain ("running", "shut off", ...), None if undefined."""
    result = virsh("domstate", domain_name(machine), timeout=30)
    return result.stdout.strip() if result.returncode == 0 else None


def is_running(machine: str) -> bool:
    return vm_state(machine) not in (None, "shut off", "crashed")


def qemu_pid(machine: str) -> int | None:
    """The VM's hypervisor process while it runs."""
    try:
        pid = int(Path(f"/run/libvirt/qemu/{domain_name(machine)}.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _bridge_of(network: str) -> str | None:
    result = virsh("net-info", network, timeout=15)
    for line in result.stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Bridge":
            return value.strip()
    return None


def isolate_management_ports(machine: str, networks: tuple[str, ...]) -> None:
    """Management networks (the lab's and Vagrant's) reach the management station only: every VM's
    port on them is an isolated bridge port, so they are never a path between VMs (like the nspawn lab).
    The host's end of each of the VM's ports has IPv6 off, as on the nspawn lab's bridges."""
    bridges = {b for b in (_bridge_of(n) for n in networks) if b}
    result = virsh("domiflist", domain_name(machine), timeout=15)
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "network" and fields[0].startswith("vnet"):
            tap = fields[0]
            # the host's end of every VM port is a bridge port only: no IPv6 (no link-local chatter)
            ipv6 = Path("/proc/sys/net/ipv6/conf", tap, "disable_ipv6")
            if ipv6.exists():
                ipv6.write_text("1\n")
            master = Path("/sys/class/net", tap, "master")
            if master.exists() and master.resolve().name in bridges:
                isolate = ["bridge", "link", "set", "dev", tap, "isolated", "on"]
                subprocess.run(isolate, capture_output=True, check=False)


def _management_networks() -> tuple[str, ...]:
    state = _read_state() or {}
    return tuple(state.get("management_networks", [VAGRANT_NETWORK]))


def start_machine(machine: str) -> None:
    """Power on (``virsh start``); returns once the domain runs."""
    _virsh_ok("start", domain_name(machine), what=machine, tolerate=("already active",))
    isolate_management_ports(machine, _management_networks())


def wait_booted(machine: str, timeout: float) -> reach.Readiness:
    """Wait until a started VM answers SSH with its pinned host key and systemd says its boot is
    done (``systemctl is-system-running --wait``: running or degraded)."""
    address = _machine_addresses().get(machine)
    if address is None:
        raise LabError("not a machine of the running VM lab", target=machine,
                       hint="run `orchestrator lab up INVENTORY --provider vagrant`")
    root = vm_lab_root()
    deadline = time.monotonic() + timeout
    return reach.wait_one(machine, address, keys.client_key_path(root), keys.known_hosts_path(root), deadline)


def _machine_addresses() -> dict[str, str]:
    state = _read_state() or {}
    return dict(state.get("addresses", {}))


def stop_machine(machine: str, graceful: bool) -> None:
    """Graceful: ACPI power button (``virsh shutdown``), returns at once. Hard: ``virsh destroy``,
    returns once the hypervisor process is gone."""
    if graceful:
        _virsh_ok("shutdown", domain_name(machine), what=machine, tolerate=("not running",))
    else:
        _virsh_ok("destroy", domain_name(machine), what=machine, tolerate=("not running",))


# --------------------------------------------------------------------------------------------
# state and status
# --------------------------------------------------------------------------------------------


@contextmanager
def _lock() -> Iterator[None]:
    with statefile.locked(vm_lab_root() / "lock"):
        yield


def _read_state() -> dict[str, Any] | None:
    return statefile.read_state(
        vm_lab_root() / STATE_FILE, target="vm lab",
        hint="run `orchestrator lab down --provider vagrant` to remove the VM lab and its state")


def _write_state(state: dict[str, Any]) -> None:
    statefile.write_state(vm_lab_root() / STATE_FILE, state)


def lab_machines() -> list[str]:
    """The machines of the VM lab that is up (for the power driver)."""
    state = _read_state()
    if state is None:
        raise LabError(
            "no VM lab is up", target="vm lab", hint="run `orchestrator lab up INVENTORY --provider vagrant`"
        )
    return list(state.get("machines", []))


def _refuse_other(state: dict[str, Any] | None, topo: Topology, inventory: Inventory) -> None:
    if state is not None and state.get("lab_id") != topo.lab_id:
        raise LabError(
            f"a different VM lab is up (from {state.get('inventory', '?')})",
            target=inventory.path,
            hint="run `orchestrator lab down --provider vagrant` first; one VM lab at a time",
        )


def _login() -> SshLogin:
    root = vm_lab_root()
    return SshLogin("root", str(keys.client_key_path(root)), str(keys.known_hosts_path(root)))


def _status(topo: Topology, timings: dict[str, float] | None = None) -> LabStatus:
    login = _login()

    def one(m: Any) -> MachineStatus:
        running = is_running(m.name)
        pid = qemu_pid(m.name) if running else None
        return MachineStatus(m.name, m.kind, "running" if running else "stopped", pid, str(m.management_address), login)

    with ThreadPoolExecutor(max_workers=8) as pool:
        machines = tuple(pool.map(one, topo.machines))
    return LabStatus(machines, topo.lab_id, dict(timings or {}))


def _vagrant_env(inventory_path: str) -> dict[str, str]:
    root = vm_lab_root()
    wrapper = root / "bin" / "qemu-tcg-wrapper"  # readable by libvirt's qemu user wherever the repo is
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vagrant_dir() / "qemu-tcg-wrapper", wrapper)
    wrapper.chmod(0o755)
    (root / "console").mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "VAGRANT_CWD": str(vagrant_dir()),
        "VAGRANT_HOME": str(root / "vagrant.d"),
        "VAGRANT_DOTFILE_PATH": str(root / "dotvagrant"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        "VAGRANT_NO_COLOR": "1",
        "ORCHESTRATOR_LAB_INVENTORY": str(Path(inventory_path).resolve()),
        "ORCHESTRATOR_VM_LAB_ROOT": str(root),
        "ORCHESTRATOR_PYTHON": sys.executable,
        "ORCHESTRATOR_LAB_BOX": BOX_NAME,
        "ORCHESTRATOR_LAB_LIBVIRT_DRIVER": libvirt_driver(),
        "ORCHESTRATOR_LAB_EMULATOR": str(wrapper),
        "ORCHESTRATOR_LAB_STORAGE_POOL": POOL,
        "ORCHESTRATOR_LAB_CONSOLE_DIR": str(root / "console"),
    }


def _run_logged(argv: list[str], log: Path, *, timeout: float, env: Mapping[str, str]) -> int:
    """Run a long command with its output going to ``log`` as it comes (to follow it with tail -f)."""
    with log.open("wb") as out:
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(
                f"`{' '.join(argv[:2])}` did not finish within {timeout:.0f} s (log: {log})",
                target="vm lab",
                hint="see the VMs' console logs; software emulation on a loaded machine is slow",
            ) from exc
    return proc.returncode


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def vm_lab_up(inventory: Inventory, timeout: float = 900.0) -> LabStatus:
    """Bring the inventory's lab up as VMs and wait until each answers SSH with its pinned key. Idempotent.

    ``timings`` (seconds): box (build or cache), box_built (1/0), vagrant_up, ssh, total.
    """
    missing = missing_vm_packages()
    if missing:
        raise LabError(
            "missing system packages: " + " ".join(missing),
            target="vm lab",
            hint="apt-get install " + " ".join(missing) + " (scripts/vagrant-tier.sh --setup-only does it)",
        )
    topo = topology(inventory)
    root = vm_lab_root()
    started = time.monotonic()
    with _lock():
        _refuse_other(_read_state(), topo, inventory)
        keys.ensure_keys(root, topo)
        box = ensure_box()
        box_done = time.monotonic()
        daemons = ensure_libvirt()
        _ensure_pool()
        env = _vagrant_env(inventory.path)
        _ensure_box_added(box, env, [m.name for m in topo.machines])
        mgmt_net = next(n for n in network_names(topo) if n.endswith("-mgmt"))
        previous = _read_state() or {}
        _write_state(
            {
                "lab_id": topo.lab_id,
                "inventory": str(Path(inventory.path).resolve()),
                "machines": [m.name for m in topo.machines],
                "domains": [domain_name(m.name) for m in topo.machines],
                "addresses": {m.name: str(m.management_address) for m in topo.machines},
                "networks": network_names(topo),
                "management_networks": [mgmt_net, VAGRANT_NETWORK],
                "started_libvirt": bool(daemons or previous.get("started_libvirt")),
                "box": str(box.path),
            }
        )
        up_started = time.monotonic()
        log = root / "vagrant-up.log"
        rc = _run_logged(["vagrant", "up", "--provider=libvirt"], log, timeout=timeout, env=env)
        if rc != 0:
            raise LabError(
                f"`vagrant up` failed (exit {rc}; log: {log}):\n{_tail(log.read_text(errors='replace'))}",
                target=inventory.path,
                hint=f"see {root}/console/NAME.log; `orchestrator lab down --provider vagrant` removes the partial lab",
            )
        up_done = time.monotonic()
        for m in topo.machines:
            isolate_management_ports(m.name, (mgmt_net, VAGRANT_NETWORK))
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
                hint=f"see {root}/console/NAME.log; `orchestrator lab down --provider vagrant` removes the partial lab",
            )
        done = time.monotonic()
    timings = {
        "box": round(box_done - started if box.built else 0.0, 2),
        "box_built": 1.0 if box.built else 0.0,
        "vagrant_up": round(up_done - up_started, 2),
        "ssh": round(done - up_done, 2),
        "total": round(done - started, 2),
    }
    return _status(topo, timings)


def vm_lab_status(inventory: Inventory) -> LabStatus:
    """Each VM of the inventory's lab: running or stopped, its qemu pid, how to log in."""
    topo = topology(inventory)
    _refuse_other(_read_state(), topo, inventory)
    if not libvirt_answers():  # no libvirt, no VM runs
        login = _login()
        stopped = [MachineStatus(m.name, m.kind, "stopped", None, str(m.management_address), login)
                   for m in topo.machines]
        return LabStatus(tuple(stopped), topo.lab_id)
    return _status(topo)


# The chains libvirtd adds to iptables (and the jumps to them) whatever its networks; left empty
# once its networks are gone.
_LIBVIRT_CHAINS = {
    "filter": (("INPUT", "LIBVIRT_INP"), ("OUTPUT", "LIBVIRT_OUT"), ("FORWARD", "LIBVIRT_FWX"),
               ("FORWARD", "LIBVIRT_FWI"), ("FORWARD", "LIBVIRT_FWO")),
    "nat": (("POSTROUTING", "LIBVIRT_PRT"),),
    "mangle": (("POSTROUTING", "LIBVIRT_PRT"),),
}


def _remove_libvirt_chains() -> None:
    """After stopping the libvirtd this module started: remove its iptables chains, if empty."""
    if shutil.which("iptables") is None:
        return
    for table, jumps in _LIBVIRT_CHAINS.items():
        for parent, chain in jumps:
            rules = subprocess.run(["iptables", "-w", "-t", table, "-S", chain], capture_output=True, text=True,
                                   check=False)
            if rules.returncode != 0 or rules.stdout.strip() != f"-N {chain}":
                continue  # absent, or not empty: not ours to judge
            subprocess.run(["iptables", "-w", "-t", table, "-D", parent, "-j", chain], capture_output=True,
                           check=False)
            subprocess.run(["iptables", "-w", "-t", table, "-X", chain], capture_output=True, check=False)


def vm_lab_down(inventory: Inventory | None = None, stop_daemons: bool = True) -> None:
    """Remove the VM lab: its VMs (``vagrant destroy``, then any domain left), its libvirt networks,
    and the libvirt daemons it started. Works from the state file, so it also cleans up after a
    failed up; an inventory adds its machines and networks. SSH keys and the box stay."""
    root = vm_lab_root()
    with _lock():
        state = _read_state() or {}
        machines: set[str] = set(state.get("machines", []))
        networks: list[str] = list(state.get("networks", []))
        inventory_path = state.get("inventory")
        if inventory is not None:
            topo = topology(inventory)
            machines |= {m.name for m in topo.machines}
            networks += [n for n in network_names(topo) if n not in networks]
            inventory_path = inventory_path or inventory.path
        left: list[str] = []
        if machines or networks:
            ensure_libvirt()  # VMs outlive a stopped libvirtd: it must run to remove them
        if libvirt_answers():
            if inventory_path and Path(inventory_path).exists() and (root / "dotvagrant").exists():
                _run(["vagrant", "destroy", "-f"], timeout=600, env=_vagrant_env(inventory_path))
            for m in sorted(machines):
                dom = domain_name(m)
                if virsh("dominfo", dom).returncode == 0:
                    virsh("destroy", dom)
                    virsh("undefine", dom, "--remove-all-storage", "--nvram")
                    if virsh("dominfo", dom).returncode == 0:
                        left.append(f"domain {dom}")
            for net in networks:
                if virsh("net-info", net).returncode == 0:
                    virsh("net-destroy", net)
                    virsh("net-undefine", net)
                    if virsh("net-info", net).returncode == 0:
                        left.append(f"network {net}")
        shutil.rmtree(root / "dotvagrant", ignore_errors=True)
        if stop_daemons:
            started_here = any(_pid_alive(_pidfile(d)) is not None for d in DAEMONS)
            left += stop_libvirt()
            if started_here and not left:
                _remove_libvirt_chains()
        if left:
            raise LabError(
                "could not remove: " + ", ".join(left),
                target="vm lab",
                hint="run `orchestrator lab down --provider vagrant` again; see `virsh -c qemu:///system list --all`",
            )
        (root / STATE_FILE).unlink(missing_ok=True)

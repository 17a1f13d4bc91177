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

import fcntl
import grp
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator.errors import LabError
from orchestrator.lab import LabStatus, MachineStatus, SshLogin, keys, network, reach, statefile
from orchestrator.lab.image import cache_dir, mirror
from orchestrator.lab.topology import Topology, topology
from orchestrator.lab.vagrant import VAGRANT_NETWORK, domain_name, network_names
from orchestrator.model import Inventory

__all__ = [
    "UP_TIMEOUT_ENV",
    "VM_LAB_ROOT_ENV",
    "Box",
    "DeviceOps",
    "UpBudget",
    "box_recipe_hash",
    "ensure_box",
    "ensure_kvm_device",
    "ensure_libvirt",
    "forget_box",
    "kvm_usable",
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
# The tools run here (build-box.sh, libvirtd, virtlogd, vagrant, virsh) make system files, a guest's
# root filesystem among them: they run with the usual umask, never the CLI's private 077 (a box built
# under 077 has 0600 networkd files in /etc, so its VMs never ask for an address).
SYSTEM_UMASK = 0o022
KVM_DEVICE = Path("/dev/kvm")
KVM_GROUP = "kvm"  # Debian's libvirt-qemu user has it as its primary group
_KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)

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
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout, env=env, check=False,
            umask=SYSTEM_UMASK,
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


Progress = Callable[[str], None]
"""Receives one line of progress (what ``lab up`` is doing); the CLI prints it."""


def _note(message: str, progress: Progress | None) -> None:
    """A line for the VM lab's log (ROOT/vm-lab.log, 0600) and for the progress callback."""
    root = vm_lab_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = root / "vm-lab.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(time.strftime("%Y-%m-%dT%H:%M:%S%z ") + message + "\n")
    if progress is not None:
        progress(message)


@dataclass(frozen=True)
class DeviceOps:
    """How :func:`ensure_kvm_device` looks at and changes the device (unit tests pass fakes)."""

    stat: Callable[[Path], os.stat_result] = os.stat
    chown: Callable[[Path, int, int], None] = os.chown
    chmod: Callable[[Path, int], None] = os.chmod
    group_id: Callable[[str], int] = lambda name: grp.getgrnam(name).gr_gid
    group_name: Callable[[int], str] = lambda gid: _group_name(gid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def libvirt_answers() -> bool:
    try:
        return virsh("uri", timeout=15).returncode == 0
    except LabError:
        return False


def ensure_libvirt(progress: Progress | None = None) -> bool:
    """libvirt answers on qemu:///system. Where nothing runs it (no systemd as PID 1), start
    virtlogd and libvirtd by hand with pid files under the VM lab root. True when started here.

    As root, /dev/kvm is first made what udev makes it (:func:`ensure_kvm_device`), whoever runs
    libvirt: it checks the device on every call."""
    if os.geteuid() == 0:
        change = ensure_kvm_device()
        if change:
            _note(change, progress)
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


def ensure_kvm_device(device: Path = KVM_DEVICE, *, ops: DeviceOps | None = None) -> str | None:
    """Make ``device`` (/dev/kvm) usable by libvirt's qemu user (group ``kvm``), as udev does.

    Without udev (containers, CI, cloud machines) the device can be found 0600 root:root or 0660
    root:root: libvirt then finds KVM "enabled when probing but not available now" and re-probes
    qemu on every call (about 50 s each), whatever the VMs' driver. Group ``kvm`` with read and
    write, or read and write for everyone, is usable; anything else gets group ``kvm`` and mode
    0660. Returns what was changed (for the log), None when nothing was (also when there is no
    device)."""
    ops = ops or DeviceOps()
    try:
        st = ops.stat(device)
    except FileNotFoundError:
        return None
    try:
        kvm_gid = ops.group_id(KVM_GROUP)
    except KeyError as exc:
        raise LabError(
            f"{device} exists but there is no group {KVM_GROUP!r}",
            target="vm lab",
            hint="apt-get install qemu-system-x86 (scripts/vagrant-tier.sh --setup-only) creates it",
        ) from exc
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o006 == 0o006 or (st.st_gid == kvm_gid and mode & 0o060 == 0o060):
        return None
    changes: list[str] = []
    if st.st_gid != kvm_gid:
        ops.chown(device, -1, kvm_gid)
        changes.append(f"group {ops.group_name(st.st_gid)} -> {KVM_GROUP}")
    if mode & 0o060 != 0o060:
        ops.chmod(device, mode | 0o060)
        changes.append(f"mode {mode:04o} -> {mode | 0o060:04o}")
    return f"{device}: {', '.join(changes)} (libvirt's qemu user is in group {KVM_GROUP})"


def kvm_usable(device: Path = KVM_DEVICE, cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[bool, str]:
    """Whether VMs can run under KVM here, and why (at once: no qemu or libvirt probe).

    KVM needs the device to open and answer (API version 12) and the CPU to show VT-x or AMD-V: a
    /dev/kvm without them (PVM, as on nested cloud machines such as this project's CI) runs only
    specially built guest kernels, and Debian's stock kernel hangs on it before its first message."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"{device} does not open ({exc.strerror})"
    try:
        version = fcntl.ioctl(fd, _KVM_GET_API_VERSION)
    except OSError as exc:
        return False, f"{device} does not answer ({exc.strerror})"
    finally:
        os.close(fd)
    if version != 12:
        return False, f"{device} speaks KVM API {version}, not 12"
    try:
        flags = cpuinfo.read_text()
    except OSError:
        flags = ""
    if not re.search(r"\b(vmx|svm)\b", flags):
        return False, f"{device} opens but the CPU shows no VT-x/AMD-V (a PVM host: stock kernels hang)"
    return True, f"{device} opens and the CPU has VT-x/AMD-V"


def libvirt_driver() -> str:
    """``kvm`` where :func:`kvm_usable`, else ``qemu`` (software emulation).
    ORCHESTRATOR_LAB_LIBVIRT_DRIVER wins."""
    configured = os.environ.get(DRIVER_ENV)
    if configured in ("kvm", "qemu"):
        return configured
    return "kvm" if kvm_usable()[0] else "qemu"


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
                umask=SYSTEM_UMASK,
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


def forget_box(*, built_box: bool = True) -> list[str]:
    """Forget every cached trace of the box so that the next ``lab up`` takes the first-time path
    (CI machines are not fresh; the README's users are): the volumes of the lab's libvirt pool (the
    box's image, uploaded once per box), Vagrant's copy (its home under the VM lab root) and, with
    ``built_box``, the built box itself. Refused while a VM lab is up. Returns what was removed."""
    root = vm_lab_root()
    with _lock():
        if (root / STATE_FILE).exists():
            raise LabError("a VM lab is up", target="vm lab",
                           hint="run `orchestrator lab down --provider vagrant` first")
        removed: list[str] = []
        if libvirt_answers() and virsh("pool-info", POOL).returncode == 0:
            virsh("pool-refresh", POOL)
            for line in virsh("vol-list", POOL).stdout.splitlines():
                fields = line.split()
                if fields and virsh("vol-delete", fields[0], "--pool", POOL).returncode == 0:
                    removed.append(f"pool volume {fields[0]}")
        for volume in sorted((root / "pool").glob("*")) if (root / "pool").is_dir() else []:
            volume.unlink()  # libvirt not running: its pool is read afresh when it starts
            removed.append(f"pool volume {volume.name}")
        if (root / "vagrant.d").exists():
            shutil.rmtree(root / "vagrant.d")
            removed.append(str(root / "vagrant.d"))
    if built_box:
        with statefile.locked(cache_dir() / "vagrant-box.lock"):
            for box in sorted(cache_dir().glob("vagrant-box-*.box")):
                box.unlink()
                removed.append(str(box))
    return removed


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


# What vagrant and vagrant-libvirt say about a machine (the text of its `==> NAME: ...` lines) ->
# the stage it is at. The first pattern that matches wins; other lines leave the stage as it was.
_STAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), stage)
    for pattern, stage in (
        (r"^Uploading base box image", "uploading the box into the libvirt pool (first time only)"),
        (r"^Creating image \(snapshot", "creating its disk"),
        (r"^Creating domain", "defining the VM"),
        (r"^Starting domain", "starting"),
        (r"^Waiting for domain to get an IP", "booting (waiting for its address)"),
        (r"^Waiting for machine to boot", "booting (waiting for SSH)"),
        (r"^Machine booted and ready", "booted"),
        (r"^Running provisioner: hostkey", "provisioning (its pinned host key)"),
        (r"^Running provisioner: lab", "provisioning (networks, nftables, services)"),
        (r"^Machine already provisioned", "already provisioned"),
        (r"^Domain is already running|^Machine is already running", "already running"),
    )
)


UP_FINISHED = "up (booted and provisioned)"


def parse_machine_readable(line: str) -> tuple[str, str] | None:
    """One line of ``vagrant --machine-readable`` (``TIMESTAMP,TARGET,TYPE,DATA...``) -> (target,
    text) for a ``ui`` line, None for anything else. Vagrant escapes commas and newlines in data."""
    fields = line.rstrip("\n").split(",", 4)
    if len(fields) < 5 or fields[2] != "ui":
        return None
    text = fields[4].replace("%!(VAGRANT_COMMA)", ",").replace("\\n", "\n").replace("\\r", "")
    return fields[1], text


def finished_machine(line: str) -> str | None:
    """The machine a ``TIMESTAMP,TARGET,action,up,end`` line says is up, None for any other line."""
    fields = line.rstrip("\n").split(",")
    if len(fields) == 5 and fields[2:] == ["action", "up", "end"] and fields[1]:
        return fields[1]
    return None


_PANIC = re.compile(rb"Kernel panic - not syncing: ([^\r\n]{0,120})")


def console_panics(console: Path) -> list[str]:
    """The kernel panics a VM's serial console log shows (their reasons, oldest first)."""
    try:
        data = console.read_bytes()
    except OSError:
        return []
    return [m.group(1).decode("ascii", "replace").strip() for m in _PANIC.finditer(data)]


def vagrant_stage(text: str) -> str | None:
    """The stage a machine is at, from one of vagrant's messages about it (None: no change)."""
    message = re.sub(r"^==> [^:]+: ", "", text.strip())
    for pattern, stage in _STAGES:
        if pattern.search(message):
            return stage
    return None


class _UpProgress:
    """Follows ``vagrant up --machine-readable``: writes it readably to its log, and reports each
    machine's change of stage through ``progress``."""

    def __init__(
        self, log: IO[str], machines: list[str], progress: Progress | None, started: float,
        console_dir: Path | None = None,
    ) -> None:
        self.log = log
        self.machines = set(machines)
        self.progress = progress
        self.started = started
        self.console_dir = console_dir
        self.stages: dict[str, str] = {}
        self.panics: dict[str, int] = {}

    def check_consoles(self) -> None:
        """Say once per new panic which VM's kernel panicked at boot (the box boots with panic=5, so
        it restarts itself and vagrant keeps waiting for it)."""
        if self.console_dir is None:
            return
        for machine in sorted(self.machines):
            if self.stages.get(machine) == UP_FINISHED:
                continue
            panics = console_panics(self.console_dir / f"{machine}.log")
            for reason in panics[self.panics.get(machine, 0):]:
                if self.progress is not None:
                    self.progress(f"{machine}: kernel panic at boot ({reason}); it restarts itself "
                                  f"({time.monotonic() - self.started:.0f} s)")
            self.panics[machine] = len(panics)

    def summary(self) -> str:
        """Where every VM is, e.g. ``120 s: vm-fw booting (waiting for SSH), vm-ad1 starting, ...``."""
        where = ", ".join(f"{m} {self.stages.get(m, 'waiting for vagrant')}" for m in sorted(self.machines))
        return f"{time.monotonic() - self.started:.0f} s: {where}"

    def follow(self, stream: IO[str]) -> None:
        for raw in stream:
            self.line(raw)

    def line(self, raw: str) -> None:
        parsed = parse_machine_readable(raw)
        if parsed is None:
            self.log.write(raw if raw.endswith("\n") else raw + "\n")
            self.log.flush()
            finished = finished_machine(raw)
            if finished in self.machines:
                self._enter(finished, UP_FINISHED)
            return
        target, text = parsed
        self.log.write(text.rstrip("\n") + "\n")
        self.log.flush()
        if target not in self.machines:
            return
        stage = vagrant_stage(text)
        if stage is not None:
            self._enter(target, stage)

    def _enter(self, target: str, stage: str) -> None:
        if self.stages.get(target) == stage:
            return
        self.stages[target] = stage
        if self.progress is not None:
            self.progress(f"{target}: {stage} ({time.monotonic() - self.started:.0f} s)")


def _run_vagrant_up(
    log: Path, machines: list[str], *, timeout: float, env: Mapping[str, str], progress: Progress | None
) -> int:
    """``vagrant up`` with its output going to ``log`` as it comes (to follow with tail -f) and
    each machine's stage to ``progress``. Past ``timeout`` it is stopped (its whole process group)."""
    argv = ["vagrant", "up", "--provider=libvirt", "--machine-readable"]
    started = time.monotonic()
    with log.open("w", encoding="utf-8", errors="replace") as out:
        os.fchmod(out.fileno(), 0o600)  # also when an older log was made with other modes
        follower = _UpProgress(out, machines, progress, started, console_dir=Path(env["ORCHESTRATOR_LAB_CONSOLE_DIR"])
                               if "ORCHESTRATOR_LAB_CONSOLE_DIR" in env else None)
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                text=True, errors="replace", start_new_session=True, umask=SYSTEM_UMASK,
            )
        except FileNotFoundError as exc:
            raise LabError("vagrant is not installed", target="vm lab",
                           hint="run scripts/vagrant-tier.sh --setup-only") from exc
        assert proc.stdout is not None
        stdout = proc.stdout
        reader = threading.Thread(target=follower.follow, args=(stdout,), daemon=True)
        reader.start()
        try:
            rc = _wait_reporting(proc, follower, started + timeout)
        except BaseException as exc:  # past the limit, or interrupted: vagrant is in its own session
            _stop_group(proc)
            reader.join(timeout=10)
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            raise LabError(
                f"`vagrant up` did not finish within {timeout:.0f} s (log: {log}; stages: "
                + (", ".join(f"{m} {follower.stages[m]}" for m in sorted(follower.stages)) or "none reached")
                + ")",
                target="vm lab",
                hint=f"see the VMs' console logs in {vm_lab_root() / 'console'}; {UP_TIMEOUT_ENV}=SECONDS "
                "sets a longer limit",
            ) from None
        reader.join(timeout=10)
    return rc


PROGRESS_EVERY_S = 60.0  # while vagrant up runs, every VM's stage this often
CONSOLE_CHECK_EVERY_S = 10.0  # and its console logs for kernel panics this often


def _wait_reporting(proc: subprocess.Popen[str], follower: _UpProgress, deadline: float) -> int:
    """Wait for ``proc`` until ``deadline`` (then TimeoutExpired), saying every minute where each VM
    is, and as soon as it is seen, a VM's kernel panic."""
    next_summary = time.monotonic() + PROGRESS_EVERY_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise subprocess.TimeoutExpired(proc.args, 0)
        try:
            return proc.wait(timeout=min(CONSOLE_CHECK_EVERY_S, PROGRESS_EVERY_S, remaining))
        except subprocess.TimeoutExpired:
            follower.check_consoles()
            if follower.progress is not None and next_summary <= time.monotonic() < deadline:
                follower.progress(follower.summary())
                next_summary = time.monotonic() + PROGRESS_EVERY_S


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """Stop a command started in its own session and everything it started (TERM, then KILL)."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# Seconds of one CPU that one VM needs from `vagrant up` to provisioned (measured: under software
# emulation 5 VMs took 430 s on 2 cores, ~170 s each; under KVM a few seconds each).
VM_CPU_SECONDS = {"qemu": 180.0, "kvm": 30.0}
# Copying the box's image into the libvirt pool, once per box: measured 2 s for 143 MB; allowed
# 30 s plus 10 MB/s.
BOX_UPLOAD_FIXED_SECONDS = 30.0
BOX_UPLOAD_MB_PER_SECOND = 10.0
UP_TIMEOUT_ENV = "ORCHESTRATOR_VM_LAB_UP_TIMEOUT"


@dataclass(frozen=True)
class UpBudget:
    """How long ``vagrant up`` may take, from what it has to do."""

    vms: int
    driver: str  # kvm or qemu
    cpus: int
    upload: bool  # the box's image is not in the libvirt pool yet
    box_mb: float = 0.0  # the box's size (what the upload copies)

    @property
    def upload_seconds(self) -> float:
        return BOX_UPLOAD_FIXED_SECONDS + self.box_mb / BOX_UPLOAD_MB_PER_SECOND if self.upload else 0.0

    @property
    def seconds(self) -> float:
        # the VMs boot at once and share the CPUs; twice the measured time, plus vagrant's own start
        parallel = self.vms / max(1, min(self.cpus, self.vms))
        return round(60.0 + self.upload_seconds + 2.0 * VM_CPU_SECONDS[self.driver] * parallel)

    def describe(self) -> str:
        return (f"{self.vms} VMs under {self.driver} on {self.cpus} CPUs"
                + (f", first upload of the box ({self.box_mb:.0f} MB) into the pool" if self.upload else "")
                + f": `vagrant up` may take {self.seconds:.0f} s")


def _box_volume_in_pool() -> bool:
    return any(line.split() and line.split()[0].startswith(_box_volume_prefix())
               for line in virsh("vol-list", POOL).stdout.splitlines())


def _up_timeout(budget: UpBudget) -> float:
    configured = os.environ.get(UP_TIMEOUT_ENV)
    if configured:
        try:
            return float(configured)
        except ValueError:
            raise LabError(f"{UP_TIMEOUT_ENV}={configured!r} is not a number of seconds", target="vm lab",
                           hint=f"unset it, or give seconds, e.g. {UP_TIMEOUT_ENV}=1800") from None
    return budget.seconds


def vm_lab_up(inventory: Inventory, timeout: float | None = None, progress: Progress | None = None) -> LabStatus:
    """Bring the inventory's lab up as VMs and wait until each answers SSH with its pinned key. Idempotent.

    ``timeout`` limits ``vagrant up``; by default it follows from the work (:class:`UpBudget`;
    ``ORCHESTRATOR_VM_LAB_UP_TIMEOUT`` overrides it). ``progress`` receives a line per step and per
    change of a VM's stage. A failed up removes what it started (VMs, the lab's libvirt networks,
    the daemons it started) and keeps the console logs (ROOT/console/NAME.log) and vagrant's log.

    ``timings`` (seconds): box (build or cache), box_built (1/0), box_upload (1/0), vagrant_up,
    vagrant_up_limit, ssh, total.
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
        _guard_lab_ranges(inventory)
        try:
            status = _up_locked(inventory, topo, timeout, progress, started)
            _note("up: " + ", ".join(f"{k} {v:.0f}" for k, v in status.timings.items()), progress)
            return status
        except BaseException as exc:
            _note(f"lab up failed ({type(exc).__name__}): removing the VMs, networks and daemons it started",
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


def _up_locked(
    inventory: Inventory, topo: Topology, timeout: float | None, progress: Progress | None, started: float
) -> LabStatus:
    root = vm_lab_root()
    keys.ensure_keys(root, topo)
    if not box_path().exists():
        _note(f"building the box {box_path().name} (1-3 minutes, once per recipe)", progress)
    box = ensure_box()
    box_done = time.monotonic()
    daemons = ensure_libvirt(progress)
    _ensure_pool()
    env = _vagrant_env(inventory.path)
    machines = [m.name for m in topo.machines]
    _ensure_box_added(box, env, machines)
    mgmt_net = next(n for n in network_names(topo) if n.endswith("-mgmt"))
    previous = _read_state() or {}
    _write_state(
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
    budget = UpBudget(len(machines), env["ORCHESTRATOR_LAB_LIBVIRT_DRIVER"], os.cpu_count() or 1,
                      upload=not _box_volume_in_pool(), box_mb=box.path.stat().st_size / 1e6)
    limit = timeout if timeout is not None else _up_timeout(budget)
    _note(budget.describe() + (f" (limit set to {limit:.0f} s)" if limit != budget.seconds else ""), progress)
    up_started = time.monotonic()
    log = root / "vagrant-up.log"
    rc = _run_vagrant_up(log, machines, timeout=limit, env=env, progress=progress)
    if rc != 0:
        raise LabError(
            f"`vagrant up` failed (exit {rc}; log: {log}):\n{_tail(log.read_text(errors='replace'))}",
            target=inventory.path,
            hint="the VMs' console logs say why",
        )
    up_done = time.monotonic()
    for m in topo.machines:
        isolate_management_ports(m.name, (mgmt_net, VAGRANT_NETWORK))
    _note("waiting for every VM to answer SSH with its pinned host key", progress)
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
    done = time.monotonic()
    timings = {
        "box": round(box_done - started if box.built else 0.0, 2),
        "box_built": 1.0 if box.built else 0.0,
        "box_upload": 1.0 if budget.upload else 0.0,
        "vagrant_up": round(up_done - up_started, 2),
        "vagrant_up_limit": float(limit),
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


GUARDS_FILE = "guard-routes"  # the lab ranges guarded by a blackhole, one per line, under vm_lab_root()


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


def vm_lab_down(inventory: Inventory | None = None, stop_daemons: bool = True) -> None:
    """Remove the VM lab: its VMs (``vagrant destroy``, then any domain left), its libvirt networks,
    and the libvirt daemons it started. Works from the state file, so it also cleans up after a
    failed up; an inventory adds its machines and networks. SSH keys, the box and the console logs stay."""
    with _lock():
        left = _remove_locked(inventory, stop_daemons=stop_daemons)
        left += _unguard_lab_ranges()  # only an explicit down lifts the guard, never a failed up's cleanup
    if left:
        raise LabError(
            "could not remove: " + ", ".join(left),
            target="vm lab",
            hint="run `orchestrator lab down --provider vagrant` again; see `virsh -c qemu:///system list --all`",
        )


def _remove_locked(inventory: Inventory | None, *, stop_daemons: bool) -> list[str]:
    """What :func:`vm_lab_down` does, under the lab's lock already held. Returns what is left."""
    root = vm_lab_root()
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
    if not left:
        (root / STATE_FILE).unlink(missing_ok=True)
    return left

"""libvirt for the VM lab: /dev/kvm made usable, the daemons started by hand where no systemd runs
them (and stopped again, by PID), the lab's storage pool, and the choice of kvm or qemu."""

from __future__ import annotations

import fcntl
import grp
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import LabError
from orchestrator.lab.vm.host import POOL, Progress, note, run, virsh, virsh_ok, vm_lab_root

DRIVER_ENV = "ORCHESTRATOR_LAB_LIBVIRT_DRIVER"
DAEMONS = ("virtlogd", "libvirtd")  # started in this order, stopped in reverse
KVM_DEVICE = Path("/dev/kvm")
KVM_GROUP = "kvm"  # Debian's libvirt-qemu user has it as its primary group
_KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)


# --------------------------------------------------------------------------------------------
# /dev/kvm
# --------------------------------------------------------------------------------------------


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@dataclass(frozen=True)
class DeviceOps:
    """How :func:`ensure_kvm_device` looks at and changes the device (unit tests pass fakes)."""

    stat: Callable[[Path], os.stat_result] = os.stat
    chown: Callable[[Path, int, int], None] = os.chown
    chmod: Callable[[Path, int], None] = os.chmod
    group_id: Callable[[str], int] = lambda name: grp.getgrnam(name).gr_gid
    group_name: Callable[[int], str] = lambda gid: _group_name(gid)


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
# the daemons
# --------------------------------------------------------------------------------------------


def pidfile(daemon: str) -> Path:
    return vm_lab_root() / "run" / f"{daemon}.pid"


def pid_alive(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


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
            note(change, progress)
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
    _start_daemons()
    deadline = time.monotonic() + 30
    while not libvirt_answers():
        if time.monotonic() > deadline:
            raise LabError("libvirtd started but does not answer", target="vm lab", hint="see /var/log/libvirt/")
        time.sleep(0.3)
    return True


def _start_daemons() -> None:
    # Never bring up libvirt's NAT network ("default"): the lab has no way out.
    Path("/etc/libvirt/qemu/networks/autostart/default.xml").unlink(missing_ok=True)
    (vm_lab_root() / "run").mkdir(parents=True, exist_ok=True)
    Path("/run/libvirt").mkdir(parents=True, exist_ok=True)
    for daemon in DAEMONS:
        if pid_alive(pidfile(daemon)) is None:
            result = run([daemon, "-d", "-p", str(pidfile(daemon))], timeout=30)
            if result.returncode != 0:
                raise LabError(
                    f"{daemon} did not start: {result.stderr.strip()}",
                    target="vm lab",
                    hint="apt-get install libvirt-daemon-system; see /var/log/libvirt/",
                )


def daemons_started_here() -> bool:
    """Whether a daemon this module started (its pid file names a live process) still runs."""
    return any(pid_alive(pidfile(d)) is not None for d in DAEMONS)


def stop_libvirt(timeout: float = 20.0) -> list[str]:
    """Stop the daemons this module started (by the PIDs in its pid files). Returns those left."""
    left: list[str] = []
    for daemon in reversed(DAEMONS):
        path = pidfile(daemon)
        pid = pid_alive(path)
        if pid is None:
            path.unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(path) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(path) == pid:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        if pid_alive(path) == pid:
            left.append(f"{daemon} (pid {pid})")
        else:
            path.unlink(missing_ok=True)
    return left


# The chains libvirtd adds to iptables (and the jumps to them) whatever its networks; left empty
# once its networks are gone.
_LIBVIRT_CHAINS = {
    "filter": (("INPUT", "LIBVIRT_INP"), ("OUTPUT", "LIBVIRT_OUT"), ("FORWARD", "LIBVIRT_FWX"),
               ("FORWARD", "LIBVIRT_FWI"), ("FORWARD", "LIBVIRT_FWO")),
    "nat": (("POSTROUTING", "LIBVIRT_PRT"),),
    "mangle": (("POSTROUTING", "LIBVIRT_PRT"),),
}


def remove_libvirt_chains() -> None:
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


# --------------------------------------------------------------------------------------------
# the lab's storage pool
# --------------------------------------------------------------------------------------------


def ensure_pool() -> None:
    path = vm_lab_root() / "pool"
    path.mkdir(parents=True, exist_ok=True)
    for directory in (vm_lab_root(), path):
        let_qemu_through(directory)
    if virsh("pool-info", POOL).returncode == 0:
        virsh_ok("pool-start", POOL, what=POOL, tolerate=("already active",))
        return
    virsh_ok("pool-define-as", POOL, "dir", "--target", str(path), what=POOL)
    virsh_ok("pool-start", POOL, what=POOL)


def let_qemu_through(directory: Path) -> None:
    """``directory`` traversable by everyone (x), nothing else added: libvirt runs qemu as its own
    user (Debian: libvirt-qemu) and hands it the VM's image by path, so every directory on the way
    must let it pass, or qemu fails with "Cannot access storage file ... Permission denied". The
    CLI's private umask (077) makes new directories 0700; reading and listing stay root's."""
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o111 != 0o111:
        directory.chmod(mode | 0o111)

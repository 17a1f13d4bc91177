"""What every part of the VM lab shares: its root folder and log, the Vagrantfile's folder, the
packages it needs, its state file, and running the tools (vagrant, virsh) with the system umask."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from orchestrator.errors import LabError
from orchestrator.lab import statefile

VM_LAB_ROOT_ENV = "ORCHESTRATOR_VM_LAB_ROOT"
DEFAULT_VM_LAB_ROOT = Path("/var/lib/orchestrator-vm-lab")
VAGRANT_DIR_ENV = "ORCHESTRATOR_VAGRANT_DIR"
BOX_NAME = "orchestrator-lab/debian12"
STATE_FILE = "vm-lab.json"
POOL = "orchestrator-vm-lab"
LIBVIRT_URI = "qemu:///system"
# The tools run here (build-box.sh, libvirtd, virtlogd, vagrant, virsh) make system files, a guest's
# root filesystem among them: they run with the usual umask, never the CLI's private 077 (a box built
# under 077 has 0600 networkd files in /etc, so its VMs never ask for an address).
SYSTEM_UMASK = 0o022

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

Progress = Callable[[str], None]
"""Receives one line of progress (what ``lab up`` is doing); the CLI prints it."""


def vm_lab_root() -> Path:
    return Path(os.environ.get(VM_LAB_ROOT_ENV) or DEFAULT_VM_LAB_ROOT)


def vagrant_dir() -> Path:
    """The Vagrantfile's directory: ``vagrant/`` beside the package (a source checkout)."""
    configured = os.environ.get(VAGRANT_DIR_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parents[3] / "vagrant"


def missing_vm_packages() -> list[str]:
    """Debian packages the VM lab needs that are not installed (by the commands they provide)."""
    found = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return sorted({pkg for cmd, pkg in _REQUIRED_COMMANDS.items() if shutil.which(cmd, path=found) is None})


def state() -> statefile.LabStateFile:
    """The VM lab's state file and lock (the code the nspawn lab shares)."""
    return statefile.LabStateFile(
        vm_lab_root(), STATE_FILE, label="VM lab", target="vm lab", down="orchestrator lab down --provider vagrant",
        up_hint="run `orchestrator lab up INVENTORY --provider vagrant`",
    )


def note(message: str, progress: Progress | None) -> None:
    """A line for the VM lab's log (ROOT/vm-lab.log, 0600) and for the progress callback."""
    root = vm_lab_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = root / "vm-lab.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(time.strftime("%Y-%m-%dT%H:%M:%S%z ") + message + "\n")
    if progress is not None:
        progress(message)


def run(
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
    return run(["virsh", "-q", "-c", LIBVIRT_URI, *args], timeout=timeout)


def virsh_ok(*args: str, what: str, tolerate: tuple[str, ...] = ()) -> None:
    result = virsh(*args)
    if result.returncode != 0 and not any(t in result.stderr for t in tolerate):
        raise LabError(
            f"`virsh {' '.join(args)}` failed: {result.stderr.strip()}",
            target=what,
            hint="see `virsh -c qemu:///system list --all` and the VM's console log",
        )


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])

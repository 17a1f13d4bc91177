"""One VM of the running lab (a libvirt domain): its state and hypervisor process, power on and
off, waiting for its boot, and its ports on the management networks made isolated bridge ports.
The power driver (``drivers/power.py: VagrantPower``) works through these."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from orchestrator.errors import LabError
from orchestrator.lab import keys, reach
from orchestrator.lab.vagrant import VAGRANT_NETWORK, domain_name
from orchestrator.lab.vm.host import state, virsh, virsh_ok, vm_lab_root


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


def lab_machines() -> list[str]:
    """The machines of the VM lab that is up (for the power driver)."""
    return list(state().require().get("machines", []))


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
    current = state().read() or {}
    return tuple(current.get("management_networks", [VAGRANT_NETWORK]))


def start_machine(machine: str) -> None:
    """Power on (``virsh start``); returns once the domain runs."""
    virsh_ok("start", domain_name(machine), what=machine, tolerate=("already active",))
    isolate_management_ports(machine, _management_networks())


def wait_booted(machine: str, timeout: float) -> reach.Readiness:
    """Wait until a started VM answers SSH with its pinned host key and systemd says its boot is
    done (``systemctl is-system-running --wait``: running or degraded)."""
    address = dict((state().read() or {}).get("addresses", {})).get(machine)
    if address is None:
        raise LabError("not a machine of the running VM lab", target=machine,
                       hint="run `orchestrator lab up INVENTORY --provider vagrant`")
    root = vm_lab_root()
    deadline = time.monotonic() + timeout
    return reach.wait_one(machine, address, keys.client_key_path(root), keys.known_hosts_path(root), deadline)


def stop_machine(machine: str, graceful: bool) -> None:
    """Graceful: ACPI power button (``virsh shutdown``), returns at once. Hard: ``virsh destroy``,
    returns once the hypervisor process is gone."""
    if graceful:
        virsh_ok("shutdown", domain_name(machine), what=machine, tolerate=("not running",))
    else:
        virsh_ok("destroy", domain_name(machine), what=machine, tolerate=("not running",))

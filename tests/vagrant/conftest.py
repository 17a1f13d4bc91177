"""The VM tier: the lab as Vagrant VMs (libvirt), one per test session, from inventories/vm-lab.yml.

Run by scripts/vagrant-tier.sh (``pytest -m vagrant tests/vagrant``), which installs what it needs,
builds or reuses the box and tears everything down afterwards. Nothing here skips: a VM lab that
cannot come up fails the tier.

Fixtures:
- ``vm_inventory``: the loaded inventories/vm-lab.yml.
- ``vm_lab``: what ``orchestrator lab up inventories/vm-lab.yml --provider vagrant --json`` printed,
  as a LabStatus (session; ``lab down --provider vagrant`` at the end unless ORCHESTRATOR_LAB_KEEP=1).
- ``vm_run``: ``vm_run(machine, command, check=True) -> VmResult``, SSH as root with the lab's
  pinned keys (paramiko, RejectPolicy).
- ``vm_ssh``: a ``PinnedSsh`` (``client(address)``, ``run_at(address, machine, command)``,
  ``wait(address)``) for machines addressed directly, e.g. while one is powered off and on.
- ``vm_bmcs_up``: the BMCs inventories/vm-lab.yml names (session): sushy-emulator (Redfish, libvirt driver)
  and virtualbmc (IPMI) in front of two of the lab's VMs, on 127.0.0.1, stopped by PID
  (tests/vagrant/vm_bmcs.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_helpers import VM_LAB_YML, orch
from pinned_ssh import PinnedSsh, RemoteResult
from vm_bmcs import VmBmcs, vm_bmcs

from orchestrator.inventory import load_inventory
from orchestrator.lab import LabStatus, MachineStatus, SshLogin, vm
from orchestrator.model import Inventory

VM_INVENTORY = VM_LAB_YML
SLOW = 1800  # seconds: emulated VMs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vagrant)


VmResult = RemoteResult
# SSH helpers with the VM lab's pinned keys, by management address; emulated VMs are slow to answer.
VM_SSH = PinnedSsh(vm.vm_lab_root(), connect_timeout_s=15.0, command_timeout_s=120.0, wait_timeout_s=240.0,
                   wait_poll_s=1.0, wait_connect_timeout_s=5.0)


@pytest.fixture
def vm_ssh(vm_lab: LabStatus) -> PinnedSsh:
    return VM_SSH


@pytest.fixture(scope="session")
def vm_inventory() -> Inventory:
    return load_inventory(VM_INVENTORY)


@pytest.fixture(scope="session")
def vm_lab(vm_inventory: Inventory) -> Iterator[LabStatus]:
    """``orchestrator lab up INVENTORY --provider vagrant --json``, once per session."""
    if os.geteuid() != 0:
        pytest.fail("the VM tier needs root (libvirt, box build); CI runs it as root")
    missing = vm.missing_vm_packages()
    if missing:
        pytest.fail("missing system packages for the VM lab: " + " ".join(missing) + " (scripts/vagrant-tier.sh)")
    started = time.monotonic()
    res = orch(None, "lab", "up", VM_INVENTORY, "--provider", "vagrant", "--json", timeout=SLOW)
    print(f"\nvm lab up: {time.monotonic() - started:.0f} s; its progress:\n{res.stderr}")
    assert res.returncode == 0, f"lab up --provider vagrant failed (exit {res.returncode}):\n{res.stdout}{res.stderr}"
    if os.environ.get("ORCHESTRATOR_VM_TIER_FIRST_TIME") == "1":
        # scripts/vagrant-tier.sh recreated a fresh machine: this `lab up` took the first-time path
        assert "vm lab: building the box" in res.stderr
        assert "first upload of the box (" in res.stderr
        assert "uploading the box into the libvirt pool" in res.stderr
        if Path("/dev/kvm").exists():
            assert "vm lab: /dev/kvm: group root -> kvm" in res.stderr
    doc = json.loads(res.stdout)
    machines = tuple(
        MachineStatus(m["name"], m["kind"], m["state"], m["pid"], m["management_address"], SshLogin(**m["ssh"]))
        for m in doc["machines"]
    )
    yield LabStatus(machines)
    if not os.environ.get("ORCHESTRATOR_LAB_KEEP"):
        down = orch(None, "lab", "down", VM_INVENTORY, "--provider", "vagrant", timeout=SLOW)
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture
def vm_run(vm_lab: LabStatus) -> Callable[..., VmResult]:
    return VM_SSH.runner({m.name: m.management_address for m in vm_lab.machines})


@pytest.fixture(scope="session")
def vm_bmcs_up(vm_lab: LabStatus, vm_inventory: Inventory,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmBmcs]:
    """The lab's Redfish and IPMI BMCs, up while the lab is (stopped before it goes down)."""
    with vm_bmcs(vm_inventory, tmp_path_factory.mktemp("vm-bmcs")) as bmcs:
        yield bmcs

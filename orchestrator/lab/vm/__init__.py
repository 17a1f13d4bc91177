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

One job per module: ``host`` (the root, the log, the state file, running vagrant and virsh),
``libvirt`` (/dev/kvm, the daemons, the pool), ``box`` (build, cache, add and upload, forget),
``domains`` (one VM: state, power, boot; what the power driver uses), ``vagrant_up`` (running
``vagrant up``: its environment, time limit and progress), ``lifecycle`` (up, status, down). The
names below stay importable from ``orchestrator.lab.vm``, the CLI's and the power driver's seam.
"""

from __future__ import annotations

from orchestrator.lab import LabStatus
from orchestrator.lab.vm.box import Box, box_path, box_recipe_hash, ensure_box, forget_box
from orchestrator.lab.vm.domains import (
    is_running,
    isolate_management_ports,
    lab_machines,
    qemu_pid,
    start_machine,
    stop_machine,
    vm_state,
    wait_booted,
)
from orchestrator.lab.vm.host import (
    BOX_NAME,
    POOL,
    STATE_FILE,
    VAGRANT_DIR_ENV,
    VM_LAB_ROOT_ENV,
    Progress,
    missing_vm_packages,
    vagrant_dir,
    virsh,
    vm_lab_root,
)
from orchestrator.lab.vm.libvirt import (
    DRIVER_ENV,
    DeviceOps,
    ensure_kvm_device,
    ensure_libvirt,
    kvm_usable,
    libvirt_answers,
    libvirt_driver,
    stop_libvirt,
)
from orchestrator.lab.vm.lifecycle import lab_ranges, vm_lab_down, vm_lab_status, vm_lab_up
from orchestrator.lab.vm.vagrant_up import (
    UP_FINISHED,
    UP_TIMEOUT_ENV,
    UpBudget,
    console_panics,
    finished_machine,
    parse_machine_readable,
    vagrant_stage,
)

__all__ = [
    "BOX_NAME",
    "DRIVER_ENV",
    "POOL",
    "STATE_FILE",
    "UP_FINISHED",
    "UP_TIMEOUT_ENV",
    "VAGRANT_DIR_ENV",
    "VM_LAB_ROOT_ENV",
    "Box",
    "DeviceOps",
    "LabStatus",
    "Progress",
    "UpBudget",
    "box_path",
    "box_recipe_hash",
    "console_panics",
    "ensure_box",
    "ensure_kvm_device",
    "ensure_libvirt",
    "finished_machine",
    "forget_box",
    "is_running",
    "isolate_management_ports",
    "kvm_usable",
    "lab_machines",
    "lab_ranges",
    "libvirt_answers",
    "libvirt_driver",
    "missing_vm_packages",
    "parse_machine_readable",
    "qemu_pid",
    "start_machine",
    "stop_libvirt",
    "stop_machine",
    "vagrant_dir",
    "vagrant_stage",
    "virsh",
    "vm_lab_down",
    "vm_lab_root",
    "vm_lab_status",
    "vm_lab_up",
    "vm_state",
    "wait_booted",
]

"""Out-of-band power: on, graceful off, hard off, state. One driver per kind of power control.

``LabPower`` drives the rehearsal lab's containers (a host with ``power: lab``), ``VagrantPower`` the
VM lab's VMs (``power: vagrant``, through libvirt); ``IpmiPower`` is the seam for real servers and is
not configured yet.
"""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator.drivers.base import PowerDriver as PowerDriver  # the interface, re-exported
from orchestrator.drivers.base import PowerState as PowerState
from orchestrator.errors import DriverError, DriverTimeoutError, LabError


class LabPower:
    """Power for lab containers: the machine keeps its overlay, so its state survives off and on.

    ``power_off(graceful=True)`` asks the container's systemd to power off (like pressing the power
    button) and returns; whoever verifies waits for ``state`` to say "stopped".
    ``power_off(graceful=False)`` cuts power: every process of the machine is killed before it returns.
    ``power_on`` boots a stopped machine and returns once its container runs (SSH comes a second later).
    """
    poll_interval_s = 0.1  # a local read (machinectl)

    def __init__(self, start_timeout: float = 10.0, kill_timeout: float = 10.0) -> None:
        self.start_timeout = start_timeout
        self.kill_timeout = kill_timeout

    def _known(self, name: str) -> tuple[Path, Path]:
        from orchestrator import lab

        try:
            image, names = lab.running_machines()
        except LabError as exc:
            raise DriverError(exc.message, target=name, hint=exc.hint) from exc
        if name not in names:
            raise DriverError(
                "not a machine of the running lab",
                target=name,
                hint="check the host's `power:` and `orchestrator lab status`",
            )
        return lab.LAB_ROOT, image

    def evidence(self, name: str) -> dict[str, object]:
        """Nothing beyond the state: the container runs or it does not."""
        return {}

    def state(self, name: str) -> PowerState:
        from orchestrator.lab import machines

        self._known(name)
        return "running" if machines.is_running(name) else "stopped"

    def power_on(self, name: str) -> None:
        from orchestrator.lab import machines

        lab_root, image = self._known(name)
        try:
            machines.relaunch(lab_root, image, name)
        except LabError as exc:
            raise DriverError(exc.message, target=name, hint=exc.hint) from exc
        deadline = time.monotonic() + self.start_timeout
        while machines.leader_pid(name) is None:
            if time.monotonic() > deadline:
                raise DriverTimeoutError(
                    f"the container did not start within {self.start_timeout:.0f} s",
                    target=name,
                    hint=f"see {lab_root}/machines/{name}/console.log",
                )
            time.sleep(0.05)

    def power_off(self, name: str, graceful: bool) -> None:
        from orchestrator.lab import machines

        self._known(name)
        if graceful:
            machines.request_poweroff(name)
            return
        if not machines.kill(name, timeout=self.kill_timeout):
            raise DriverTimeoutError(
                f"processes survived a hard power off for {self.kill_timeout:.0f} s",
                target=name,
                hint="check the machine's cgroup under /sys/fs/cgroup/unified/orchestrator-lab/",
            )


class IpmiPower:
    """IPMI/BMC power for real servers: not configured in this version."""
    poll_interval_s = 0.1  # refuses every call

    def _refuse(self, name: str) -> DriverError:
        return DriverError(
            "IPMI power is not configured",
            target=name,
            hint="power this host by hand (power: manual) or use the lab (power: lab)",
        )

    def evidence(self, name: str) -> dict[str, object]:
        return {}

    def state(self, name: str) -> PowerState:
        raise self._refuse(name)

    def power_on(self, name: str) -> None:
        raise self._refuse(name)

    def power_off(self, name: str, graceful: bool) -> None:
        raise self._refuse(name)


class VagrantPower:
    """Power for the VM lab's VMs (a host with ``power: vagrant``), through libvirt.

    ``state`` is libvirt's (``virsh domstate``: "shut off" or "crashed" is stopped, anything else
    running). ``power_off(graceful=True)`` presses the ACPI power button (``virsh shutdown``) and
    returns; whoever verifies waits for ``state`` to say "stopped". ``power_off(graceful=False)``
    pulls the plug (``virsh destroy``): the hypervisor process is gone when it returns.
    ``power_on`` starts the VM (``virsh start``, its disk as it was) and returns once it has booted:
    under software emulation sshd answers well before systemd has finished starting the rest, and
    what the restore checks next (integrity, health) must see a booted machine, as on real hardware
    it would after the BMC's power-on and a full boot. Machines are found by name in the running VM lab.
    """
    poll_interval_s = 0.1  # a local read (virsh)

    def __init__(self, start_timeout: float = 300.0) -> None:
        self.start_timeout = start_timeout

    def _known(self, name: str) -> None:
        from orchestrator.lab import vm

        try:
            names = vm.lab_machines()
        except LabError as exc:
            raise DriverError(exc.message, target=name, hint=exc.hint) from exc
        if name not in names:
            raise DriverError(
                "not a machine of the running VM lab",
                target=name,
                hint="check the host's `power:` and `orchestrator lab status INVENTORY --provider vagrant`",
            )

    def evidence(self, name: str) -> dict[str, object]:
        """Nothing beyond the state: libvirt's domain state is what ``state`` reads."""
        return {}

    def state(self, name: str) -> PowerState:
        from orchestrator.lab import vm

        self._known(name)
        try:
            state = vm.vm_state(name)
        except LabError as exc:
            raise DriverError(exc.message, target=name, hint=exc.hint) from exc
        if state is None:
            raise DriverError("libvirt has no such VM", target=name,
                              hint="run `orchestrator lab up INVENTORY --provider vagrant`")
        return "stopped" if state in ("shut off", "crashed") else "running"

    def power_on(self, name: str) -> None:
        from orchestrator.lab import vm

        self._known(name)
        try:
            vm.start_machine(name)
            ready = vm.wait_booted(name, self.start_timeout)
        except LabError as exc:
            raise DriverError(exc.message, target=name, hint=exc.hint) from exc
        if not ready.ready:
            raise DriverTimeoutError(
                f"the VM did not finish booting within {self.start_timeout:.0f} s: {ready.error or ready.system_state}",
                target=name,
                hint="see the VM lab's console/NAME.log and `virsh -c qemu:///system list --all`",
            )

    def power_off(self, name: str, graceful: bool) -> None:
        from orchestrator.lab import vm

        self._known(name)
        try:
            vm.stop_machine(name, graceful)
        except LabError as exc:
            raise DriverError(exc.message, target=name, hint=exc.hint) from exc

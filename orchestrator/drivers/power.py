"""Out-of-band power: on, graceful off, hard off, state. One driver per kind of power control.

``LabPower`` drives the rehearsal lab's containers (a host with ``power: lab``); ``IpmiPower`` is the
seam for real servers and is not configured yet.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from orchestrator.errors import DriverError, DriverTimeoutError, LabError

PowerState = Literal["running", "stopped"]


@runtime_checkable
class PowerDriver(Protocol):
    def state(self, name: str) -> PowerState: ...

    def power_on(self, name: str) -> None: ...

    def power_off(self, name: str, graceful: bool) -> None: ...


class LabPower:
    """Power for lab containers: the machine keeps its overlay, so its state survives off and on.

    ``power_off(graceful=True)`` asks the container's systemd to power off (like pressing the power
    button) and returns; whoever verifies waits for ``state`` to say "stopped".
    ``power_off(graceful=False)`` cuts power: every process of the machine is killed before it returns.
    ``power_on`` boots a stopped machine and returns once its container runs (SSH comes a second later).
    """

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

    def _refuse(self, name: str) -> DriverError:
        return DriverError(
            "IPMI power is not configured",
            target=name,
            hint="power this host by hand (power: manual) or use the lab (power: lab)",
        )

    def state(self, name: str) -> PowerState:
        raise self._refuse(name)

    def power_on(self, name: str) -> None:
        raise self._refuse(name)

    def power_off(self, name: str, graceful: bool) -> None:
        raise self._refuse(name)

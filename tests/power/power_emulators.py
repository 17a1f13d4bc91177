"""What the power tier's fixtures, tests and tests/power/measure.py share: endpoints, ports, processes."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator_procs import free_port as free_port  # re-exported: the power tier imports them from here
from emulator_procs import stop as stop
from emulator_procs import wait_port as wait_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
USER = "orchestrator"
PASSWORD = "Pw-9f!x y#é"  # odd characters on purpose: it must survive URL encoding and never leak


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    scheme: str
    username: str = USER
    password: str = PASSWORD


@dataclass(frozen=True)
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path
    other_ca_file: Path


@dataclass
class IpmiBmc:
    endpoint: Endpoint
    proc: subprocess.Popen[str]

    def libvirt_state(self) -> str:
        """The domain's state as libvirt holds it (not through IPMI)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("state\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()


# ---- judging vcsim from the test's own pyvmomi session ----------------------------------------

def vm_of(si: Any, name: str) -> Any:
    """The one VM or ESXi host called ``name``, as vcsim tells the test's own session."""
    from pyVmomi import vim

    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine, vim.HostSystem], True)
    try:
        found = [o for o in view.view if o.name == name]
    finally:
        view.Destroy()
    assert len(found) == 1, name
    return found[0]


def power_of(si: Any, name: str) -> str:
    """Its ``runtime.powerState`` (poweredOn, poweredOff, suspended)."""
    return str(vm_of(si, name).runtime.powerState)

"""What the power tier's fixtures, tests and tests/power/measure.py share: endpoints, ports, processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the emulator exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()  # by PID: only the process this fixture started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


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

"""SSH to a lab's machines the way the end-to-end tests judge them: paramiko with the lab's own client
key, host keys checked against the lab's pinned known_hosts (RejectPolicy, never trust on first use).
Shared by the nspawn lab tier (tests/lab) and the VM tier (tests/vagrant)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import paramiko

from orchestrator.lab import keys

T = TypeVar("T")


@dataclass(frozen=True)
class RemoteResult:
    machine: str
    command: str
    rc: int
    stdout: str
    stderr: str


class RemoteCommandError(AssertionError):
    pass


@dataclass(frozen=True)
class PinnedSsh:
    """``client(address)``, ``run_at(address, machine, command)``, ``wait(address)`` for one lab."""

    lab_root: Path
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 60.0
    wait_timeout_s: float = 60.0
    wait_poll_s: float = 0.2
    wait_connect_timeout_s: float = 2.0

    def client(self, address: str, known_hosts: Path | None = None, timeout: float | None = None,
               username: str = "root") -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts or keys.known_hosts_path(self.lab_root)))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        t = self.connect_timeout_s if timeout is None else timeout
        client.connect(address, username=username, key_filename=str(keys.client_key_path(self.lab_root)),
                       timeout=t, banner_timeout=t, auth_timeout=t, look_for_keys=False, allow_agent=False)
        return client

    def run_at(self, address: str, machine: str, command: str, timeout: float | None = None) -> RemoteResult:
        client = self.client(address)
        try:
            _in, out, err = client.exec_command(command, timeout=timeout or self.command_timeout_s)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            return RemoteResult(machine, command, out.channel.recv_exit_status(), stdout, stderr)
        finally:
            client.close()

    def wait(self, address: str, timeout: float | None = None) -> None:
        self._until_answering(lambda: self.client(address, timeout=self.wait_connect_timeout_s).close(), timeout)

    def run_when_answering(self, address: str, machine: str, command: str,
                           timeout: float | None = None) -> RemoteResult:
        """``run_at``, a connection that fails (not answering yet, refused, dropped) tried again until
        ``timeout`` (``wait_timeout_s``): the command's own result is returned, whatever it is."""
        return self._until_answering(lambda: self.run_at(address, machine, command), timeout)

    def _until_answering(self, attempt: Callable[[], T], timeout: float | None) -> T:
        deadline = time.monotonic() + (timeout or self.wait_timeout_s)
        while True:
            try:
                return attempt()
            except (OSError, paramiko.SSHException, EOFError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(self.wait_poll_s)

    def runner(self, addresses: Mapping[str, str]) -> Callable[..., RemoteResult]:
        """``run(machine, command, check=True, timeout=None)``: by machine name; ``check`` raises on failure."""

        def run(machine: str, command: str, check: bool = True, timeout: float | None = None) -> RemoteResult:
            result = self.run_at(addresses[machine], machine, command, timeout)
            if check and result.rc != 0:
                raise RemoteCommandError(f"{machine}: `{command}` exited {result.rc}: {result.stderr.strip()}")
            return result

        return run

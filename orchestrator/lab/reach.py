"""Wait for lab machines to answer SSH (pinned host keys) and finish booting."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko


@dataclass(frozen=True)
class Readiness:
    name: str
    ready: bool
    system_state: str  # systemctl is-system-running: running | degraded | ... | "" when unreachable
    seconds: float
    error: str = ""


def _client(address: str, key_file: Path, known_hosts: Path, timeout: float) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        address,
        username="root",
        key_filename=str(key_file),
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
        look_for_keys=False,
        allow_agent=False,
    )
    return client


def run(address: str, command: str, key_file: Path, known_hosts: Path, timeout: float = 30.0) -> tuple[int, str]:
    """Run one command as root on a lab machine; (exit status, stdout)."""
    client = _client(address, key_file, known_hosts, min(timeout, 10.0))
    try:
        _stdin, stdout, _stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out
    finally:
        client.close()


def wait_one(name: str, address: str, key_file: Path, known_hosts: Path, deadline: float) -> Readiness:
    started = time.monotonic()
    last = ""
    while time.monotonic() < deadline:
        try:
            # Cheap TCP check first: paramiko is slow to fail against a closed port.
            with socket.create_connection((address, 22), timeout=1.0):
                pass
            remaining = max(5.0, deadline - time.monotonic())
            _rc, out = run(address, "systemctl is-system-running --wait", key_file, known_hosts, remaining)
            state = out.strip()
            return Readiness(name, state in ("running", "degraded"), state, time.monotonic() - started)
        except paramiko.BadHostKeyException:
            return Readiness(name, False, "", time.monotonic() - started, "host key does not match known_hosts")
        except (OSError, paramiko.SSHException, EOFError) as exc:
            last = type(exc).__name__
            time.sleep(0.2)
    return Readiness(name, False, "", time.monotonic() - started, f"no SSH before the deadline ({last})")


def wait_all(targets: dict[str, str], key_file: Path, known_hosts: Path, timeout: float) -> list[Readiness]:
    """Wait for every machine (name -> management address) in parallel."""
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=max(1, min(256, len(targets)))) as pool:
        futures = [pool.submit(wait_one, n, a, key_file, known_hosts, deadline) for n, a in targets.items()]
        return [f.result() for f in futures]

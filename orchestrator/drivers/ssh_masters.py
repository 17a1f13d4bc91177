"""SSH connections opened ahead of a playbook: OpenSSH control masters Ansible then reuses.

A stop wave's playbook otherwise opens one new SSH connection per host at the moment it runs: key
exchange, authentication and the remote session set-up for 20-30 hosts at once, on the same CPUs as
the machines shutting down. Opened ahead (while containment waits for its proofs, while the previous
wave's machines go down), the playbook's tasks start on connections that are already up.

The masters are plain ``ssh`` with the options Ansible gets from the inventory export (strict host
keys against the credential's known_hosts, its key, its user), in a control directory the playbook
is then pointed at (``ANSIBLE_SSH_CONTROL_PATH_DIR``, same ``%C`` socket names). A master that
cannot be opened changes nothing: Ansible opens its own connection as it always did.

Control sockets live in a private directory (:func:`private_dir`: created 0700 and checked with
``lstat`` to be a real directory of this user's that nobody else can enter), so no other local user
can plant, replace or use them. The options are an argument list built by the inventory export
(``ansible_inventory.ssh_options``), never a string split again.

Bounds: a few handshakes at a time (``parallel``), each master exits on its own when its machine
goes down, after ``persist_s`` unused, or when ``close()`` asks it to (``ssh -O exit`` on its own
socket). Credentials that need a password are never opened here (no prompt, ``BatchMode``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from orchestrator.drivers.ansible_inventory import openssh_quoted, ssh_options, ssh_path, ssh_username
from orchestrator.errors import DriverError
from orchestrator.model import Inventory

SERVER_ALIVE = ("-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2")  # a vanished machine: <= 15 s


def private_dir(path: Path) -> Path:
    """``path`` as a private directory: made (0700) when absent, then checked with ``lstat``: a real
    directory (not a symbolic link), owned by this user, no access for group or others.

    A directory someone else made first (a guessable name in /tmp) is refused, never reused: SSH
    control sockets in it would let its owner use or replace the connections. Raises DriverError.
    """
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise DriverError(f"cannot create the SSH control directory {path}: {exc.strerror or exc}",
                          target=str(path), hint="check that its parent exists and is writable") from None
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    problem = None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
    elif mode & 0o077:
        problem = f"has mode {mode:04o}: other users could reach the SSH connections in it"
    if problem is not None:
        raise DriverError(
            f"refusing the SSH control directory {path}: it {problem}",
            target=str(path),
            hint="someone else may have made it; remove it after checking, and run again (the "
            "orchestrator makes it itself, mode 0700)",
        )
    return path


class SshMasters:
    """Control masters to hosts, opened in the background a few at a time, closed together."""

    def __init__(
        self,
        inventory: Inventory,
        control_dir: Path,
        *,
        parallel: int = 4,
        connect_timeout_s: float = 5.0,
        persist_s: int = 300,
        on_opened: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.inventory = inventory
        self.control_dir = control_dir
        self.connect_timeout_s = connect_timeout_s
        self.persist_s = persist_s
        self._on_opened = on_opened
        self._pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="ssh-master")
        self._lock = threading.Lock()
        self._asked: set[str] = set()
        self._opened: set[str] = set()
        self._failed: dict[str, str] = {}
        self._given_up: set[str] = set()
        self._closed = False
        private_dir(control_dir)

    # -- public ---------------------------------------------------------------------------------

    def open(self, hosts: Sequence[str]) -> None:
        """Start opening a master to each host (in the order given); returns at once."""
        with self._lock:
            if self._closed:
                return
            todo = [h for h in dict.fromkeys(hosts) if h not in self._asked and self._eligible(h)]
            self._asked.update(todo)
        if not todo:
            return
        started = time.monotonic()
        remaining = [len(todo)]

        def one(host: str) -> None:
            self._open_one(host)
            with self._lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last and self._on_opened is not None:
                self._on_opened(self._summary(todo, time.monotonic() - started))

        for host in todo:
            self._pool.submit(one, host)

    def give_up_on(self, hosts: Sequence[str]) -> None:
        """Hosts whose use has begun: those not being opened yet are not opened any more (their
        playbook connects itself; a late master would only cost the CPUs it is running on)."""
        with self._lock:
            self._given_up.update(hosts)

    def close(self) -> None:
        """Stop opening, then ask every master still up to exit. Idempotent."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            opened = sorted(self._opened)

        def ask_to_exit(host: str) -> None:  # fails at once when the master already left
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):  # it exits by itself after persist_s
                subprocess.run(["ssh", "-O", "exit", *self._options(host), self._address(host)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=10, check=False)

        if opened:
            with ThreadPoolExecutor(max_workers=min(8, len(opened))) as pool:
                list(pool.map(ask_to_exit, opened))
        shutil.rmtree(self.control_dir, ignore_errors=True)

    # -- one master -----------------------------------------------------------------------------

    def _eligible(self, host: str) -> bool:
        h = self.inventory.hosts.get(host)
        return h is not None and not self.inventory.credentials[h.credentials].password_env

    def _open_one(self, host: str) -> None:
        with self._lock:
            if self._closed or host in self._given_up:
                self._failed[host] = "not opened: closed" if self._closed else "not opened: its use had begun"
                return
        timeout_s = self._connect_timeout_s(host)
        try:
            done = subprocess.run(self._master_argv(host), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=timeout_s * 2 + 5, check=False)
        except subprocess.TimeoutExpired:
            why = "timed out"
        except OSError as exc:  # no ssh client: Ansible will say so too
            why = f"cannot run ssh: {exc.strerror or exc}"
        else:
            why = "" if done.returncode == 0 else (done.stderr.decode(errors="replace").strip().splitlines()
                                                    or [f"ssh exited {done.returncode}"])[-1][:200]
        with self._lock:
            if why:
                self._failed[host] = why
            else:
                self._opened.add(host)

    def _connect_timeout_s(self, host: str) -> float:
        """The credential's own connect timeout (a slow host's), else ``connect_timeout_s``."""
        return self.inventory.credentials[self.inventory.hosts[host].credentials].connect_timeout(
            self.connect_timeout_s)

    def _address(self, host: str) -> str:
        return str(self.inventory.hosts[host].management_address)

    def _options(self, host: str) -> list[str]:
        """What Ansible's connection to ``host`` uses too: user, key, strict host keys, socket name."""
        cred = self.inventory.credentials[self.inventory.hosts[host].credentials]
        options = ["-o", "ControlPath=" + openssh_quoted(str(self.control_dir)) + "/%C",
                   "-o", "BatchMode=yes", "-l", ssh_username(self.inventory, cred)]
        if cred.key_file:
            options += ["-o", "IdentityFile=" + openssh_quoted(ssh_path(self.inventory, cred, "key_file"))]
        return [*options, *ssh_options(self.inventory, cred)]

    def _master_argv(self, host: str) -> list[str]:
        # With ControlPersist, ssh returns once the master is up and leaves it running on its own.
        return ["ssh", "-N", "-o", "ControlMaster=yes", "-o", f"ControlPersist={self.persist_s}",
                "-o", f"ConnectTimeout={max(1, round(self._connect_timeout_s(host)))}", *SERVER_ALIVE,
                *self._options(host), self._address(host)]

    def _summary(self, hosts: Sequence[str], seconds: float) -> dict[str, Any]:
        with self._lock:
            opened = [h for h in hosts if h in self._opened]
            failed = {h: self._failed[h] for h in hosts if h in self._failed}
        return {"type": "ansible.connections", "phase": "opened", "hosts": opened, "failed": failed,
                "seconds": round(seconds, 3)}

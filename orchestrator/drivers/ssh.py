"""paramiko for servers: probes and fast commands, host keys checked strictly.

One connection per target is opened on first use and reused by every thread (a paramiko transport
carries many channels at once). A connection that died (the host powered off, sshd restarted) is
dropped and opened again before the next command is sent; a command that was sent is never re-sent.

Host keys come from the credential's ``known_hosts`` file (default ``~/.ssh/known_hosts``) and are
never learnt: an unknown key and a changed key are both refused loudly (``RejectPolicy``).
Secrets (passwords, key contents) never appear in an error.

Key and known_hosts paths are resolved as every other client resolves them (``~`` expanded, a
relative path against the inventory file's directory: ``ansible_inventory.resolve_path``), never
against the working directory.

Hosts presumed compromised (``treat_as_suspect``: every host a restore brings back) never get a
password: a credential with a key logs in with the key alone, and a password-only credential is
refused (``PasswordRefusedError``) unless it says ``allow_password_on_suspect_hosts: true``.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import paramiko

from orchestrator.drivers.ansible_inventory import resolve_path
from orchestrator.drivers.base import CommandResult as CommandResult  # the interface's value, re-exported
from orchestrator.errors import AuthFailedError, DriverTimeoutError, UnreachableError, exception_text
from orchestrator.model import Credential, Inventory

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
_READ_CHUNK = 65536
_POLL_S = 0.2


class HostKeyMismatchError(AuthFailedError):
    """The target presented a host key other than the pinned one: possibly a man in the middle."""

    code = "host-key-mismatch"


class HostKeyUnknownError(AuthFailedError):
    """The target's host key is not in the known_hosts file, so it cannot be trusted."""

    code = "host-key-unknown"


class PasswordRefusedError(AuthFailedError):
    """A password would have been sent to a host presumed compromised: refused, nothing was sent."""

    code = "password-refused"


@dataclass(frozen=True)
class _Target:
    """Where to connect and as whom. ``label`` is what errors name (the inventory name if any)."""

    label: str
    address: str
    port: int
    credential: Credential


class _UnknownHostKey(paramiko.SSHException):
    pass


class _StrictPolicy(paramiko.RejectPolicy):
    """RejectPolicy, raising a type of our own so the error can say exactly what happened."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise _UnknownHostKey(f"{key.get_name()} {key.get_fingerprint().hex()}")


def _known_hosts_path(inventory: Inventory, credential: Credential) -> Path:
    return Path(resolve_path(inventory, credential.known_hosts or DEFAULT_KNOWN_HOSTS))


def _host_key_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _handshake_incomplete(exc: paramiko.SSHException) -> bool:
    """The SSH handshake did not complete (as opposed to a refusal): worth one more try."""
    if isinstance(exc, paramiko.AuthenticationException):
        return "timeout" in str(exc).lower()  # "Authentication timeout.": slow, not refused
    if isinstance(exc, paramiko.BadHostKeyException | _UnknownHostKey):
        return False
    text = str(exc)
    return any(s in text for s in ("Error reading SSH protocol banner", "No existing session",
                                   "Negotiation failed", "EOF during negotiation"))


class SshDriver:
    """Run commands on hosts, devices and lab peers over SSH, one pooled connection per target."""

    def __init__(self, inventory: Inventory, connect_timeout_s: float = 5.0, *, port: int = 22) -> None:
        self._inventory = inventory
        self._connect_timeout_s = connect_timeout_s
        self._port = port
        self._pool: dict[tuple[str, int, str], paramiko.SSHClient] = {}
        self._pool_lock = threading.Lock()
        self._target_locks: dict[tuple[str, int, str], threading.Lock] = {}
        self._suspect: frozenset[str] = frozenset()

    # ---------------------------------------------------------------------------------- public

    def treat_as_suspect(self, hosts: Iterable[str]) -> None:
        """From now on, ``hosts`` (inventory names) are presumed compromised: no password is sent to
        them unless the credential opts in (``allow_password_on_suspect_hosts``). Connections
        already open to them are closed, so the next command logs in under this rule."""
        names = frozenset(hosts)
        with self._pool_lock:
            self._suspect = self._suspect | names
        inv = self._inventory
        addresses = {str(inv.hosts[n].management_address) for n in names if n in inv.hosts}
        with self._pool_lock:
            dropped = [(k, c) for k, c in self._pool.items() if k[0] in addresses]
        for key, client in dropped:
            self._drop(key, client)

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        """Run ``command`` on an inventory name (host, device or lab peer) by its management address."""
        return self._run(self._resolve(host), command, timeout_s, stdin)

    def run_at(
        self,
        address: str,
        credential: Credential,
        command: str,
        timeout_s: float = 30.0,
        *,
        stdin: str | None = None,
        port: int | None = None,
    ) -> CommandResult:
        """Run ``command`` on a bare address (lab peers, probes) with the given credential."""
        target = _Target(address, address, self._port if port is None else port, credential)
        return self._run(target, command, timeout_s, stdin)

    def port_open(self, address: str, port: int = 22, timeout_s: float = 1.0) -> bool:
        """True when a TCP connection to ``address:port`` is accepted (no authentication)."""
        try:
            with socket.create_connection((address, port), timeout=timeout_s):
                return True
        except OSError:
            return False

    def close(self) -> None:
        with self._pool_lock:
            clients = list(self._pool.values())
            self._pool.clear()
        for client in clients:
            client.close()

    def __enter__(self) -> SshDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------- resolve

    def _resolve(self, name: str) -> _Target:
        inv = self._inventory
        if name in inv.hosts:
            h = inv.hosts[name]
            return _Target(name, str(h.management_address), self._port, self._credential(name, h.credentials))
        if name in inv.devices:
            d = inv.devices[name]
            return _Target(name, str(d.address), self._port, self._credential(name, d.credentials))
        if inv.lab is not None and name in inv.lab.peers:
            peer = inv.lab.peers[name]
            # A lab peer has no credential of its own: it is logged into like its link's device.
            device = inv.devices.get(inv.links[name].device) if name in inv.links else None
            if device is None:
                raise UnreachableError(
                    "lab peer has no link device to borrow credentials from",
                    target=name,
                    hint="give the link a device in the inventory, or use SshDriver.run_at",
                )
            cred = self._credential(name, device.credentials)
            return _Target(name, str(peer.management_address), self._port, cred)
        raise UnreachableError(
            "no host, device or lab peer of that name in the inventory",
            target=name,
            hint=f"check the name against {inv.path}",
        )

    def _credential(self, target: str, name: str) -> Credential:
        try:
            return self._inventory.credentials[name]
        except KeyError:
            raise AuthFailedError(
                f"credential {name!r} is not defined",
                target=target,
                hint=f"add it under credentials: in {self._inventory.path}",
            ) from None

    # ---------------------------------------------------------------------------------- connect

    def _key(self, target: _Target) -> tuple[str, int, str]:
        return (target.address, target.port, target.credential.username)

    def _client(self, target: _Target) -> paramiko.SSHClient:
        key = self._key(target)
        with self._pool_lock:
            lock = self._target_locks.setdefault(key, threading.Lock())
        with lock:  # one connect per target at a time; other targets are not held up
            with self._pool_lock:
                client = self._pool.get(key)
            if client is not None:
                transport = client.get_transport()
                if transport is not None and transport.is_active():
                    return client
                self._drop(key, client)
            client = self._connect(target)
            with self._pool_lock:
                self._pool[key] = client
            return client

    def _drop(self, key: tuple[str, int, str], client: paramiko.SSHClient) -> None:
        with self._pool_lock:
            if self._pool.get(key) is client:
                del self._pool[key]
        client.close()

    def _connect(self, target: _Target) -> paramiko.SSHClient:
        cred = target.credential
        where = (
            f"{target.label} ({target.address}:{target.port})"
            if target.label != target.address
            else (f"{target.address}:{target.port}")
        )
        pkey: paramiko.PKey | None = None
        if cred.key_file:
            key_path = Path(resolve_path(self._inventory, cred.key_file))
            if not key_path.is_file():
                raise AuthFailedError(
                    f"key file {key_path} for credential {cred.name!r} does not exist",
                    target=where,
                    hint="create it (ssh-keygen -t ed25519 -f ...) or fix key_file in the inventory",
                )
            try:
                pkey = paramiko.PKey.from_path(key_path)
            except (OSError, paramiko.SSHException, ValueError) as exc:
                raise AuthFailedError(
                    f"cannot load key file {key_path} for credential {cred.name!r}: {type(exc).__name__}",
                    target=where,
                    hint="use an unencrypted OpenSSH/PEM private key readable by this user",
                ) from None
        password: str | None = None
        if cred.password_env:
            password = os.environ.get(cred.password_env)
            if password is None:
                raise AuthFailedError(
                    f"environment variable {cred.password_env} (password for credential {cred.name!r}) is not set",
                    target=where,
                    hint=f"export {cred.password_env} before running",
                )
        if pkey is None and password is None:
            raise AuthFailedError(
                f"credential {cred.name!r} has neither key_file nor password_env",
                target=where,
                hint="give the credential a key_file or a password_env",
            )
        if password is not None and target.label in self._suspect and not cred.allow_password_on_suspect_hosts:
            if pkey is None:
                raise PasswordRefusedError(
                    f"refusing to send credential {cred.name!r}'s password to {target.label}: the host is "
                    "presumed compromised (a restore is bringing it back) and the credential has no key",
                    target=where,
                    hint=f"give credentials.{cred.name} a key_file (key-based login), or, if a password "
                    f"is unavoidable, set credentials.{cred.name}.allow_password_on_suspect_hosts: true",
                )
            password = None  # the key alone: the password never leaves for a suspect host

        known_hosts = _known_hosts_path(self._inventory, cred)
        timeout = cred.connect_timeout(self._connect_timeout_s)
        for attempt in (1, 2):
            client = self._pinned_client(known_hosts, where)
            try:
                client.connect(
                    target.address,
                    port=target.port,
                    username=cred.username,
                    pkey=pkey,
                    password=password,
                    timeout=timeout,
                    banner_timeout=timeout,
                    auth_timeout=timeout,
                    channel_timeout=timeout,
                    look_for_keys=False,
                    allow_agent=False,
                )
                return client
            except paramiko.SSHException as exc:
                # A handshake that did not finish (no banner, session gone: an overloaded sshd) gets
                # one more try. A host key or authentication refusal never does.
                client.close()
                if attempt == 2 or not _handshake_incomplete(exc):
                    raise self._connect_error(exc, target, where, known_hosts) from None
            except BaseException as exc:  # noqa: BLE001 - re-raised after cleanup
                client.close()
                raise self._connect_error(exc, target, where, known_hosts) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    @staticmethod
    def _pinned_client(known_hosts: Path, where: str) -> paramiko.SSHClient:
        """A client that knows only the pinned host keys and refuses any other."""
        client = paramiko.SSHClient()
        if known_hosts.is_file():
            try:
                client.get_host_keys().load(str(known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                client.close()
                raise HostKeyUnknownError(
                    f"cannot read known_hosts file {known_hosts}: {exc}",
                    target=where,
                    hint="fix or recreate the known_hosts file",
                ) from None
        client.set_missing_host_key_policy(_StrictPolicy())
        return client

    def _connect_error(self, exc: BaseException, target: _Target, where: str, known_hosts: Path) -> BaseException:
        name = _host_key_name(target.address, target.port)
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyMismatchError(
                f"host key mismatch: the target presented {exc.key.get_name()} key "
                f"{exc.key.get_fingerprint().hex()}, known_hosts {known_hosts} pins another "
                "(possible man-in-the-middle, or the machine was rebuilt)",
                target=where,
                hint=f"verify the new key out of band; only then replace it: ssh-keygen -R '{name}' "
                f"-f {known_hosts}, and add the verified key",
            )
        if isinstance(exc, _UnknownHostKey):
            missing = "" if known_hosts.is_file() else " (the file does not exist)"
            return HostKeyUnknownError(
                f"host key unknown: {name} is not in known_hosts {known_hosts}{missing}; presented key {exc}",
                target=where,
                hint="add the host's verified key to that known_hosts file (for the lab, "
                "`orchestrator lab up` writes it); keys are never learnt automatically",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return AuthFailedError(
                f"authentication failed as {target.credential.username!r} with credential {target.credential.name!r}",
                target=where,
                hint="check the username, the key file or the password variable, and the host's authorized_keys",
            )
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return UnreachableError(
                f"no SSH answer within {target.credential.connect_timeout(self._connect_timeout_s):g}s",
                target=where,
                hint="the host may be off, isolated or firewalled; check the management path",
            )
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return UnreachableError(
                "connection refused or no route",
                target=where,
                hint="is sshd running and the management address right?",
            )
        if isinstance(exc, OSError):
            return UnreachableError(
                f"cannot connect: {exc.strerror or exc}",
                target=where,
                hint="the host may be off or isolated; check the management path",
            )
        if isinstance(exc, (paramiko.SSHException, EOFError)):
            return UnreachableError(
                f"SSH handshake failed: {exc}",
                target=where,
                hint="sshd may be starting, overloaded or not an SSH server on that port",
            )
        return exc

    # ---------------------------------------------------------------------------------- run

    def _open_channel(self, target: _Target, timeout_s: float) -> tuple[paramiko.Channel, paramiko.SSHClient]:
        """A session channel on a live connection; a cached connection that died is replaced once."""
        for attempt in (1, 2):
            client = self._client(target)
            transport = client.get_transport()
            try:
                if transport is None:
                    raise paramiko.SSHException("no transport")
                return transport.open_session(timeout=min(timeout_s, self._connect_timeout_s)), client
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._drop(self._key(target), client)
                if attempt == 2:
                    raise UnreachableError(
                        f"connection lost while opening a session: {exception_text(exc)}",
                        target=target.label,
                        hint="the host may have gone down or sshd restarted",
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(self, target: _Target, command: str, timeout_s: float, stdin: str | None) -> CommandResult:
        started = time.monotonic()
        deadline = started + timeout_s
        chan, client = self._open_channel(target, timeout_s)
        out, err = bytearray(), bytearray()
        try:
            chan.settimeout(max(0.1, deadline - time.monotonic()))
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin.encode())
            chan.shutdown_write()
            chan.setblocking(False)
            fd = chan.fileno()  # becomes readable on data, stderr data and end of file
            while True:
                progressed = False
                while chan.recv_ready():
                    out += chan.recv(_READ_CHUNK)
                    progressed = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(_READ_CHUNK)
                    progressed = True
                if (
                    chan.eof_received
                    and chan.exit_status_ready()
                    and not (chan.recv_ready() or chan.recv_stderr_ready())
                ):
                    break
                if chan.closed and not (chan.recv_ready() or chan.recv_stderr_ready()):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DriverTimeoutError(
                        f"command did not finish within {timeout_s:g}s: {_short(command)}",
                        target=target.label,
                        hint="the host may be overloaded or going down; raise the step's timeout if "
                        "the command is legitimately slow",
                    )
                if progressed:
                    continue
                if chan.eof_received:  # output complete; the exit status is on its way
                    chan.status_event.wait(min(_POLL_S, remaining))
                else:
                    select.select([fd], [], [], min(_POLL_S, remaining))
            status = chan.recv_exit_status() if chan.exit_status_ready() else -1
        except DriverTimeoutError:
            chan.close()
            raise
        except TimeoutError:
            chan.close()
            raise DriverTimeoutError(
                f"command did not finish within {timeout_s:g}s: {_short(command)}",
                target=target.label,
                hint="the host may be overloaded or going down",
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._drop(self._key(target), client)
            raise UnreachableError(
                f"connection lost during the command: {exception_text(exc)}",
                target=target.label,
                hint="the host may have gone down; verify its state before retrying",
            ) from None
        finally:
            chan.close()
        if status == -1:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                self._drop(self._key(target), client)
                raise UnreachableError(
                    f"connection lost before the command reported an exit status: {_short(command)}",
                    target=target.label,
                    hint="the host may have gone down (expected after a poweroff); verify its state",
                )
        return CommandResult(
            host=target.label,
            command=command,
            exit_status=status,
            stdout=out.decode(errors="backslashreplace"),
            stderr=err.decode(errors="backslashreplace"),
            duration_s=time.monotonic() - started,
        )


def _short(command: str, limit: int = 120) -> str:
    """The command's first line, for errors (a script sent on stdin never appears)."""
    lines = command.strip().splitlines() or [""]
    first = lines[0]
    return first if len(first) <= limit and len(lines) == 1 else first[:limit] + " ..."

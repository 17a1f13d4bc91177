"""Network devices over SSH with netmiko: render a template, send it, read the result back.

What is sent comes from ``orchestrator/templates/devices`` (see ``orchestrator.drivers.devices``); this
module only opens sessions, sends lines, detects rejected commands and maps netmiko's exceptions
to the orchestrator's errors (``UnreachableError``, ``AuthFailedError``, ``DriverTimeoutError``,
``CommandRejectedError``), each naming the device and suggesting a fix.

Sessions: one per device, kept in a small pool and reused while alive; a per-device lock makes
calls for the same device take turns (a netmiko session is not thread-safe), calls for different
devices run in parallel. A session that failed in any way is dropped, never reused.

Security: host keys are checked strictly (``ssh_strict=True``, against the credential's
``known_hosts`` file; the user's own known_hosts only when the credential names none); a password
is read from the environment variable the credential names and never stored in anything that is
printed; netmiko's session log is off.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from orchestrator.drivers import devices
from orchestrator.drivers.ansible_inventory import resolve_path
from orchestrator.drivers.base import CommandOutcome as CommandOutcome  # the interface's value, re-exported
from orchestrator.errors import (
    AuthFailedError,
    DriverError,
    DriverTimeoutError,
    UnknownDriverError,
    UnreachableError,
)
from orchestrator.masking import mask_text, secret_needles
from orchestrator.model import Action, Device, Inventory, Link, Segment

# What a rejected configuration line looks like, per platform (netmiko raises on a match).
ERROR_PATTERNS: dict[str, str] = {
    # IOS: "% Invalid input detected", "% Incomplete command."; FRR vtysh: "% Unknown command: ...",
    # "% Command incomplete", "% Ambiguous command".
    "cisco_ios": r"^\s*% ?(?:Unknown command|Invalid input|Incomplete command|Command incomplete|"
    r"Ambiguous command|Invalid|Error|Configuration failed)",
    "cisco_nxos": r"^\s*% ?(?:Invalid|Incomplete|Ambiguous)|^\s*ERROR:",
    "arista_eos": r"^\s*% ?(?:Invalid|Incomplete|Ambiguous|Error|Unavailable|Unrecognized)",
    "juniper_junos": r"^\s*(?:error:|syntax error|unknown command)",
    "fortinet": r"Command fail|command parse error|entry not found|node_check_object fail|value parse error",
    "paloalto_panos": r"^\s*(?:Invalid syntax|Unknown command|Server error|Validation Error)",
}

# Linux lines run in the login shell; each is followed by this marker and its exit status.
_RC_MARK = "__orchestrator_rc="
_RC_RE = re.compile(rf"^{_RC_MARK}(\d+)\s*$", re.MULTILINE)

DEFAULT_SSH_PORT = 22


class CommandRejectedError(DriverError):
    """The device refused a command. Carries the command and the device's answer as evidence."""

    code = "command-rejected"

    def __init__(self, device: str, command: str, output: str, *, hint: str | None = None) -> None:
        excerpt = output.strip()[-600:]
        super().__init__(
            f"device rejected {command!r}: {excerpt}",
            target=device,
            hint=hint or "check the template for this platform and the inventory values it uses",
        )
        self.device = device
        self.command = command
        self.output = output


@dataclass(frozen=True)
class ConnectionParams:
    """Everything needed to open one SSH session. ``password`` never shows in a repr."""

    device: str
    device_type: str
    host: str
    port: int
    username: str
    timeout_s: float
    key_file: str | None = None
    known_hosts: str | None = None
    password: str | None = field(default=None, repr=False)
    # netmiko's fast_cli (its default): short fixed delays, prompt-driven reads. A slow or unusual
    # device can turn it off with `vars: {netmiko_fast_cli: false}` in the inventory.
    fast_cli: bool = True


class Session(Protocol):
    """The part of a netmiko connection this driver uses."""

    def send_command(
        self,
        command_string: str,
        expect_string: str | None = None,
        read_timeout: float = 10.0,
        cmd_verify: bool = True,
    ) -> Any: ...

    def send_config_set(
        self,
        config_commands: Sequence[str] | None = None,
        exit_config_mode: bool = True,
        read_timeout: float | None = None,
        error_pattern: str = "",
    ) -> str: ...

    def commit(self) -> str: ...

    def exit_config_mode(self) -> str: ...

    def is_alive(self) -> bool: ...

    def disconnect(self) -> None: ...


Connector = Callable[[ConnectionParams], Session]


def open_session(params: ConnectionParams) -> Session:
    """Open a netmiko session: strict host keys, key or env password, absolute timeouts, no log."""
    from netmiko import ConnectHandler  # lazy: importing netmiko costs ~0.5 s

    connection = ConnectHandler(
        device_type=params.device_type,
        host=params.host,
        port=params.port,
        username=params.username,
        password=params.password or "",
        use_keys=params.key_file is not None,
        key_file=params.key_file,
        allow_agent=False,
        ssh_strict=True,
        system_host_keys=params.known_hosts is None,
        alt_host_keys=params.known_hosts is not None,
        alt_key_file=params.known_hosts or "",
        ssh_config_file=None,
        conn_timeout=params.timeout_s,
        auth_timeout=params.timeout_s,
        banner_timeout=params.timeout_s,
        blocking_timeout=params.timeout_s,
        session_timeout=params.timeout_s,
        session_log=None,
        fast_cli=params.fast_cli,
    )
    return cast(Session, connection)


def _resolve(inventory: Inventory, path: str) -> str:
    """``~`` expanded; relative paths are relative to the inventory file's directory: the one
    resolution every SSH client of the orchestrator uses (``ansible_inventory.resolve_path``)."""
    return resolve_path(inventory, path)


def map_error(
    exc: BaseException, device: str, host: str, known_hosts: str | None, secret: str | None = None
) -> DriverError:
    """A netmiko / paramiko / socket exception as the orchestrator error that explains it.

    Only the first line of the library's message is kept, and ``secret`` is masked in it.
    """
    import paramiko
    from netmiko.exceptions import (
        ConfigInvalidException,
        NetmikoAuthenticationException,
        NetmikoTimeoutException,
        ReadTimeout,
    )

    text = str(exc).strip()
    if secret:
        text = mask_text(text, secret_needles([secret]), None)
    first = text.splitlines()[0] if text else type(exc).__name__
    keys = known_hosts or "~/.ssh/known_hosts"
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, NetmikoAuthenticationException | paramiko.AuthenticationException):
        return AuthFailedError(
            f"authentication failed on {host}: {first}",
            target=device,
            hint="check the credential's username, key_file (or password_env) for this device",
        )
    # netmiko wraps paramiko's host-key refusals in NetmikoTimeoutException: look at the text too.
    if isinstance(exc, paramiko.BadHostKeyException) or "does not match" in text:
        return AuthFailedError(
            f"host key of {host} does not match {keys}",
            target=device,
            hint="verify the device's key out of band; if it legitimately changed, update known_hosts",
        )
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in text:
        return AuthFailedError(
            f"host key of {host} is not in {keys}",
            target=device,
            hint=f"add the device's host key to {keys} (ssh-keyscan, then verify it out of band)",
        )
    if isinstance(exc, NetmikoTimeoutException):
        return UnreachableError(
            f"cannot open SSH to {host}: {first}",
            target=device,
            hint="check the management address, that sshd/SSH is up on the device, and routing",
        )
    if isinstance(exc, ReadTimeout | socket.timeout | TimeoutError):
        return DriverTimeoutError(
            f"no answer from {host} in time: {first}",
            target=device,
            hint="the device is slow or its prompt was not recognised; raise the timeout or check it",
        )
    if isinstance(exc, ConfigInvalidException):
        m = re.search(r"at command: (.*), matched error: (.*)", text)
        return CommandRejectedError(device, m.group(1), m.group(2)) if m else CommandRejectedError(device, "", text)
    if isinstance(exc, OSError | EOFError | paramiko.SSHException):
        return UnreachableError(
            f"SSH session to {host} failed: {type(exc).__name__}: {first}",
            target=device,
            hint="check that the device is up and reachable on its management address",
        )
    return DriverError(
        f"{type(exc).__name__} talking to {host}: {first}",
        target=device,
        hint="see the device's logs; the session was dropped",
    )


class NetmikoDriver:
    """Back up, change and read network devices named in an inventory."""

    def __init__(self, inventory: Inventory, timeout_s: float = 20.0, *, connect: Connector | None = None) -> None:
        self._inventory = inventory
        self._timeout_s = timeout_s
        self._connect: Connector = connect or open_session
        self._pool: dict[str, Session] = {}
        self._known_config: dict[str, str] = {}  # last config read per device, forgotten on any change
        self._locks: dict[str, threading.Lock] = {}
        self._pool_lock = threading.Lock()

    # -- public API ---------------------------------------------------------------------------

    @staticmethod
    def load_library() -> None:
        """Import netmiko (``open_session`` imports it lazily; see ``drivers.load_device_library``)."""
        import netmiko  # noqa: F401

    def backup_config(self, device: str) -> str:
        """The device's configuration as text (what ``backup-config`` reads), for the executor to store."""
        dev = self._device(device)
        commands = devices.render(dev.platform, "backup-config", device=dev)
        with self._session(dev) as (session, params):
            outputs = [self._show(session, dev, params, command) for command in commands]
        shown = dict(zip(commands, outputs, strict=True))
        show = devices.render(dev.platform, "show", device=dev)
        if all(c in shown for c in show):  # the backup read the running config too: remember it
            self._remember(device, "\n".join(shown[c] for c in show))
        if len(commands) == 1:
            return outputs[0]
        return "".join(f"### {c}\n{o.rstrip()}\n" for c, o in zip(commands, outputs, strict=True))

    def running_config(self, device: str, *, fresh: bool = True) -> str:
        """The running configuration / ruleset (the ``show`` action).

        ``fresh=False`` accepts the last configuration this driver read from the device, as long as
        the driver has sent it no change since (a pre-check before changing, never a verification).
        """
        if not fresh:
            with self._pool_lock:
                known = self._known_config.get(device)
            if known is not None:
                return known
        dev = self._device(device)
        commands = devices.render(dev.platform, "show", device=dev)
        with self._session(dev) as (session, params):
            text = "\n".join(self._show(session, dev, params, command) for command in commands)
        self._remember(device, text)
        return text

    def _remember(self, device: str, config: str | None) -> None:
        with self._pool_lock:
            if config is None:
                self._known_config.pop(device, None)
            else:
                self._known_config[device] = config

    def apply(self, device: str, action: Action, target: str) -> CommandOutcome:
        """Send ``action`` (cut-link, restore-link, isolate-segment, reconnect-segment) for ``target``.

        Raises CommandRejectedError (with the device's answer) when a line is refused, and
        DriverError when the target does not belong to the device or its interface does not exist.
        """
        outcome = self.apply_many(device, [(action, target)])
        return CommandOutcome(outcome.device, outcome.commands, outcome.output)

    def apply_many(self, device: str, changes: Sequence[tuple[Action, str]]) -> CommandOutcome:
        """Several ``(action, target)`` changes to one device in one turn of its session: every
        interface checked first, then all lines sent as one change (one shell batch on linux, one
        configuration session and one commit elsewhere). Nothing is sent when a check fails.

        A device rejecting a line raises CommandRejectedError as ``apply`` does; what was sent
        before that line may be in force, so the caller reads the running config to know.
        """
        if not changes:
            raise DriverError(f"no change to send to {device}", target=device)
        dev = self._device(device)
        parts: list[tuple[str, ...]] = []
        interfaces: dict[str, str] = {}
        for action, target in changes:
            _, segment, link = self._target(device, action, target)
            parts.append(tuple(devices.render(dev.platform, action, device=dev, segment=segment, link=link)))
            interface = (segment.interface if segment else link.interface if link else None) or None
            if interface is not None and self._must_check_interface(dev.platform, action):
                interfaces.setdefault(interface, target)
        with self._session(dev) as (session, params):
            commands = [line for part in parts for line in part]
            if dev.platform == "linux":  # each line is a whole idempotent command: the shared ones once
                commands = list(dict.fromkeys(commands))
            self._check_interfaces(session, dev, params, interfaces)
            self._remember(dev.name, None)
            output = self._send(session, dev, params, commands)
        return CommandOutcome(dev.name, tuple(commands), output, tuple(parts))

    def is_in_force(self, device: str, action: Action, target: str) -> bool:
        """Does the running configuration show ``action`` on ``target`` in force right now?"""
        return self.in_force_map(device, [(action, target)])[(action, target)]

    def in_force_map(self, device: str, checks: Sequence[tuple[Action, str]], *,
                     fresh: bool = True) -> dict[tuple[Action, str], bool]:
        """For each ``(action, target)``: is it in force? From ONE read of the running config
        (``fresh=False``: the last one read, see ``running_config``)."""
        resolved = [(action, target, self._target(device, action, target)) for action, target in checks]
        config = self.running_config(device, fresh=fresh)
        return {
            (action, target): devices.in_force(dev.platform, action, config, device=dev, segment=segment, link=link)
            for action, target, (dev, segment, link) in resolved
        }

    def restore_config(self, device: str, backup: str) -> CommandOutcome:
        """Best effort: undo every change carrying the orchestrator's markers.

        See ``devices.restore_commands`` for what each platform can undo from a backup.
        """
        dev = self._device(device)
        running = self.running_config(device)
        commands = devices.restore_commands(dev.platform, backup, running)
        if not commands:
            return CommandOutcome(dev.name, (), "nothing of the orchestrator's is in force")
        with self._session(dev) as (session, params):
            self._remember(dev.name, None)
            output = self._send(session, dev, params, commands)
        return CommandOutcome(dev.name, tuple(commands), output)

    def preflight(self, device: str, interfaces: Sequence[str]) -> tuple[str, list[str]]:
        """Read-only: log in (pinned key), return the device's prompt and which of ``interfaces`` it lacks.

        Used by ``inventory check-reach``; changes nothing on the device.
        """
        dev = self._device(device)
        with self._session(dev) as (session, params):
            find_prompt: Callable[[], object] | None = getattr(session, "find_prompt", None)
            prompt = str(find_prompt()).strip() if find_prompt is not None else "(session open)"
            if not interfaces:
                return prompt, []
            if dev.platform == "linux":
                probe = "; ".join(f"ip -br link show dev {shlex.quote(i)} >/dev/null 2>&1 || "
                                  f"echo {shlex.quote('__missing=' + i)}" for i in interfaces)
                raw = str(session.send_command(f"{probe}; echo {_RC_MARK}$?", read_timeout=params.timeout_s,
                                               cmd_verify=False))
                if not _RC_RE.findall(raw):
                    raise DriverError("no answer to the interface check", target=device,
                                      hint="the login shell is not what netmiko's linux driver expects")
                return prompt, [i for i in interfaces if f"__missing={i}" in raw.split()]
            names = self._interface_names(session, dev, params)
            return prompt, [i for i in interfaces if i not in names]

    def close(self) -> None:
        """Disconnect every pooled session. Errors while hanging up are ignored: the session is gone."""
        with self._pool_lock:
            sessions = list(self._pool.values())
            self._pool.clear()
        for session in sessions:
            _hang_up(session)

    # -- inventory lookups --------------------------------------------------------------------

    def _device(self, name: str) -> Device:
        try:
            dev = self._inventory.devices[name]
        except KeyError:
            known = ", ".join(sorted(self._inventory.devices)) or "none"
            raise DriverError(
                f"no device {name!r} in the inventory", target=name, hint=f"known devices: {known}"
            ) from None
        if dev.platform not in devices.PLATFORMS:
            raise UnknownDriverError(
                f"device {name} has platform {dev.platform!r}, which has no templates",
                target=name,
                hint=f"use one of: {', '.join(devices.PLATFORMS)}",
            )
        return dev

    def _target(self, device: str, action: str, target: str) -> tuple[Device, Segment | None, Link | None]:
        dev = self._device(device)
        if action not in devices.CHANGE_ACTIONS:
            raise UnknownDriverError(
                f"unknown device action {action!r}",
                target=device,
                hint=f"use one of: {', '.join(devices.CHANGE_ACTIONS)}",
            )
        if action in devices.SEGMENT_ACTIONS:
            segment = self._inventory.segments.get(target)
            if segment is None:
                raise DriverError(f"no segment {target!r} in the inventory", target=f"{device}:{target}")
            if segment.gateway != dev.name:
                raise DriverError(
                    f"segment {target} has gateway {segment.gateway}, not {dev.name}",
                    target=f"{device}:{target}",
                    hint="isolate a segment on its own gateway device",
                )
            return dev, segment, None
        link = self._inventory.links.get(target)
        if link is None:
            raise DriverError(f"no link {target!r} in the inventory", target=f"{device}:{target}")
        if link.device != dev.name:
            raise DriverError(
                f"link {target} is on {link.device}, not {dev.name}",
                target=f"{device}:{target}",
                hint="cut a link on the device the inventory names for it",
            )
        return dev, None, link

    def _params(self, dev: Device) -> ConnectionParams:
        credential = self._inventory.credentials.get(dev.credentials)
        if credential is None:
            raise AuthFailedError(
                f"credential {dev.credentials!r} is not defined",
                target=dev.name,
                hint=f"add credentials.{dev.credentials} to the inventory",
            )
        known_hosts = _resolve(self._inventory, credential.known_hosts) if credential.known_hosts else None
        if known_hosts is not None and not Path(known_hosts).is_file():
            raise AuthFailedError(
                f"known_hosts file {known_hosts} does not exist: the host key cannot be checked",
                target=dev.name,
                hint=f"write the device's verified host key to credentials.{credential.name}.known_hosts",
            )
        key_file = _resolve(self._inventory, credential.key_file) if credential.key_file else None
        if key_file is not None and not Path(key_file).is_file():
            raise AuthFailedError(
                f"key file {key_file} does not exist",
                target=dev.name,
                hint=f"fix credentials.{credential.name}.key_file",
            )
        password: str | None = None
        if credential.password_env:
            password = os.environ.get(credential.password_env)
            if password is None:
                raise AuthFailedError(
                    f"environment variable {credential.password_env} is not set",
                    target=dev.name,
                    hint=f"export {credential.password_env} (credentials.{credential.name}.password_env)",
                )
        port = dev.vars.get("ssh_port", DEFAULT_SSH_PORT)
        fast_cli = dev.vars.get("netmiko_fast_cli", True)
        return ConnectionParams(
            device=dev.name,
            device_type=dev.platform,
            host=str(dev.address),
            port=int(port),
            username=credential.username,
            timeout_s=self._timeout_s,
            key_file=key_file,
            known_hosts=known_hosts,
            password=password,
            fast_cli=bool(fast_cli),
        )

    # -- sessions -----------------------------------------------------------------------------

    def _lock(self, device: str) -> threading.Lock:
        with self._pool_lock:
            return self._locks.setdefault(device, threading.Lock())

    @contextmanager
    def _session(self, dev: Device) -> Iterator[tuple[Session, ConnectionParams]]:
        params = self._params(dev)
        with self._lock(dev.name):
            session = self._pool.pop(dev.name, None)
            if session is not None and not _alive(session):
                _hang_up(session)
                session = None
            if session is None:
                try:
                    session = self._connect(params)
                except Exception as exc:
                    raise map_error(exc, dev.name, params.host, params.known_hosts, params.password) from exc
            try:
                yield session, params
            except DriverError:
                _hang_up(session)  # state unknown (maybe still in config mode): never reuse it
                raise
            except Exception as exc:
                _hang_up(session)
                raise map_error(exc, dev.name, params.host, params.known_hosts, params.password) from exc
            self._pool[dev.name] = session

    # -- sending ------------------------------------------------------------------------------

    def _show(self, session: Session, dev: Device, params: ConnectionParams, command: str) -> str:
        if dev.platform == "linux":
            return self._run_shell(session, dev, params, command)
        output = str(session.send_command(command, read_timeout=params.timeout_s))
        pattern = ERROR_PATTERNS[dev.platform]
        if re.search(pattern, output, flags=re.MULTILINE):
            raise CommandRejectedError(dev.name, command, output)
        return output

    def _send(self, session: Session, dev: Device, params: ConnectionParams, commands: Sequence[str]) -> str:
        if dev.platform == "linux":
            # One round trip for the whole change: a subshell that stops at the first failing line.
            return self._run_shell(session, dev, params, linux_batch(commands))
        commit = dev.platform in devices.COMMIT_PLATFORMS
        output = session.send_config_set(
            list(commands),
            exit_config_mode=not commit,
            read_timeout=params.timeout_s,
            error_pattern=ERROR_PATTERNS[dev.platform],
        )
        if commit:
            output += session.commit()
            output += session.exit_config_mode()
        return output

    def _run_shell(self, session: Session, dev: Device, params: ConnectionParams, command: str) -> str:
        """Run one shell line; its exit status decides whether the device accepted it."""
        raw = str(
            session.send_command(f"{command}; echo {_RC_MARK}$?", read_timeout=params.timeout_s, cmd_verify=False)
        )
        found = _RC_RE.findall(raw)
        output = "".join(line + "\n" for line in raw.splitlines() if _RC_MARK not in line)
        if not found:
            raise DriverError(
                f"no exit status came back for {command!r}: {output.strip()[-300:]}",
                target=dev.name,
                hint="the shell prompt or login shell is not what netmiko's linux driver expects",
            )
        if int(found[-1]) != 0:
            raise CommandRejectedError(
                dev.name,
                command,
                f"exit status {found[-1]}: {output}",
                hint="run the command by hand on the device to see why it fails",
            )
        return output

    # -- interface checks ---------------------------------------------------------------------

    @staticmethod
    def _must_check_interface(platform: str, action: str) -> bool:
        # FRR accepts `interface NAME` for a name that does not exist, so a typo would silently do
        # nothing: check on every action. nftables matches interface names as strings: check
        # before adding rules (removing rules by marker works whatever the interface).
        if platform == "cisco_ios":
            return True
        return platform == "linux" and action in devices.UNDO

    def _check_interfaces(
        self, session: Session, dev: Device, params: ConnectionParams, interfaces: dict[str, str]
    ) -> None:
        """Every ``interface`` (mapped to the target it serves) exists on the device: one round trip."""
        if not interfaces:
            return
        if dev.platform == "linux":
            names: list[str] = []
            probe = "; ".join(
                f"ip -br link show dev {shlex.quote(i)} >/dev/null 2>&1 || echo {shlex.quote('__missing=' + i)}"
                for i in interfaces)
            raw = str(session.send_command(f"{probe}; echo {_RC_MARK}$?", read_timeout=params.timeout_s,
                                           cmd_verify=False))
            if not _RC_RE.findall(raw):
                raise DriverError(f"no answer to the interface check on {dev.name}: {raw.strip()[-300:]}",
                                  target=dev.name,
                                  hint="the shell prompt or login shell is not what netmiko's linux driver expects")
            missing = [i for i in interfaces if f"__missing={i}" in raw.split()]
        else:
            names = self._interface_names(session, dev, params)
            missing = [i for i in interfaces if i not in names]
        if not missing:
            return
        first = missing[0]
        raise DriverError(
            f"interface {', '.join(missing)} does not exist on {dev.name}",
            target=f"{dev.name}:{interfaces[first]}",
            hint="fix the inventory's interface for " + ", ".join(interfaces[i] for i in missing)
            + (f"; the device has: {', '.join(names)}" if names else ""),
        )

    def _interface_names(self, session: Session, dev: Device, params: ConnectionParams) -> list[str]:
        pattern = ERROR_PATTERNS[dev.platform]
        # FRR (the lab's cisco_ios) knows `show interface brief`; real IOS knows `show ip interface brief`.
        for command in ("show interface brief", "show ip interface brief"):
            output = str(session.send_command(command, read_timeout=params.timeout_s))
            if not re.search(pattern, output, flags=re.MULTILINE):
                return parse_interface_names(output)
        raise CommandRejectedError(dev.name, "show ip interface brief", output)


def linux_batch(commands: Sequence[str]) -> str:
    """The lines of a linux change as one shell line that stops at the first failure."""
    return "(set -e; " + "; ".join(commands) + ")"


def parse_interface_names(output: str) -> list[str]:
    """First column of a ``show interface brief`` table (FRR, IOS), headers and rulers skipped."""
    names: list[str] = []
    for line in output.splitlines():
        words = line.split()
        if not words or set(words[0]) <= {"-"} or words[0] in ("Interface", "Name"):
            continue
        if line[0].isspace():
            continue
        names.append(words[0])
    return names


def _alive(session: Session) -> bool:
    try:
        return bool(session.is_alive())
    except Exception:  # noqa: BLE001 - hanging up must never mask the error being reported
        return False


def _hang_up(session: Session) -> None:
    with contextlib.suppress(Exception):  # the session is being discarded; nothing to report
        session.disconnect()

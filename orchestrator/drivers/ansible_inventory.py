"""Export an Inventory as an Ansible inventory (the YAML/JSON structure ``ansible-inventory`` reads).

The same structure feeds the ansible driver and the documented manual fallback::

    ansible-playbook -i <(orchestrator inventory ansible inventories/lab.yml) \\
        playbooks/stop-host.yml --limit HOST

Groups (names made Ansible-safe: ``-`` becomes ``_``, a prefix says the kind):

- ``campus_<name>``, ``segment_<name>``, ``role_<name>``, ``tier_<n>``
- ``kept``: hosts that must never be powered off (``keep_running`` or an island), each with why
  (hostvar ``orchestrator_kept_reason``); ``stoppable``: every other host.

Host variables: how to connect (``ansible_host`` = management address, ``ansible_user``,
``ansible_ssh_private_key_file``, strict host-key checking against the credential's known_hosts),
the host's facts the playbooks use (``services``, ``depends_on``, ``tier``, ...) and the host's own
``vars:`` passed through. Never a secret: a password is referenced by the name of the environment
variable that holds it (``ansible_password: "{{ lookup('env', 'NAME') }}"``).

The inventory's strings are data, never code, and never connection settings:

- Serialised with :func:`dumps` (JSON, which Ansible's YAML inventory plugin and ``-e`` read), every
  string is wrapped as ``{"__ansible_unsafe": "..."}``: Ansible passes it on as text and never
  templates it (``{{ lookup('pipe', ...) }}`` in a service name, a role, an island's reason or a
  ``vars:`` value stays those characters). The one string left to Ansible's templating is the
  password reference above, which this module writes itself (an environment variable's name).
- A host's ``vars:`` may not set ``ansible_*`` keys (where and as whom Ansible connects, host-key
  checking, SSH arguments, ...) or the keys the export owns: refused here too, even when the
  inventory's validation missed them.
- The SSH options are built as an argument list (:func:`ssh_options`); paths are passed to OpenSSH
  in double quotes (a space stays inside the path) and refused when they hold characters OpenSSH
  reads specially inside an option (``"``, ``\\``, ``%``, control characters). Where Ansible takes one
  string (``ansible_ssh_common_args``, which it splits with ``shlex.split``), each argument is
  quoted for that split (:func:`ssh_common_args`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.model import Credential, Host, Inventory

# Keys the export owns. A host's ``vars:`` may not override them (management_address and the
# credential are the source of truth for how a host is reached).
RESERVED_VARS = frozenset(
    {
        "ansible_host",
        "ansible_user",
        "ansible_ssh_private_key_file",
        "ansible_ssh_common_args",
        "ansible_password",
        "orchestrator_host",
        "services",
        "depends_on",
    }
)

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def group_name(kind: str, name: str | int) -> str:
    """An Ansible-safe group name: ``group_name("segment", "ant-servers") == "segment_ant_servers"``."""
    return f"{kind}_{_UNSAFE.sub('_', str(name))}"


def resolve_path(inventory: Inventory, path: str) -> str:
    """``~`` expanded; a relative path is taken relative to the inventory file's directory.

    The one resolution every SSH client uses (OpenSSH via Ansible and the control masters, paramiko,
    netmiko), so that they all read the same file whatever the working directory.
    """
    expanded = Path(os.path.expanduser(path))
    if not expanded.is_absolute():
        expanded = Path(inventory.path).absolute().parent / expanded
    return str(expanded)


# Inside an OpenSSH option value in double quotes, `"` and `\` are still read by its argument
# splitter and `%` starts a token (%d, %h, ...) in the file options: a path with them, or with a
# control character, cannot be passed through exactly, so it is refused instead.
_SSH_PATH_FORBIDDEN = re.compile(r'["\\%\x00-\x1f\x7f]')


def ssh_path(inventory: Inventory, credential: Credential, key: str) -> str:
    """The credential's ``key`` (``known_hosts`` or ``key_file``) resolved, or UsageError naming it."""
    raw = getattr(credential, key)
    path = resolve_path(inventory, str(raw))
    bad = _SSH_PATH_FORBIDDEN.search(path)
    if bad is not None:
        raise UsageError(
            f"credentials.{credential.name}.{key} {path!r} holds {bad.group()!r}, which OpenSSH would read "
            "as syntax, not as part of the path",
            target=inventory.path,
            hint=f"move the file to a path without quotes, backslashes, % or control characters and fix "
            f"credentials.{credential.name}.{key}",
        )
    return path


_SSH_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*$")


def ssh_username(inventory: Inventory, credential: Credential) -> str:
    """The credential's username, refused (UsageError) when SSH or Ansible would read it as syntax."""
    if not _SSH_USER.match(credential.username):
        raise UsageError(
            f"credentials.{credential.name}.username {credential.username!r} is not a plain user name",
            target=inventory.path,
            hint="use letters, digits and . _ @ - only, not starting with -",
        )
    return credential.username


def openssh_quoted(path: str) -> str:
    """``path`` as one word of an OpenSSH option value: double-quoted (spaces stay in it)."""
    if _SSH_PATH_FORBIDDEN.search(path):
        raise ValueError(f"cannot quote {path!r} for OpenSSH")  # ssh_path refuses these first
    return f'"{path}"'


# The key exchange OpenSSH offers first: curve25519, as the product's paramiko connections (probes,
# integrity checks, netmiko) already negotiate. OpenSSH 9's default, the post-quantum hybrid
# sntrup761x25519, costs ~0.13 s of CPU per handshake on each side (curve25519 ~0.01 s): a shutdown
# opens one connection per host while the machines going down need those same CPUs. Authentication is
# unchanged (pinned host keys, the credential's key); the hybrid only guards the secrecy of a recorded
# session against a future quantum computer, and a stop session carries commands, never secrets.
# "^" puts these at the head of OpenSSH's own list: a server without curve25519 still negotiates.
KEX_PREFERENCE = "KexAlgorithms=^curve25519-sha256,curve25519-sha256@libssh.org"


def ssh_options(inventory: Inventory, credential: Credential) -> list[str]:
    """SSH options (an argument list) that make host-key checking strict, against the credential's
    known_hosts if set, and prefer the cheap key exchange (``KEX_PREFERENCE``). Every value is one
    argument: nothing here is split again by a shell."""
    args = ["-o", "StrictHostKeyChecking=yes", "-o", KEX_PREFERENCE]
    if credential.known_hosts:
        args[:0] = ["-o", "UserKnownHostsFile=" + openssh_quoted(ssh_path(inventory, credential, "known_hosts"))]
    if credential.key_file:
        args += ["-o", "IdentitiesOnly=yes"]
    return args


def ssh_common_args(inventory: Inventory, credential: Credential) -> str:
    """:func:`ssh_options` as the one string Ansible's ``ssh_common_args`` takes: Ansible splits it
    with ``shlex.split``, which gives back exactly the argument list."""
    return shlex.join(ssh_options(inventory, credential))


_PASSWORD_REFERENCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def password_reference(env_name: str) -> str:
    """The template that reads a password from the environment: the only template in the export."""
    if not _PASSWORD_REFERENCE.match(env_name):
        raise UsageError(f"password_env {env_name!r} is not an environment variable name",
                         hint="use letters, digits and _ only, not starting with a digit")
    return "{{ lookup('env', '" + env_name + "') }}"


def connection_vars(inventory: Inventory, host: Host) -> dict[str, Any]:
    """How Ansible reaches ``host``. References secrets, never contains them."""
    credential = inventory.credentials[host.credentials]
    out: dict[str, Any] = {
        "ansible_connection": "ssh",
        "ansible_host": str(host.management_address),
        "ansible_port": 22,
        "ansible_user": ssh_username(inventory, credential),
        "ansible_host_key_checking": True,
        "ansible_ssh_common_args": ssh_common_args(inventory, credential),
    }
    if credential.key_file:
        out["ansible_ssh_private_key_file"] = ssh_path(inventory, credential, "key_file")
    if credential.password_env:
        out["ansible_password"] = password_reference(credential.password_env)
    return out


def refused_var(key: str) -> str | None:
    """Why a host's ``vars:`` key may not reach Ansible, or None when it may."""
    if key.lower().startswith("ansible_"):
        return "ansible_* variables set how and where Ansible connects; the inventory's credentials and " \
               "management_address are the only source of those"
    if key in RESERVED_VARS or key.startswith("orchestrator_"):
        return "the export sets this variable itself"
    if key.lower().startswith("stop_host_release_"):
        return "the orchestrator sets it to release each host's stop; it would hold stop-host.yml waiting"
    return None


def host_vars(inventory: Inventory, host: Host, kept_reason: str | None) -> dict[str, Any]:
    for key in host.vars:
        why = refused_var(str(key))
        if why is not None:
            raise UsageError(
                f"hosts.{host.name}.vars.{key} is refused: {why}",
                target=inventory.path,
                hint=f"remove {key} from hosts.{host.name}.vars",
            )
    out: dict[str, Any] = dict(host.vars)
    out.update(connection_vars(inventory, host))
    out.update(
        {
            "orchestrator_host": host.name,
            "services": list(host.services),
            "depends_on": list(host.depends_on),
            "orchestrator_segment": host.segment,
            "orchestrator_tier": host.tier,
            "orchestrator_role": host.role,
            "orchestrator_address": str(host.address),
        }
    )
    if host.campus:
        out["orchestrator_campus"] = host.campus
    if host.power:
        out["orchestrator_power"] = host.power
    if host.kind.value != "server":
        out["orchestrator_kind"] = host.kind.value
    if host.runs_on or host.stored_on:  # the manual fallback's order: VMs before these (orchestrator plan)
        out["orchestrator_runs_on"] = list(host.runs_on)
        out["orchestrator_stored_on"] = list(host.stored_on)
    if kept_reason is not None:
        out["orchestrator_kept_reason"] = kept_reason
    return out


def to_ansible_inventory(inventory: Inventory, hosts: Iterable[str] | None = None) -> dict[str, Any]:
    """The inventory as an Ansible YAML/JSON inventory, optionally limited to ``hosts``.

    Raises UsageError naming every unknown host. The result is plain data (str, int, list, dict),
    deterministic, and safe to print: it holds no password and no key material. Give it to Ansible
    only through :func:`dumps`, which marks its strings as text Ansible never templates.

    Hosts are sorted by name, or, when ``hosts`` is given, in its order (duplicates dropped): Ansible
    takes a play's hosts in inventory order, so a run started for many hosts at once (a shutdown's
    armed stop run, forking one worker per host) prepares the first ones to be stopped first.
    """
    if hosts is None:
        names = sorted(inventory.hosts)
    else:
        wanted = list(dict.fromkeys(hosts))
        unknown = [h for h in wanted if h not in inventory.hosts]
        if unknown:
            raise UsageError(
                f"unknown host(s): {', '.join(unknown)}",
                target=inventory.path,
                hint=f"use host names from the inventory: {', '.join(sorted(inventory.hosts)) or '(none)'}",
            )
        names = wanted

    kept = inventory.keep_reasons()
    groups: dict[str, list[str]] = {}

    def add(group: str, host: str) -> None:
        groups.setdefault(group, []).append(host)

    all_hosts: dict[str, Any] = {}
    for name in names:
        host = inventory.hosts[name]
        reason = kept.get(name)
        all_hosts[name] = host_vars(inventory, host, reason)
        if host.campus:
            add(group_name("campus", host.campus), name)
        add(group_name("segment", host.segment), name)
        if host.role:
            add(group_name("role", host.role), name)
        add(group_name("tier", host.tier), name)
        add("kept" if reason is not None else "stoppable", name)

    children: dict[str, Any] = {group: {"hosts": {h: {} for h in members}} for group, members in sorted(groups.items())}
    for fixed in ("kept", "stoppable"):
        children.setdefault(fixed, {"hosts": {}})
    return {
        "all": {
            "vars": {
                "ansible_python_interpreter": "auto_silent",
                "orchestrator_site": inventory.site.name,
            },
            "hosts": all_hosts,
            "children": dict(sorted(children.items())),
        }
    }


UNSAFE_KEY = "__ansible_unsafe"


def mark_unsafe(data: Any) -> Any:
    """``data`` with every string wrapped as ``{"__ansible_unsafe": s}``: text Ansible never templates.

    Keys stay plain: Ansible never templates a variable's name.
    """
    if isinstance(data, str):
        return {UNSAFE_KEY: data}
    if isinstance(data, Mapping):
        return {str(key): mark_unsafe(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [mark_unsafe(v) for v in data]
    return data


def dumps(data: Mapping[str, Any]) -> str:
    """A :func:`to_ansible_inventory` result as JSON for Ansible, every string marked unsafe except
    each host's own password reference (checked to be exactly the reference the export writes)."""
    hosts = data.get("all", {}).get("hosts", {})
    marked = mark_unsafe(data)
    for name, hv in hosts.items():
        reference = hv.get("ansible_password")
        if isinstance(reference, str):
            env_name = reference.removeprefix("{{ lookup('env', '").removesuffix("') }}")
            if _PASSWORD_REFERENCE.match(env_name) and reference == password_reference(env_name):
                marked["all"]["hosts"][name]["ansible_password"] = reference
    return json.dumps(_sorted_but_host_order(marked), indent=1) + "\n"


def _sorted_but_host_order(marked: dict[str, Any]) -> dict[str, Any]:
    """``marked`` with every mapping's keys sorted, except the order of ``all.hosts`` (Ansible's
    host order: see :func:`to_ansible_inventory`)."""
    def sort(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: sort(value[key]) for key in sorted(value)}
        if isinstance(value, list):
            return [sort(v) for v in value]
        return value

    everything: dict[str, Any] = sort(marked)
    hosts = everything.get("all", {}).get("hosts")
    if isinstance(hosts, dict):  # the same sorted host vars, back in the given host order
        everything["all"]["hosts"] = {name: hosts[name] for name in marked["all"]["hosts"]}
    return everything

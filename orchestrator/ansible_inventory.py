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
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
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
    """``~`` expanded; a relative path is taken relative to the inventory file's directory."""
    expanded = Path(os.path.expanduser(path))
    if not expanded.is_absolute():
        expanded = Path(inventory.path).absolute().parent / expanded
    return str(expanded)


def ssh_common_args(inventory: Inventory, credential: Credential) -> str:
    """SSH options that make host-key checking strict, against the credential's known_hosts if set."""
    args = ["-o StrictHostKeyChecking=yes"]
    if credential.known_hosts:
        args.insert(0, f"-o UserKnownHostsFile={resolve_path(inventory, credential.known_hosts)}")
    if credential.key_file:
        args.append("-o IdentitiesOnly=yes")
    return " ".join(args)


def connection_vars(inventory: Inventory, host: Host) -> dict[str, Any]:
    """How Ansible reaches ``host``. References secrets, never contains them."""
    credential = inventory.credentials[host.credentials]
    out: dict[str, Any] = {
        "ansible_host": str(host.management_address),
        "ansible_user": credential.username,
        "ansible_ssh_common_args": ssh_common_args(inventory, credential),
    }
    if credential.key_file:
        out["ansible_ssh_private_key_file"] = resolve_path(inventory, credential.key_file)
    if credential.password_env:
        out["ansible_password"] = "{{ lookup('env', '" + credential.password_env + "') }}"
    return out


def host_vars(inventory: Inventory, host: Host, kept_reason: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in host.vars.items() if k not in RESERVED_VARS}
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
    if kept_reason is not None:
        out["orchestrator_kept_reason"] = kept_reason
    return out


def to_ansible_inventory(inventory: Inventory, hosts: Iterable[str] | None = None) -> dict[str, Any]:
    """The inventory as an Ansible YAML/JSON inventory, optionally limited to ``hosts``.

    Raises UsageError naming every unknown host. The result is plain data (str, int, list, dict),
    deterministic (sorted), and safe to print: it holds no password and no key material.
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
        names = sorted(wanted)

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

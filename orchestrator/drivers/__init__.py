"""Static driver registry: name -> "module:Class", imported lazily, loud on unknown names.

``ansible`` (ansible-runner and the playbooks), ``netmiko`` (network devices), ``ssh`` (paramiko
probes and fast commands); power drivers by the host's ``power:`` value.
"""

from __future__ import annotations

import importlib
from typing import Any

from orchestrator.errors import UnknownDriverError

DRIVERS: dict[str, str] = {
    "ansible": "orchestrator.drivers.ansible:AnsibleDriver",
    "netmiko": "orchestrator.drivers.netmiko:NetmikoDriver",
    "ssh": "orchestrator.drivers.ssh:SshDriver",
}

POWER_DRIVERS: dict[str, str] = {
    "lab": "orchestrator.drivers.power:LabPower",
    "vagrant": "orchestrator.drivers.power:VagrantPower",
    "ipmi": "orchestrator.drivers.power:IpmiPower",
}


def _load(registry: dict[str, str], name: str, what: str) -> Any:
    try:
        target = registry[name]
    except KeyError:
        raise UnknownDriverError(
            f"unknown {what} '{name}'", target=name, hint=f"use one of: {', '.join(sorted(registry))}"
        ) from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownDriverError(f"{what} '{name}' cannot be imported: {exc}", target=name,
                                 hint="reinstall with `make setup`") from None
    return getattr(module, class_name)


def driver_class(name: str) -> Any:
    return _load(DRIVERS, name, "driver")


def power_driver_class(name: str) -> Any:
    return _load(POWER_DRIVERS, name, "power driver")

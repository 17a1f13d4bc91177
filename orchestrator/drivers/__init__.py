"""Static driver registry: name -> "module:Class", imported lazily, loud on unknown names.

``ansible`` (ansible-runner and the playbooks), ``netmiko`` (network devices), ``ssh`` (paramiko
probes and fast commands); power drivers by the host's short ``power:`` value, and a
``power_controllers:`` entry's driver by its type (``open_power_controller``). Their interfaces are in
``base``; ``devices`` (the device command templates) and ``ansible_inventory`` (the inventory as
Ansible sees it, and the SSH options every client shares) are what the drivers build on.

The ``open_*`` functions are the one seam through which a run opens its drivers, each typed with
its interface from ``drivers/base.py`` (tests put fakes behind them). The table at the end has
mypy check every driver class against its interface.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.drivers.base import DeviceDriver, HostStopper, PowerControllerDriver, PowerDriver, SshRunner
from orchestrator.errors import UnknownDriverError
from orchestrator.model import Inventory

if TYPE_CHECKING:
    from orchestrator.drivers.power_controllers import PowerController

EventSink = Callable[[dict[str, Any]], None]

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


def open_ssh(inventory: Inventory) -> SshRunner:
    """The SSH driver for a run's hosts and probes."""
    factory: Callable[[Inventory], SshRunner] = driver_class("ssh")
    return factory(inventory)


def open_devices(inventory: Inventory) -> DeviceDriver:
    """The network-device driver."""
    factory: Callable[[Inventory], DeviceDriver] = driver_class("netmiko")
    return factory(inventory)


def load_device_library() -> None:
    """Import the network-device driver's library now (netmiko: 0.1 s warm, over 1 s cold on a busy
    machine) rather than at the first device step, which is a containment's first action."""
    driver_class("netmiko").load_library()


def open_host_stopper(inventory: Inventory, work_dir: Path, forks: int, event_sink: EventSink | None) -> HostStopper:
    """The driver that stops hosts from inside (Ansible), its events going to ``event_sink``."""
    factory: Callable[[Inventory, Path, int, EventSink | None], HostStopper] = driver_class("ansible")
    return factory(inventory, work_dir, forks, event_sink)


def open_power(name: str) -> PowerDriver:
    """The power driver a host's short ``power:`` names (``lab``, ``vagrant``, ``ipmi``)."""
    factory: Callable[[], PowerDriver] = power_driver_class(name)
    return factory()


def open_power_controller(controller: PowerController) -> PowerControllerDriver:
    """The driver of a ``power_controllers:`` entry (vsphere, redfish, ipmi); its session opens on first
    use and ``close()`` ends it. A run reaches it through ``controller_power.ControllerSessions``."""
    from orchestrator.drivers.power_controllers import open_driver

    return open_driver(controller)


if TYPE_CHECKING:  # mypy checks each driver against its interface (and its constructor against its opener)
    from orchestrator.drivers import ansible, ipmi, netmiko, power, redfish, ssh, vsphere

    _SSH: Callable[[Inventory], SshRunner] = ssh.SshDriver
    _DEVICES: Callable[[Inventory], DeviceDriver] = netmiko.NetmikoDriver
    _STOPPER: Callable[[Inventory, Path, int, EventSink | None], HostStopper] = ansible.AnsibleDriver
    _POWER: Mapping[str, Callable[[], PowerDriver]] = {
        "lab": power.LabPower, "vagrant": power.VagrantPower, "ipmi": power.IpmiPower}
    _CONTROLLERS: tuple[Callable[[PowerController], PowerControllerDriver], ...] = (
        vsphere.VSpherePower, redfish.RedfishPower, ipmi.IpmiLanPower)

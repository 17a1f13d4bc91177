"""orchestrator.drivers: the typed openers a run opens its drivers through, and the registry behind them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import drivers
from orchestrator.drivers.ansible import AnsibleDriver
from orchestrator.drivers.netmiko import NetmikoDriver
from orchestrator.drivers.power import IpmiPower, LabPower, VagrantPower
from orchestrator.drivers.ssh import SshDriver
from orchestrator.errors import UnknownDriverError
from orchestrator.inventory import load_inventory
from orchestrator.model import Inventory

FAKE_CAMPUS = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"


@pytest.fixture
def inventory() -> Inventory:
    return load_inventory(FAKE_CAMPUS)


def test_each_opener_opens_the_registered_driver_without_connecting(inventory: Inventory, tmp_path: Path) -> None:
    ssh = drivers.open_ssh(inventory)
    net = drivers.open_devices(inventory)
    events: list[dict[str, Any]] = []
    stopper = drivers.open_host_stopper(inventory, tmp_path / "ansible", 12, events.append)
    try:
        assert isinstance(ssh, SshDriver) and isinstance(net, NetmikoDriver)
        assert isinstance(stopper, AnsibleDriver)
        assert stopper.forks == 12 and stopper.event_sink == events.append
        assert stopper.work_dir == (tmp_path / "ansible").absolute()
    finally:
        for driver in (ssh, net, stopper):
            driver.close()


def test_power_drivers_open_by_the_hosts_power_value() -> None:
    assert isinstance(drivers.open_power("lab"), LabPower)
    assert isinstance(drivers.open_power("vagrant"), VagrantPower)
    assert isinstance(drivers.open_power("ipmi"), IpmiPower)


def test_an_unknown_power_driver_is_refused_with_the_valid_names() -> None:
    with pytest.raises(UnknownDriverError) as err:
        drivers.open_power("wake-on-lan")
    assert "wake-on-lan" in str(err.value)
    assert err.value.hint == "use one of: ipmi, lab, vagrant"

"""The IPMI driver (ipmitool, lanplus) against virtualbmc's BMC in front of a libvirt test domain.

Judged by libvirt's own state of the domain, read in the BMC's process (not through IPMI)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from power_emulators import PASSWORD, USER, Endpoint, IpmiBmc, free_port

from orchestrator.drivers.ipmi import IpmiLanPower
from orchestrator.drivers.power_controllers import PowerController
from orchestrator.errors import AuthFailedError, DriverError, UnreachableError


def controller(ep: Endpoint, **kw: Any) -> PowerController:
    base: dict[str, Any] = {"name": "bmc-srv1", "type": "ipmi", "address": ep.host, "port": ep.port,
                            "username": USER, "password_env": "POWER_TEST_PASSWORD", "connect_timeout_s": 3.0,
                            "operation_timeout_s": 10.0}
    return PowerController(**{**base, **kw})


def wait_libvirt(bmc: IpmiBmc, wanted: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while (now := bmc.libvirt_state()) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return str(now)


@pytest.fixture
def powered_on(ipmi_bmc: IpmiBmc) -> IpmiBmc:
    IpmiLanPower(controller(ipmi_bmc.endpoint)).power_on("srv1")
    assert ipmi_bmc.libvirt_state() == "running"
    return ipmi_bmc


def test_graceful_off_is_a_soft_chassis_control(powered_on: IpmiBmc) -> None:
    power = IpmiLanPower(controller(powered_on.endpoint))
    assert power.state("srv1") == "running"
    power.power_off("srv1", graceful=True)
    assert power.evidence("srv1") == {"chassis_control": "soft", "power_state_before": "on", "result": "requested"}
    assert wait_libvirt(powered_on, "shutoff") == "shutoff"
    assert power.state("srv1") == "stopped"


def test_hard_off_is_awaited_then_on(powered_on: IpmiBmc) -> None:
    power = IpmiLanPower(controller(powered_on.endpoint))
    power.power_off("srv1", graceful=False)
    assert power.evidence("srv1")["power_state"] == "off"
    assert powered_on.libvirt_state() == "shutoff"  # awaited: off when it returns
    power.power_off("srv1", graceful=False)
    assert power.evidence("srv1")["result"] == "already off"
    power.power_on("srv1")
    assert power.evidence("srv1")["chassis_control"] == "on"
    assert powered_on.libvirt_state() == "running"


def test_wrong_credentials_fail_clearly_without_the_password(ipmi_bmc: IpmiBmc,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWER_TEST_PASSWORD", "not-" + PASSWORD)
    with pytest.raises(AuthFailedError, match=f"refused the login of user '{USER}'") as err:
        IpmiLanPower(controller(ipmi_bmc.endpoint)).state("srv1")
    assert PASSWORD not in str(err.value) and PASSWORD not in repr(err.value.args)


def test_an_unset_password_reference_is_named_not_guessed(ipmi_bmc: IpmiBmc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POWER_TEST_PASSWORD")
    with pytest.raises(AuthFailedError, match="environment variable POWER_TEST_PASSWORD is not set"):
        IpmiLanPower(controller(ipmi_bmc.endpoint)).state("srv1")


def test_an_unreachable_bmc_is_unreachable_not_off() -> None:
    ep = Endpoint("127.0.0.1", free_port(), "udp")
    with pytest.raises(UnreachableError, match="does not answer") as err:
        IpmiLanPower(controller(ep)).state("srv1")
    assert isinstance(err.value, DriverError)

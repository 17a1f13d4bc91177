"""The Redfish driver against sushy-tools' emulator (libvirt test driver), HTTPS with basic auth.

Judged by the test's own raw HTTP GET of the system's PowerState."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from power_emulators import PASSWORD, USER, Endpoint, Tls, free_port

from orchestrator.drivers.power_controllers import PowerController
from orchestrator.drivers.redfish import RedfishPower
from orchestrator.errors import AuthFailedError, DriverError, UnreachableError


def controller(ep: Endpoint, tls: Tls, **kw: Any) -> PowerController:
    base: dict[str, Any] = {"name": "bmc-test", "type": "redfish", "address": ep.host, "port": ep.port,
                            "username": USER, "password_env": "POWER_TEST_PASSWORD", "ca_file": str(tls.ca_file),
                            "connect_timeout_s": 5.0, "operation_timeout_s": 20.0}
    return PowerController(**{**base, **kw})


def judge(ep: Endpoint, tls: Tls) -> str:
    """The only system's PowerState, read over HTTPS by the test itself."""
    base = f"https://{ep.host}:{ep.port}"
    auth = (USER.encode(), PASSWORD.encode())
    members = requests.get(f"{base}/redfish/v1/Systems", auth=auth, verify=str(tls.ca_file), timeout=10).json()
    system = requests.get(base + members["Members"][0]["@odata.id"], auth=auth, verify=str(tls.ca_file),
                          timeout=10).json()
    return str(system["PowerState"])


def wait_judge(ep: Endpoint, tls: Tls, wanted: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while (now := judge(ep, tls)) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return now


@pytest.fixture
def powered_on(redfish_bmc: Endpoint, tls: Tls) -> Endpoint:
    with RedfishPower(controller(redfish_bmc, tls)) as power:
        power.power_on("")
    assert judge(redfish_bmc, tls) == "On"
    return redfish_bmc


def test_graceful_off_is_graceful_shutdown_from_the_advertised_values(powered_on: Endpoint, tls: Tls) -> None:
    with RedfishPower(controller(powered_on, tls)) as power:
        assert power.state("") == "running"
        power.power_off("", graceful=True)
        evidence = power.evidence("")
    assert evidence["reset_type"] == "GracefulShutdown"
    assert isinstance(evidence["allowed"], list) and "GracefulShutdown" in evidence["allowed"]
    assert wait_judge(powered_on, tls, "Off") == "Off"


def test_hard_off_is_force_off_awaited_then_on(powered_on: Endpoint, tls: Tls) -> None:
    with RedfishPower(controller(powered_on, tls)) as power:
        power.power_off("", graceful=False)
        assert power.evidence("")["reset_type"] == "ForceOff"
        assert judge(powered_on, tls) == "Off"  # awaited: off when it returns
        assert power.state("") == "stopped"
        power.power_on("")
        assert power.evidence("")["reset_type"] == "On"
        assert judge(powered_on, tls) == "On"
        power.power_on("")
        assert power.evidence("")["result"] == "already on"


def test_a_system_by_its_member_id_and_an_unknown_one(redfish_bmc: Endpoint, tls: Tls) -> None:
    base = f"https://{redfish_bmc.host}:{redfish_bmc.port}"
    members = requests.get(f"{base}/redfish/v1/Systems", auth=(USER.encode(), PASSWORD.encode()),
                           verify=str(tls.ca_file), timeout=10).json()["Members"]
    member_id = members[0]["@odata.id"].rsplit("/", 1)[-1]
    with RedfishPower(controller(redfish_bmc, tls)) as power:
        assert power.state(member_id) in ("running", "stopped")
        with pytest.raises(DriverError, match=f"no system 'nope' \\(its systems: {member_id}\\)"):
            power.state("nope")


def test_wrong_credentials_fail_clearly_without_the_password(redfish_bmc: Endpoint, tls: Tls,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWER_TEST_PASSWORD", "not-" + PASSWORD)
    with pytest.raises(AuthFailedError, match=f"refused the login of user '{USER}' \\(HTTP 401\\)") as err:
        RedfishPower(controller(redfish_bmc, tls)).state("")
    assert PASSWORD not in str(err.value) and PASSWORD not in repr(err.value.args)


def test_a_certificate_from_another_ca_fails_clearly(redfish_bmc: Endpoint, tls: Tls) -> None:
    with pytest.raises(DriverError, match="TLS certificate not trusted") as err:
        RedfishPower(controller(redfish_bmc, tls, ca_file=str(tls.other_ca_file))).state("")
    assert "ca_file" in str(err.value) and PASSWORD not in str(err.value)
    with pytest.raises(DriverError, match="TLS certificate not trusted"):  # the system CAs do not know it either
        RedfishPower(controller(redfish_bmc, tls, ca_file=None)).state("")


def test_an_unreachable_bmc_is_unreachable_not_off(tls: Tls) -> None:
    ep = Endpoint("127.0.0.1", free_port(), "https")
    with pytest.raises(UnreachableError, match="cannot be reached"):
        RedfishPower(controller(ep, tls)).state("")


def test_the_controllers_ca_file_wins_over_the_environments_bundle(redfish_bmc: Endpoint, tls: Tls,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE replace a session's CA file: the controller's must stay in force
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.other_ca_file))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tls.other_ca_file))
    with RedfishPower(controller(redfish_bmc, tls)) as power:
        assert power.state("") in ("running", "stopped")

"""Power controllers: addresses, password references, TLS settings, secrets kept out of messages.

The drivers themselves are proven against real protocol implementations in tests/power."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.drivers.ipmi import IpmiLanPower
from orchestrator.drivers.power_controllers import PowerController, open_driver, scrub
from orchestrator.drivers.redfish import RedfishPower
from orchestrator.drivers.vsphere import VSpherePower
from orchestrator.errors import AuthFailedError, DriverError


def ctl(**kw: object) -> PowerController:
    base: dict[str, object] = {"name": "c1", "type": "vsphere", "address": "10.99.0.50", "username": "svc",
                               "password_env": "C1_PASSWORD"}
    return PowerController(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "address", "endpoint"), [
    ("vsphere", "10.99.0.50", "https://10.99.0.50:443"),
    ("vsphere", "vc.example.org:8443", "https://vc.example.org:8443"),
    ("redfish", "https://10.99.2.21", "https://10.99.2.21:443"),
    ("redfish", "https://[2001:db8::5]:8443", "https://[2001:db8::5]:8443"),
    ("ipmi", "10.99.2.31", "https://10.99.2.31:623"),
    ("ipmi", "10.99.2.31:6230", "https://10.99.2.31:6230"),
])
def test_addresses_with_and_without_port_and_scheme(kind: str, address: str, endpoint: str) -> None:
    c = PowerController.from_address("c1", kind, address, "svc", password_env="X")  # type: ignore[arg-type]
    assert c.endpoint == endpoint


def test_lab_simulator_http_only_when_allowed() -> None:
    with pytest.raises(DriverError, match=r"plain http .* refused"):
        PowerController.from_address("c1", "vsphere", "http://127.0.0.1:8989", "svc", password_env="X")
    c = PowerController.from_address("c1", "vsphere", "http://127.0.0.1:8989", "svc", password_env="X",
                                     allow_http=True)
    assert c.endpoint == "http://127.0.0.1:8989"


@pytest.mark.parametrize("address", ["ftp://h", "https://h/redfish/v1", "https://h?x=1", "h:99999", "ipmi://h"])
def test_bad_addresses_are_refused_with_the_form_to_use(address: str) -> None:
    with pytest.raises(DriverError, match=r"host:port|1-65535"):
        PowerController.from_address("c1", "redfish", address, "svc", password_env="X")


def test_an_ipmi_address_takes_no_scheme() -> None:
    with pytest.raises(DriverError, match="no scheme"):
        PowerController.from_address("c1", "ipmi", "https://10.0.0.1", "svc", password_env="X")


def test_a_password_reference_is_required() -> None:
    with pytest.raises(DriverError, match="no password reference"):
        ctl(password_env=None)


def test_password_from_the_environment_or_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("C1_PASSWORD", raising=False)
    with pytest.raises(AuthFailedError, match="C1_PASSWORD is not set"):
        ctl().password()
    monkeypatch.setenv("C1_PASSWORD", "s3cret")
    assert ctl().password() == "s3cret"
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert ctl(password_env=None, password_file=str(secret)).password() == "from-file"
    with pytest.raises(AuthFailedError, match="cannot read the password file") as err:
        ctl(password_env=None, password_file=str(tmp_path / "missing")).password()
    assert "from-file" not in str(err.value)


def test_tls_verification_is_on_by_default() -> None:
    assert ctl().verify() is True
    assert ctl(ca_file="/etc/ca.pem").verify() == "/etc/ca.pem"
    assert ctl(verify_tls=False, ca_file="/etc/ca.pem").verify() is False


def test_scrub_removes_the_secret_and_its_url_encoded_form() -> None:
    text = "login pw=Pw 9#é failed; url https://u:Pw%209%23%C3%A9@h; form p=Pw+9%23%C3%A9"
    assert scrub(text, "Pw 9#é") == "login pw=*** failed; url https://u:***@h; form p=***"
    assert scrub("nothing here", "") == "nothing here"


@pytest.mark.parametrize("driver", [VSpherePower, RedfishPower, IpmiLanPower])
def test_each_driver_opens_on_its_own_type_and_refuses_another_type(driver: type) -> None:
    # Their PowerDriver shape (drivers/base.py) is mypy's to check: orchestrator/drivers/__init__.py.
    kinds: dict[type, str] = {VSpherePower: "vsphere", RedfishPower: "redfish", IpmiLanPower: "ipmi"}
    right = driver(ctl(type=kinds[driver]))
    assert callable(right.close) and callable(right.evidence)
    wrong = "ipmi" if kinds[driver] != "ipmi" else "redfish"
    with pytest.raises(DriverError, match="given to the"):
        driver(ctl(type=wrong))


def test_open_driver_picks_the_driver_of_the_controllers_type() -> None:
    assert isinstance(open_driver(ctl(type="vsphere")), VSpherePower)
    assert isinstance(open_driver(ctl(type="redfish")), RedfishPower)
    assert isinstance(open_driver(ctl(type="ipmi")), IpmiLanPower)

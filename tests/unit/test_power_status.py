"""power status's logic (tests/data/estate.yml) with controllers that answer as told; the real drivers
against the real emulators are in tests/power/test_power_status_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.drivers.base import PowerState
from orchestrator.drivers.power_controllers import PowerController
from orchestrator.errors import AuthFailedError, DriverError, UsageError
from orchestrator.inventory import validate_text
from orchestrator.model import Inventory, Scope
from orchestrator.power_status import PowerReader, read_power_status

ESTATE_FILE = Path(__file__).parents[1] / "data" / "estate.yml"


def estate() -> Inventory:
    return validate_text(ESTATE_FILE.read_text(encoding="utf-8"), str(ESTATE_FILE)).inventory


class ToldController:
    """A controller answering from a table: target -> state, or an error to raise."""

    def __init__(self, answers: dict[str, PowerState | DriverError | ValueError], asked: list[tuple[str, str]],
                 name: str) -> None:
        self.answers = answers
        self.asked = asked
        self.name = name
        self.closed = False

    def state(self, target: str) -> PowerState:
        self.asked.append((self.name, target))
        answer = self.answers[target]
        if isinstance(answer, DriverError | ValueError):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


class Controllers:
    def __init__(self, answers: dict[str, dict[str, PowerState | DriverError | ValueError]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []
        self.opened: list[ToldController] = []

    def open(self, controller: PowerController) -> PowerReader:
        driver = ToldController(self.answers[controller.name], self.asked, controller.name)
        self.opened.append(driver)
        return driver


class PortsOpen:
    """An SSH runner whose port_open answers for the given management addresses."""

    def __init__(self, answering: set[str]) -> None:
        self.answering = answering

    def port_open(self, address: str, port: int = 22, timeout_s: float = 1.0) -> bool:
        return address in self.answering


Answers = dict[str, dict[str, PowerState | DriverError | ValueError]]
ALL_ANSWER: Answers = {
    "vc-antwerp": {"EMR-DB1": "running", "EMR APP (1)": "stopped"},
    "bmc-esx1": {"esx1": "running"},
    "bmc-san1": {"1": "running"},
}


def test_every_host_read_once_through_its_controller_and_every_session_closed() -> None:
    controllers = Controllers(ALL_ANSWER)
    report = read_power_status(estate(), Scope(), open_controller=controllers.open)
    assert [(h.name, h.controller, h.target, h.state) for h in report.hosts] == [
        ("emr-app1", "vc-antwerp", "EMR APP (1)", "off"),
        ("emr-db1", "vc-antwerp", "EMR-DB1", "on"),
        ("esx1", "bmc-esx1", "esx1", "on"),
        ("san1", "bmc-san1", "1", "on"),
    ]
    assert sorted(controllers.asked) == [("bmc-esx1", "esx1"), ("bmc-san1", "1"), ("vc-antwerp", "EMR APP (1)"),
                                         ("vc-antwerp", "EMR-DB1")]
    assert len(controllers.opened) == 3 and all(d.closed for d in controllers.opened)
    assert not report.failed_controllers
    assert all(h.probe is None and not h.mismatch for h in report.hosts)
    doc = report.as_dict()
    assert set(doc["hosts"][0]) >= {"name", "controller", "state", "probe", "mismatch", "error"}  # type: ignore[index]


def test_a_refused_login_fails_the_controller_once_and_never_says_off() -> None:
    refused = AuthFailedError("vCenter refused the login for orchestrator", target="vc-antwerp",
                              hint="check the credential")
    answers: Answers = {
        **ALL_ANSWER, "vc-antwerp": {"EMR APP (1)": refused, "EMR-DB1": "running"}}
    controllers = Controllers(answers)
    report = read_power_status(estate(), Scope(), open_controller=controllers.open)
    vms = [h for h in report.hosts if h.controller == "vc-antwerp"]
    assert [h.state for h in vms] == ["unknown", "unknown"]
    assert all("refused the login" in (h.error or "") for h in vms)
    assert [a for a in controllers.asked if a[0] == "vc-antwerp"] == [("vc-antwerp", "EMR APP (1)")]  # once
    failed = report.failed_controllers
    assert [(c.name, c.hint) for c in failed] == [("vc-antwerp", "check the credential")]
    assert all(d.closed for d in controllers.opened)


def test_a_missing_vm_is_that_hosts_error_only() -> None:
    missing = DriverError("no VM named 'EMR-DB1'", target="EMR-DB1", hint="check the VM's name")
    controllers = Controllers({**ALL_ANSWER, "vc-antwerp": {"EMR-DB1": missing, "EMR APP (1)": "stopped"}})
    report = read_power_status(estate(), Scope(), open_controller=controllers.open)
    states = {h.name: (h.state, h.error) for h in report.hosts}
    assert states["emr-db1"] == ("unknown", "no VM named 'EMR-DB1'")
    assert states["emr-app1"] == ("off", None)
    assert not report.failed_controllers


def test_an_answer_not_of_the_protocol_is_that_hosts_error() -> None:
    answers: Answers = {**ALL_ANSWER, "bmc-san1": {"1": ValueError("Expecting value: line 1 column 1")}}
    report = read_power_status(estate(), Scope(), open_controller=Controllers(answers).open)
    san1 = next(h for h in report.hosts if h.name == "san1")
    assert (san1.state, san1.error) == ("unknown", "the controller's answer could not be read (ValueError)")


def test_mismatches_with_the_hosts_own_probe() -> None:
    controllers = Controllers(ALL_ANSWER)
    # emr-app1: controller off, SSH answers; esx1: controller on, SSH silent; emr-db1 and san1 agree
    ssh = PortsOpen({"10.99.2.12", "10.99.2.11", "10.99.2.21"})
    report = read_power_status(estate(), Scope(), ssh=ssh, open_controller=controllers.open)  # type: ignore[arg-type]
    assert {h.name: (h.probe, h.mismatch) for h in report.hosts} == {
        "emr-app1": ("answers", True), "emr-db1": ("answers", False), "esx1": ("silent", True),
        "san1": ("answers", False)}
    assert [h.name for h in report.mismatches] == ["emr-app1", "esx1"]


def test_the_scope_selects_hosts_and_their_controllers_only() -> None:
    controllers = Controllers(ALL_ANSWER)
    report = read_power_status(estate(), Scope(hosts=("esx1",)), open_controller=controllers.open)
    assert [h.name for h in report.hosts] == ["esx1"]
    assert [c.name for c in report.controllers] == ["bmc-esx1"]
    with pytest.raises(UsageError):
        read_power_status(estate(), Scope(hosts=("esx9",)), open_controller=controllers.open)

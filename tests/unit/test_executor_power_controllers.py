"""Runs power hosts through their power controllers (``power: {controller: ...}``), against the
in-memory campus (tests/fakes.py: ``FakePowerController`` behind ``drivers.open_power_controller``):
one session per controller per run, verification by the controller's state (an unreachable or
refusing controller is never "off"), escalation graceful then hard through it, restore's power on and
quarantine through it, and the journal saying what the controller did. Judged from the journal and
from the fake campus's state."""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeCampus

from orchestrator.config import Settings
from orchestrator.drivers.controller_power import ControllerSessions, HostOnController, target_on_controller
from orchestrator.errors import AuthFailedError, DriverError
from orchestrator.executor import ApprovalPolicy, Drivers, Executor, Recorder, RunOptions, RunResult
from orchestrator.integrity import Difference
from orchestrator.inventory import load_inventory
from orchestrator.journal import Journal, read_journal, verify_journal
from orchestrator.model import Inventory, Mode, Plan, StepStatus
from orchestrator.planner import build_plan
from orchestrator.runs import collect_secrets

FAKE_CAMPUS = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"
PASSWORD_ENV = "FAKE_CONTROLLER_PASSWORD"  # the vCenter's
BMC_PASSWORD_ENV = "FAKE_BMC_PASSWORD"
OPTIONS = RunOptions(forks=8, operator="alice@ward", stop_timeout_s=1.0, start_timeout_s=1.0,
                     power_off_timeout_s=1.0)
RESTORE = replace(OPTIONS, approve=ApprovalPolicy.ALL)
CONTROLLERS = """\
power_controllers:
  vc: {type: vsphere, address: vcenter.fake.example, credentials: vcenter}
  bmc-ad1: {type: ipmi, address: "10.99.20.10:623", credentials: bmc}
  bmc-chassis: {type: redfish, address: "https://10.99.20.20", credentials: bmc}
hosts:
"""
# db1 and app1 are VMs on one vCenter (app1 by its moref), ad1 a server behind its IPMI BMC, ws1 a
# Redfish system; triage1 (kept) keeps `power: lab`.
POWER = {"db1": "{controller: vc, vm: DB-01}", "app1": "{controller: vc, vm: vm-42}",
         "ad1": "{controller: bmc-ad1}", "ws1": "{controller: bmc-chassis, system: System.Embedded.1}"}
_run_ids = itertools.count(1)


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    text = FAKE_CAMPUS.read_text(encoding="utf-8")
    text = text.replace("hosts:\n", CONTROLLERS, 1)
    for host, power in POWER.items():
        start = text.index(f"  {host}:")
        end = text.index("power: lab", start)
        text = text[:end] + f"power: {power}" + text[end + len("power: lab"):]
    text += "  vcenter: {username: svc-orchestrator, password_env: " + PASSWORD_ENV + "}\n"
    text += "  bmc: {username: orchestrator, password_env: " + BMC_PASSWORD_ENV + "}\n"
    path = tmp_path / "estate-campus.yml"
    path.write_text(text, encoding="utf-8")
    return load_inventory(path)


@pytest.fixture
def campus(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> FakeCampus:
    campus = FakeCampus(inventory).install(monkeypatch)
    monkeypatch.setenv(PASSWORD_ENV, campus.controller_password)
    monkeypatch.setenv(BMC_PASSWORD_ENV, campus.controller_password)
    return campus


@dataclass
class Ran:
    result: RunResult
    records: list[dict[str, Any]]
    text: str  # the journal as written

    def of(self, type: str, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type and all(r.get(k) == v for k, v in match.items())]

    def finished(self, step_id: str) -> dict[str, Any]:
        (record,) = self.of("step-finished", step_id=step_id)
        return record


def execute(inventory: Inventory, plan: Plan, tmp_path: Path, options: RunOptions = OPTIONS) -> Ran:
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=options.forks)
    run_id = f"20261203T060000Z-ctl{next(_run_ids):02d}"
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True)
    journal = Journal.create(settings.journal_path(run_id), run_id, secrets=collect_secrets(inventory))
    try:
        result = Executor(inventory=inventory, plan=plan, settings=settings, run_id=run_id, run_dir=run_dir,
                          recorder=Recorder(journal), options=options).run()
    finally:
        journal.close()
    path = settings.journal_path(run_id)
    assert verify_journal(path).ok
    return Ran(result, read_journal(path), path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Drivers: one session per controller, a view per host
# --------------------------------------------------------------------------------------------


def test_each_host_on_a_controller_gets_a_view_naming_it_as_the_controller_does(inventory: Inventory) -> None:
    spec = inventory.power_controllers
    assert target_on_controller(inventory.hosts["db1"], spec["vc"]) == "DB-01"
    assert target_on_controller(inventory.hosts["app1"], spec["vc"]) == "vm-42"
    assert target_on_controller(inventory.hosts["ws1"], spec["bmc-chassis"]) == "System.Embedded.1"
    assert target_on_controller(inventory.hosts["ad1"], spec["bmc-ad1"]) == "ad1"  # the BMC is the server's
    drivers = Drivers(inventory, Path("/nonexistent"), 4)
    view = drivers.power_for(inventory.hosts["db1"])
    assert isinstance(view, HostOnController)
    assert (view.host, view.controller, view.target, view.label) == ("db1", "vc", "DB-01", "power.vsphere:vc")
    assert drivers.power_label(inventory.hosts["triage1"]) == "power.lab"


def test_one_driver_per_controller_opened_on_first_use_and_logged_out_when_the_run_ends(
    inventory: Inventory, campus: FakeCampus
) -> None:
    drivers = Drivers(inventory, Path("/nonexistent"), 4)
    db1, app1, ad1 = (drivers.power_for(inventory.hosts[h]) for h in ("db1", "app1", "ad1"))
    assert db1 is not None and app1 is not None and ad1 is not None
    assert not campus.entries("open"), "a view opens nothing until it is used"
    assert db1.evidence("db1") == {"controller": "vc", "type": "vsphere", "target": "DB-01"}
    assert (db1.state("db1"), app1.state("app1")) == ("running", "running")
    db1.power_off("db1", graceful=False)
    assert app1.state("app1") == "running" and db1.state("db1") == "stopped"
    assert campus.entries("open") == [("open", "controller", "vc")] and campus.entries("login") == [("login", "vc")]
    assert db1.evidence("db1")["last_operation"] == {"operation": "hard-off", "task": "task-1", "result": "success"}
    assert "last_operation" not in app1.evidence("app1")
    drivers.close()
    assert campus.entries("logout") == [("logout", "vc")]  # bmc-ad1 was never opened: nothing to close
    assert ad1.evidence("ad1") == {"controller": "bmc-ad1", "type": "ipmi", "target": "ad1"}


def test_a_view_answers_for_its_own_host_only(inventory: Inventory, campus: FakeCampus) -> None:
    view = Drivers(inventory, Path("/nonexistent"), 4).power_for(inventory.hosts["db1"])
    assert view is not None
    with pytest.raises(DriverError, match="power view of db1 was asked about app1"):
        view.power_off("app1", graceful=False)
    assert not campus.entries("power_off") and not campus.entries("login")


def test_an_answer_the_driver_cannot_read_is_a_driver_error_not_a_state(
    inventory: Inventory, campus: FakeCampus
) -> None:
    campus.unreadable_controllers.add("vc")
    view = Drivers(inventory, Path("/nonexistent"), 4).power_for(inventory.hosts["db1"])
    assert view is not None
    with pytest.raises(DriverError, match=r"vc: its answer could not be read \(ValueError\)"):
        view.state("db1")


def test_a_refused_login_is_tried_once_per_run_however_many_hosts_poll(
    inventory: Inventory, campus: FakeCampus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-Password-9")
    sessions = ControllerSessions(inventory, campus.open_power_controller)
    views = [sessions.view_for(inventory.hosts[h]) for h in ("db1", "app1")]
    errors: list[str] = []

    def poll(view: HostOnController) -> None:
        for _ in range(5):
            try:
                view.state(view.host)
            except AuthFailedError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=poll, args=(v,)) for v in views for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 40 and campus.entries("login") == [("login", "vc")]
    assert all("refused the login" in e for e in errors)
    assert sum("not asked again in this run" in e for e in errors) == 39
    sessions.close()
    assert not campus.entries("logout")


# --------------------------------------------------------------------------------------------
# shutdown: verified off by the controller, escalated through it
# --------------------------------------------------------------------------------------------


def test_hosts_on_controllers_are_verified_off_by_their_controller(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    plan = build_plan(inventory, Mode.SHUTDOWN)
    assert plan.step("stop-host:db1").verify.endswith("and its power controller vc says off")
    ran = execute(inventory, plan, tmp_path)
    assert ran.result.exit_code == 0, ran.result.left
    for host, controller, target in (("db1", "vc", "DB-01"), ("app1", "vc", "vm-42"), ("ad1", "bmc-ad1", "ad1"),
                                     ("ws1", "bmc-chassis", "System.Embedded.1")):
        after = ran.finished(f"stop-host:{host}")["evidence"]["after"]
        assert after["power"] == "stopped" and after["ssh_port_22"] == "closed"
        assert after["power_driver"]["controller"] == controller and after["power_driver"]["target"] == target
        assert not ran.finished(f"stop-host:{host}")["escalated"]
    assert not campus.entries("power_off"), "every host stopped from inside: nothing powered off out of band"
    # one session per controller for the whole run, logged out at its end
    assert sorted(campus.entries("login")) == [("login", "bmc-ad1"), ("login", "bmc-chassis"), ("login", "vc")]
    assert sorted(campus.entries("logout")) == [("logout", "bmc-ad1"), ("logout", "bmc-chassis"), ("logout", "vc")]
    last_stop = max(i for i, e in enumerate(campus.log) if e[0] == "stop")
    assert all(i > last_stop for i, e in enumerate(campus.log) if e[0] == "logout")


@pytest.mark.parametrize("graceful_works", [True, False])
def test_a_vm_that_will_not_stop_is_powered_off_through_its_controller(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, graceful_works: bool
) -> None:
    campus.hosts["db1"].ignores_stop = True
    campus.hosts["db1"].ignores_graceful_power_off = not graceful_works
    ran = execute(inventory, build_plan(inventory, Mode.SHUTDOWN), tmp_path)
    assert ran.result.exit_code == 0, ran.result.left
    res = ran.result.results["stop-host:db1"]
    assert res.status is StepStatus.VERIFIED and res.escalated
    expected = ["out-of-band graceful power off"] + ([] if graceful_works else ["out-of-band hard power off"])
    assert [e["to"] for e in ran.of("escalation", host="db1")] == expected
    assert campus.entries("power_off") == [("power_off", "db1", g) for g in [True, False][:len(expected)]]
    after = res.evidence["after"]
    assert after["escalation"] == expected[-1] and after["power"] == "stopped"
    said = after["out_of_band"]
    assert said["out-of-band graceful power off"]["last_operation"] == {"operation": "graceful-off",
                                                                        "result": "requested"}
    assert said["out-of-band graceful power off"]["controller"] == "vc"
    if not graceful_works:
        assert said["out-of-band hard power off"]["last_operation"]["operation"] == "hard-off"
    # the verification that passed is the controller's: it names it and what it last did
    passed = [v for v in ran.of("verification", step_id="stop-host:db1") if v["passed"]]
    assert passed and passed[-1]["evidence"]["power_driver"]["target"] == "DB-01"


def test_a_vm_whose_graceful_off_is_refused_is_hard_powered_off_and_the_refusal_journaled(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.hosts["app1"].ignores_stop = True
    campus.hosts["app1"].graceful_refused = True  # no VMware Tools in the guest
    ran = execute(inventory, build_plan(inventory, Mode.SHUTDOWN), tmp_path)
    assert ran.result.exit_code == 0, ran.result.left
    escalations = ran.of("escalation", host="app1")
    assert [e["to"] for e in escalations] == ["out-of-band graceful power off", "out-of-band graceful power off",
                                              "out-of-band hard power off"]
    assert escalations[1]["reason"].startswith("failed: vm-42: VMware Tools are not running")
    assert escalations[2]["reason"] == "the graceful out-of-band power off failed (graceful-refused)"
    assert campus.entries("power_off") == [("power_off", "app1", False)]
    said = ran.result.results["stop-host:app1"].evidence["after"]["out_of_band"]
    refused = said["out-of-band graceful power off"]
    assert refused["error"].startswith("graceful-refused: VMware Tools are not running")
    assert refused["last_operation"] == {"operation": "graceful-off", "result": "refused",
                                         "tools": "guestToolsNotRunning"}


@pytest.mark.parametrize("failure", ["refuses the login", "cannot be reached"])
def test_a_controller_that_fails_never_counts_as_off(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    wrong = "wrong-Controller-pw-7"
    if failure == "refuses the login":
        monkeypatch.setenv(PASSWORD_ENV, wrong)
    else:
        campus.unreachable_controllers.add("vc")
    ran = execute(inventory, build_plan(inventory, Mode.SHUTDOWN), tmp_path)
    # app1 stopped from inside: its SSH is silent, but its controller cannot say off
    assert not campus.hosts["app1"].powered
    res = ran.result.results["stop-host:app1"]
    assert res.status is StepStatus.FAILED and res.error == "the host is still not off"
    assert res.evidence["after"]["escalation"] == "hard power off did not take effect"
    assert set(res.evidence["after"]["out_of_band"]) == {"out-of-band graceful power off",
                                                         "out-of-band hard power off"}
    checks = ran.of("verification", step_id="stop-host:app1")
    assert checks and not any(v["passed"] for v in checks)
    assert all(v["evidence"]["power"].startswith("unknown (") for v in checks if "power" in v["evidence"])
    assert {v["evidence"]["ssh_port_22"] for v in checks if "power" in v["evidence"]} == {
        "not probed (power not known off)"}
    # what app1 needs running is left running: db1 (on the same vCenter) and ad1
    assert ran.result.results["stop-host:db1"].status is StepStatus.SKIPPED
    assert campus.hosts["db1"].powered and campus.hosts["ad1"].powered
    assert ran.result.results["stop-host:ws1"].status is StepStatus.VERIFIED  # another controller
    if failure == "refuses the login":
        # app1's stop polled it, escalated through it twice, the final check asked it: one login attempt
        assert campus.entries("login").count(("login", "vc")) == 1
        assert "not asked again in this run" in json.dumps(checks)
    assert wrong not in ran.text and campus.controller_password not in ran.text


# --------------------------------------------------------------------------------------------
# restore: power on and quarantine through the controller
# --------------------------------------------------------------------------------------------


def test_restore_powers_hosts_on_through_their_controllers(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.shut_down()
    ran = execute(inventory, build_plan(inventory, Mode.RESTORE), tmp_path, RESTORE)
    assert ran.result.exit_code == 0, ran.result.left
    assert sorted(campus.entries("power_on")) == [("power_on", h) for h in ("ad1", "app1", "db1", "ws1")]
    (sent,) = ran.of("command-sent", step_id="start-host:db1")
    assert (sent["driver"], sent["commands"]) == ("power.vsphere:vc", ["power on"])
    evidence = ran.finished("start-host:db1")["evidence"]
    assert evidence["power_driver"]["controller"] == "vc"
    assert evidence["power_driver"]["last_operation"]["operation"] == "power-on"
    assert ran.of("command-sent", step_id="start-host:ad1")[0]["driver"] == "power.ipmi:bmc-ad1"


def test_a_failed_power_on_fails_the_step_with_what_the_controller_said(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.shut_down()
    campus.hosts["ad1"].power_on_fails = True
    ran = execute(inventory, build_plan(inventory, Mode.RESTORE), tmp_path, RESTORE)
    res = ran.result.results["start-host:ad1"]
    assert res.status is StepStatus.FAILED
    assert (res.error or "").startswith("power on through power.ipmi:bmc-ad1 failed: ad1: power on failed")
    assert res.evidence["power_driver"]["last_operation"]["fault"] == "InvalidPowerState"
    assert not campus.hosts["ad1"].powered


def test_a_quarantined_vm_is_powered_off_through_its_controller_and_cleared_by_it(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.shut_down()
    campus.integrity_findings["db1"] = (Difference("files", "/usr/local/bin/updater", "added"),)
    ran = execute(inventory, build_plan(inventory, Mode.RESTORE), tmp_path, RESTORE)
    (quarantine,) = ran.of("quarantine")
    assert quarantine["host"] == "db1" and quarantine["powered_off"] is True
    assert quarantine["evidence"]["power_driver"]["last_operation"]["operation"] == "hard-off"
    assert ("power_off", "db1", False) in campus.log and not campus.hosts["db1"].powered
    (clearance,) = ran.of("clearance", host="db1")
    assert clearance["how"] == "power-driver" and clearance["evidence"]["power_driver"]["controller"] == "vc"
    assert ran.result.results["reconnect-segment:srv"].status is StepStatus.VERIFIED


def test_a_password_file_is_a_secret_the_journal_masks(inventory: Inventory, tmp_path: Path) -> None:
    secret = tmp_path / "bmc-password"
    secret.write_text("file-Held-pw-3\n", encoding="utf-8")
    text = Path(inventory.path).read_text(encoding="utf-8").replace(
        f"password_env: {PASSWORD_ENV}", f"password_file: {secret}")
    path = tmp_path / "with-file.yml"
    path.write_text(text, encoding="utf-8")
    assert "file-Held-pw-3" in collect_secrets(load_inventory(path))

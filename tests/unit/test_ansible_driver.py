"""orchestrator.drivers.ansible: event mapping, outcomes, runner settings; the playbooks lint clean.

The runner is faked (pure logic); ansible-lint and ansible-playbook --syntax-check run for real.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from orchestrator.drivers import ssh_masters
from orchestrator.drivers.ansible import (
    POWER_OFF_TASK_PREFIX,
    STOP_HOST_PLAYBOOK,
    AnsibleDriver,
    BornLowered,
    Masker,
    default_playbooks_dir,
    host_outcomes,
    sink_event,
)
from orchestrator.drivers.base import PowerOffReport
from orchestrator.errors import DriverError, SafetyInterlock, UsageError
from orchestrator.model import Credential, Host, Inventory, Island, Segment, Site

BIN = Path(sys.executable).parent
PLAYBOOKS = default_playbooks_dir()
PASSWORD = "s3cret-Pa55word!"
POWER_OFF = "Power off after stopping the services (scheduled in systemd, survives the SSH connection dropping)"


def make_inventory(tmp_path: Path) -> Inventory:
    def host(name: str, segment: str, n: int, credentials: str = "lab", **kw: Any) -> Host:
        address = ipaddress.IPv4Address(f"10.10.{n}.10")
        return Host(name, segment, address, address + 1000, credentials, **kw)

    hosts = [
        host("ant-ad1", "servers", 2, tier=0),
        host("ant-emr-db1", "servers", 3, tier=1, depends_on=("ant-ad1",), services=("postgresql",)),
        host("ant-ed-triage1", "ed", 5, tier=2),
        host("deu-files1", "servers", 6, credentials="vault", tier=2),
    ]
    return Inventory(
        path=str(tmp_path / "inventory.yml"),
        sha256="0" * 64,
        site=Site("example-hospital"),
        management_segment="mgmt",
        campuses={},
        segments={
            "mgmt": Segment("mgmt", ipaddress.IPv4Network("10.99.0.0/16"), "management"),
            "servers": Segment("servers", ipaddress.IPv4Network("10.10.0.0/16"), "servers"),
            "ed": Segment("ed", ipaddress.IPv4Network("10.11.0.0/16"), "emergency"),
        },
        devices={},
        links={},
        hosts={h.name: h for h in hosts},
        islands={"emergency-department": Island("emergency-department", "ED keeps operating", segments=("ed",))},
        credentials={
            "lab": Credential("lab", "root", key_file="lab_key", known_hosts="known_hosts"),
            "vault": Credential("vault", "ops", password_env="VAULT_OPS_PASSWORD"),
        },
    )


# --------------------------------------------------------------------------------------------
# Synthetic runner events
# --------------------------------------------------------------------------------------------


def ev(event: str, host: str | None = None, task: str = "t", **data: Any) -> dict[str, Any]:
    event_data: dict[str, Any] = {"task": task, **data}
    if host is not None:
        event_data["host"] = host
    return {"event": event, "event_data": event_data, "uuid": "u", "counter": 1}


def ok(host: str, task: str, changed: bool = False, **res: Any) -> dict[str, Any]:
    return ev("runner_on_ok", host, task, res={"changed": changed, **res})


def stats(**per_key: dict[str, int]) -> dict[str, Any]:
    keys = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored", "processed")
    return {"event": "playbook_on_stats", "event_data": {k: per_key.get(k, {}) for k in keys}}


STOP_STDOUT = "stopped app\r\nfailed emr-db\r\nstopped cron\r\npoweroff scheduled in 1 s\r\n"


def stop_events(host: str) -> list[dict[str, Any]]:
    return [
        ev("runner_on_start", host, POWER_OFF),
        ok(host, POWER_OFF, changed=True, stdout=STOP_STDOUT),
    ]


# --------------------------------------------------------------------------------------------
# sink_event
# --------------------------------------------------------------------------------------------


def test_sink_event_maps_start_ok_changed_failed_unreachable_skipped() -> None:
    mask = Masker(())
    assert sink_event(ev("runner_on_start", "h1", "Stop service"), "stop-host.yml", "r1", mask) == {
        "type": "ansible.task",
        "playbook": "stop-host.yml",
        "run": "r1",
        "host": "h1",
        "task": "Stop service",
        "status": "started",
        "message": "",
    }
    assert sink_event(ok("h1", "x"), "p", "r", mask)["status"] == "ok"  # type: ignore[index]
    assert sink_event(ok("h1", "x", changed=True), "p", "r", mask)["status"] == "changed"  # type: ignore[index]
    failed = sink_event(ev("runner_on_failed", "h1", "x", res={"msg": "boom"}), "p", "r", mask)
    assert failed is not None and failed["status"] == "failed" and failed["message"] == "boom"
    dark = sink_event(ev("runner_on_unreachable", "h1", "x", res={"msg": "no route"}), "p", "r", mask)
    assert dark is not None and dark["status"] == "unreachable" and dark["message"] == "no route"
    skipped = sink_event(ev("runner_on_skipped", "h1", "x", res={}), "p", "r", mask)
    assert skipped is not None and skipped["status"] == "skipped"
    assert sink_event(ev("playbook_on_play_start"), "p", "r", mask) is None
    assert sink_event(stats(), "p", "r", mask) is None


def test_sink_event_never_carries_results_or_secrets() -> None:
    mask = Masker([PASSWORD])
    res = {"msg": f"login failed for ops:{PASSWORD}", "stdout": "x" * 5000, "ansible_facts": {"k": PASSWORD}}
    out = sink_event(ev("runner_on_failed", "h1", "x", res=res), "p", "r", mask)
    text = json.dumps(out)
    assert PASSWORD not in text and "***" in text
    assert "ansible_facts" not in text and len(text) < 1000


# --------------------------------------------------------------------------------------------
# host_outcomes
# --------------------------------------------------------------------------------------------


def test_outcome_changed_with_results_from_facts() -> None:
    events = [*stop_events("h1"), stats(ok={"h1": 3}, changed={"h1": 2}, processed={"h1": 1})]
    out = host_outcomes(["h1"], events, runner_status="successful", rc=0, timeout_s=60)
    assert out["h1"].status == "changed" and out["h1"].succeeded
    assert out["h1"].results["stop_host_report"] == {
        "services_stopped": ["app", "cron"], "services_failed": ["emr-db"], "poweroff_in_s": 1}
    assert [t["task"] for t in out["h1"].results["tasks"]] == [POWER_OFF]


def test_outcome_unreachable_during_power_off_is_left_to_verification() -> None:
    events = [
        ev("runner_on_start", "h1", POWER_OFF),
        ev("runner_on_unreachable", "h1", POWER_OFF, res={"msg": "Connection closed by remote host"}),
        stats(ok={"h1": 2}, changed={"h1": 1}, dark={"h1": 1}, processed={"h1": 1}),
    ]
    out = host_outcomes(["h1"], events, runner_status="failed", rc=4, timeout_s=60)
    assert out["h1"].status == "unreachable"
    assert "during power-off" in out["h1"].message and "verification decides" in out["h1"].message
    assert "Connection closed" in out["h1"].message


def test_outcome_unreachable_before_anything() -> None:
    events = [
        ev("runner_on_start", "h2", "Refuse to power off a host that must keep running"),
        ev(
            "runner_on_unreachable",
            "h2",
            "Refuse to power off a host that must keep running",
            res={"msg": "ssh: connect to host 10.99.2.10 port 22: No route to host"},
        ),
        stats(dark={"h2": 1}, processed={"h2": 1}),
    ]
    out = host_outcomes(["h2"], events, runner_status="failed", rc=4, timeout_s=60)
    assert out["h2"].status == "unreachable"
    assert out["h2"].message.startswith("unreachable at task 'Refuse") and "No route" in out["h2"].message


def test_outcome_message_from_failed_loop_items() -> None:
    res = {
        "msg": "All items completed",
        "results": [
            {"item": "emr-app", "changed": True},
            {"item": "emr-db", "unreachable": True, "msg": "Connection timed out during banner exchange"},
        ],
    }
    events = [ev("runner_on_unreachable", "h1", "Stop service", res=res), stats(dark={"h1": 1})]
    out = host_outcomes(["h1"], events, runner_status="failed", rc=4, timeout_s=60)
    assert out["h1"].message == (
        "unreachable at task 'Stop service': emr-db: Connection timed out during banner exchange"
    )


def test_outcome_failed_names_task_and_message() -> None:
    events = [
        ev("runner_on_failed", "h1", "Fail when unhealthy", res={"msg": "unhealthy: inactive services ['x']"}),
        stats(failures={"h1": 1}, processed={"h1": 1}),
    ]
    out = host_outcomes(["h1"], events, runner_status="failed", rc=2, timeout_s=60)
    assert out["h1"].status == "failed"
    assert out["h1"].message == "Fail when unhealthy: unhealthy: inactive services ['x']"


def test_outcome_rescued_failure_is_not_failed() -> None:
    events = [
        ev("runner_on_failed", "h1", "Stop service", res={"msg": "Could not find the requested service x"}),
        ok("h1", "Record the services that did not stop", ansible_facts={"stop_host_service_failures": ["x"]}),
        ok("h1", POWER_OFF, changed=True),
        stats(ok={"h1": 2}, changed={"h1": 1}, rescued={"h1": 1}, processed={"h1": 1}),
    ]
    out = host_outcomes(["h1"], events, runner_status="successful", rc=0, timeout_s=60)
    assert out["h1"].status == "changed"
    assert "rescued" in out["h1"].message
    assert out["h1"].results["stop_host_service_failures"] == ["x"]


def test_outcome_ignored_failure_is_not_failed() -> None:
    events = [
        ev("runner_on_failed", "h1", "probe", res={"msg": "nope"}, ignore_errors=True),
        ok("h1", "next"),
        stats(ok={"h1": 1}, ignored={"h1": 1}, processed={"h1": 1}),
    ]
    assert host_outcomes(["h1"], events, runner_status="successful", rc=0, timeout_s=9)["h1"].status == "ok"


def test_outcome_timeout_is_failed_and_says_where() -> None:
    events = [
        *stop_events("h1"),
        ev("runner_on_start", "h2", "Stop service"),
    ]
    out = host_outcomes(["h1", "h2", "h3"], events, runner_status="timeout", rc=254, timeout_s=30)
    assert out["h2"].status == "failed" and out["h2"].message == "timed out after 30s (last task: Stop service)"
    assert out["h3"].status == "failed" and "no task started" in out["h3"].message
    assert out["h1"].status == "failed" and POWER_OFF in out["h1"].message  # finished? verification judges


def test_outcome_never_ran() -> None:
    out = host_outcomes(["h1"], [], runner_status="failed", rc=4, timeout_s=30)
    assert out["h1"].status == "failed" and "exited 4" in out["h1"].message


def test_outcome_all_skipped() -> None:
    events = [ev("runner_on_skipped", "h1", "x", res={}), stats(skipped={"h1": 1}, processed={"h1": 1})]
    assert host_outcomes(["h1"], events, runner_status="successful", rc=0, timeout_s=9)["h1"].status == "skipped"


def test_stop_playbook_has_the_power_off_task_the_driver_recognises() -> None:
    plays = yaml.safe_load((PLAYBOOKS / "stop-host.yml").read_text())
    refuse, stop = plays
    assert refuse["hosts"] == "kept" and refuse["any_errors_fatal"] is True
    assert stop["hosts"] == "all:!kept"  # a kept host is never even connected to
    names = [t["name"] for t in stop["tasks"]]
    assert names == [POWER_OFF] and names[-1].startswith(POWER_OFF_TASK_PREFIX)
    assert all(play["gather_facts"] is False for play in plays)


# --------------------------------------------------------------------------------------------
# The driver with a fake ansible_runner.run
# --------------------------------------------------------------------------------------------


@dataclass
class FakeResult:
    rc: int
    status: str


class FakeRunner:
    """Records the call, writes a 'command' artifact like ansible-runner does, replays events."""

    def __init__(
        self,
        events: Callable[[list[str]], list[dict[str, Any]]] | None,
        rc: int = 0,
        status: str = "successful",
    ):
        self.events = events
        self.rc = rc
        self.status = status
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> FakeResult:
        self.calls.append(kwargs)
        artifact = Path(kwargs["artifact_dir"]) / kwargs["ident"]
        artifact.mkdir(parents=True)
        env = {**os.environ, **kwargs["envvars"]}
        (artifact / "command").write_text(json.dumps({"command": ["ansible-playbook"], "env": env}))
        hosts = kwargs["limit"].split(",")
        if self.events is not None:
            kwargs["event_handler"](ev("playbook_on_start"))
        for event in self.events(hosts) if self.events is not None else []:
            kwargs["event_handler"](event)
        return FakeResult(self.rc, self.status)


def stop_ok(hosts: list[str]) -> list[dict[str, Any]]:
    events = [e for h in hosts for e in stop_events(h)]
    return [
        *events,
        stats(changed={h: 2 for h in hosts}, ok={h: 3 for h in hosts}, processed={h: 1 for h in hosts}),
    ]


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


def test_stop_hosts_one_run_for_the_wave_with_secure_settings(inventory: Inventory, tmp_path: Path) -> None:
    fake = FakeRunner(stop_ok)
    sunk: list[dict[str, Any]] = []
    driver = AnsibleDriver(inventory, tmp_path / "work", forks=8, event_sink=sunk.append, run_function=fake)
    run = driver.stop_hosts(["ant-ad1", "ant-emr-db1", "deu-files1"], timeout_s=90)

    assert len(fake.calls) == 1
    call = fake.calls[0]
    assert call["playbook"] == "stop-host.yml" and Path(call["project_dir"]) == PLAYBOOKS
    assert call["quiet"] is True and call["suppress_env_files"] is True
    assert call["timeout"] == 90 and call["forks"] == 3
    assert call["limit"] == "ant-ad1,ant-emr-db1,deu-files1"
    env = call["envvars"]
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert env["ANSIBLE_PIPELINING"] == "True"
    assert env["ANSIBLE_GATHERING"] == "explicit"
    assert env["ANSIBLE_RETRY_FILES_ENABLED"] == "False"
    assert "ControlMaster=auto" in env["ANSIBLE_SSH_ARGS"] and "ControlPersist" in env["ANSIBLE_SSH_ARGS"]
    assert len(env["ANSIBLE_SSH_CONTROL_PATH_DIR"]) + 41 < 107
    assert not Path(env["ANSIBLE_SSH_CONTROL_PATH_DIR"]).exists()  # per run, removed after it
    assert env["ANSIBLE_TASK_TIMEOUT"] == "72"
    inv = json.loads(Path(call["inventory"]).read_text())
    assert sorted(inv["all"]["hosts"]) == ["ant-ad1", "ant-emr-db1", "deu-files1"]

    assert run.status == "successful" and run.rc == 0 and run.ok
    assert {h: o.status for h, o in run.hosts.items()} == dict.fromkeys(
        ["ant-ad1", "ant-emr-db1", "deu-files1"], "changed"
    )
    assert run.artifact_dir.endswith(call["ident"])
    types = [(e["type"], e.get("phase") or e.get("status")) for e in sunk]
    assert types[0] == ("ansible.playbook", "start") and types[-1] == ("ansible.playbook", "end")
    assert ("ansible.task", "started") in types and ("ansible.task", "changed") in types
    assert sunk[-1]["hosts"] == {"ant-ad1": "changed", "ant-emr-db1": "changed", "deu-files1": "changed"}


def test_an_armed_run_starts_in_plan_order_lower_and_journals_no_task_starts(inventory: Inventory,
                                                                            tmp_path: Path) -> None:
    """Its workers are forked in the order given (the plan's: the first level first), its tasks start
    by waiting (nothing sent: no journal record each), and it is asked to run at a lower priority."""
    fake = FakeRunner(stop_ok)
    sunk: list[dict[str, Any]] = []
    driver = AnsibleDriver(inventory, tmp_path / "work", forks=8, event_sink=sunk.append, run_function=fake)
    ended: list[Any] = []
    armed = driver.arm_stops(["deu-files1", "ant-ad1", "ant-emr-db1"], wait_s=60)
    armed.add_done_callback(ended.append)
    armed.close()
    run = ended[0].result()
    call = fake.calls[0]
    assert call["limit"] == "deu-files1,ant-ad1,ant-emr-db1"
    assert list(json.loads(Path(call["inventory"]).read_text())["all"]["hosts"]) == [
        "deu-files1", "ant-ad1", "ant-emr-db1"]
    assert ("stop_host_release_nice" in call["extravars"]) == (os.geteuid() == 0)
    assert not [e for e in sunk if e.get("status") == "started"]
    assert {e["host"] for e in sunk if e.get("status") == "changed"} == {"deu-files1", "ant-ad1", "ant-emr-db1"}
    assert {h: o.status for h, o in run.hosts.items()} == dict.fromkeys(["deu-files1", "ant-ad1", "ant-emr-db1"],
                                                                         "changed")


def test_an_armed_hosts_release_is_the_file_its_play_waits_for_in_its_own_directory(inventory: Inventory,
                                                                                     tmp_path: Path) -> None:
    """stop-host.yml builds each host's release path from the run's extra var; the driver writes the
    release there, in a directory of the host's own (made before the run: a release wakes one worker)."""
    fake = FakeRunner(stop_ok)
    driver = AnsibleDriver(inventory, tmp_path / "work", forks=8, run_function=fake)
    hosts = ["deu-files1", "ant-ad1"]
    armed = driver.arm_stops(hosts, wait_s=60)
    try:
        for host in hosts:
            directory = armed.release_file(host).parent
            assert directory.is_dir() and stat.S_IMODE(directory.stat().st_mode) == 0o700
            assert directory.parent == armed.release_dir and not any(directory.iterdir())
        armed.release(["ant-ad1"])
        assert armed.release_file("ant-ad1").read_text() == "stop\n"
        assert not armed.release_file("deu-files1").exists()
    finally:
        armed.close()
    assert armed.release_file("deu-files1").read_text() == "skip\n"

    plays = yaml.safe_load((PLAYBOOKS / STOP_HOST_PLAYBOOK).read_text())
    [task] = [t for play in plays for t in play.get("tasks", []) if "raw_when_released" in t]
    template = jinja2.Environment().from_string(task["raw_when_released"]["release_file"])
    extravars = {k: v.get("__ansible_unsafe", v) if isinstance(v, dict) else v  # as Ansible reads them
                 for k, v in fake.calls[0]["extravars"].items()}
    for host in hosts:
        assert template.render(inventory_hostname=host, **extravars) == str(armed.release_file(host))
    assert template.render(inventory_hostname="deu-files1") == ""  # by hand: no release, sent at once


def test_stop_hosts_reports_each_hosts_power_off_through_the_callback(inventory: Inventory, tmp_path: Path) -> None:
    def events(hosts: list[str]) -> list[dict[str, Any]]:
        return [
            ev("runner_on_start", "ant-ad1", "Stop service"),
            ok("ant-ad1", "Stop service", changed=True),  # not the power-off: not reported
            *stop_events("ant-ad1"),
            ev("runner_on_start", "deu-files1", POWER_OFF),  # started: no result yet, not reported
            ev("runner_on_unreachable", "deu-files1", POWER_OFF, res={"msg": "Connection closed by remote host"}),
            stats(changed={"ant-ad1": 2}, dark={"deu-files1": 1}, processed={"ant-ad1": 1, "deu-files1": 1}),
        ]

    reports: list[PowerOffReport] = []
    driver = AnsibleDriver(inventory, tmp_path / "w", run_function=FakeRunner(events, rc=4, status="failed"))
    driver.stop_hosts(["ant-ad1", "deu-files1"], on_power_off=reports.append)
    assert reports == [
        PowerOffReport("ant-ad1", "changed", ""),
        PowerOffReport("deu-files1", "unreachable", "Connection closed by remote host"),
    ]


def test_stop_hosts_refuses_kept_hosts(inventory: Inventory, tmp_path: Path) -> None:
    fake = FakeRunner(stop_ok)
    driver = AnsibleDriver(inventory, tmp_path / "w", run_function=fake)
    with pytest.raises(SafetyInterlock) as err:
        driver.stop_hosts(["ant-ad1", "ant-ed-triage1"])
    assert "ant-ed-triage1" in str(err.value) and "emergency-department" in str(err.value)
    assert fake.calls == []


def test_check_health_passes_expected_ports_per_host(inventory: Inventory, tmp_path: Path) -> None:
    def events(hosts: list[str]) -> list[dict[str, Any]]:
        health = {"healthy": True, "services": {"postgresql": "active"}, "listening": [22, 5432]}
        return [
            ok("ant-emr-db1", "Summarise health", ansible_facts={"health": health}),
            stats(ok={"ant-emr-db1": 3}, processed={"ant-emr-db1": 1}),
        ]

    fake = FakeRunner(events)
    driver = AnsibleDriver(inventory, tmp_path / "w", run_function=fake)
    run = driver.check_health(["ant-emr-db1"], {"ant-emr-db1": [22, 5432]}, timeout_s=10)
    inv = json.loads(Path(fake.calls[0]["inventory"]).read_text())
    assert inv["all"]["hosts"]["ant-emr-db1"]["expected_ports"] == [22, 5432]
    assert fake.calls[0]["playbook"] == "check-health.yml"
    assert "ANSIBLE_TASK_TIMEOUT" not in fake.calls[0]["envvars"]
    assert run.hosts["ant-emr-db1"].status == "ok"
    assert run.hosts["ant-emr-db1"].results["health"]["listening"] == [22, 5432]


def test_timeout_reported_as_failed_not_raised(inventory: Inventory, tmp_path: Path) -> None:
    fake = FakeRunner(lambda hosts: [ev("runner_on_start", hosts[0], "Stop service")], rc=254, status="timeout")
    run = AnsibleDriver(inventory, tmp_path / "w", run_function=fake).stop_hosts(["ant-ad1"], timeout_s=5)
    assert run.status == "timeout" and run.rc == 254 and not run.ok
    assert run.hosts["ant-ad1"].status == "failed"
    assert run.hosts["ant-ad1"].message == "timed out after 5s (last task: Stop service)"
    assert run.failed_hosts == ("ant-ad1",)


def test_no_secret_in_events_outcomes_or_artifacts(
    inventory: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_OPS_PASSWORD", PASSWORD)

    def events(hosts: list[str]) -> list[dict[str, Any]]:
        return [
            ev("runner_on_failed", "deu-files1", "Stop service", res={"msg": f"bad password {PASSWORD}"}),
            stats(failures={"deu-files1": 1}, processed={"deu-files1": 1}),
        ]

    sunk: list[dict[str, Any]] = []
    fake = FakeRunner(events, rc=2, status="failed")
    driver = AnsibleDriver(inventory, tmp_path / "w", event_sink=sunk.append, run_function=fake)
    run = driver.stop_hosts(["deu-files1"])
    assert run.hosts["deu-files1"].status == "failed"
    assert PASSWORD not in repr(run) and PASSWORD not in json.dumps(sunk)
    for path in (tmp_path / "w").rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(), path
    command = json.loads((Path(run.artifact_dir) / "command").read_text())
    assert command["env"]["VAULT_OPS_PASSWORD"] == "***"
    assert command["env"]["ANSIBLE_HOST_KEY_CHECKING"] == "True"


def test_failing_event_sink_cancels_and_raises(inventory: Inventory, tmp_path: Path) -> None:
    cancelled: list[bool] = []

    def boom(event: dict[str, Any]) -> None:
        if event["type"] == "ansible.task":
            raise OSError("journal disk full")

    def run_function(**kwargs: Any) -> FakeResult:
        for event in stop_events("ant-ad1"):
            kwargs["event_handler"](event)
        cancelled.append(kwargs["cancel_callback"]())
        return FakeResult(254, "canceled")

    driver = AnsibleDriver(inventory, tmp_path / "w", event_sink=boom, run_function=run_function)
    with pytest.raises(OSError, match="journal disk full"):
        driver.stop_hosts(["ant-ad1"])
    assert cancelled == [True]


def test_bad_input_is_loud(inventory: Inventory, tmp_path: Path) -> None:
    fake = FakeRunner(stop_ok)
    driver = AnsibleDriver(inventory, tmp_path / "w", run_function=fake)
    with pytest.raises(DriverError) as err:
        driver.run_playbook("no-such.yml", ["ant-ad1"])
    assert "stop-host.yml" in str(err.value)  # the hint lists the playbooks there are
    with pytest.raises(UsageError):
        driver.run_playbook("stop-host.yml", ["ghost"])
    with pytest.raises(UsageError):
        driver.run_playbook("stop-host.yml", ["ant-ad1"], timeout_s=0)
    with pytest.raises(UsageError):
        AnsibleDriver(inventory, tmp_path / "w", forks=0)
    assert fake.calls == []
    empty = driver.stop_hosts([])
    assert empty.hosts == {} and empty.rc == 0 and fake.calls == []


def test_ansible_playbook_that_cannot_start_is_an_error(inventory: Inventory, tmp_path: Path) -> None:
    fake = FakeRunner(None, rc=127, status="failed")
    driver = AnsibleDriver(inventory, tmp_path / "w", run_function=fake)
    with pytest.raises(DriverError, match="did not start"):
        driver.check_health(["ant-ad1"], {})


def test_long_work_dir_gets_a_short_control_path(inventory: Inventory, tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 80)
    driver = AnsibleDriver(inventory, deep, run_function=FakeRunner(stop_ok))
    assert len(str(driver.control_path_dir())) + 9 + 41 < 107


# --------------------------------------------------------------------------------------------
# The playbooks themselves (real tools, no network)
# --------------------------------------------------------------------------------------------


def _tool_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "NO_COLOR": "1",
    }


def test_playbooks_pass_ansible_lint_production_profile(tmp_path: Path) -> None:
    root = PLAYBOOKS.parent
    proc = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--profile", "production", "--nocolor", "playbooks/"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        env=_tool_env(tmp_path),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("playbook", ["stop-host.yml", "check-health.yml"])
def test_playbooks_syntax_check(playbook: str, tmp_path: Path, inventory: Inventory) -> None:
    from orchestrator.drivers.ansible_inventory import to_ansible_inventory

    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump(to_ansible_inventory(inventory)))
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(hosts), playbook],
        cwd=PLAYBOOKS,
        capture_output=True,
        text=True,
        check=False,
        env=_tool_env(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mapping_types_are_read_only_views() -> None:
    out = host_outcomes(["h"], [], runner_status="failed", rc=4, timeout_s=1)
    assert isinstance(out["h"].results, Mapping)


# --------------------------------------------------------------------------------------------
# Connections opened ahead of a stop (no network: ssh is replaced by a recorder)
# --------------------------------------------------------------------------------------------


class SshRecorder:
    """Stands in for subprocess.run in ssh_masters: records each ssh argv, answers success."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        with self.lock:
            self.calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, b"", b"")

    def masters(self) -> list[list[str]]:
        return [c for c in self.calls if "-N" in c]

    def exits(self) -> list[list[str]]:
        return [c for c in self.calls if "-O" in c]


@pytest.fixture
def ssh_recorder(monkeypatch: pytest.MonkeyPatch) -> SshRecorder:
    recorder = SshRecorder()
    monkeypatch.setattr("orchestrator.drivers.ssh_masters.subprocess.run", recorder)
    return recorder


def wait_for_event(events: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [e for e in events if e.get("phase") == phase]
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"no {phase} event")


def test_masters_use_the_exported_ssh_options_and_skip_password_credentials(
    inventory: Inventory, tmp_path: Path, ssh_recorder: SshRecorder
) -> None:
    events: list[dict[str, Any]] = []
    masters = ssh_masters.SshMasters(inventory, tmp_path / "cp", on_opened=events.append)
    masters.open(["ant-ad1", "deu-files1"])  # deu-files1 logs in with a password: never opened here
    opened = wait_for_event(events, "opened")
    assert opened["hosts"] == ["ant-ad1"] and opened["failed"] == {}
    [argv] = ssh_recorder.masters()
    joined = " ".join(argv)
    assert argv[0] == "ssh" and argv[-1] == str(inventory.hosts["ant-ad1"].management_address)
    for option in ("ControlMaster=yes", f'ControlPath="{tmp_path / "cp"}"/%C', "BatchMode=yes",
                   "StrictHostKeyChecking=yes", "IdentitiesOnly=yes", "ServerAliveInterval=5",
                   f'UserKnownHostsFile="{tmp_path / "known_hosts"}"', f'IdentityFile="{tmp_path / "lab_key"}"'):
        assert option in argv, option
    assert "-l root" in joined
    masters.close()
    assert [c[-1] for c in ssh_recorder.exits()] == [argv[-1]] and not (tmp_path / "cp").exists()


def test_a_host_whose_stop_has_begun_is_not_opened_any_more(
    inventory: Inventory, tmp_path: Path, ssh_recorder: SshRecorder
) -> None:
    events: list[dict[str, Any]] = []
    masters = ssh_masters.SshMasters(inventory, tmp_path / "cp", on_opened=events.append)
    masters.give_up_on(["ant-ad1"])
    masters.open(["ant-ad1", "ant-emr-db1"])
    opened = wait_for_event(events, "opened")
    assert opened["hosts"] == ["ant-emr-db1"] and "ant-ad1" in opened["failed"]
    assert [c[-1] for c in ssh_recorder.masters()] == [str(inventory.hosts["ant-emr-db1"].management_address)]
    masters.close()


def test_stop_hosts_runs_over_the_opened_connections_and_close_ends_them(
    inventory: Inventory, tmp_path: Path, ssh_recorder: SshRecorder
) -> None:
    fake = FakeRunner(stop_ok)
    events: list[dict[str, Any]] = []
    driver = AnsibleDriver(inventory, tmp_path / "w", event_sink=events.append, run_function=fake)
    driver.open_connections(["ant-ad1", "ant-ed-triage1"])  # the kept ED host is never opened for a stop
    assert wait_for_event(events, "opened")["hosts"] == ["ant-ad1"]
    driver.stop_hosts(["ant-ad1"])
    control_dir = Path(fake.calls[0]["envvars"]["ANSIBLE_SSH_CONTROL_PATH_DIR"])
    assert control_dir.name.startswith("open-") and control_dir.is_dir(), "the stop used the opened connections"
    assert f'ControlPath="{control_dir}"/%C' in ssh_recorder.masters()[0]
    driver.check_health(["ant-ad1"], {"ant-ad1": [22]})  # any other playbook gets a directory of its own
    assert Path(fake.calls[1]["envvars"]["ANSIBLE_SSH_CONTROL_PATH_DIR"]) != control_dir
    driver.close()
    assert not control_dir.exists() and len(ssh_recorder.exits()) == 1


def test_ansible_runs_without_paramiko_so_its_workers_do_not_import_it(inventory: Inventory, tmp_path: Path) -> None:
    """ansible-core imports paramiko in each forked worker when it can (~0.1 s of CPU per host); the
    orchestrator's venv has it for its own SSH driver, so Ansible's processes get a path hiding it."""
    env = AnsibleDriver(inventory, tmp_path / "w").envvars(60)
    first = env["PYTHONPATH"].split(os.pathsep)[0]
    assert (Path(first) / "paramiko" / "__init__.py").is_file()
    probe = "from ansible.module_utils.compat import paramiko as p; print(p._paramiko is None)"
    seen = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60)
    assert seen.stdout.strip() == "True", seen.stderr
    own = subprocess.run([sys.executable, "-c", "import paramiko"], capture_output=True, timeout=60)
    assert own.returncode == 0, "the orchestrator itself still has paramiko"


def test_ansible_reads_the_products_own_config_whatever_its_directory(inventory: Inventory, tmp_path: Path) -> None:
    """internal_poll_interval has no environment variable: the driver points ANSIBLE_CONFIG at the
    product's ansible.cfg, so ansible-playbook's own loop wakes every 50 ms, not every 1 ms (a
    shutdown's armed stop run spent 30 % of a 2-core controller walking its waiting hosts)."""
    env = AnsibleDriver(inventory, tmp_path / "w").envvars(60)
    ansible_config = Path(sys.executable).parent / "ansible-config"
    seen = subprocess.run([str(ansible_config), "dump", "--only-changed", "--format", "json"],
                          env={**os.environ, **env}, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert seen.returncode == 0, seen.stderr
    changed = {entry["name"]: entry for entry in json.loads(seen.stdout) if isinstance(entry, dict) and "name" in entry}
    assert changed["DEFAULT_INTERNAL_POLL_INTERVAL"]["value"] == 0.05
    assert changed["DEFAULT_FORKS"]["origin"] == "env: ANSIBLE_FORKS"  # the environment's values still win


def test_inventory_file_and_extravars_reach_ansible_marked_unsafe(inventory: Inventory, tmp_path: Path) -> None:
    fake = FakeRunner(stop_ok)
    driver = AnsibleDriver(inventory, tmp_path / "work", run_function=fake)
    driver.run_playbook("check-health.yml", ["ant-emr-db1"], extravars={"note": "{{ x }}", "n": 3})
    call = fake.calls[0]
    assert call["extravars"] == {"note": {"__ansible_unsafe": "{{ x }}"}, "n": 3}
    path = Path(call["inventory"])
    assert path.stat().st_mode & 0o777 == 0o600
    hv = json.loads(path.read_text())["all"]["hosts"]["ant-emr-db1"]
    services = inventory.hosts["ant-emr-db1"].services
    assert services and hv["services"] == [{"__ansible_unsafe": s} for s in services]
    with pytest.raises(UsageError):
        driver.run_playbook("check-health.yml", ["ant-emr-db1"], host_vars={"ant-emr-db1": {"ansible_port": 2}})


@pytest.mark.skipif(os.geteuid() != 0, reason="taking a priority back needs root")
def test_a_process_started_after_the_running_status_is_born_lower_and_the_thread_takes_its_own_back() -> None:
    """ansible-runner says "running" just before it forks ansible-playbook: what the thread forks
    then runs at nice +10 from its first instruction; the thread itself is back at its own priority
    once restored (it writes the journal), and other threads are never touched."""
    seen: dict[str, int] = {}

    def starter() -> None:
        own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        lowered = BornLowered()
        lowered.on_status({"status": "starting"})
        seen["before"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - own
        lowered.on_status({"status": "running"}, runner_config=None)
        child = subprocess.run(["sh", "-c", "cut -d' ' -f19 /proc/self/stat"], capture_output=True, text=True,
                               check=True)
        seen["child"] = int(child.stdout) - own
        lowered.restore()
        lowered.restore()  # idempotent
        seen["after"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - own

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=starter)
    thread.start()
    thread.join()
    assert seen == {"before": 0, "child": min(19, main_before + 10) - main_before, "after": 0}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before

"""Runs power VMs through vSphere, end to end against vcsim (over TLS verified against the test CA),
judged by the test's own pyvmomi session.

- shutdown: the real console script (`orchestrator shutdown --yes`). The VMs of vcsim have no guest
  OS, so nothing answers SSH on their management addresses: the product cannot stop them from inside
  and escalates each one to its power controller (graceful through VMware Tools, refused without Tools
  and then hard), and verifies each off by the controller's state (SSH silence alone never counts).
  The inventory's one network device cannot be logged into (its key file does not exist), so
  containment fails at once and the run exits 1: that part is the lab tiers' to prove, not this one's.
- restore: `runs.start_run` (what `orchestrator restore` runs) with a restore plan and a short start
  timeout: each VM is powered on through vSphere; its start step then fails, truthfully, because no
  guest OS answers SSH (the CLI's 90 s start timeout would only make the test wait).
- a controller that refuses the login: every stop fails, nothing is called off, no password anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cli_helpers import finished, last_run_id, orch, records
from power_emulators import PASSWORD, USER, Endpoint, Tls, power_of

from orchestrator.config import Settings
from orchestrator.executor import ApprovalPolicy, RunOptions
from orchestrator.inventory import load_inventory
from orchestrator.model import Mode, StepStatus
from orchestrator.planner import build_plan
from orchestrator.runs import start_run

ESTATE: dict[str, Any] = {
    "hosts": ["esx1"],
    "datastores": ["san1-ds"],
    "vms": [
        {"name": "EMR-DB1", "host": "esx1", "tools": True},
        {"name": "win app1", "host": "esx1", "tools": False},
        {"name": "spare1", "host": "esx1", "tools": True, "powered_on": False},
    ],
}
VMS = {"emr-db1": "EMR-DB1", "win-app1": "win app1", "spare1": "spare1"}
WRONG = "wrong-Pw-5q"

INVENTORY = """\
version: 1
site:
  name: power-run-test
management:
  segment: mgmt
campuses:
  antwerp: {{}}
segments:
  mgmt:
    subnet: 127.99.0.0/16
    zone: management
  servers:
    campus: antwerp
    subnet: 127.10.2.0/24
    zone: servers
    gateway: core
devices:
  core:
    campus: antwerp
    platform: linux
    address: 127.99.0.2
    role: core
    credentials: ssh
power_controllers:
  vc-test:
    type: vsphere
    address: https://{vc_host}:{vc_port}
    credentials: {vc_credential}
    ca_file: {ca_file}
hosts:
  emr-db1:
    segment: servers
    address: 127.10.2.11
    management_address: 127.99.3.11
    power: {{controller: vc-test, vm: EMR-DB1}}
    credentials: ssh
  win-app1:
    segment: servers
    address: 127.10.2.12
    management_address: 127.99.3.12
    power: {{controller: vc-test, vm: win app1}}
    depends_on: [emr-db1]
    credentials: ssh
  spare1:
    segment: servers
    address: 127.10.2.14
    management_address: 127.99.3.14
    power: {{controller: vc-test, vm: spare1}}
    credentials: ssh
credentials:
  ssh:
    username: root
    key_file: keys/none
  power:
    username: {user}
    password_env: POWER_TEST_PASSWORD
  wrong:
    username: {user}
    password_env: POWER_TEST_WRONG_PASSWORD
"""


def write_inventory(tmp_path: Path, vc: Endpoint, tls: Tls, vc_credential: str = "power") -> Path:
    path = tmp_path / f"site-{vc_credential}.yml"
    path.write_text(INVENTORY.format(vc_host=vc.host, vc_port=vc.port, vc_credential=vc_credential,
                                     ca_file=tls.ca_file, user=USER), encoding="utf-8")
    path.chmod(0o600)
    return path


def sessions(si: Any) -> int:
    return len(si.RetrieveContent().sessionManager.sessionList)


def test_a_shutdown_powers_vms_off_through_vsphere_and_verifies_them_by_its_state(
    vcsim: Callable[..., Endpoint], vsphere_judge: Callable[[Endpoint], Any], tls: Tls, tmp_path: Path
) -> None:
    vc = vcsim(ESTATE, use_tls=True)
    judge = vsphere_judge(vc)
    open_sessions = sessions(judge)
    state = tmp_path / "state"
    done = orch(state, "shutdown", write_inventory(tmp_path, vc, tls), "--yes", timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    recs = records(state, last_run_id(state))
    steps = finished(recs)
    # containment could not be done (no network device to log into here), and nothing else failed
    (run_finished,) = [r for r in recs if r["type"] == "run-finished"]
    left = {item["step_id"] for item in run_finished["left"]}
    assert left == {"backup-config:core", "isolate-segment:servers"}, left

    assert {vm: power_of(judge, vm) for vm in VMS.values()} == dict.fromkeys(VMS.values(), "poweredOff")
    for host in VMS:
        step = steps[f"stop-host:{host}"]
        assert step["status"] == "verified", step
        off = step["evidence"]["before" if host == "spare1" else "after"]  # spare1: off before the wave
        assert off["power"] == "stopped" and off["ssh_port_22"] == "closed"
        assert off["power_driver"]["controller"] == "vc-test" and off["power_driver"]["target"] == VMS[host]
    # spare1 was off already: verified by the controller, nothing sent to it
    assert steps["stop-host:spare1"]["already"] and not steps["stop-host:spare1"]["escalated"]
    assert not [r for r in recs if r["type"] == "escalation" and r["host"] == "spare1"]
    # EMR-DB1: a guest shutdown through VMware Tools
    db1 = steps["stop-host:emr-db1"]["evidence"]["after"]
    assert db1["escalation"] == "out-of-band graceful power off"
    assert db1["power_driver"]["last_operation"] == {"operation": "ShutdownGuest", "result": "requested",
                                                     "tools": "guestToolsRunning"}
    # win app1: no Tools, the graceful off refused (nothing sent), then PowerOffVM_Task, awaited
    app1 = steps["stop-host:win-app1"]["evidence"]["after"]
    assert app1["escalation"] == "out-of-band hard power off"
    refused = app1["out_of_band"]["out-of-band graceful power off"]
    assert refused["error"].startswith("graceful-refused: VMware Tools are not running")
    hard = app1["out_of_band"]["out-of-band hard power off"]["last_operation"]
    assert hard["operation"] == "PowerOffVM_Task" and hard["result"] == "success" and hard["task"]
    # the VMs on the dependency chain went in order: win-app1 (needs emr-db1) first
    order = [r["step_id"] for r in recs if r["type"] == "step-finished" and r["step_id"].startswith("stop-host:")]
    assert order.index("stop-host:win-app1") < order.index("stop-host:emr-db1")
    # SSH silence alone never made a VM off: the controller said "running" while SSH was silent
    for host in ("emr-db1", "win-app1"):
        checks = [r["evidence"] for r in recs if r["type"] == "verification" and r["step_id"] == f"stop-host:{host}"]
        assert checks[0]["power"] == "running" and checks[-1]["power"] == "stopped"
    assert steps["verify:final"]["status"] == "verified"
    # the run's one vCenter session was logged out when it ended
    assert sessions(judge) == open_sessions
    journal = (state / "runs" / last_run_id(state) / "journal.jsonl").read_text(encoding="utf-8")
    for text in (journal, done.stdout, done.stderr):
        assert PASSWORD not in text


def test_restore_powers_vms_on_through_vsphere(
    vcsim: Callable[..., Endpoint], vsphere_judge: Callable[[Endpoint], Any], tls: Tls, tmp_path: Path
) -> None:
    estate = {**ESTATE, "vms": [{**vm, "powered_on": False} for vm in ESTATE["vms"]]}
    vc = vcsim(estate, use_tls=True)
    judge = vsphere_judge(vc)
    open_sessions = sessions(judge)
    inventory = load_inventory(write_inventory(tmp_path, vc, tls))
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    options = replace(RunOptions(forks=8, operator="tester@power"), approve=ApprovalPolicy.ALL, start_timeout_s=2.0)

    result = start_run(inventory, build_plan(inventory, Mode.RESTORE), settings, options, argv=["test"])

    # powered on through vSphere; no guest answers SSH in vcsim, so each start then fails, truthfully
    assert power_of(judge, "EMR-DB1") == power_of(judge, "spare1") == "poweredOn"
    for host in ("emr-db1", "spare1"):
        start = result.results[f"start-host:{host}"]
        assert start.status is StepStatus.FAILED
        assert start.error == (f"{host} was powered on through power.vsphere:vc-test but did not answer SSH "
                               "within 2 s")
        said = start.evidence["power_driver"]
        assert said["controller"] == "vc-test" and said["last_operation"]["operation"] == "PowerOnVM_Task"
        assert said["last_operation"]["result"] == "success"
    # win-app1 needs emr-db1 started first: never powered on
    assert result.results["start-host:win-app1"].status is StepStatus.SKIPPED
    assert power_of(judge, "win app1") == "poweredOff"
    # the segment stays isolated: its hosts neither passed nor are off, as the controller says
    reconnect = result.results["reconnect-segment:servers"]
    assert reconnect.status is StepStatus.FAILED and "emr-db1" in (reconnect.error or "")
    assert sessions(judge) == open_sessions
    recs = records(settings.state_dir, result.run_id)
    sent = [r for r in recs if r["type"] == "command-sent" and r["step_id"].startswith("start-host:")]
    assert sorted((r["target"], r["driver"], r["commands"][0]) for r in sent) == [
        ("emr-db1", "power.vsphere:vc-test", "power on"), ("spare1", "power.vsphere:vc-test", "power on")]


def test_a_controller_refusing_the_login_never_makes_a_vm_off(
    vcsim: Callable[..., Endpoint], vsphere_judge: Callable[[Endpoint], Any], tls: Tls, tmp_path: Path
) -> None:
    vc = vcsim(ESTATE, use_tls=True)
    judge = vsphere_judge(vc)
    state = tmp_path / "state"
    done = orch(state, "shutdown", write_inventory(tmp_path, vc, tls, "wrong"), "--yes",
                env={"POWER_TEST_WRONG_PASSWORD": WRONG}, timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    recs = records(state, last_run_id(state))
    steps = finished(recs)
    # spare1 is off in vCenter, but the controller could not say so: not verified off
    for host in ("spare1", "win-app1"):
        step = steps[f"stop-host:{host}"]
        assert step["status"] == "failed" and step["error"] == "the host is still not off"
        checks = [r["evidence"] for r in recs if r["type"] == "verification" and r["step_id"] == f"stop-host:{host}"]
        assert checks and all(c["power"].startswith("unknown (") for c in checks if "power" in c)
        assert any("refused the login" in c.get("power", "") for c in checks)
    assert steps["stop-host:emr-db1"]["status"] == "skipped"  # win-app1 needs it: left running
    assert power_of(judge, "EMR-DB1") == power_of(judge, "win app1") == "poweredOn"
    assert power_of(judge, "spare1") == "poweredOff"
    journal = (state / "runs" / last_run_id(state) / "journal.jsonl").read_text(encoding="utf-8")
    assert "not asked again in this run" in journal
    for text in (journal, done.stdout, done.stderr):
        assert WRONG not in text and PASSWORD not in text

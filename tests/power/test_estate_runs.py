"""A hospital estate through the product, end to end against vcsim and two BMC emulators (issue 14):
Windows VMs, a hypervisor powered through vCenter (with its BMC), and a storage host.

- shutdown (the real console script): the Windows VMs are stopped through vCenter only (a guest shutdown
  through VMware Tools, or a hard power off without Tools) and never receive an SSH or Ansible command:
  the journal shows none, and a listener on port 22 of their addresses sees no connection at all. The
  hypervisor esx1 goes into maintenance mode only after every VM on it is verified off, then vCenter is
  asked to shut it down (vcsim has no ShutdownHost_Task: it answers "not supported", truthfully, and
  keeps the host powered on), so its BMC (virtualbmc, IPMI) powers it off; the storage host san1
  (sushy-emulator, Redfish) stops last. Judged by the test's own pyvmomi session (VM power states,
  vCenter's events and tasks with their times, the host's maintenance mode), libvirt's own view of the
  BMC's domain, and a raw Redfish GET.
- restore of the hypervisor and its VMs: esx1 powered on by its BMC and taken out of maintenance mode
  once vCenter sees it connected; the Windows VMs powered on through vCenter and proven up by their
  controller plus an RDP port answering; their integrity step needs an attestation (the collector is
  Linux-only), and nothing is sent to them over SSH.
- a hypervisor without a BMC: vCenter cannot shut it down, and the step says what to do; its restore
  waits for vCenter to see it connected, then ends its maintenance mode.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from cli_helpers import finished, last_run_id, orch, records
from power_emulators import PASSWORD, USER, Endpoint, IpmiBmc, Tls, power_of, vm_of

from orchestrator.config import Settings
from orchestrator.executor import ApprovalPolicy, RunOptions
from orchestrator.inventory import load_inventory
from orchestrator.model import Mode, Scope, StepStatus
from orchestrator.planner import build_plan
from orchestrator.runs import start_run

ESTATE: dict[str, Any] = {
    "hosts": ["esx1"],
    "datastores": ["san1-ds"],
    "vms": [
        {"name": "EMR-DB1", "host": "esx1", "tools": True},
        {"name": "WIN-APP1", "host": "esx1", "tools": True},
        {"name": "WIN-FILE1", "host": "esx1", "tools": False},
    ],
}
VMS = {"emr-db1": "EMR-DB1", "win-app1": "WIN-APP1", "win-file1": "WIN-FILE1"}
WINDOWS = {"win-app1": ("127.10.2.12", "127.99.3.12"), "win-file1": ("127.10.2.13", "127.99.3.13")}

INVENTORY = """\
version: 1
site:
  name: estate-run-test
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
    credentials: power
    ca_file: {ca_file}
  bmc-esx1:
    type: ipmi
    address: 127.0.0.1
    port: {ipmi_port}
    credentials: power
  bmc-san1:
    type: redfish
    address: https://127.0.0.1:{redfish_port}
    credentials: power
    ca_file: {ca_file}
hosts:
  san1:
    segment: servers
    address: 127.10.2.21
    management_address: 127.99.3.21
    kind: storage
    power: {{controller: bmc-san1}}
    credentials: ssh
  esx1:
    segment: servers
    address: 127.10.2.31
    management_address: 127.99.3.31
    kind: hypervisor
    power: {{controller: vc-test, host: esx1{esx1_bmc}}}
    stored_on: san1
    credentials: ssh
  emr-db1:
    segment: servers
    address: 127.10.2.11
    management_address: 127.99.3.11
    power: {{controller: vc-test, vm: EMR-DB1}}
    runs_on: esx1
    stored_on: san1
    credentials: ssh
  win-app1:
    segment: servers
    address: 127.10.2.12
    management_address: 127.99.3.12
    os: windows
    power: {{controller: vc-test, vm: WIN-APP1}}
    runs_on: esx1
    stored_on: san1
    credentials: ssh
  win-file1:
    segment: servers
    address: 127.10.2.13
    management_address: 127.99.3.13
    os: windows
    power: {{controller: vc-test, vm: WIN-FILE1}}
    runs_on: esx1
    stored_on: san1
    credentials: ssh
credentials:
  ssh:
    username: root
    key_file: keys/none
  power:
    username: {user}
    password_env: POWER_TEST_PASSWORD
"""


def write_inventory(tmp_path: Path, vc: Endpoint, tls: Tls, ipmi: Endpoint, redfish: Endpoint, *,
                    esx1_bmc: bool = True) -> Path:
    path = tmp_path / "estate.yml"
    path.write_text(INVENTORY.format(vc_host=vc.host, vc_port=vc.port, ca_file=tls.ca_file, user=USER,
                                     ipmi_port=ipmi.port, redfish_port=redfish.port,
                                     esx1_bmc=", bmc: bmc-esx1" if esx1_bmc else ""), encoding="utf-8")
    path.chmod(0o600)
    return path


class Listener:
    """TCP listeners on given address:port pairs, counting every connection made to them."""

    def __init__(self, where: list[tuple[str, int]]) -> None:
        self.connections: list[tuple[str, int]] = []
        self._socks: list[socket.socket] = []
        for address, port in where:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.listen(16)
            s.settimeout(0.2)
            self._socks.append(s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for s in self._socks:
                try:
                    conn, _ = s.accept()
                except (TimeoutError, OSError):
                    continue
                self.connections.append(s.getsockname())
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in self._socks:
            s.close()


@contextmanager
def listening(where: list[tuple[str, int]]) -> Iterator[Listener]:
    listener = Listener(where)
    try:
        yield listener
    finally:
        listener.close()


def redfish_state(ep: Endpoint, tls: Tls) -> str:
    """The only system's PowerState, read over HTTPS by the test itself."""
    base, auth = f"https://{ep.host}:{ep.port}", (USER.encode(), PASSWORD.encode())
    members = requests.get(f"{base}/redfish/v1/Systems", auth=auth, verify=str(tls.ca_file), timeout=10).json()
    system = requests.get(base + members["Members"][0]["@odata.id"], auth=auth, verify=str(tls.ca_file), timeout=10)
    return str(system.json()["PowerState"])


def _reset_redfish(ep: Endpoint, tls: Tls) -> None:
    base, auth = f"https://{ep.host}:{ep.port}", (USER.encode(), PASSWORD.encode())
    members = requests.get(f"{base}/redfish/v1/Systems", auth=auth, verify=str(tls.ca_file), timeout=10).json()
    if redfish_state(ep, tls) != "On":
        requests.post(base + members["Members"][0]["@odata.id"] + "/Actions/ComputerSystem.Reset", auth=auth,
                      json={"ResetType": "On"}, verify=str(tls.ca_file), timeout=10)


def off_times(si: Any) -> dict[str, Any]:
    """vCenter's own record of when each VM went off, from the test's session: the completion of its
    PowerOffVM_Task, or (a guest shutdown is no task) its VmPoweredOffEvent."""
    from pyVmomi import vim

    spec = vim.event.EventFilterSpec(type=[vim.event.VmPoweredOffEvent])  # type: ignore[no-untyped-call]
    events = si.RetrieveContent().eventManager.QueryEvents(spec)
    latest: dict[str, Any] = {}
    for e in events:
        if e.vm is not None and e.vm.name in VMS.values():
            latest[e.vm.name] = max(latest.get(e.vm.name, e.createdTime), e.createdTime)
    for info in tasks(si, "VirtualMachine.powerOff"):
        name = info.entity.name
        latest[name] = max(latest.get(name, info.completeTime), info.completeTime)
    return latest


def tasks(si: Any, kind: str) -> list[Any]:
    """vCenter's recent tasks of ``kind`` (their info), oldest first."""
    return sorted((t.info for t in si.RetrieveContent().taskManager.recentTask if t.info.descriptionId == kind),
                  key=lambda i: i.queueTime)


def no_ssh_for_windows(recs: list[dict[str, Any]]) -> None:
    """Nothing in the journal sends an SSH or Ansible command to a windows host."""
    for r in recs:
        if r["type"] == "command-sent" and r.get("driver") in ("ansible", "ssh"):
            assert not set(str(r.get("target", "")).split(",")) & set(WINDOWS), r
        if r["type"].startswith("ansible") or r["type"] == "host-stopper":
            assert not any(h in str(r) for h in WINDOWS), r
    for host in WINDOWS:
        sent = [r for r in recs if r["type"] == "command-sent" and r.get("target") == host]
        assert all(r["driver"].startswith("power.vsphere:") for r in sent), sent


def test_shutdown_windows_vms_hypervisor_through_vcenter_then_storage_last(
    vcsim: Callable[..., Endpoint], vsphere_judge: Callable[[Endpoint], Any], tls: Tls, tmp_path: Path,
    ipmi_bmc: IpmiBmc, redfish_bmc: Endpoint
) -> None:
    vc = vcsim(ESTATE, use_tls=True)
    judge = vsphere_judge(vc)
    _reset_redfish(redfish_bmc, tls)
    assert ipmi_bmc.libvirt_state() == "running" and redfish_state(redfish_bmc, tls) == "On"
    inventory = write_inventory(tmp_path, vc, tls, ipmi_bmc.endpoint, redfish_bmc)
    state = tmp_path / "state"

    plan = orch(state, "plan", inventory, "--mode", "shutdown", "--json", timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert "maintenance mode, then shutdown, through vc-test" in plan.stdout
    assert "os: windows: stopped only through its power controller" in plan.stdout

    ssh_ports = [(a, 22) for pair in WINDOWS.values() for a in pair]
    with listening(ssh_ports) as ssh_knocks:
        status = orch(state, "power", "status", inventory, "--json", timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        read = {h["name"]: h for h in json.loads(status.stdout)["hosts"]}
        assert read["esx1"]["state"] == "on" and "poweredOn, connected" in read["esx1"]["evidence"]
        assert read["win-app1"]["state"] == "on" and read["win-app1"]["probe"] == "silent"  # RDP/WinRM/SMB
        done = orch(state, "shutdown", inventory, "--yes", timeout=240)
    assert done.returncode == 1, done.stdout + done.stderr  # containment: the device cannot be logged into
    recs = records(state, last_run_id(state))
    steps = finished(recs)
    (run_finished,) = [r for r in recs if r["type"] == "run-finished"]
    assert {i["step_id"] for i in run_finished["left"]} == {"backup-config:core", "isolate-segment:servers"}
    for host in (*VMS, "esx1", "san1"):
        assert steps[f"stop-host:{host}"]["status"] == "verified", steps[f"stop-host:{host}"]

    # the windows VMs: no SSH, no Ansible, not even a TCP connect to port 22
    assert ssh_knocks.connections == []
    no_ssh_for_windows(recs)
    for host in WINDOWS:
        ev = steps[f"stop-host:{host}"]["evidence"]
        assert ev["playbook"] == "not sent (os: windows: stopped through its power controller only)"
        assert "ssh_port_22" not in ev["after"] and set(ev["after"]["ports"].values()) == {"closed"}
        assert f"{WINDOWS[host][0]}:3389" in ev["after"]["ports"]
    assert steps["stop-host:win-app1"]["evidence"]["after"]["escalation"] == "out-of-band graceful power off"
    assert steps["stop-host:win-file1"]["evidence"]["after"]["escalation"] == "out-of-band hard power off"
    assert {vm: power_of(judge, vm) for vm in VMS.values()} == dict.fromkeys(VMS.values(), "poweredOff")

    # esx1: maintenance mode only once every VM on it was off (vCenter's own clock), then vCenter's
    # shutdown (vcsim: not supported), then its BMC
    off = off_times(judge)
    (maintenance,) = tasks(judge, "HostSystem.enterMaintenanceMode")
    assert maintenance.state == "success" and maintenance.entity.name == "esx1"
    assert set(off) == set(VMS.values()) and max(off.values()) < maintenance.queueTime
    host = vm_of(judge, "esx1")
    assert host.runtime.inMaintenanceMode is True
    assert str(host.runtime.powerState) == "poweredOn"  # vcsim does not power hosts off
    assert ipmi_bmc.libvirt_state() == "shutoff"  # the BMC did
    esx = steps["stop-host:esx1"]["evidence"]
    assert esx["playbook"] == "not sent (an ESXi host: maintenance mode, then shutdown, through vCenter)"
    said = esx["after"]["power_driver"]
    assert said["target"] == "host esx1" and "not supported by this endpoint" in said["vcenter_shutdown"]
    assert said["last_operation"]["steps"][0]["operation"] == "EnterMaintenanceMode_Task"
    assert esx["after"]["escalation"] == "out-of-band graceful power off" and esx["after"]["power"] == "stopped"

    # storage last: san1 started stopping only when esx1 and every VM were verified off
    seq = {r["step_id"]: r["seq"] for r in recs if r["type"] == "step-finished"}
    san1_started = next(r["seq"] for r in recs if r["type"] == "step-started" and r["step_id"] == "stop-host:san1")
    esx1_started = next(r["seq"] for r in recs if r["type"] == "step-started" and r["step_id"] == "stop-host:esx1")
    assert all(seq[f"stop-host:{vm}"] < esx1_started for vm in VMS)
    assert seq["stop-host:esx1"] < san1_started
    assert redfish_state(redfish_bmc, tls) == "Off"
    journal = (state / "runs" / last_run_id(state) / "journal.jsonl").read_text(encoding="utf-8")
    for text in (journal, done.stdout, done.stderr):
        assert PASSWORD not in text

    # restore the hypervisor and its VMs (san1 is not in scope: it has no SSH here to be checked)
    rdp = [(WINDOWS[h][0], 3389) for h in WINDOWS]
    inv = load_inventory(inventory)
    settings = Settings(state_dir=tmp_path / "restore", state_dir_source="cli", forks=8)
    options = replace(RunOptions(forks=8, operator="tester@power"), approve=ApprovalPolicy.ALL, start_timeout_s=5.0)
    restore_plan = build_plan(inv, Mode.RESTORE, Scope(hosts=("esx1", *VMS)))
    by_id = {s.id: s for s in restore_plan.steps()}
    assert by_id["start-host:esx1"].reason is not None and "powered on by its BMC bmc-esx1" in by_id[
        "start-host:esx1"].reason
    assert by_id["check-integrity:win-app1"].verify.startswith(
        "integrity: attestation required (the collector is Linux-only)")
    with listening(ssh_ports) as ssh_knocks, listening(rdp):
        result = start_run(inv, restore_plan, settings, options, argv=["test"])
    assert ssh_knocks.connections == []
    start = result.results["start-host:esx1"]
    assert start.status is StepStatus.VERIFIED, start
    assert ipmi_bmc.libvirt_state() == "running"
    assert vm_of(judge, "esx1").runtime.inMaintenanceMode is False
    assert [t.state for t in tasks(judge, "HostSystem.exitMaintenanceMode")] == ["success"]
    for win in WINDOWS:
        assert result.results[f"start-host:{win}"].status is StepStatus.VERIFIED, result.results[f"start-host:{win}"]
        assert power_of(judge, VMS[win]) == "poweredOn"
        ports = result.results[f"start-host:{win}"].evidence["ports"]
        assert ports[f"{WINDOWS[win][0]}:3389"] == "answers"
        integrity = result.results[f"check-integrity:{win}"]
        assert integrity.status is StepStatus.FAILED
        assert (integrity.error or "").startswith("integrity: attestation required (the collector is Linux-only)")
    assert result.results["start-host:emr-db1"].status is StepStatus.FAILED  # no guest answers SSH in vcsim
    no_ssh_for_windows(records(settings.state_dir, result.run_id))


def test_a_hypervisor_without_a_bmc_is_left_to_a_person_and_its_restore_waits_for_vcenter(
    vcsim: Callable[..., Endpoint], vsphere_judge: Callable[[Endpoint], Any], tls: Tls, tmp_path: Path,
    ipmi_bmc: IpmiBmc, redfish_bmc: Endpoint
) -> None:
    vc = vcsim(ESTATE, use_tls=True)
    judge = vsphere_judge(vc)
    inventory = write_inventory(tmp_path, vc, tls, ipmi_bmc.endpoint, redfish_bmc, esx1_bmc=False)
    inv = load_inventory(inventory)
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    options = replace(RunOptions(forks=8, operator="tester@power"), approve=ApprovalPolicy.ALL,
                      power_off_timeout_s=3.0, start_timeout_s=5.0)
    scope = Scope(hosts=("esx1", *VMS))
    shutdown = start_run(inv, build_plan(inv, Mode.SHUTDOWN, scope), settings, options, argv=["test"])
    stop = shutdown.results["stop-host:esx1"]
    assert stop.status is StepStatus.FAILED and stop.error == "the host is still not off"
    attempts = stop.evidence["after"]["out_of_band"]
    graceful = attempts["out-of-band graceful power off"]["error"]
    assert "vCenter did not shut esx1 down" in graceful and "not supported by this endpoint" in graceful
    hard = attempts["out-of-band hard power off"]["error"]
    assert "vCenter has no hard power off for a host" in hard
    assert vm_of(judge, "esx1").runtime.inMaintenanceMode is True  # after every VM was verified off
    assert {vm: power_of(judge, vm) for vm in VMS.values()} == dict.fromkeys(VMS.values(), "poweredOff")

    restore_plan = build_plan(inv, Mode.RESTORE, scope)
    reason = next(s.reason for s in restore_plan.steps() if s.id == "start-host:esx1")
    assert reason is not None and "no BMC in the inventory: power it on by its BMC console or at the server" in reason
    result = start_run(inv, restore_plan, replace(settings, state_dir=tmp_path / "restore"), options, argv=["test"])
    start = result.results["start-host:esx1"]
    assert start.status is StepStatus.VERIFIED, start
    assert start.evidence["vcenter_host"] == {"power_state": "poweredOn", "connection_state": "connected",
                                              "maintenance": False}
    assert vm_of(judge, "esx1").runtime.inMaintenanceMode is False
    sent = [r for r in records(tmp_path / "restore", result.run_id)
            if r["type"] == "command-sent" and r["target"] == "esx1"]
    assert [r["commands"] for r in sent] == [["ExitMaintenanceMode_Task"]]  # no power on: nothing to send it to


@pytest.mark.parametrize("answering", [3389, 5985, 445])
def test_a_windows_vm_off_in_vcenter_but_answering_rdp_winrm_or_smb_is_not_off(
    vcsim: Callable[..., Endpoint], tls: Tls, tmp_path: Path, ipmi_bmc: IpmiBmc, redfish_bmc: Endpoint,
    answering: int
) -> None:
    estate = {**ESTATE, "vms": [{**vm, "powered_on": vm["name"] != "WIN-FILE1"} for vm in ESTATE["vms"]]}
    vc = vcsim(estate, use_tls=True)
    inv = load_inventory(write_inventory(tmp_path, vc, tls, ipmi_bmc.endpoint, redfish_bmc))
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    options = replace(RunOptions(forks=8, operator="tester@power"), approve=ApprovalPolicy.ALL, power_off_timeout_s=2.0)
    with listening([(WINDOWS["win-file1"][1], answering)]):
        result = start_run(inv, build_plan(inv, Mode.SHUTDOWN, Scope(hosts=("win-file1",))), settings, options,
                           argv=["test"])
    step = result.results["stop-host:win-file1"]
    assert step.status is StepStatus.FAILED
    after = step.evidence["after"]
    assert after["escalation"] == "hard power off did not take effect"
    checks = [r["evidence"] for r in records(settings.state_dir, result.run_id)
              if r["type"] == "verification" and r["step_id"] == "stop-host:win-file1"]
    assert checks[0]["power"] == "stopped" and checks[0]["ports"][f"{WINDOWS['win-file1'][1]}:{answering}"] == "answers"

"""The ansible driver and the playbooks against the nspawn lab (marker ``lab``, fixtures in conftest).

Tests that power hosts off bring them back on through the lab's power driver, so the lab is left
as found. Wall times are recorded as test properties (``--junitxml`` shows them).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from functools import partial
from pathlib import Path

import pytest
import yaml

from orchestrator import lab
from orchestrator.drivers.ansible import ARMED_NICE_STEP, AnsibleDriver, PlaybookRun
from orchestrator.drivers.ansible_inventory import to_ansible_inventory
from orchestrator.drivers.base import PowerOffReport
from orchestrator.drivers.power import LabPower
from orchestrator.errors import UsageError
from orchestrator.model import Inventory

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
RecordProperty = Callable[[str, object], None]


def ssh_banner(address: str, timeout: float = 1.0) -> bool:
    """True when something on address:22 speaks SSH (a refused, timed-out or dropped port is False)."""
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def ssh_silent(address: str) -> bool:
    return not ssh_banner(address)


def power_stopped(host: str) -> bool:
    return LabPower().state(host) == "stopped"


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def expected_ports(inventory: Inventory, hosts: Iterable[str]) -> dict[str, list[int]]:
    return {h: [22, *(int(p) for p in inventory.hosts[h].vars.get("service_ports", {}).values())] for h in hosts}


def stoppable(inventory: Inventory) -> list[str]:
    kept = inventory.keep_reasons()
    return [h for h in sorted(inventory.hosts) if h not in kept]


@pytest.fixture
def driver(lab_inventory: Inventory, lab_up_status: lab.LabStatus, tmp_path: Path) -> AnsibleDriver:
    return AnsibleDriver(lab_inventory, tmp_path / "ansible", forks=50)


@pytest.fixture
def restore_power(lab_inventory: Inventory) -> Iterator[list[str]]:
    """Hosts appended to the yielded list are powered back on (and waited for) after the test."""
    touched: list[str] = []
    yield touched
    power = LabPower()
    for host in touched:
        if power.state(host) == "stopped":
            power.power_on(host)
    for host in touched:
        address = str(lab_inventory.hosts[host].management_address)
        wait_for(f"{host} answers SSH again", partial(ssh_banner, address), 90)


def assert_really_off(inventory: Inventory, run: PlaybookRun, hosts: list[str]) -> float:
    """Every host: the play got to the power-off, SSH stops answering and the lab's power says off."""
    for host in hosts:
        outcome = run.hosts[host]
        assert outcome.status == "changed" or (
            outcome.status == "unreachable" and "during power-off" in outcome.message
        ), f"{host}: {outcome}"
    started = time.monotonic()
    for host in hosts:
        address = str(inventory.hosts[host].management_address)
        wait_for(f"{host} SSH stops answering", partial(ssh_silent, address), 60)
        wait_for(f"{host} power says stopped", partial(power_stopped, host), 120)
    return time.monotonic() - started


def test_check_health_reports_services_active_and_ports_listening(
    driver: AnsibleDriver, lab_inventory: Inventory, record_testsuite_property: RecordProperty
) -> None:
    hosts = sorted(lab_inventory.hosts)
    events: list[dict[str, object]] = []
    driver.event_sink = events.append
    run = driver.check_health(hosts, expected_ports(lab_inventory, hosts))
    record_testsuite_property("check_health_all_hosts_s", round(run.duration_s, 2))
    assert run.ok, {h: o.message for h, o in run.hosts.items() if not o.succeeded}
    for host in hosts:
        health = run.hosts[host].results["health"]
        assert health["healthy"] is True
        assert set(health["services"]) == set(lab_inventory.hosts[host].services)
        assert set(health["services"].values()) == {"active"}
        assert 22 in health["listening"]
    started = {(e["host"], e["task"]) for e in events if e.get("status") == "started"}
    assert len(started) >= len(hosts)


def test_check_health_fails_a_host_with_a_missing_port_or_stopped_service(
    driver: AnsibleDriver, lab_inventory: Inventory, lab_run: Callable[..., object]
) -> None:
    host = "deu-lab-app1"
    service = "lab-app"
    lab_run(host, f"systemctl stop {service}")
    try:
        run = driver.check_health([host, "deu-ws1"], {host: [22, 8082], "deu-ws1": [22, 9]})
    finally:
        lab_run(host, f"systemctl start {service}")
    app, ws = run.hosts[host], run.hosts["deu-ws1"]
    assert app.status == "failed" and service in app.message
    assert app.results["health"]["inactive_services"] == [service]
    assert app.results["health"]["missing_ports"] == [8082]
    assert ws.status == "failed" and ws.results["health"]["missing_ports"] == [9]
    assert run.failed_hosts == (host, "deu-ws1")


def test_stop_host_really_stops_one_host(
    driver: AnsibleDriver,
    lab_inventory: Inventory,
    restore_power: list[str],
    record_testsuite_property: RecordProperty,
) -> None:
    host = "deu-ws2"
    assert ssh_banner(str(lab_inventory.hosts[host].management_address))
    restore_power.append(host)
    started = time.monotonic()
    run = driver.stop_hosts([host])
    stop_s = time.monotonic() - started
    off_s = assert_really_off(lab_inventory, run, [host])
    record_testsuite_property("stop_hosts_one_host_s", round(stop_s, 2))
    record_testsuite_property("stop_hosts_one_host_until_off_s", round(stop_s + off_s, 2))
    assert run.hosts[host].results.get("stop_host_report", {}).get("services_failed", []) == []


CONNECTION_PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.raw: echo "$SSH_CONNECTION"
      register: conn
      changed_when: false
    - ansible.builtin.set_fact:
        ssh_connection: "{{ conn.stdout | trim }}"
"""


def test_opened_connection_carries_the_playbook_and_ends_with_its_machine(
    lab_inventory: Inventory, lab_up_status: lab.LabStatus, restore_power: list[str], tmp_path: Path
) -> None:
    host = "deu-ws2"
    address = str(lab_inventory.hosts[host].management_address)
    events: list[dict[str, object]] = []
    driver = AnsibleDriver(lab_inventory, tmp_path / "ansible", forks=50, event_sink=events.append)
    try:
        driver.open_connections([host])
        wait_for("the connection is opened", lambda: any(e.get("phase") == "opened" for e in events), 30)
        opened = next(e for e in events if e.get("phase") == "opened")
        assert opened["hosts"] == [host] and opened["failed"] == {}, opened
        [control_dir] = list(driver.control_path_dir().glob("open-*"))
        mux = ["ssh", "-o", f"ControlPath={control_dir}/%C", "-o", "BatchMode=yes", "-l", "root", address]
        check = subprocess.run([*mux[:1], "-O", "check", *mux[1:]], capture_output=True, text=True, timeout=10)
        assert check.returncode == 0 and "Master running" in check.stderr, check.stderr
        master_pid = int(check.stderr.split("pid=")[1].split(")")[0])
        over_master = subprocess.run([*mux, "echo $SSH_CONNECTION"], capture_output=True, text=True, timeout=10)
        master_connection = over_master.stdout.strip()
        assert master_connection, over_master.stderr

        # a playbook pointed at the directory runs over that same TCP connection (same client port)
        playbook = tmp_path / "connection.yml"
        playbook.write_text(CONNECTION_PLAYBOOK)
        run = driver.run_playbook(str(playbook), [host], control_dir=control_dir)
        assert run.hosts[host].succeeded, run.hosts[host]
        assert run.hosts[host].results["ssh_connection"] == master_connection

        # the stop runs over it too; when the machine goes down the master ends by itself
        restore_power.append(host)
        stopped = driver.stop_hosts([host])
        assert_really_off(lab_inventory, stopped, [host])
        wait_for("the master process ends with its machine", lambda: not Path(f"/proc/{master_pid}").exists(), 20)
    finally:
        driver.close()
    assert not list(driver.control_path_dir().glob("open-*")), "close() leaves no control directory"


def test_stop_hosts_whole_wave_in_one_run_keeps_the_island(
    driver: AnsibleDriver,
    lab_inventory: Inventory,
    restore_power: list[str],
    record_testsuite_property: RecordProperty,
) -> None:
    hosts = stoppable(lab_inventory)
    kept = sorted(lab_inventory.keep_reasons())
    assert kept and hosts
    restore_power.extend(hosts)
    started = time.monotonic()
    run = driver.stop_hosts(hosts)
    stop_s = time.monotonic() - started
    off_s = assert_really_off(lab_inventory, run, hosts)
    record_testsuite_property("stop_hosts_wave_hosts", len(hosts))
    record_testsuite_property("stop_hosts_wave_s", round(stop_s, 2))
    record_testsuite_property("stop_hosts_wave_until_off_s", round(stop_s + off_s, 2))
    for host in hosts:  # services were stopped first, in reverse order, never ssh
        report = run.hosts[host].results.get("stop_host_report")
        if report is not None:
            wanted = [s for s in reversed(lab_inventory.hosts[host].services) if s != "ssh"]
            assert report["services_stopped"] == wanted
    for host in kept:
        assert ssh_banner(str(lab_inventory.hosts[host].management_address)), f"kept host {host} went down"


def descendants(root: int, wanted: Callable[[str], bool]) -> list[int]:
    """Processes under ``root`` (any depth) whose command name ``wanted`` accepts."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid, rest = int(entry.name), stat.rsplit(")", 1)
        names[pid] = rest[0].split("(", 1)[1]
        children.setdefault(int(rest[1].split()[1]), []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if wanted(names.get(pid, "")):
            found.append(pid)
    return found


def playbook_processes() -> list[int]:
    """This test's ansible-playbook processes: the playbook itself and the workers it forked."""
    return descendants(os.getpid(), lambda comm: comm.startswith("ansible-playboo"))


def test_armed_stops_send_nothing_until_released_and_a_stood_down_host_stays_up(
    lab_inventory: Inventory, lab_up_status: lab.LabStatus, restore_power: list[str], tmp_path: Path
) -> None:
    released, stood_down = "deu-ws2", "deu-ws1"
    addresses = {h: str(lab_inventory.hosts[h].management_address) for h in (released, stood_down)}
    events: list[dict[str, object]] = []
    reports: list[PowerOffReport] = []
    ended: list[Future[PlaybookRun]] = []
    driver = AnsibleDriver(lab_inventory, tmp_path / "ansible", forks=50, event_sink=events.append)
    restore_power.extend([released, stood_down])
    armed = driver.arm_stops([released, stood_down], wait_s=120, on_power_off=reports.append)
    armed.add_done_callback(ended.append)
    try:
        # both hosts' stop tasks are waiting in their workers (an armed run journals no task starts)
        wait_for("both workers forked", lambda: len(playbook_processes()) >= 3, 60)
        time.sleep(2.0)
        assert armed.running() and reports == []
        assert not [e for e in events if e.get("status") == "started"]
        # the armed run waits at a lower CPU priority: ansible-playbook and the workers it forked
        waiting = playbook_processes()
        assert len(waiting) >= 3, waiting  # the playbook process and one worker per host
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in waiting} == {min(19, base + ARMED_NICE_STEP)}
        assert all(ssh_banner(a) for a in addresses.values()) and not power_stopped(released)

        armed.release([released])
        with pytest.raises(UsageError):
            armed.release([released])  # each host is released once
        wait_for("the released host's power-off is reported", lambda: any(r.host == released for r in reports), 60)
        wait_for(f"{released} SSH stops answering", partial(ssh_silent, addresses[released]), 60)
        wait_for(f"{released} power says stopped", partial(power_stopped, released), 120)
        assert ssh_banner(addresses[stood_down]) and not power_stopped(stood_down)
    finally:
        armed.close()  # stands down what was not released, waits for the run to end
        driver.close()
    run = ended[0].result()
    assert run.hosts[released].status in ("changed", "unreachable"), run.hosts[released]
    assert run.hosts[stood_down].status == "skipped", run.hosts[stood_down]
    assert ssh_banner(addresses[stood_down]) and not power_stopped(stood_down), "a stood-down host was stopped"
    reported = {r.host: r.status for r in reports}
    assert reported[released] in ("changed", "unreachable") and reported[stood_down] == "skipped", reported


def test_an_armed_host_never_released_is_never_stopped(
    lab_inventory: Inventory, lab_up_status: lab.LabStatus, tmp_path: Path
) -> None:
    host = "deu-ws1"
    driver = AnsibleDriver(lab_inventory, tmp_path / "ansible", forks=50)
    ended: list[Future[PlaybookRun]] = []
    armed = driver.arm_stops([host], wait_s=2, on_power_off=None)
    armed.add_done_callback(ended.append)
    wait_for("the armed run ends by itself", lambda: bool(ended), 90)
    outcome = ended[0].result().hosts[host]
    assert outcome.status == "failed" and "not released within 2 s: nothing was sent" in outcome.message, outcome
    armed.close()
    assert ssh_banner(str(lab_inventory.hosts[host].management_address)) and not power_stopped(host)


def test_hosts_come_back_healthy_after_power_on(driver: AnsibleDriver, lab_inventory: Inventory) -> None:
    """Runs after the stop tests: the lab is left as found (services enabled, ports listening)."""
    hosts = sorted(lab_inventory.hosts)
    deadline = time.monotonic() + 60
    while True:
        run = driver.check_health(hosts, expected_ports(lab_inventory, hosts))
        if run.ok or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert run.ok, {h: o.message for h, o in run.hosts.items() if not o.succeeded}


def test_manual_fallback_with_ansible_playbook_by_hand(lab_inventory: Inventory, tmp_path: Path) -> None:
    """The documented fallback: export the inventory, run a playbook with plain ansible-playbook."""
    hosts_file = tmp_path / "hosts.yml"
    hosts_file.write_text(yaml.safe_dump(to_ansible_inventory(lab_inventory)))
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        [
            str(bin_dir / "ansible-playbook"),
            "-i",
            str(hosts_file),
            "playbooks/check-health.yml",
            "--limit",
            "ant-ad1",
            "-e",
            json.dumps({"expected_ports": [22, 8389]}),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "ANSIBLE_HOME": str(tmp_path / "ah"),
            "ANSIBLE_CONFIG": str(REPO / "playbooks" / "ansible.cfg"),
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "failed=0" in proc.stdout and "unreachable=0" in proc.stdout


def test_stop_playbook_by_hand_finds_its_action_plugin(lab_inventory: Inventory, tmp_path: Path) -> None:
    """stop-host.yml by hand (no orchestrator, no release directory) loads ``raw_when_released`` from
    the playbooks' own ``action_plugins``; in check mode it sends nothing and the host stays up."""
    hosts_file = tmp_path / "hosts.yml"
    hosts_file.write_text(yaml.safe_dump(to_ansible_inventory(lab_inventory)))
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(hosts_file), "playbooks/stop-host.yml", "--check",
         "--limit", "deu-ws1"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=120,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_HOME": str(tmp_path / "ah"),
             "ANSIBLE_CONFIG": str(REPO / "playbooks" / "ansible.cfg")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped=1" in proc.stdout and "failed=0" in proc.stdout, proc.stdout
    assert ssh_banner(str(lab_inventory.hosts["deu-ws1"].management_address))

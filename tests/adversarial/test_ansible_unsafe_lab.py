"""Finding 2 end to end in the lab: Jinja in an inventory string, passed through the real ansible
driver (ansible-runner, ansible-playbook, OpenSSH to the lab's hosts), is never evaluated on the
controller, and arrives on the host and back as those very characters.

The inventory is the lab's, with hostile strings put into the model directly (a host's services and
role, an island's reason, a host's vars, an extra variable): each is a pipe lookup that would touch
a file under the test's tmp dir on the controller if Ansible ever templated it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import lab
from orchestrator.drivers.ansible import STOP_HOST_PLAYBOOK, AnsibleDriver
from orchestrator.model import Inventory

HOST = "ant-ad1"  # any lab host with services; nothing here changes it
KEPT = "ant-ed-triage1"  # on the ED island: kept running


ECHO_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Echo the inventory's strings on the host
      ansible.builtin.command:
        argv:
          - printf
          - "%s\\n"
          - "{{ orchestrator_role | default('-') }}"
          - "{{ note | default('-') }}"
          - "{{ services | last }}"
          - "{{ hostvars['KEPT'].orchestrator_kept_reason }}"
          - "{{ extra }}"
      register: echoed
      changed_when: false
    - name: Hand back what the host printed
      ansible.builtin.set_fact:
        echoed_lines: "{{ echoed.stdout_lines }}"
"""


def pipe_touch(path: Path) -> str:
    return "{{ lookup('pipe', 'touch " + str(path) + "') }}"


@pytest.fixture
def hostile(lab_inventory: Inventory, tmp_path: Path) -> tuple[Inventory, dict[str, Path]]:
    marks = {k: tmp_path / f"{k}-ran" for k in ("service", "role", "var", "reason", "extra")}
    host = lab_inventory.hosts[HOST]
    host = dataclasses.replace(host, services=(*host.services, pipe_touch(marks["service"])),
                               role=pipe_touch(marks["role"]), vars={**host.vars, "note": pipe_touch(marks["var"])})
    assert KEPT in lab_inventory.keep_reasons()
    islands = {name: dataclasses.replace(island, reason=pipe_touch(marks["reason"]))
               for name, island in lab_inventory.islands.items()}
    inventory = dataclasses.replace(lab_inventory, hosts={**lab_inventory.hosts, HOST: host}, islands=islands)
    return inventory, marks


def assert_nothing_ran(marks: dict[str, Path]) -> None:
    ran = [k for k, path in marks.items() if path.exists()]
    assert not ran, f"Ansible evaluated inventory strings on the controller: {ran}"


def test_inventory_jinja_reaches_the_hosts_as_text_through_the_ansible_driver(
    hostile: tuple[Inventory, dict[str, Path]], lab_up_status: lab.LabStatus, tmp_path: Path,
    lab_run: Callable[..., object],
) -> None:
    inventory, marks = hostile
    driver = AnsibleDriver(inventory, tmp_path / "ansible", forks=10)
    try:
        # 1. The health playbook asks the host's systemd about every service, the hostile name too.
        health = driver.check_health([HOST], {HOST: [22]})
        assert_nothing_ran(marks)
        services = health.hosts[HOST].results["health"]["services"]
        assert services[pipe_touch(marks["service"])] != "active", services  # asked for by that very name
        assert services["ssh"] == "active"

        # 2. A playbook that echoes the strings on the host (printf) and hands them back as a fact.
        playbook = tmp_path / "echo.yml"
        playbook.write_text(ECHO_PLAYBOOK.replace("KEPT", KEPT))
        run = driver.run_playbook(str(playbook), [HOST, KEPT], extravars={"extra": pipe_touch(marks["extra"])},
                                  timeout_s=90)
        assert_nothing_ran(marks)
        assert run.ok, {h: o.message for h, o in run.hosts.items()}
        assert run.hosts[KEPT].results["echoed_lines"][1] == "-"  # no note on that host
        assert run.hosts[HOST].results["echoed_lines"] == [
            pipe_touch(marks["role"]), pipe_touch(marks["var"]), pipe_touch(marks["service"]),
            "island emergency-department: " + pipe_touch(marks["reason"]), pipe_touch(marks["extra"])]

        # 3. stop-host.yml refuses a kept host, naming its reason: printed as text, nothing stopped.
        refused = driver.run_playbook(STOP_HOST_PLAYBOOK, [KEPT], timeout_s=90)
        assert_nothing_ran(marks)
        outcome = refused.hosts[KEPT]
        assert outcome.status == "failed" and pipe_touch(marks["reason"]) in outcome.message, outcome
    finally:
        driver.close()
    lab_run(KEPT, "systemctl is-system-running --wait", check=False)  # the kept host is still up

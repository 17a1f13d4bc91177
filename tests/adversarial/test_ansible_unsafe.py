"""Finding 2 (unit level, real Ansible on this machine): inventory strings reach Ansible as text,
never as code and never as connection settings.

The end-to-end proof against the lab's hosts is in test_ansible_unsafe_lab.py.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.drivers.ansible import AnsibleDriver
from orchestrator.drivers.ansible_inventory import to_ansible_inventory
from orchestrator.errors import UsageError
from orchestrator.inventory import load_inventory

REPO = Path(__file__).resolve().parents[2]
SMALL = REPO / "tests" / "data" / "small.yml"
BIN = Path(sys.executable).parent


def pipe_touch(path: Path) -> str:
    return "{{ lookup('pipe', 'touch " + str(path) + "') }}"


def test_the_manual_fallback_export_is_never_templated_by_ansible(tmp_path: Path) -> None:
    """`orchestrator inventory ansible` + ansible-playbook: Jinja in an island's reason and in a
    host's vars is printed as those characters; the pipe lookups never run on the controller."""
    reason_mark, var_mark = tmp_path / "reason-ran", tmp_path / "var-ran"
    text = SMALL.read_text(encoding="utf-8")
    text = text.replace("reason: ED keeps operating at reduced capacity}",
                        f'reason: "ED {pipe_touch(reason_mark)}"}}')
    text = text.replace("role: emr-app, tier: 2,", f'role: emr-app, tier: 2, vars: {{note: "{pipe_touch(var_mark)}"}},')
    assert str(reason_mark) in text and str(var_mark) in text
    inventory_file = tmp_path / "inventory.yml"
    inventory_file.write_text(text, encoding="utf-8")
    export = subprocess.run([sys.executable, "-m", "orchestrator", "inventory", "ansible", str(inventory_file)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert export.returncode == 0, export.stderr
    hosts = tmp_path / "hosts.json"
    hosts.write_text(export.stdout)
    playbook = tmp_path / "show.yml"
    playbook.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"REASON={{ hostvars['ant-ed-triage1'].orchestrator_kept_reason }}\"\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"NOTE={{ hostvars['ant-emr-app1'].note }}\"\n")
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_HOME": str(tmp_path / "ah"),
           "ANSIBLE_CONFIG": str(REPO / "playbooks" / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(hosts), str(playbook)],
                         capture_output=True, text=True, env=env, timeout=180, check=False)
    assert not reason_mark.exists() and not var_mark.exists(), "Ansible ran a pipe lookup from the inventory"
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"REASON=island emergency-department: ED {pipe_touch(reason_mark)}" in run.stdout, run.stdout
    assert f"NOTE={pipe_touch(var_mark)}" in run.stdout, run.stdout


@pytest.mark.parametrize("key", ["ansible_ssh_host", "ansible_host", "ansible_port", "ansible_user",
                                 "ansible_host_key_checking", "ansible_ssh_common_args", "ansible_ssh_extra_args",
                                 "ansible_ssh_args", "ansible_connection", "ansible_ssh_executable",
                                 "ansible_ssh_private_key_file", "ansible_become_password"])
def test_host_vars_cannot_change_how_ansible_connects_even_past_validation(key: str, tmp_path: Path) -> None:
    """The model is built directly (validation refuses these keys first): the export refuses them too."""
    inventory = load_inventory(SMALL)
    host = dataclasses.replace(inventory.hosts["ant-ad1"], vars={key: "-o StrictHostKeyChecking=no"})
    inventory = dataclasses.replace(inventory, hosts={**inventory.hosts, "ant-ad1": host})
    with pytest.raises(UsageError) as info:
        to_ansible_inventory(inventory)
    assert f"hosts.ant-ad1.vars.{key}" in str(info.value)
    driver = AnsibleDriver(load_inventory(SMALL), tmp_path / "w", run_function=lambda **_: None)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        driver.run_playbook("check-health.yml", ["ant-ad1"], host_vars={"ant-ad1": {key: "x"}})

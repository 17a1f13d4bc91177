"""Findings 3 and 4 in the manual fallback: playbooks/network-isolate.yml reads the inventory YAML
itself (no orchestrator), so it refuses on its own the strings SSH or a device shell would misread:
an address or user that is an option, a key path with OpenSSH syntax, an interface that is a shell
command. Only its guard tasks run here (on localhost, nothing is connected to)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAB = REPO / "inventories" / "lab.yml"


def run_guards(tmp_path: Path, inventory_text: str) -> subprocess.CompletedProcess[str]:
    plays = yaml.safe_load((REPO / "playbooks" / "network-isolate.yml").read_text())
    first = plays[0]
    first["tasks"] = [t for t in first["tasks"] if t["name"].startswith(("Require", "Refuse"))]
    assert len(first["tasks"]) == 3
    playbook = tmp_path / "guards.yml"
    playbook.write_text(yaml.safe_dump([first], sort_keys=False))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(inventory_text)
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_HOME": str(tmp_path / "ah"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "False"}
    return subprocess.run([str(BIN / "ansible-playbook"), str(playbook), "-e", f"inventory_file={inventory}"],
                          capture_output=True, text=True, env=env, timeout=180, check=False)


def test_the_fallback_guards_pass_the_lab_inventory(tmp_path: Path) -> None:
    run = run_guards(tmp_path, LAB.read_text())
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(("old", "new", "why"), [
    ("interface: vlan120", """interface: 'vlan120"; touch /tmp/x; "'""", "interfaces letters, digits"),
    ("known_hosts: /var/lib/orchestrator-lab/ssh/known_hosts",
     """known_hosts: '/var/lib/orchestrator-lab/ssh/known_hosts" -o "ProxyCommand=touch /tmp/x'""",
     "free of quotes, backslashes"),
    ("username: netops", "username: -oProxyCommand=touch", "username a plain name"),
])
def test_the_fallback_refuses_strings_ssh_or_a_device_shell_would_misread(
    tmp_path: Path, old: str, new: str, why: str
) -> None:
    text = LAB.read_text()
    assert old in text, old
    hostile = text.replace(old, new, 1)
    yaml.safe_load(hostile)  # still a well-formed inventory: the guard, not a parse error, refuses it
    run = run_guards(tmp_path, hostile)
    assert run.returncode != 0, run.stdout
    assert why in " ".join(run.stdout.split()), run.stdout

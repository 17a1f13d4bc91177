"""Finding 3: a known_hosts or key_file value is one path, never SSH options.

``-o StrictHostKeyChecking=no -o ProxyCommand=...`` inside a path used to become options of their
own once the option string was split again. Now the options are an argument list; where Ansible
takes one string it is quoted for Ansible's own split; OpenSSH reads the path in double quotes. What
OpenSSH makes of the arguments is read back with ``ssh -G`` (it prints the resulting configuration
and connects nowhere); what Ansible makes of them is recorded by a stand-in ssh executable that
Ansible itself runs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
from loopback_ssh import USER, LoopbackSshServer, known_hosts_line

from orchestrator.drivers import ssh_masters
from orchestrator.drivers.ansible_inventory import ssh_common_args, to_ansible_inventory
from orchestrator.drivers.ssh import SshDriver
from orchestrator.errors import UsageError
from orchestrator.inventory import load_inventory
from orchestrator.model import Credential, Inventory

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOSTILE = "dir with space/-o StrictHostKeyChecking=no -o ProxyCommand=touch {mark}"


def hostile_inventory(tmp_path: Path) -> tuple[Inventory, Path, str]:
    """small.yml, its credential's known_hosts a hostile (relative) path; returns the resolved path."""
    mark = tmp_path / "proxy-command-ran"
    inventory = load_inventory(REPO / "tests" / "data" / "small.yml")
    known_hosts = HOSTILE.format(mark=mark)
    cred = dataclasses.replace(inventory.credentials["lab"], known_hosts=known_hosts)
    inventory = dataclasses.replace(inventory, path=str(tmp_path / "inventory.yml"), credentials={"lab": cred})
    return inventory, mark, str(tmp_path / known_hosts)


def ssh_config(args: list[str]) -> dict[str, list[str]]:
    """What OpenSSH makes of ``args`` (``ssh -G``: the resulting configuration, no connection)."""
    out = subprocess.run(["ssh", "-G", *args, "127.0.0.1"], capture_output=True, text=True, timeout=30,
                         check=True, stdin=subprocess.DEVNULL).stdout
    config: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key, []).append(value)
    return config


def assert_one_harmless_path(config: dict[str, list[str]], path: str) -> None:
    assert config["userknownhostsfile"] == [path], config["userknownhostsfile"]
    assert config["stricthostkeychecking"] == ["true"]
    assert "proxycommand" not in config


def test_a_hostile_known_hosts_path_stays_one_path_for_ansible(tmp_path: Path) -> None:
    inventory, _, path = hostile_inventory(tmp_path)
    common = ssh_common_args(inventory, inventory.credentials["lab"])
    assert_one_harmless_path(ssh_config(shlex.split(common)), path)  # shlex.split: what Ansible does


def test_a_hostile_known_hosts_path_stays_one_path_for_the_control_masters(tmp_path: Path) -> None:
    inventory, _, path = hostile_inventory(tmp_path)
    masters = ssh_masters.SshMasters(inventory, tmp_path / "cp")
    try:
        argv = masters._master_argv("ant-ad1")
    finally:
        masters.close()
    assert argv[0] == "ssh" and argv[-1] == str(inventory.hosts["ant-ad1"].management_address)
    assert_one_harmless_path(ssh_config(argv[1:-1]), path)


def test_ansible_itself_passes_the_hostile_path_to_ssh_as_one_path(tmp_path: Path) -> None:
    """Real ansible runs a stand-in ssh that records its arguments and refuses (exit 255): nothing is
    sent anywhere; the recorded arguments are then read by the real ssh (-G)."""
    from orchestrator.drivers.ansible_inventory import dumps  # the export as the driver writes it

    inventory, mark, path = hostile_inventory(tmp_path)
    record = tmp_path / "ssh-argv.jsonl"
    fake_ssh = tmp_path / "fake-ssh"
    fake_ssh.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                        "sys.stderr.write('fake ssh: refusing\\n')\nsys.exit(255)\n")
    fake_ssh.chmod(0o700)
    hosts = tmp_path / "hosts.json"
    hosts.write_text(dumps(to_ansible_inventory(inventory, ["ant-ad1"])))
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_HOME": str(tmp_path / "ah"),
           "ANSIBLE_SSH_EXECUTABLE": str(fake_ssh), "ANSIBLE_SSH_RETRIES": "0",
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp")}
    subprocess.run([str(BIN / "ansible"), "-i", str(hosts), "ant-ad1", "-m", "raw", "-a", "true"],
                   capture_output=True, text=True, env=env, timeout=120, check=False)
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls, "ansible never ran ssh"
    argv = calls[0]
    address = str(inventory.hosts["ant-ad1"].management_address)
    options = argv[: argv.index(address)]
    assert "StrictHostKeyChecking=no" not in options
    assert_one_harmless_path(ssh_config(options), path)
    assert not mark.exists()


@pytest.mark.parametrize("bad", ['with"quote', "with%dtoken", "with\nnewline", "with\\backslash"])
def test_a_path_openssh_would_read_as_syntax_is_refused_with_the_key_named(tmp_path: Path, bad: str) -> None:
    inventory, _, _ = hostile_inventory(tmp_path)
    cred = dataclasses.replace(inventory.credentials["lab"], known_hosts=None, key_file=f"/keys/{bad}")
    inventory = dataclasses.replace(inventory, credentials={"lab": cred})
    with pytest.raises(UsageError) as info:
        to_ansible_inventory(inventory)
    assert "credentials.lab.key_file" in str(info.value) and info.value.hint


def test_paramiko_resolves_a_relative_key_and_known_hosts_against_the_inventory_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_key = paramiko.ECDSAKey.generate()
    server = LoopbackSshServer(paramiko.ECDSAKey.generate(), client_key)
    try:
        site = tmp_path / "site dir"
        (site / "keys").mkdir(parents=True)
        client_key.write_private_key_file(str(site / "keys" / "id"))
        (site / "keys" / "known hosts").write_text(known_hosts_line(server.port, server.host_key))
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        inventory = load_inventory(REPO / "tests" / "data" / "small.yml")
        cred = Credential(name="lab", username=USER, key_file="keys/id", known_hosts="keys/known hosts")
        host = dataclasses.replace(inventory.hosts["ant-ad1"], management_address=ipaddress.IPv4Address("127.0.0.1"))
        inventory = dataclasses.replace(inventory, path=str(site / "inventory.yml"), credentials={"lab": cred},
                                        hosts={"ant-ad1": host})
        with SshDriver(inventory, port=server.port) as drv:
            assert drv.run("ant-ad1", "echo ok").stdout == "ok\n"
    finally:
        server.stop()
    assert os.getcwd() == str(elsewhere)

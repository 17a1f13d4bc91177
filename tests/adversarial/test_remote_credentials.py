"""Finding 14: restore-time checks never send a password credential to a host presumed compromised.

The real SSH driver against a real SSH server on loopback (tests/loopback_ssh.py), which counts
every password offered to it; and the executor, which marks every host of a restore as suspect.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from loopback_ssh import PASSWORD, USER, LoopbackSshServer, known_hosts_line

from orchestrator.config import Settings
from orchestrator.drivers.ssh import PasswordRefusedError, SshDriver
from orchestrator.errors import AuthFailedError
from orchestrator.executor import Executor, Recorder, RunOptions
from orchestrator.executor.restore import boot_settled
from orchestrator.inventory import load_inventory
from orchestrator.journal import Journal
from orchestrator.model import Credential, Host, Inventory, Mode, Site
from orchestrator.planner import build_plan

PASSWORD_ENV = "ORCH_ADV_SUSPECT_PW"
SMALL = Path(__file__).resolve().parents[1] / "data" / "small.yml"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LoopbackSshServer]:
    srv = LoopbackSshServer(paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate())
    yield srv
    srv.stop()


def inventory_with(cred: Credential) -> Inventory:
    host = Host(name="web1", segment="servers", address=ipaddress.IPv4Address("127.0.0.1"),
                management_address=ipaddress.IPv4Address("127.0.0.1"), credentials=cred.name)
    return Inventory(path="test.yml", sha256="0" * 64, site=Site("test"), management_segment="mgmt", campuses={},
                     segments={}, devices={}, links={}, hosts={"web1": host}, islands={},
                     credentials={cred.name: cred})


def password_credential(server: LoopbackSshServer, tmp_path: Path, **kw: object) -> Credential:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line(server.port, server.host_key))
    return Credential(name="pw", username=USER, password_env=PASSWORD_ENV, known_hosts=str(known_hosts),
                      **kw)  # type: ignore[arg-type]


def test_a_password_credential_is_never_sent_to_a_suspect_host(
    server: LoopbackSshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    cred = password_credential(server, tmp_path)
    with SshDriver(inventory_with(cred), port=server.port) as drv:
        assert drv.run("web1", "echo ok").stdout == "ok\n"  # not suspect: the password logs in
    offered_before = server.passwords_offered
    connections_before = server.connections
    assert offered_before == 1
    with SshDriver(inventory_with(cred), port=server.port) as drv:
        drv.treat_as_suspect(["web1"])
        with pytest.raises(PasswordRefusedError) as info:
            drv.run("web1", "echo ok")
    assert server.passwords_offered == offered_before, "the password reached the suspect host"
    assert server.connections == connections_before, "a suspect host was even connected to"
    message = str(info.value)
    assert "presumed compromised" in message and "allow_password_on_suspect_hosts" in (info.value.hint or "")
    assert PASSWORD not in message


def test_a_credential_with_a_key_logs_in_to_a_suspect_host_with_the_key_alone(
    server: LoopbackSshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key and password: the server refuses this key, so only the password could log in; for a suspect
    host the password is withheld and the login fails with no password offered."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    stranger = tmp_path / "id_stranger"
    paramiko.ECDSAKey.generate().write_private_key_file(str(stranger))
    cred = dataclasses.replace(password_credential(server, tmp_path), key_file=str(stranger))
    with SshDriver(inventory_with(cred), port=server.port) as drv:
        drv.treat_as_suspect(["web1"])
        with pytest.raises(AuthFailedError) as info:
            drv.run("web1", "true")
    assert not isinstance(info.value, PasswordRefusedError)
    assert server.passwords_offered == 0


def test_a_credential_may_opt_in_to_passwords_on_suspect_hosts(
    server: LoopbackSshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    cred = password_credential(server, tmp_path, allow_password_on_suspect_hosts=True)
    with SshDriver(inventory_with(cred), port=server.port) as drv:
        drv.treat_as_suspect(["web1"])
        assert drv.run("web1", "echo ok").stdout == "ok\n"
    assert server.passwords_offered == 1


def test_the_opt_in_is_a_credential_property_of_the_inventory(tmp_path: Path) -> None:
    text = SMALL.read_text(encoding="utf-8")
    old = "lab: {username: root, key_file: ~/.ssh/orchestrator_lab}"
    assert old in text
    variant = tmp_path / "inventory.yml"
    variant.write_text(text.replace(old, old[:-1] + ", password_env: LAB_PW, allow_password_on_suspect_hosts: true}"))
    assert load_inventory(variant).credentials["lab"].allow_password_on_suspect_hosts is True
    assert load_inventory(SMALL).credentials["lab"].allow_password_on_suspect_hosts is False


def executor_for(inventory: Inventory, mode: Mode, tmp_path: Path) -> Executor:
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=4)
    run_id = f"20260113T053200Z-{mode.value}"
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True)
    journal = Journal.create(settings.journal_path(run_id), run_id)
    return Executor(inventory=inventory, plan=build_plan(inventory, mode), settings=settings, run_id=run_id,
                    run_dir=run_dir, recorder=Recorder(journal), options=RunOptions(forks=4))


def test_a_restore_sends_no_password_to_the_hosts_it_brings_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the executor with the real SSH driver: in a restore every host is presumed compromised,
    so a password-only credential is refused before any connection (nothing is sent anywhere), and
    the boot-settled check reports the refusal instead of logging in."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    inventory = load_inventory(SMALL)
    password_only = Credential(name="lab", username="root", password_env=PASSWORD_ENV)
    inventory = dataclasses.replace(inventory, credentials={"lab": password_only})
    restore = executor_for(inventory, Mode.RESTORE, tmp_path / "restore")
    try:
        assert restore.drivers.suspect_hosts == frozenset(inventory.hosts)
        assert isinstance(restore.drivers.ssh, SshDriver)
        for name in inventory.hosts:
            with pytest.raises(PasswordRefusedError):
                restore.drivers.ssh.run(name, "cat /proc/sys/kernel/random/boot_id")
        host = inventory.hosts["ant-ad1"]
        assert boot_settled(restore.ctx, host) == "unknown (password-refused)"
    finally:
        restore.drivers.close()
    shutdown = executor_for(inventory, Mode.SHUTDOWN, tmp_path / "shutdown")
    assert shutdown.drivers.suspect_hosts == frozenset()  # stopping a host is not a restore-time check

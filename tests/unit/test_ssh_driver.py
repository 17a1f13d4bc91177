"""The paramiko driver against a real SSH server on loopback (paramiko's server side, in a thread).

The server runs each exec request with ``sh -c`` on this machine, so commands, stdin, stdout, stderr
and exit statuses are real. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paramiko
import pytest
from loopback_ssh import PASSWORD, USER, LoopbackSshServer, known_hosts_line

from orchestrator.drivers.ssh import (
    CommandResult,
    HostKeyMismatchError,
    HostKeyUnknownError,
    SshDriver,
)
from orchestrator.errors import AuthFailedError, DriverTimeoutError, UnreachableError
from orchestrator.model import Credential, Host, Inventory, Site


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("keys")
    client = paramiko.ECDSAKey.generate()
    key_file = d / "id_ecdsa"
    client.write_private_key_file(str(key_file))
    return {
        "host": paramiko.ECDSAKey.generate(),
        "other_host": paramiko.ECDSAKey.generate(),
        "client": client,
        "key_file": key_file,
        "stranger_file": _stranger(d),
    }


def _stranger(d: Path) -> Path:
    path = d / "id_stranger"
    paramiko.ECDSAKey.generate().write_private_key_file(str(path))
    return path


@pytest.fixture
def server(keys: dict[str, Any]) -> Iterator[LoopbackSshServer]:
    srv = LoopbackSshServer(keys["host"], keys["client"])
    yield srv
    srv.stop()


def _inventory(cred: Credential) -> Inventory:
    host = Host(
        name="web1",
        segment="servers",
        address=ipaddress.IPv4Address("127.0.0.1"),
        management_address=ipaddress.IPv4Address("127.0.0.1"),
        credentials=cred.name,
    )
    return Inventory(
        path="test.yml",
        sha256="0" * 64,
        site=Site("test"),
        management_segment="mgmt",
        campuses={},
        segments={},
        devices={},
        links={},
        hosts={"web1": host},
        islands={},
        credentials={cred.name: cred},
    )


def _known_hosts(tmp_path: Path, port: int, key: paramiko.PKey) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(known_hosts_line(port, key))
    return path


@pytest.fixture
def driver(
    server: LoopbackSshServer, keys: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[SshDriver, Credential]]:
    kh = _known_hosts(tmp_path, server.port, keys["host"])
    cred = Credential(name="lab", username=USER, key_file=str(keys["key_file"]), known_hosts=str(kh))
    drv = SshDriver(_inventory(cred), connect_timeout_s=3.0, port=server.port)
    yield drv, cred
    drv.close()


def test_command_output_and_exit_status(driver: tuple[SshDriver, Credential]) -> None:
    drv, _ = driver
    result = drv.run("web1", "echo out; echo err >&2; exit 3")
    assert isinstance(result, CommandResult)
    assert (result.host, result.exit_status, result.stdout, result.stderr) == ("web1", 3, "out\n", "err\n")
    assert result.duration_s >= 0
    assert drv.run("web1", "true").ok


def test_stdin_is_fed_and_large_output_is_complete(driver: tuple[SshDriver, Credential]) -> None:
    drv, _ = driver
    script = "for i in $(seq 1 20000); do echo line-$i; done\necho done >&2\n"
    result = drv.run("web1", "sh -s", stdin=script)
    lines = result.stdout.splitlines()
    assert len(lines) == 20000 and lines[-1] == "line-20000"
    assert result.stderr == "done\n"
    assert drv.run("web1", "cat", stdin="héllo\n").stdout == "héllo\n"


def test_connection_is_reused_across_threads(driver: tuple[SshDriver, Credential], server: LoopbackSshServer) -> None:
    drv, _ = driver
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: drv.run("web1", f"echo {i}"), range(24)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(24)]
    assert server.connections == 1


def test_dead_cached_connection_is_replaced(driver: tuple[SshDriver, Credential], server: LoopbackSshServer) -> None:
    drv, _ = driver
    assert drv.run("web1", "echo a").stdout == "a\n"
    server.drop_connections()  # the host went away and came back (or sshd restarted)
    time.sleep(0.2)
    assert drv.run("web1", "echo b").stdout == "b\n"
    assert server.connections == 2


def test_host_that_went_away_is_unreachable(driver: tuple[SshDriver, Credential], server: LoopbackSshServer) -> None:
    drv, _ = driver
    drv.run("web1", "true")
    server.stop()
    time.sleep(0.2)
    with pytest.raises(UnreachableError) as info:
        drv.run("web1", "true")
    assert info.value.target and "web1" in info.value.target


def test_command_timeout(driver: tuple[SshDriver, Credential]) -> None:
    drv, _ = driver
    started = time.monotonic()
    with pytest.raises(DriverTimeoutError) as info:
        drv.run("web1", "sleep 5", timeout_s=0.5)
    assert time.monotonic() - started < 2.0
    assert "0.5s" in str(info.value) and info.value.hint
    assert drv.run("web1", "echo still-usable").stdout == "still-usable\n"


def test_strict_host_key_mismatch_is_refused_loudly(
    server: LoopbackSshServer, keys: dict[str, Any], tmp_path: Path
) -> None:
    kh = _known_hosts(tmp_path, server.port, keys["other_host"])
    cred = Credential(name="lab", username=USER, key_file=str(keys["key_file"]), known_hosts=str(kh))
    with SshDriver(_inventory(cred), port=server.port) as drv, pytest.raises(HostKeyMismatchError) as info:
        drv.run("web1", "true")
    err = info.value
    assert isinstance(err, AuthFailedError)
    assert "host key mismatch" in str(err) and "ssh-keygen -R" in (err.hint or "")
    assert kh.read_text() == known_hosts_line(server.port, keys["other_host"])  # never rewritten


@pytest.mark.parametrize("file_exists", [True, False])
def test_unknown_host_key_is_refused_and_never_learnt(
    server: LoopbackSshServer, keys: dict[str, Any], tmp_path: Path, file_exists: bool
) -> None:
    kh = tmp_path / "known_hosts"
    if file_exists:
        kh.write_text("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJk5\n")
    before = kh.read_text() if file_exists else None
    cred = Credential(name="lab", username=USER, key_file=str(keys["key_file"]), known_hosts=str(kh))
    with SshDriver(_inventory(cred), port=server.port) as drv, pytest.raises(HostKeyUnknownError) as info:
        drv.run("web1", "true")
    assert "host key unknown" in str(info.value)
    assert (kh.read_text() if file_exists else None) == before
    assert kh.exists() == file_exists


def test_wrong_key_is_auth_failed(server: LoopbackSshServer, keys: dict[str, Any], tmp_path: Path) -> None:
    kh = _known_hosts(tmp_path, server.port, keys["host"])
    cred = Credential(name="lab", username=USER, key_file=str(keys["stranger_file"]), known_hosts=str(kh))
    with SshDriver(_inventory(cred), port=server.port) as drv, pytest.raises(AuthFailedError) as info:
        drv.run("web1", "true")
    assert not isinstance(info.value, HostKeyMismatchError)
    assert "authentication failed" in str(info.value)


def test_password_from_env_and_never_in_errors(
    server: LoopbackSshServer, keys: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kh = _known_hosts(tmp_path, server.port, keys["host"])
    cred = Credential(name="pw", username=USER, password_env="ORCH_TEST_PW", known_hosts=str(kh))
    monkeypatch.setenv("ORCH_TEST_PW", PASSWORD)
    with SshDriver(_inventory(cred), port=server.port) as drv:
        assert drv.run("web1", "echo ok").stdout == "ok\n"
    monkeypatch.setenv("ORCH_TEST_PW", PASSWORD + " wrong")
    with SshDriver(_inventory(cred), port=server.port) as drv, pytest.raises(AuthFailedError) as info:
        drv.run("web1", "true")
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value.__dict__)
    monkeypatch.delenv("ORCH_TEST_PW")
    with SshDriver(_inventory(cred), port=server.port) as drv, pytest.raises(AuthFailedError) as info:
        drv.run("web1", "true")
    assert "ORCH_TEST_PW" in str(info.value) and "is not set" in str(info.value)


def test_missing_key_file_is_auth_failed_with_hint(tmp_path: Path) -> None:
    cred = Credential(name="lab", username=USER, key_file=str(tmp_path / "nope"))
    with SshDriver(_inventory(cred), port=1) as drv, pytest.raises(AuthFailedError) as info:
        drv.run("web1", "true")
    assert "does not exist" in str(info.value) and info.value.hint


def test_connection_refused_and_silent_port_are_unreachable(keys: dict[str, Any], tmp_path: Path) -> None:
    cred = Credential(name="lab", username=USER, key_file=str(keys["key_file"]))
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    with SshDriver(_inventory(cred), connect_timeout_s=1.0, port=closed_port) as drv:
        with pytest.raises(UnreachableError):
            drv.run("web1", "true")
        assert not drv.port_open("127.0.0.1", closed_port, timeout_s=0.5)

    silent = socket.socket()  # accepts TCP but never speaks SSH: a hung sshd
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        port = silent.getsockname()[1]
        with SshDriver(_inventory(cred), connect_timeout_s=0.5, port=port) as drv:
            assert drv.port_open("127.0.0.1", port)
            started = time.monotonic()
            with pytest.raises(UnreachableError) as info:
                drv.run("web1", "true")
            assert time.monotonic() - started < 3.0
            assert info.value.hint
    finally:
        silent.close()


def test_run_at_and_unknown_names(driver: tuple[SshDriver, Credential], server: LoopbackSshServer) -> None:
    drv, cred = driver
    result = drv.run_at("127.0.0.1", cred, "echo peer", port=server.port)
    assert (result.host, result.stdout) == ("127.0.0.1", "peer\n")
    with pytest.raises(UnreachableError) as info:
        drv.run("nonexistent", "true")
    assert "test.yml" in (info.value.hint or "")


def test_script_text_never_appears_in_timeout_error(driver: tuple[SshDriver, Credential]) -> None:
    drv, _ = driver
    secretish = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(DriverTimeoutError) as info:
        drv.run("web1", "sh -s", timeout_s=0.5, stdin=f"# {secretish}\nsleep 3\n")
    assert secretish not in str(info.value)


def test_unreadable_key_file_is_auth_failed_without_content(tmp_path: Path) -> None:
    bad = tmp_path / "id_bad"
    bad.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key-SECRETISH\n-----END OPENSSH PRIVATE KEY-----\n")
    cred = Credential(name="lab", username=USER, key_file=str(bad))
    with SshDriver(_inventory(cred), port=1) as drv, pytest.raises(AuthFailedError) as info:
        drv.run("web1", "true")
    assert "cannot load key file" in str(info.value) and "SECRETISH" not in str(info.value)


def test_a_credential_can_give_slow_hosts_a_longer_connect_timeout_and_a_stalled_greeting_is_tried_twice(
    keys: dict[str, Any],
) -> None:
    silent = socket.socket()  # accepts TCP but never speaks SSH
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        port = silent.getsockname()[1]
        cred = Credential(name="lab", username=USER, key_file=str(keys["key_file"]), connect_timeout_s=0.3)
        with SshDriver(_inventory(cred), connect_timeout_s=30.0, port=port) as drv:
            started = time.monotonic()
            with pytest.raises(UnreachableError):
                drv.run("web1", "true")
            assert time.monotonic() - started < 5.0  # the credential's 0.3 s (twice), not the driver's 30 s
        silent.settimeout(1.0)
        tries = [silent.accept()[0] for _ in range(2)]  # both connections wait in the backlog
        for conn in tries:
            conn.close()
        silent.settimeout(0.2)
        with pytest.raises(TimeoutError):
            silent.accept()  # and not a third
    finally:
        silent.close()


def test_only_an_unfinished_handshake_is_retried_never_a_refusal() -> None:
    from orchestrator.drivers.ssh import _handshake_incomplete

    assert _handshake_incomplete(paramiko.SSHException("Error reading SSH protocol banner"))
    assert _handshake_incomplete(paramiko.SSHException("No existing session"))
    assert _handshake_incomplete(paramiko.AuthenticationException("Authentication timeout."))
    assert not _handshake_incomplete(paramiko.AuthenticationException("Authentication failed."))
    assert not _handshake_incomplete(paramiko.SSHException("Incompatible ssh peer (no acceptable kex algorithm)"))

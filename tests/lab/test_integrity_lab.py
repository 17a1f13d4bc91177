"""Integrity baselines against the real lab (DESIGN.md §8, issue 5).

A host tampered with after its baseline (a planted binary in /usr/local/bin, an extra authorized key)
is named with both paths, and only those; once the tampering is undone it is clean again. A reboot is
not a difference. Capture and check are timed per host and for every lab host in parallel.
Every change made here is undone before the test ends.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import lab
from orchestrator.config import Settings
from orchestrator.drivers.power import LabPower
from orchestrator.drivers.ssh import SshDriver
from orchestrator.errors import OrchestratorError
from orchestrator.integrity import (
    IntegrityResult,
    capture_all,
    capture_baseline,
    check_all,
    check_host,
    load_baseline,
)
from orchestrator.model import Inventory

HOST = "ant-pacs1"  # no other lab test touches it
IMPLANT = "/usr/local/bin/orchestrator-test-implant"
AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
INTRUDER = "intruder@orchestrator-lab-test"


def _fake_public_key() -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + os.urandom(32)  # no private half exists
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {INTRUDER}"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(state_dir=tmp_path_factory.mktemp("integrity-state"), state_dir_source="cli")


@pytest.fixture(scope="module")
def ssh(lab_inventory: Inventory, lab_up_status: lab.LabStatus) -> Iterator[SshDriver]:
    driver = SshDriver(lab_inventory)
    yield driver
    driver.close()


def _timed_check(ssh: SshDriver, inv: Inventory, host: str, settings: Settings) -> tuple[IntegrityResult, float]:
    started = time.monotonic()
    result = check_host(ssh, inv, host, settings)
    return result, time.monotonic() - started


def _undo_tampering(ssh: SshDriver) -> None:
    ssh.run(HOST, f"rm -f {IMPLANT}; sed -i '/{INTRUDER}/d' {AUTHORIZED_KEYS}")


def test_planted_binary_and_key_are_named_then_clean_again(
    ssh: SshDriver, lab_inventory: Inventory, settings: Settings
) -> None:
    started = time.monotonic()
    path = capture_baseline(ssh, lab_inventory, HOST, settings)
    capture_s = time.monotonic() - started
    assert path.is_file() and load_baseline(HOST, settings)["host"] == HOST

    result, first_check_s = _timed_check(ssh, lab_inventory, HOST, settings)
    assert result.clean, result.differences

    try:
        tamper = (
            f"printf '#!/bin/sh\\necho implant\\n' > {IMPLANT} && chmod 755 {IMPLANT} && "
            f"printf '%s\\n' '{_fake_public_key()}' >> {AUTHORIZED_KEYS}"
        )
        assert ssh.run(HOST, tamper).exit_status == 0
        result, tampered_check_s = _timed_check(ssh, lab_inventory, HOST, settings)
        assert not result.clean
        assert result.paths() == (AUTHORIZED_KEYS, IMPLANT), result.differences  # both, and only those
        by_path = {d.path: d for d in result.differences}
        assert by_path[IMPLANT].category == "file-added"
        assert by_path[AUTHORIZED_KEYS].category == "authorized_keys"
        assert INTRUDER in by_path[AUTHORIZED_KEYS].detail and "added key ssh-ed25519 SHA256:" in (
            by_path[AUTHORIZED_KEYS].detail
        )
    finally:
        _undo_tampering(ssh)

    result, _ = _timed_check(ssh, lab_inventory, HOST, settings)
    assert result.clean, result.differences
    print(
        f"\n{HOST}: capture {capture_s:.2f}s, check {first_check_s:.2f}s, "
        f"check with tampering {tampered_check_s:.2f}s, files {len(load_baseline(HOST, settings)['snapshot']['files'])}"
    )


def test_reboot_is_not_a_difference(ssh: SshDriver, lab_inventory: Inventory, settings: Settings) -> None:
    capture_baseline(ssh, lab_inventory, HOST, settings)
    address = str(lab_inventory.hosts[HOST].management_address)
    power = LabPower()
    power.power_off(HOST, graceful=True)
    deadline = time.monotonic() + 60
    while power.state(HOST) != "stopped":
        assert time.monotonic() < deadline, f"{HOST} did not power off"
        time.sleep(0.2)
    power.power_on(HOST)
    deadline = time.monotonic() + 60
    while True:
        try:
            if ssh.run(HOST, "systemctl is-system-running --wait", timeout_s=30).stdout.strip():
                break
        except OrchestratorError:  # booting: refused, reset or timed out until sshd answers
            assert time.monotonic() < deadline, f"{HOST} ({address}) did not come back"
            time.sleep(0.3)
    result = check_host(ssh, lab_inventory, HOST, settings)
    assert result.clean, "a reboot changed: " + "; ".join(
        f"{d.category} {d.path} {d.detail}" for d in result.differences
    )


def test_every_lab_host_in_parallel(ssh: SshDriver, lab_inventory: Inventory, settings: Settings) -> None:
    hosts = sorted(lab_inventory.hosts)
    started = time.monotonic()
    captured = capture_all(ssh, lab_inventory, hosts, settings)
    capture_s = time.monotonic() - started
    failed = {h: str(v) for h, v in captured.items() if not isinstance(v, Path)}
    assert not failed, failed

    started = time.monotonic()
    checked = check_all(ssh, lab_inventory, hosts, settings)
    check_s = time.monotonic() - started
    results = {h: v for h, v in checked.items() if isinstance(v, IntegrityResult)}
    assert set(results) == set(hosts), {h: str(v) for h, v in checked.items() if h not in results}
    dirty = {h: r.differences for h, r in results.items() if not r.clean}
    assert not dirty, dirty
    slowest = max(results.values(), key=lambda r: r.duration_s)
    print(
        f"\n{len(hosts)} lab hosts in parallel: capture {capture_s:.2f}s, check {check_s:.2f}s "
        f"(slowest host check {slowest.host} {slowest.duration_s:.2f}s)"
    )

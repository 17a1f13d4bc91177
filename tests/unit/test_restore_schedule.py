"""A restore tier's starts, integrity and health checks run dependency-driven across its hosts
(issue 17): a host's health check does not wait for another host's slow integrity check, and no
more than ``forks`` steps run at once."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeCampus
from test_executor import FAKE_CAMPUS, OPTIONS, execute

from orchestrator.executor import ApprovalPolicy
from orchestrator.integrity import IntegrityResult
from orchestrator.inventory import load_inventory
from orchestrator.model import Inventory, Mode
from orchestrator.planner import build_plan


@pytest.fixture
def inventory() -> Inventory:
    return load_inventory(FAKE_CAMPUS)


@pytest.fixture
def campus(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> FakeCampus:
    return FakeCampus(inventory).install(monkeypatch)


def slowed_integrity(campus: FakeCampus, monkeypatch: pytest.MonkeyPatch, slow: dict[str, float]) -> list[int]:
    """Integrity checks that take ``slow[host]`` seconds; returns the list of how many ran at once."""
    running = [0]
    peaks: list[int] = []
    lock = threading.Lock()
    original = campus.check_host

    def check_host(ssh: Any, inventory: Inventory, host: str, settings: Any) -> IntegrityResult:
        with lock:
            running[0] += 1
            peaks.append(running[0])
        try:
            time.sleep(slow.get(host, 0.02))
            return original(ssh, inventory, host, settings)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr("orchestrator.integrity.check_host", check_host)
    return peaks


def test_a_hosts_health_check_does_not_wait_for_another_hosts_slow_integrity_check(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    campus.shut_down()
    slowed_integrity(campus, monkeypatch, {"triage1": 0.8})  # tier 1 holds db1 and triage1
    options = dataclasses.replace(OPTIONS, approve=ApprovalPolicy.ALL)
    plan = build_plan(inventory, Mode.RESTORE)
    assert [s.id for s in plan.steps() if s.tier == 1 and s.id.startswith(("check-", "start-"))] == [
        "start-host:db1", "start-host:triage1", "check-integrity:db1", "check-integrity:triage1",
        "check-health:db1", "check-health:triage1"], "the plan keeps its waves"
    ran = execute(inventory, plan, tmp_path, options)
    assert ran.result.exit_code == 0, ran.result.left
    assert ran.seq("step-finished", "check-health:db1") < ran.seq("step-finished", "check-integrity:triage1")
    # every step after what it requires, and the tier's gate after all of its checks
    for step in plan.steps():
        for req in step.requires:
            assert ran.seq("step-finished", req) < ran.seq("step-started", step.id), (req, step.id)
    assert ran.seq("step-finished", "check-health:triage1") < ran.seq("step-started", "gate:tier-1")


@pytest.mark.parametrize("forks", [1, 2])
def test_no_more_than_forks_checks_run_at_once(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: int
) -> None:
    campus.shut_down()
    peaks = slowed_integrity(campus, monkeypatch, {})
    ran = execute(inventory, build_plan(inventory, Mode.RESTORE), tmp_path,
                  dataclasses.replace(OPTIONS, approve=ApprovalPolicy.ALL, forks=forks))
    assert ran.result.exit_code == 0, ran.result.left
    assert peaks and max(peaks) <= forks

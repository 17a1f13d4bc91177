"""Containment's two proofs run side by side (issue 17): the reachability probe from outside starts
once the change is sent, while the device's config is read back, and both still decide the step."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeCampus, FakeNetmikoDriver, FakeSshDriver
from test_executor import FAKE_CAMPUS, execute

from orchestrator.inventory import load_inventory
from orchestrator.model import Action, Inventory, Mode, StepStatus
from orchestrator.planner import build_plan


@pytest.fixture
def inventory() -> Inventory:
    return load_inventory(FAKE_CAMPUS)


@pytest.fixture
def campus(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> FakeCampus:
    return FakeCampus(inventory).install(monkeypatch)


def slow_read_back(monkeypatch: pytest.MonkeyPatch, seconds: float) -> tuple[list[tuple[float, float]], list[float]]:
    """Fresh config reads (the read-back) take ``seconds``. Returns the read-backs' (start, end) and
    the times at which a probe from inside a segment (a ping over a host's SSH) started."""
    reads: list[tuple[float, float]] = []
    pings: list[float] = []
    lock = threading.Lock()
    in_force_map = FakeNetmikoDriver.in_force_map
    run = FakeSshDriver.run

    def slow(self: FakeNetmikoDriver, device: str, checks: Sequence[tuple[Action, str]], *,
             fresh: bool = True) -> dict[tuple[Action, str], bool]:
        start = time.monotonic()
        if fresh:
            time.sleep(seconds)
        out = in_force_map(self, device, checks, fresh=fresh)
        if fresh:
            with lock:
                reads.append((start, time.monotonic()))
        return out

    def logged(self: FakeSshDriver, host: str, command: str, timeout_s: float = 30.0, *,
               stdin: str | None = None) -> Any:
        if "ping " in command:
            with lock:
                pings.append(time.monotonic())
        return run(self, host, command, timeout_s, stdin=stdin)

    monkeypatch.setattr(FakeNetmikoDriver, "in_force_map", slow)
    monkeypatch.setattr(FakeSshDriver, "run", logged)
    return reads, pings


def test_the_probe_from_outside_runs_while_the_config_is_read_back(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads, pings = slow_read_back(monkeypatch, 0.6)
    ran = execute(inventory, build_plan(inventory, Mode.CONTAIN), tmp_path)
    assert ran.result.exit_code == 0, ran.result.left
    # the isolations (all on core, in one wave) are probed from inside their segments while core's
    # config is read back; before, each probe waited for the read-back to end
    assert any(start < p < end for p in pings for start, end in reads), "every probe waited for the read-back"
    for step_id in ("isolate-segment:srv", "isolate-segment:clin"):
        evidence = ran.finished[step_id]["evidence"]
        assert evidence["rule_in_running_config"] is True and evidence["after"]["crosses"] == []


def test_a_rule_missing_from_the_read_back_still_fails_the_step_whatever_the_probe_says(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_read_back(monkeypatch, 0.1)
    original = FakeNetmikoDriver.in_force_map

    def srv_rule_gone(self: FakeNetmikoDriver, device: str, checks: Sequence[tuple[Action, str]], *,
                      fresh: bool = True) -> dict[tuple[Action, str], bool]:
        out = original(self, device, checks, fresh=fresh)
        key = (Action.ISOLATE_SEGMENT, "srv")
        if fresh and key in out and campus.in_force(device, "isolate-segment", "srv"):
            out[key] = False  # the device's config does not show the rule the probe saw working
        return out

    monkeypatch.setattr(FakeNetmikoDriver, "in_force_map", srv_rule_gone)
    ran = execute(inventory, build_plan(inventory, Mode.CONTAIN), tmp_path)
    assert ran.status("isolate-segment:srv") is StepStatus.FAILED
    assert "running config" in (ran.result.results["isolate-segment:srv"].error or "")
    assert ran.status("isolate-segment:clin") is StepStatus.VERIFIED

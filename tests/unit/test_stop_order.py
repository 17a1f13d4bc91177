"""Dependency-driven stops (issue 17): over random dependency graphs and random stop durations, no
host ever starts stopping before every host that depends on it is verified off, in the campus and
in the journal; and a slow host holds back only what needs it, not the next wave."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeAnsibleDriver, FakeCampus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_executor import FAKE_CAMPUS, OPTIONS, execute

from orchestrator.drivers.base import HostOutcome, PowerOffCallback, PowerOffReport
from orchestrator.inventory import load_inventory
from orchestrator.model import Host, Inventory, Mode, StepStatus
from orchestrator.planner import build_plan, needs_of

# Verification polls on the fake campus's virtual clock: a timeout long enough that a stop taking
# real time is verified, not escalated.
PATIENT = dataclasses.replace(OPTIONS, stop_timeout_s=100_000.0)


class TimedStopper(FakeAnsibleDriver):
    """Each host goes down ``durations[host]`` seconds after its stop playbook starts. At that start
    it notes which of the hosts depending on it were still powered (there must be none)."""

    durations: Mapping[str, float] = {}
    early: list[tuple[str, str]] = []
    started: list[str] = []

    def stop_now(self, hosts: Sequence[str], on_power_off: PowerOffCallback | None) -> dict[str, HostOutcome]:
        """A batch playbook's stops, or an armed run's release: the same on the fake campus."""
        needs = needs_of(self.inventory)
        with self.campus.lock:
            for name in hosts:
                self.started.append(name)
                self.early += [(name, d) for d, n in needs.items() if name in n and self.campus.hosts[d].powered]

        def one(name: str) -> HostOutcome:
            time.sleep(self.durations.get(name, 0.0))
            with self.campus.lock:
                self.campus.hosts[name].powered = False
            outcome = HostOutcome(name, "unreachable", "connection dropped during power-off")
            if on_power_off is not None:
                on_power_off(PowerOffReport(name, outcome.status, outcome.message))
            return outcome

        threads: dict[str, HostOutcome] = {}
        workers = [threading.Thread(target=lambda n=n: threads.__setitem__(n, one(n))) for n in hosts]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return dict(threads)


def dag_inventory(edges: Sequence[Sequence[int]]) -> Inventory:
    """The fake campus with its hosts replaced by ``len(edges)`` hosts; host i depends on the hosts
    with the indexes in edges[i] (all lower: a DAG)."""
    base = load_inventory(FAKE_CAMPUS)
    template = base.hosts["ad1"]
    hosts: dict[str, Host] = {}
    for i, deps in enumerate(edges):
        name = f"h{i:02d}"
        hosts[name] = dataclasses.replace(
            template, name=name, address=IPv4Address(f"10.10.2.{10 + i}"),
            management_address=IPv4Address(f"10.99.10.{10 + i}"), depends_on=tuple(f"h{d:02d}" for d in deps))
    return dataclasses.replace(base, hosts=hosts)


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[list[int]], list[float]]:
    n = draw(st.integers(min_value=2, max_value=12))
    edges = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(n)]
    durations = draw(st.lists(st.sampled_from([0.0, 0.005, 0.02, 0.06]), min_size=n, max_size=n))
    return edges, durations


def run_with(inventory: Inventory, durations: Mapping[str, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             *, armed: bool) -> tuple[TimedStopper, list[dict[str, Any]], dict[str, StepStatus]]:
    campus = FakeCampus(inventory).install(monkeypatch)
    campus.arm_stops = armed
    TimedStopper.durations, TimedStopper.early, TimedStopper.started = dict(durations), [], []

    def open_stopper(inv: Inventory, work_dir: Path, forks: int, sink: object = None) -> TimedStopper:
        return TimedStopper(campus, inv, work_dir, forks)

    monkeypatch.setattr("orchestrator.drivers.open_host_stopper", open_stopper)
    ran = execute(inventory, build_plan(inventory, Mode.SHUTDOWN), tmp_path, PATIENT)
    released = [r for r in ran.records if r["type"] == "command-sent" and "armed ahead" in str(r["commands"])]
    assert bool(released) is armed, "the stops did not take the path under test"
    statuses = {s: r.status for s, r in ran.result.results.items()}
    return TimedStopper(campus, inventory, tmp_path), ran.records, statuses


ARMED = pytest.mark.parametrize("armed", [True, False], ids=["armed-ahead", "playbook-per-batch"])


@ARMED
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dags())
def test_no_host_starts_stopping_before_every_host_depending_on_it_is_verified_off(
    tmp_path_factory: pytest.TempPathFactory, armed: bool, case: tuple[list[list[int]], list[float]]
) -> None:
    edges, durations = case
    inventory = dag_inventory(edges)
    tmp = tmp_path_factory.mktemp("dag")
    with pytest.MonkeyPatch.context() as mp:
        _stopper, records, statuses = run_with(
            inventory, {f"h{i:02d}": d for i, d in enumerate(durations)}, tmp, mp, armed=armed)
    assert TimedStopper.early == [], "a host was sent its stop while a host depending on it was still on"
    assert sorted(TimedStopper.started) == sorted(inventory.hosts)
    assert all(statuses[f"stop-host:{h}"] is StepStatus.VERIFIED for h in inventory.hosts), statuses
    verified_at = {r["step_id"]: r["seq"] for r in records
                   if r["type"] == "step-finished" and r["status"] == "verified"}
    plan = build_plan(inventory, Mode.SHUTDOWN)
    for r in records:
        if r["type"] == "step-started" and str(r["step_id"]).startswith("stop-host:"):
            for req in plan.step(str(r["step_id"])).requires:
                assert verified_at[req] < r["seq"], f"{r['step_id']} started before {req} was verified off"


@ARMED
def test_a_slow_host_holds_back_only_what_depends_on_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        armed: bool) -> None:
    # h00 <- h01 (fast), and h02, slow, that nothing depends on and that depends on nothing: in
    # waves, h00 would wait for h02 (both leaves are wave 1); dependency-driven, it does not.
    inventory = dag_inventory([[], [0], []])
    plan = build_plan(inventory, Mode.SHUTDOWN)
    stop_waves = [[s.target for s in w.steps] for w in plan.waves if w.phase.value == "shutdown"]
    assert stop_waves == [["h01", "h02"], ["h00"]], "the plan keeps its waves"
    _stopper, records, statuses = run_with(inventory, {"h02": 1.0}, tmp_path, monkeypatch, armed=armed)
    assert all(statuses[f"stop-host:{h}"] is StepStatus.VERIFIED for h in inventory.hosts)
    seq = {(r["type"], r.get("step_id")): r["seq"] for r in records}
    assert seq[("step-finished", "stop-host:h01")] < seq[("step-started", "stop-host:h00")]
    assert seq[("step-started", "stop-host:h00")] < seq[("step-finished", "stop-host:h02")], \
        "h00 waited for h02, which does not depend on it"
    assert [r["wave"] for r in records if r["type"] == "wave-started" and r["phase"] == "shutdown"] == \
        [w.index for w in plan.waves if w.phase.value == "shutdown"]

"""The executor against an in-memory campus (tests/fakes.py): order, idempotence, escalation,
failures that do not stop the run, gates, quarantine and interruption, judged from the journal and
from the fake campus's state. No lab, no network: every driver is a fake."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeAnsibleDriver, FakeCampus, FakeLabPower, FakeNetmikoDriver, FakeSshDriver

from orchestrator import drivers
from orchestrator.config import Settings
from orchestrator.drivers.base import HostOutcome, PlaybookRun, PowerOffCallback, PowerOffReport
from orchestrator.drivers.netmiko import CommandRejectedError
from orchestrator.errors import UnreachableError
from orchestrator.executor import ApprovalPolicy, Executor, Recorder, ResumeState, RunOptions, RunResult
from orchestrator.integrity import Difference
from orchestrator.inventory import load_inventory
from orchestrator.journal import Journal, read_journal, verify_journal
from orchestrator.model import Inventory, Mode, Plan, Step, StepStatus
from orchestrator.planner import build_plan

FAKE_CAMPUS = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"
OPTIONS = RunOptions(forks=8, operator="alice@ward", stop_timeout_s=1.0, start_timeout_s=1.0,
                     power_off_timeout_s=1.0)
ALL_GATES = ["gate:tier-0", "gate:tier-1", "gate:tier-2", "gate:tier-3", "gate:links"]
_run_ids = itertools.count(1)


@pytest.fixture
def inventory() -> Inventory:
    return load_inventory(FAKE_CAMPUS)


@pytest.fixture
def campus(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> FakeCampus:
    return FakeCampus(inventory).install(monkeypatch)


def variant(tmp_path: Path, old: str, new: str) -> Inventory:
    text = FAKE_CAMPUS.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / f"variant-{next(_run_ids)}.yml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return load_inventory(path)


@dataclass
class Ran:
    result: RunResult
    records: list[dict[str, Any]]
    run_dir: Path

    def of(self, type: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type]

    @property
    def finished(self) -> dict[str, dict[str, Any]]:
        return {r["step_id"]: r for r in self.of("step-finished")}

    def status(self, step_id: str) -> StepStatus:
        return self.result.results[step_id].status

    def seq(self, type: str, step_id: str) -> int:
        return next(int(r["seq"]) for r in self.records if r["type"] == type and r.get("step_id") == step_id)

    def started_ids(self) -> list[str]:
        return [r["step_id"] for r in self.of("step-started")]


def execute(inventory: Inventory, plan: Plan, tmp_path: Path, options: RunOptions = OPTIONS, *,
            stop_event: threading.Event | None = None) -> Ran:
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=options.forks)
    run_id = f"20260113T053200Z-unit{next(_run_ids):02d}"
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True)
    journal = Journal.create(settings.journal_path(run_id), run_id)
    try:
        executor = Executor(inventory=inventory, plan=plan, settings=settings, run_id=run_id, run_dir=run_dir,
                            recorder=Recorder(journal), options=options, stop_event=stop_event)
        result = executor.run()
    finally:
        journal.close()
    assert verify_journal(settings.journal_path(run_id)).ok
    return Ran(result, read_journal(settings.journal_path(run_id)), run_dir)


def steps_of(plan: Plan, prefix: str) -> list[str]:
    return [s.id for s in plan.steps() if s.id.startswith(prefix)]


# --------------------------------------------------------------------------------------------
# The fakes stand in for the real drivers
# --------------------------------------------------------------------------------------------


def test_the_fake_campus_stands_behind_every_driver_a_run_opens(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    # That the fakes keep the real drivers' interfaces is mypy's to check (tests/fakes.py is typed
    # against orchestrator/drivers/base.py); this checks that every opener leads to the campus.
    assert isinstance(drivers.open_ssh(inventory), FakeSshDriver)
    assert isinstance(drivers.open_devices(inventory), FakeNetmikoDriver)
    assert isinstance(drivers.open_host_stopper(inventory, tmp_path, 4, None), FakeAnsibleDriver)
    assert isinstance(drivers.open_power("lab"), FakeLabPower)
    assert campus.entries("open") == [("open", k) for k in ("ssh", "netmiko", "ansible", "power")]


# --------------------------------------------------------------------------------------------
# contain
# --------------------------------------------------------------------------------------------


def test_a_slow_before_probe_holds_its_change_back_so_the_before_evidence_is_really_before(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv_hosts = {h.name for h in inventory.hosts_in_segment("srv")}
    original = FakeSshDriver.run
    slowed: list[str] = []

    def slow_first_probe_in_srv(self: FakeSshDriver, host: str, command: str, timeout_s: float = 30.0, *,
                                stdin: str | None = None) -> Any:
        if host in srv_hosts and "ping " in command and not slowed:
            slowed.append(host)
            threading.Event().wait(0.5)  # the probe host is slow to answer; its answer is read after this
        return original(self, host, command, timeout_s, stdin=stdin)

    monkeypatch.setattr(FakeSshDriver, "run", slow_first_probe_in_srv)
    ran = execute(inventory, build_plan(inventory, Mode.CONTAIN), tmp_path)
    assert slowed and ran.result.exit_code == 0, ran.result.left
    srv = ran.finished["isolate-segment:srv"]["evidence"]
    assert srv["before"]["crosses"], "the before probe saw the segment already isolated"
    assert srv["after"]["crosses"] == []


def test_contain_cuts_links_before_isolating_segments_and_powers_nothing_off(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    plan = build_plan(inventory, Mode.CONTAIN)
    ran = execute(inventory, plan, tmp_path)
    assert ran.result.exit_code == 0 and ran.result.status == "completed", ran.result.left
    cuts, isolations = steps_of(plan, "cut-link:"), steps_of(plan, "isolate-segment:")
    assert cuts and isolations
    last_cut_done = max(ran.seq("step-finished", s) for s in cuts)
    first_isolation_started = min(ran.seq("step-started", s) for s in isolations)
    assert last_cut_done < first_isolation_started, "links are cut before segments are isolated"
    # vendor and internet links first, then the rest
    assert max(ran.seq("step-finished", s) for s in ("cut-link:vendor", "cut-link:internet")) < \
        ran.seq("step-started", "cut-link:wan")
    # every change was sent once and is in force
    sent = [r["step_id"] for r in ran.of("command-sent")]
    assert sorted(sent) == sorted(cuts + isolations)
    assert campus.rules["fw"] == {("cut-link", "vendor"), ("cut-link", "internet")}
    assert campus.rules["core"] == {("cut-link", "wan"), ("isolate-segment", "srv"),
                                    ("isolate-segment", "clin"), ("isolate-segment", "ed")}
    # nothing powered off: no stop, no power call, every host still answers
    assert not campus.entries("stop") and not campus.entries("power_off") and not campus.entries("power_on")
    assert all(h.powered and h.ssh_up for h in campus.hosts.values())
    # the probes proved it from inside and from the peer
    srv = ran.finished["isolate-segment:srv"]["evidence"]
    assert srv["rule_in_running_config"] is True
    assert srv["before"]["crosses"] and srv["after"]["crosses"] == []
    assert srv["after"]["same_segment_broken"] is False
    vendor = ran.finished["cut-link:vendor"]["evidence"]
    assert vendor["before"]["reaches"] is True and vendor["after"]["reaches"] is False
    assert (ran.run_dir / "backups" / "core.cfg").read_text().startswith("hostname core")
    # the milestone: contained, with the time it took; no shutdown in a contain run
    milestones = ran.of("milestone")
    assert [m["name"] for m in milestones] == ["contained"]
    assert milestones[0]["elapsed_s"] == ran.result.time_to_containment_s
    assert isinstance(milestones[0]["elapsed_s"], float) and milestones[0]["elapsed_s"] >= 0
    assert milestones[0]["seq"] > last_cut_done
    assert ran.result.time_to_shutdown_s is None


def test_containment_already_in_force_is_verified_not_applied_again(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.contained()
    rules_before = {d: set(r) for d, r in campus.rules.items()}
    plan = build_plan(inventory, Mode.SHUTDOWN)
    ran = execute(inventory, plan, tmp_path)
    assert ran.result.exit_code == 0, ran.result.left
    for step_id in steps_of(plan, "cut-link:") + steps_of(plan, "isolate-segment:"):
        res = ran.result.results[step_id]
        assert res.status is StepStatus.VERIFIED and res.already is True and res.changed is False, step_id
        assert ran.finished[step_id]["already"] is True
        assert ran.finished[step_id]["evidence"]["already_in_force"] is True
    assert not [r for r in ran.of("command-sent") if r["step_id"].startswith(("cut-link:", "isolate-segment:"))]
    assert not campus.entries("apply")
    assert campus.rules == rules_before
    names = [m["name"] for m in ran.of("milestone")]
    assert names == ["contained", "shutdown-complete"]


@pytest.mark.parametrize("mode", [Mode.CONTAIN, Mode.SHUTDOWN, Mode.RESTORE])
def test_a_dry_run_touches_nothing_and_has_no_milestones(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, mode: Mode
) -> None:
    if mode is Mode.RESTORE:
        campus.shut_down()
    rules_before = {d: set(r) for d, r in campus.rules.items()}
    powered_before = {n: h.powered for n, h in campus.hosts.items()}
    plan = build_plan(inventory, mode)
    ran = execute(inventory, plan, tmp_path, RunOptions(dry_run=True, forks=8, approve=ApprovalPolicy.NONE))
    assert campus.log == [], "a dry run opens no driver and sends nothing"
    assert campus.rules == rules_before
    assert {n: h.powered for n, h in campus.hosts.items()} == powered_before
    assert {r.status for r in ran.result.results.values()} == {StepStatus.DRY_RUN}
    assert set(ran.result.results) == {s.id for s in plan.steps()}
    assert not ran.of("milestone") and not ran.of("command-sent") and not ran.of("escalation")
    assert ran.result.time_to_containment_s is None and ran.result.time_to_shutdown_s is None
    assert ran.result.exit_code == 0
    assert not (ran.run_dir / "backups").exists()


# --------------------------------------------------------------------------------------------
# shutdown
# --------------------------------------------------------------------------------------------


def test_stop_run_is_armed_after_the_backups_and_connections_opened_once_contained(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    """The stops' preparation never goes before the backups: the armed stop run (born at a lower
    priority) starts once every backup is taken, before the first cut; the connections and probes,
    whose handshakes delayed the cuts by a second, are opened once the last containment change is
    verified, before the first stop. Both in wave order, never for a kept host."""
    plan = build_plan(inventory, Mode.SHUTDOWN)
    ran = execute(inventory, plan, tmp_path)
    assert ran.result.exit_code == 0, ran.result.left
    stops = [s.target for s in plan.steps() if s.id.startswith("stop-host:")]
    [armed] = campus.entries("arm_stops")
    [opened] = campus.entries("open_connections")
    assert list(armed[1]) == list(opened[1]) == stops
    assert not set(opened[1]) & set(inventory.keep_reasons())
    last_backup = max(campus.index(*e) for e in campus.entries("backup"))
    first_change = min(campus.index(*e) for e in campus.entries("apply"))
    last_change = max(campus.index(*e) for e in campus.entries("apply"))
    first_stop = min(campus.index(*e) for e in campus.log if e[0] in ("stop_hosts", "release"))
    assert last_backup < campus.index(*armed) < first_change, "armed after the backups, before the cuts"
    assert last_change < campus.index(*opened) < first_stop, "opened after containment, before the first stop"
    contained = next(e for e in ran.of("milestone") if e["name"] == "contained")
    assert ran.records.index(contained) < min(ran.records.index(e) for e in ran.of("step-started")
                                             if e["step_id"].startswith("stop-host:"))
    assert ("close", "ansible") in campus.log, "the run closes what it opened"


@pytest.mark.parametrize("mode", [Mode.CONTAIN, Mode.RESTORE])
def test_no_stop_connections_are_opened_without_stops(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, mode: Mode
) -> None:
    execute(inventory, build_plan(inventory, mode), tmp_path)
    assert campus.entries("open_connections") == []


def test_shutdown_stops_hosts_in_dependency_order_and_never_a_kept_host(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    plan = build_plan(inventory, Mode.SHUTDOWN)
    ran = execute(inventory, plan, tmp_path)
    assert ran.result.exit_code == 0, ran.result.left
    # ws1 depends on app1, app1 on db1, db1 on ad1: dependents stop first
    assert campus.entries("stop") == [("stop", "ws1"), ("stop", "app1"), ("stop", "db1"), ("stop", "ad1")]
    order = [r["step_id"] for r in ran.of("step-finished") if r["step_id"].startswith("stop-host:")]
    assert order == ["stop-host:ws1", "stop-host:app1", "stop-host:db1", "stop-host:ad1"]
    for host in ("ws1", "app1", "db1", "ad1"):
        assert not campus.hosts[host].powered
        res = ran.result.results[f"stop-host:{host}"]
        assert res.status is StepStatus.VERIFIED and res.changed and not res.escalated
        assert ran.finished[f"stop-host:{host}"]["evidence"]["after"]["power"] == "stopped"
    # the island's host is never stopped, never powered off, and still answers at the end
    assert "triage1" in plan.kept and "stop-host:triage1" not in {s.id for s in plan.steps()}
    assert campus.hosts["triage1"].powered and campus.hosts["triage1"].ssh_up
    assert not [e for e in campus.log if "triage1" in e[1:] and e[0] in ("stop", "power_off")]
    assert not campus.entries("power_off"), "every host stopped gracefully: no escalation"
    final = ran.finished["verify:final"]
    assert final["status"] == "verified" and final["evidence"]["failed"] == []
    assert final["evidence"]["checked"] == len(steps_of(plan, "cut-link:") + steps_of(plan, "isolate-segment:")) \
        + 4 + 1  # four stopped hosts still off, one kept host answering
    names = [(m["name"], m["elapsed_s"]) for m in ran.of("milestone")]
    assert [n for n, _ in names] == ["contained", "shutdown-complete"]
    assert names[0][1] <= names[1][1] == ran.result.time_to_shutdown_s
    assert ran.result.time_to_containment_s == names[0][1]


def test_a_host_is_verified_off_from_its_power_off_report_not_when_the_whole_play_ends(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished = {h: threading.Event() for h in ("ws1", "app1", "db1", "ad1")}
    seen_before_the_end: list[bool] = []
    original = FakeAnsibleDriver.stop_hosts

    def slow_ending(self: FakeAnsibleDriver, hosts: Sequence[str], timeout_s: float = 120,
                    on_power_off: PowerOffCallback | None = None) -> PlaybookRun:
        run = original(self, hosts, timeout_s, on_power_off)  # each host's power-off reported
        # The play's own ending (stats, process exit) is slow: the host's step finishes meanwhile.
        seen_before_the_end.append(all(finished[h].wait(10) for h in hosts))
        return run

    def observer(record: dict[str, Any]) -> None:
        if record["type"] == "step-finished" and record["step_id"].startswith("stop-host:"):
            finished[record["target"]].set()

    monkeypatch.setattr(FakeAnsibleDriver, "stop_hosts", slow_ending)
    campus.arm_stops = False  # a playbook per batch (the armed run reports each host the same way)
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    run_dir = settings.run_dir("power-off-reports")
    run_dir.mkdir(parents=True)
    journal = Journal.create(settings.journal_path("power-off-reports"), "power-off-reports")
    try:
        result = Executor(inventory=inventory, plan=build_plan(inventory, Mode.SHUTDOWN), settings=settings,
                          run_id="power-off-reports", run_dir=run_dir, recorder=Recorder(journal, [observer]),
                          options=OPTIONS).run()
    finally:
        journal.close()
    assert result.exit_code == 0, result.left
    assert seen_before_the_end == [True, True, True, True]
    for host in ("ws1", "app1", "db1", "ad1"):
        assert result.results[f"stop-host:{host}"].evidence["playbook"] == {
            "status": "unreachable", "message": "connection dropped during power-off"}


def test_an_armed_host_is_verified_off_from_outside_before_its_play_reports(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Released to the armed run, a host is watched from outside at once: its power-off report
    (late when Ansible is busy) is not waited for once the host is verified off."""
    reports_held: list[tuple[PowerOffCallback, PowerOffReport]] = []
    original = FakeAnsibleDriver.stop_now

    def late_reports(self: FakeAnsibleDriver, hosts: Sequence[str],
                     on_power_off: PowerOffCallback | None) -> dict[str, HostOutcome]:
        held: list[PowerOffReport] = []
        outcomes = original(self, hosts, held.append)  # the hosts go down; their reports are held back
        if on_power_off is not None:
            reports_held.extend((on_power_off, r) for r in held)
        return outcomes

    monkeypatch.setattr(FakeAnsibleDriver, "stop_now", late_reports)
    ran = execute(inventory, build_plan(inventory, Mode.SHUTDOWN), tmp_path)
    assert ran.result.exit_code == 0, ran.result.left
    assert campus.entries("release"), "the stops went through the armed run"
    for host in ("ws1", "app1", "db1", "ad1"):
        res = ran.result.results[f"stop-host:{host}"]
        assert res.status is StepStatus.VERIFIED and not res.escalated
        # the last host's verdict may come from the armed run's own end (every host decided by then)
        expected = ("pending", "unreachable") if host == "ad1" else ("pending",)
        assert res.evidence["playbook"]["status"] in expected, (host, res.evidence)
    assert {r.host for _, r in reports_held} == {"ws1", "app1", "db1", "ad1"}
    assert not campus.entries("power_off"), "no escalation: the hosts went down by themselves"


def test_the_stops_are_armed_once_for_every_host_and_each_keeps_its_before_probe(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    ran = execute(inventory, build_plan(inventory, Mode.SHUTDOWN), tmp_path)
    assert ran.result.exit_code == 0, ran.result.left
    first_stop = min(r["seq"] for r in ran.of("step-started") if r["step_id"].startswith("stop-host:"))
    backups_done = max(r["seq"] for r in ran.of("step-finished") if r["step_id"].startswith("backup-config:"))
    armed = [e for e in campus.log if e[0] == "arm_stops"]
    assert len(armed) == 1 and set(armed[0][1]) == {"ws1", "app1", "db1", "ad1"}, "armed once, for every host"
    assert backups_done < first_stop
    for host in ("ws1", "app1", "db1", "ad1"):
        before = ran.result.results[f"stop-host:{host}"].evidence["before"]
        assert before and "power" in before, before


@pytest.mark.parametrize("graceful_works", [True, False])
def test_a_host_that_will_not_stop_is_escalated_to_its_power_driver(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, graceful_works: bool
) -> None:
    campus.hosts["db1"].ignores_stop = True
    campus.hosts["db1"].ignores_graceful_power_off = not graceful_works
    ran = execute(inventory, build_plan(inventory, Mode.SHUTDOWN), tmp_path)
    assert ran.result.exit_code == 0, ran.result.left
    res = ran.result.results["stop-host:db1"]
    assert res.status is StepStatus.VERIFIED and res.escalated is True
    assert ran.finished["stop-host:db1"]["escalated"] is True
    escalations = [r for r in ran.of("escalation") if r["host"] == "db1"]
    expected = ["out-of-band graceful power off"] + ([] if graceful_works else ["out-of-band hard power off"])
    assert [e["to"] for e in escalations] == expected
    assert all(e["step_id"] == "stop-host:db1" and e["reason"] for e in escalations)
    assert escalations[0]["reason"] == "graceful stop did not finish in time"
    assert campus.entries("power_off") == [("power_off", "db1", g) for g in ([True] if graceful_works
                                                                             else [True, False])]
    assert not campus.hosts["db1"].powered
    assert ran.finished["stop-host:db1"]["evidence"]["after"]["escalation"] == expected[-1]
    # the others were not escalated, and ad1 (which db1 depends on) stopped after it
    assert [r["step_id"] for r in ran.of("step-finished") if r["escalated"]] == ["stop-host:db1"]
    assert campus.index("power_off", "db1", True) < campus.index("stop", "ad1")


@pytest.mark.parametrize("how", ["sshd keeps running and ignores the stop", "sshd is gone, ICMP answers"])
def test_a_host_no_power_driver_can_prove_off_fails_and_what_it_depends_on_is_skipped(
    campus: FakeCampus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    inv = variant(tmp_path, "tier: 2, depends_on: [db1], services: [app], power: lab",
                  "tier: 2, depends_on: [db1], services: [app], power: manual")
    campus = FakeCampus(inv).install(monkeypatch)
    app1 = campus.hosts["app1"]
    if how.startswith("sshd keeps"):
        app1.ignores_stop = True
    else:
        app1.sshd = False
    ran = execute(inv, build_plan(inv, Mode.SHUTDOWN), tmp_path)
    failed = ran.result.results["stop-host:app1"]
    assert failed.status is StepStatus.FAILED and failed.error == "the host is still not off"
    evidence = ran.finished["stop-host:app1"]["evidence"]
    assert evidence["after"]["escalation"] == "impossible: no power driver"
    if how.startswith("sshd keeps"):
        assert ("stop", "app1") in campus.log
    else:
        assert evidence["playbook"] == "not sent (SSH not answering)"
        assert ("stop", "app1") not in campus.log
        assert any(r["step_id"] == "stop-host:app1" and r["evidence"].get("icmp") == "answers"
                   for r in ran.of("verification"))
    # what app1 depends on is not attempted, and says why (naming the step that failed)
    db1, ad1 = ran.result.results["stop-host:db1"], ran.result.results["stop-host:ad1"]
    assert db1.status is StepStatus.SKIPPED and db1.error == "requires stop-host:app1 (failed)"
    assert ad1.status is StepStatus.SKIPPED and ad1.error == "requires stop-host:db1 (skipped)"
    assert "stop-host:db1" not in ran.started_ids() and "stop-host:ad1" not in ran.started_ids()
    assert campus.hosts["db1"].powered and campus.hosts["ad1"].powered and app1.powered
    assert not [e for e in campus.log if e[0] in ("stop", "power_off") and e[1] in ("db1", "ad1")]
    # the run went on to verify, and reports what is left
    assert ran.result.results["verify:final"].status is StepStatus.VERIFIED
    assert ran.result.exit_code == 1 and ran.result.status == "failed"
    assert ran.result.left == [("stop-host:app1", "failed: the host is still not off"),
                               ("stop-host:db1", "skipped: requires stop-host:app1 (failed)"),
                               ("stop-host:ad1", "skipped: requires stop-host:db1 (skipped)")]
    assert "shutdown-complete" not in [m["name"] for m in ran.of("milestone")]
    assert ran.result.time_to_shutdown_s is None


# --------------------------------------------------------------------------------------------
# device failures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "expected"), [
    (CommandRejectedError("core", "nft add rule inet orch clin drop", "Error: Could not process rule"),
     "command-rejected: core: device rejected 'nft add rule inet orch clin drop': Error: Could not process rule"),
    (UnreachableError("SSH session dropped", target="core"), "unreachable: core: SSH session dropped"),
    (RuntimeError("netmiko blew up"), "RuntimeError: netmiko blew up"),
])
def test_a_device_command_that_raises_fails_its_step_and_the_run_goes_on(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, error: Exception, expected: str
) -> None:
    campus.device_failures[("core", "isolate-segment", "clin")] = error
    plan = build_plan(inventory, Mode.SHUTDOWN)
    ran = execute(inventory, plan, tmp_path)
    res = ran.result.results["isolate-segment:clin"]
    assert res.status is StepStatus.FAILED
    assert res.error is not None and res.error.startswith(expected), res.error
    assert ran.finished["isolate-segment:clin"]["error"] == res.error
    assert ("isolate-segment", "clin") not in campus.rules["core"]
    # the rest of the wave and the rest of the run went on
    for step_id in ("isolate-segment:srv", "isolate-segment:ed", "stop-host:ws1", "stop-host:ad1", "verify:final"):
        assert ran.result.results[step_id].status is StepStatus.VERIFIED, step_id
    assert ran.result.left == [("isolate-segment:clin", f"failed: {res.error}")]
    assert ran.result.exit_code == 1
    # containment is not complete, so neither milestone is claimed
    assert not ran.of("milestone") and ran.result.time_to_containment_s is None


def test_a_device_that_cannot_be_backed_up_is_not_changed(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.unreachable_devices.add("fw")
    ran = execute(inventory, build_plan(inventory, Mode.CONTAIN), tmp_path)
    assert ran.status("backup-config:fw") is StepStatus.FAILED
    assert "unreachable" in (ran.result.results["backup-config:fw"].error or "")
    for link in ("vendor", "internet"):
        res = ran.result.results[f"cut-link:{link}"]
        assert res.status is StepStatus.SKIPPED and res.error == "requires backup-config:fw (failed)"
    assert ran.status("cut-link:wan") is StepStatus.VERIFIED
    assert ran.status("isolate-segment:srv") is StepStatus.VERIFIED
    assert campus.rules["fw"] == set()
    assert ran.result.exit_code == 1


# --------------------------------------------------------------------------------------------
# restore
# --------------------------------------------------------------------------------------------


def test_restore_with_approve_all_journals_every_gate_and_brings_everything_back(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.shut_down()
    plan = build_plan(inventory, Mode.RESTORE)
    ran = execute(inventory, plan, tmp_path, RunOptions(**{**OPTIONS.__dict__, "approve": ApprovalPolicy.ALL}))
    assert ran.result.exit_code == 0, ran.result.left
    approved = ran.of("gate-approved")
    assert [g["gate"] for g in approved] == ALL_GATES
    assert all(g["approver"] == "alice@ward" and g["how"] == "--approve all" and g["summary"] for g in approved)
    assert ran.finished["gate:tier-0"]["evidence"]["approver"] == "alice@ward"
    assert not ran.of("gate-refused")
    # every host is back, every rule gone; the kept host was already running and not touched
    assert all(h.powered and h.ssh_up for h in campus.hosts.values())
    assert all(not rules for rules in campus.rules.values())
    assert ran.result.results["start-host:triage1"].already is True
    assert ("power_on", "triage1") not in campus.log
    assert {e[1] for e in campus.entries("power_on")} == {"ad1", "db1", "app1", "ws1"}
    # hosts start after what they depend on; segments come back after their hosts, links last
    assert campus.index("power_on", "ad1") < campus.index("power_on", "db1") < \
        campus.index("power_on", "app1") < campus.index("power_on", "ws1")
    srv_back = ran.seq("step-started", "reconnect-segment:srv")
    assert ran.seq("step-finished", "check-health:db1") < srv_back
    last_reconnect = max(campus.index("apply", "core", "reconnect-segment", s) for s in ("srv", "clin", "ed"))
    first_link = min(campus.index("apply", d, "restore-link", k)
                     for d, k in (("fw", "vendor"), ("fw", "internet"), ("core", "wan")))
    assert last_reconnect < first_link
    assert [m["name"] for m in ran.of("milestone")] == ["restored"]
    assert ran.result.quarantined == {}


def test_restore_without_approval_refuses_every_gate_and_skips_what_is_behind_it(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.shut_down()
    rules_before = {d: set(r) for d, r in campus.rules.items()}
    plan = build_plan(inventory, Mode.RESTORE)
    ran = execute(inventory, plan, tmp_path)  # OPTIONS.approve is NONE
    refused = ran.of("gate-refused")
    assert [g["gate"] for g in refused] == ALL_GATES
    assert all(g["how"] == "no approval given" for g in refused)
    assert not ran.of("gate-approved")
    for gate in ALL_GATES:
        assert ran.status(gate) is StepStatus.FAILED
        assert "not approved" in (ran.result.results[gate].error or "")
    behind = steps_of(plan, "reconnect-segment:") + steps_of(plan, "restore-link:")
    assert behind
    for step_id in behind:
        res = ran.result.results[step_id]
        assert res.status is StepStatus.SKIPPED, step_id
        assert res.error is not None and res.error.startswith("requires gate:") and "(failed)" in res.error
        assert step_id not in ran.started_ids()
    assert not campus.entries("apply") and campus.rules == rules_before, "nothing was reconnected"
    assert ran.result.exit_code == 1 and not ran.of("milestone")


def test_restore_with_approve_each_asks_the_approver_with_a_summary_at_every_gate(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.shut_down()
    asked: list[tuple[str, str]] = []

    def approver(step: Step, summary: str) -> bool:
        asked.append((step.id, summary))
        return step.id != "gate:links"

    options = RunOptions(**{**OPTIONS.__dict__, "approve": ApprovalPolicy.EACH, "approver": approver})
    ran = execute(inventory, build_plan(inventory, Mode.RESTORE), tmp_path, options)
    assert [gate for gate, _ in asked] == ALL_GATES
    summaries = dict(asked)
    assert summaries["gate:tier-0"] == "tier-0: passed ad1; quarantined none"
    assert summaries["gate:tier-1"] == "tier-1: passed db1, triage1; quarantined none"
    assert summaries["gate:links"] == "restore external links: internet, vendor, wan; quarantined hosts: none"
    approved = ran.of("gate-approved")
    assert [g["gate"] for g in approved] == ALL_GATES[:-1]
    assert all(g["how"] == "--approve each (asked at the gate)" and g["approver"] == "alice@ward" for g in approved)
    assert [(g["gate"], g["summary"]) for g in ran.of("gate-refused")] == [("gate:links", summaries["gate:links"])]
    # segments came back, links stay cut
    assert not any(a == "isolate-segment" for rules in campus.rules.values() for a, _ in rules)
    assert campus.rules["fw"] == {("cut-link", "vendor"), ("cut-link", "internet")}
    for link in ("vendor", "internet", "wan"):
        assert ran.result.results[f"restore-link:{link}"].error == "requires gate:links (failed)"


def test_approve_each_without_an_approver_refuses(inventory: Inventory, campus: FakeCampus, tmp_path: Path) -> None:
    campus.shut_down()
    options = RunOptions(**{**OPTIONS.__dict__, "approve": ApprovalPolicy.EACH})
    ran = execute(inventory, build_plan(inventory, Mode.RESTORE), tmp_path, options)
    assert [g["gate"] for g in ran.of("gate-refused")] == ALL_GATES
    assert not campus.entries("apply")


def test_an_integrity_failure_quarantines_the_host_and_its_segment_returns_only_once_it_is_off(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.shut_down()
    campus.integrity_findings["db1"] = (Difference("files", "/usr/local/bin/updater", "added"),)
    plan = build_plan(inventory, Mode.RESTORE)
    ran = execute(inventory, plan, tmp_path, RunOptions(**{**OPTIONS.__dict__, "approve": ApprovalPolicy.ALL}))
    check = ran.result.results["check-integrity:db1"]
    assert check.status is StepStatus.FAILED and "/usr/local/bin/updater" in (check.error or "")
    assert [(f["host"], f["path"]) for f in ran.of("integrity-finding")] == [("db1", "/usr/local/bin/updater")]
    (quarantine,) = ran.of("quarantine")
    assert quarantine["host"] == "db1" and quarantine["powered_off"] is True
    assert ran.result.quarantined == {"db1": "integrity: files /usr/local/bin/updater"}
    assert check.evidence["quarantine"] == "powered off"
    # powered off hard, and it stays off
    assert ("power_off", "db1", False) in campus.log and not campus.hosts["db1"].powered
    # its segment came back only after it was off
    assert campus.index("power_off", "db1", False) < campus.index("apply", "core", "reconnect-segment", "srv")
    assert ran.status("reconnect-segment:srv") is StepStatus.VERIFIED
    assert ("isolate-segment", "srv") not in campus.rules["core"]
    # what needs db1 never started; those hosts count as off, so their segment came back too
    assert ran.result.results["check-health:db1"].error == "requires check-integrity:db1 (failed)"
    assert ran.result.results["start-host:app1"].error == "requires check-health:db1 (skipped)"
    assert ran.result.results["start-host:ws1"].error == "requires check-health:app1 (skipped)"
    assert not campus.hosts["app1"].powered and not campus.hosts["ws1"].powered
    assert ("power_on", "app1") not in campus.log and ("power_on", "ws1") not in campus.log
    assert ran.status("reconnect-segment:clin") is StepStatus.VERIFIED
    assert ("isolate-segment", "clin") not in campus.rules["core"]
    gate_approvals = {g["gate"]: g["summary"] for g in ran.of("gate-approved")}
    assert gate_approvals["gate:tier-1"] == "tier-1: passed triage1; quarantined db1"
    assert gate_approvals["gate:links"].endswith("quarantined hosts: db1")
    assert ran.result.exit_code == 1 and "restored" not in [m["name"] for m in ran.of("milestone")]


def test_a_quarantined_host_that_cannot_be_powered_off_keeps_its_segment_isolated(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.shut_down()
    campus.integrity_findings["db1"] = (Difference("users", "intruder", "added"),)
    campus.hosts["db1"].power_off_fails = True
    ran = execute(inventory, build_plan(inventory, Mode.RESTORE), tmp_path,
                  RunOptions(**{**OPTIONS.__dict__, "approve": ApprovalPolicy.ALL}))
    assert campus.hosts["db1"].powered, "it started, and could not be powered off again"
    (quarantine,) = ran.of("quarantine")
    assert quarantine["host"] == "db1" and quarantine["powered_off"] is False
    assert ran.result.quarantined == {"db1": "integrity: users intruder"}
    res = ran.result.results["reconnect-segment:srv"]
    assert res.status is StepStatus.FAILED
    assert (res.error or "").startswith("hosts of srv neither passed their checks nor are safely off: db1; ")
    assert "orchestrator attest" in (res.error or "")
    assert res.evidence["why"] == {"db1": "its power driver does not prove it off (power: running, "
                                          "ssh_port_22: not probed (power on))"}
    assert ("isolate-segment", "srv") in campus.rules["core"]
    assert ("apply", "core", "reconnect-segment", "srv") not in campus.log


def test_a_health_failure_quarantines_the_host(inventory: Inventory, campus: FakeCampus, tmp_path: Path) -> None:
    campus.shut_down()
    campus.hosts["db1"].services["db"] = "failed"
    ran = execute(inventory, build_plan(inventory, Mode.RESTORE), tmp_path,
                  RunOptions(**{**OPTIONS.__dict__, "approve": ApprovalPolicy.ALL}))
    res = ran.result.results["check-health:db1"]
    assert res.status is StepStatus.FAILED and res.error == "service db is failed"
    assert res.evidence["services"] == {"db": "failed"}
    assert ran.result.quarantined == {"db1": "health: service db is failed"}
    assert not campus.hosts["db1"].powered
    assert ran.status("reconnect-segment:srv") is StepStatus.VERIFIED


# --------------------------------------------------------------------------------------------
# interruption
# --------------------------------------------------------------------------------------------


def test_a_stop_requested_mid_run_finishes_the_wave_in_flight_and_reaches_nothing_later(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    stop = threading.Event()
    campus.on_stop_hosts = lambda hosts: stop.set() if list(hosts) == ["app1"] else None
    plan = build_plan(inventory, Mode.SHUTDOWN)
    ran = execute(inventory, plan, tmp_path, stop_event=stop)
    assert ran.result.interrupted is True and ran.result.status == "interrupted"
    assert ran.result.exit_code == 1
    assert ran.status("stop-host:app1") is StepStatus.VERIFIED, "the wave in flight finishes"
    assert not campus.hosts["app1"].powered
    for step_id in ("stop-host:db1", "stop-host:ad1", "verify:final"):
        assert step_id not in ran.result.results
        assert step_id not in ran.started_ids()
        assert (step_id, "not reached (run interrupted)") in ran.result.left
    assert campus.hosts["db1"].powered and campus.hosts["ad1"].powered
    assert campus.entries("stop") == [("stop", "ws1"), ("stop", "app1")]
    app1_wave = next(w.index for w in plan.waves if plan.step("stop-host:app1") in w.steps)
    assert [w["wave"] for w in ran.of("wave-started")] == list(range(app1_wave + 1))
    assert [m["name"] for m in ran.of("milestone")] == ["contained"]


def test_a_host_the_stop_driver_refuses_is_failed_never_powered_off_out_of_band(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    plan = build_plan(inventory, Mode.SHUTDOWN)  # planned while ws1 could stop...
    kept = variant(tmp_path, "tier: 3, depends_on: [app1], power: lab",
                   "tier: 3, depends_on: [app1], keep_running: true, power: lab")  # ...now it must keep running
    ran = execute(kept, plan, tmp_path)
    res = ran.result.results["stop-host:ws1"]
    assert res.status is StepStatus.FAILED and res.escalated is False
    assert "interlock" in (res.error or "") and "ws1" in (res.error or "")
    assert not [e for e in campus.entries("power_off") if e[1] == "ws1"]
    assert campus.hosts["ws1"].powered and not ran.of("escalation")


# --------------------------------------------------------------------------------------------
# observers, unproven isolation, quarantined hosts that play dead (issue 12: findings 1, 13, 5)
# --------------------------------------------------------------------------------------------


def test_an_observer_that_raises_is_journaled_once_and_the_run_goes_on(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    seen: list[str] = []

    def fragile_view(record: dict[str, Any]) -> None:
        seen.append(str(record["type"]))
        if record["type"] == "step-finished":
            raise ValueError("closing tag '[/b]' at position 3 doesn't match any open tag")

    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    run_id = "20260113T053200Z-observer"
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True)
    journal = Journal.create(settings.journal_path(run_id), run_id)
    recorder = Recorder(journal, [fragile_view])
    try:
        result = Executor(inventory=inventory, plan=build_plan(inventory, Mode.CONTAIN), settings=settings,
                          run_id=run_id, run_dir=run_dir, recorder=recorder, options=OPTIONS).run()
    finally:
        journal.close()
    records = read_journal(settings.journal_path(run_id))
    assert result.status == "completed", result.left
    (error,) = [r for r in records if r["type"] == "observer-error"]
    assert error["observer"] == "fragile_view" and error["error_type"] == "ValueError"
    assert "[/b]" in error["message"] and error["event_type"] == "step-finished"
    finished = [r for r in records if r["type"] == "step-finished"]
    assert len(finished) == len(build_plan(inventory, Mode.CONTAIN).steps()) > 1
    assert recorder.observer_errors == {"fragile_view": len(finished)}, "every later error is counted"
    assert seen.count("step-finished") == len(finished), "the view still gets every event"


def test_a_failing_journal_still_ends_the_run(inventory: Inventory, campus: FakeCampus, tmp_path: Path) -> None:
    from orchestrator.errors import JournalError

    class BrokenJournal:
        def emit(self, type: str, **fields: Any) -> dict[str, Any]:
            raise JournalError("disk full", target="journal.jsonl")

    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    executor = Executor(inventory=inventory, plan=build_plan(inventory, Mode.CONTAIN), settings=settings,
                        run_id="r", run_dir=tmp_path / "run", recorder=Recorder(BrokenJournal()), options=OPTIONS)
    with pytest.raises(JournalError):
        executor.run()


def test_isolation_of_a_segment_where_no_host_answers_is_unproven_never_verified(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    for name in ("app1", "ws1"):  # every host of clin is off before the containment
        campus.hosts[name].powered = False
    ran = execute(inventory, build_plan(inventory, Mode.CONTAIN), tmp_path)
    res = ran.result.results["isolate-segment:clin"]
    assert res.status is StepStatus.UNPROVEN and not res.ok
    assert "no host of clin answered" in (res.error or "")
    assert res.evidence["rule_in_running_config"] is True and res.evidence["after"]["probe_host"] is None
    assert ran.finished["isolate-segment:clin"]["status"] == "unproven"
    assert ran.status("isolate-segment:srv") is StepStatus.VERIFIED, "segments with a probe host are proven"
    assert ("isolate-segment", "clin") in campus.rules["core"], "the rule is sent all the same"
    assert ran.result.status == "unproven" and ran.result.exit_code == 1
    assert [s for s, _ in ran.result.left] == ["isolate-segment:clin"]
    assert ran.result.left[0][1].startswith("unproven: isolation unproven")
    assert "contained" not in [m["name"] for m in ran.of("milestone")], "containment is not proven"


def test_a_resumed_contain_proves_an_unproven_isolation_once_a_host_answers(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    for name in ("app1", "ws1"):
        campus.hosts[name].powered = False
    plan = build_plan(inventory, Mode.CONTAIN)
    first = execute(inventory, plan, tmp_path)
    assert first.status("isolate-segment:clin") is StepStatus.UNPROVEN
    campus.hosts["app1"].powered = True
    prior = {k: v for k, v in first.result.results.items() if v.ok}
    settings = Settings(state_dir=tmp_path / "state2", state_dir_source="cli", forks=8)
    run_dir = settings.run_dir("again")
    run_dir.mkdir(parents=True)
    journal = Journal.create(settings.journal_path("again"), "again")
    try:
        result = Executor(inventory=inventory, plan=plan, settings=settings, run_id="again", run_dir=run_dir,
                          recorder=Recorder(journal), options=OPTIONS, resume=ResumeState(results=prior)).run()
    finally:
        journal.close()
    assert result.results["isolate-segment:clin"].status is StepStatus.VERIFIED
    assert result.results["isolate-segment:clin"].already is True, "not applied twice"
    assert result.status == "completed"


def _quarantine_without_power_driver(tmp_path: Path, campus: FakeCampus) -> tuple[Inventory, Ran]:
    """db1 has no power driver, runs (contained, never stopped), and fails its integrity check."""
    manual = variant(tmp_path, "tier: 1, depends_on: [ad1], services: [db], power: lab",
                     "tier: 1, depends_on: [ad1], services: [db], power: manual")
    campus.contained()
    campus.integrity_findings["db1"] = (Difference("files", "/usr/local/bin/updater", "added"),)
    ran = execute(manual, build_plan(manual, Mode.RESTORE), tmp_path,
                  RunOptions(**{**OPTIONS.__dict__, "approve": ApprovalPolicy.ALL}))
    return manual, ran


def _again(inventory: Inventory, first: Ran, tmp_path: Path,
           attestations: dict[str, dict[str, Any]] | None = None) -> Ran:
    """The same plan again, as resume does: what was ok is not redone; quarantines carried over."""
    settings = Settings(state_dir=tmp_path / f"state-{next(_run_ids)}", state_dir_source="cli", forks=8)
    run_id = f"20260113T063200Z-again{next(_run_ids):02d}"
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True)
    journal = Journal.create(settings.journal_path(run_id), run_id)
    try:
        result = Executor(inventory=inventory, plan=first.result.plan, settings=settings, run_id=run_id,
                          run_dir=run_dir, recorder=Recorder(journal),
                          options=RunOptions(**{**OPTIONS.__dict__, "approve": ApprovalPolicy.ALL}),
                          resume=ResumeState(results={k: v for k, v in first.result.results.items() if v.ok},
                                             quarantined=first.result.quarantined,
                                             attestations=attestations or {})).run()
    finally:
        journal.close()
    return Ran(result, read_journal(settings.journal_path(run_id)), run_dir)


def test_a_quarantined_host_without_power_driver_that_plays_dead_keeps_its_segment_isolated(
    campus: FakeCampus, tmp_path: Path
) -> None:
    manual, first = _quarantine_without_power_driver(tmp_path, campus)
    assert first.result.quarantined == {"db1": "integrity: files /usr/local/bin/updater"}
    assert first.status("reconnect-segment:srv") is StepStatus.FAILED
    # the compromised host now plays dead: sshd stopped, echo requests dropped, still running
    campus.hosts["db1"].sshd = False
    campus.hosts["db1"].drops_icmp = True
    again = _again(manual, first, tmp_path)
    res = again.result.results["reconnect-segment:srv"]
    assert res.status is StepStatus.FAILED, "SSH closed and no ping is not proof of off"
    assert res.evidence["blocking_hosts"] == ["db1"]
    assert "no power driver can prove it off" in res.evidence["why"]["db1"]
    assert "orchestrator attest" in (res.error or "")
    assert ("isolate-segment", "srv") in campus.rules["core"]
    assert ("apply", "core", "reconnect-segment", "srv") not in campus.log
    assert again.result.exit_code == 1 and not again.of("clearance")


def test_an_attested_disconnection_clears_the_quarantined_host_and_its_segment_comes_back(
    campus: FakeCampus, tmp_path: Path
) -> None:
    manual, first = _quarantine_without_power_driver(tmp_path, campus)
    campus.hosts["db1"].sshd = False
    campus.hosts["db1"].drops_icmp = True
    attestation = {"type": "attestation", "host": "db1", "claim": "physically-disconnected", "by": "Jan Peeters",
                   "reason": "cable pulled at ANT-SRV-SW2 port 14", "operator": "jan@laptop", "seq": 99,
                   "ts": "2026-01-13T10:00:00Z", "evidence": None}
    again = _again(manual, first, tmp_path, attestations={"db1": attestation})
    res = again.result.results["reconnect-segment:srv"]
    assert res.status is StepStatus.VERIFIED
    assert res.evidence["cleared"] == {"db1": "attested by Jan Peeters: physically disconnected, not verified"}
    (clearance,) = again.of("clearance")
    assert clearance["host"] == "db1" and clearance["how"] == "attestation" and clearance["quarantined"] is True
    assert clearance["attestation"]["by"] == "Jan Peeters"
    assert ("isolate-segment", "srv") not in campus.rules["core"]


def test_a_quarantined_host_its_power_driver_proves_off_is_cleared_by_the_power_driver(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    campus.shut_down()
    campus.integrity_findings["db1"] = (Difference("files", "/usr/local/bin/updater", "added"),)
    ran = execute(inventory, build_plan(inventory, Mode.RESTORE), tmp_path,
                  RunOptions(**{**OPTIONS.__dict__, "approve": ApprovalPolicy.ALL}))
    cleared = {r["host"]: r for r in ran.of("clearance")}
    assert cleared["db1"]["how"] == "power-driver" and cleared["db1"]["text"] == "power driver: off"
    assert cleared["db1"]["quarantined"] is True and cleared["db1"]["evidence"]["power"] == "stopped"
    assert ran.result.results["reconnect-segment:srv"].evidence["cleared"]["db1"] == "power driver: off"

"""A run's lifecycle around the executor (orchestrator/runs.py), against the in-memory campus of
tests/fakes.py: refusals before anything is created, the state-dir lock, interruption and resume
from a real journal, what a run took down (``restore --run``) and its summary."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeCampus

from orchestrator.config import Settings
from orchestrator.drivers.netmiko import CommandRejectedError
from orchestrator.errors import LockHeldError, StalePlanError, UsageError
from orchestrator.executor import ApprovalPolicy, RunOptions
from orchestrator.integrity import Difference
from orchestrator.inventory import load_inventory
from orchestrator.journal import read_journal, verify_journal
from orchestrator.lock import RunLock, read_lock
from orchestrator.model import Inventory, Mode, Step, StepStatus
from orchestrator.planner import build_plan
from orchestrator.runs import read_run, resume_run, run_summary, selection_from_run, start_run

FAKE_CAMPUS = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"
OPTIONS = RunOptions(forks=8, operator="alice@ward", stop_timeout_s=1.0, start_timeout_s=1.0,
                     power_off_timeout_s=1.0)
ARGV = ["orchestrator", "shutdown", str(FAKE_CAMPUS), "--yes"]


@pytest.fixture
def inventory() -> Inventory:
    return load_inventory(FAKE_CAMPUS)


@pytest.fixture
def campus(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> FakeCampus:
    return FakeCampus(inventory).install(monkeypatch)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)


def with_options(**changes: Any) -> RunOptions:
    return RunOptions(**{**OPTIONS.__dict__, **changes})


def records(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    return read_journal(settings.journal_path(run_id))


def after_resume(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    at = max(i for i, r in enumerate(recs) if r["type"] == "run-resumed")
    return recs[at:]


def verified_once(recs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in recs:
        if r["type"] == "step-finished" and r["status"] == "verified":
            counts[r["step_id"]] = counts.get(r["step_id"], 0) + 1
    return counts


# --------------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------------


def test_start_run_refuses_a_stale_plan_before_creating_anything(
    inventory: Inventory, campus: FakeCampus, settings: Settings, tmp_path: Path
) -> None:
    plan = build_plan(inventory, Mode.SHUTDOWN)
    changed = tmp_path / "changed.yml"
    changed.write_text(FAKE_CAMPUS.read_text(encoding="utf-8").replace("tier: 3,", "tier: 4,"), encoding="utf-8")
    now = load_inventory(changed)
    assert now.sha256 != plan.inventory_sha256
    with pytest.raises(StalePlanError) as err:
        start_run(now, plan, settings, OPTIONS, argv=ARGV)
    assert err.value.exit_code == 3 and err.value.target == plan.plan_id
    assert "make a new plan" in (err.value.hint or "")
    assert not settings.state_dir.exists(), "no lock, no run directory, no journal"
    assert campus.log == []


def test_a_second_run_is_refused_while_the_lock_is_held(
    inventory: Inventory, campus: FakeCampus, settings: Settings
) -> None:
    plan = build_plan(inventory, Mode.CONTAIN)
    with RunLock(settings.lock_path, "20260113T053000Z-first0", command="shutdown elsewhere"):
        with pytest.raises(LockHeldError) as err:
            start_run(inventory, plan, settings, OPTIONS, argv=ARGV, run_id="20260113T053100Z-second")
        assert "20260113T053000Z-first0" in str(err.value)
    assert not settings.run_dir("20260113T053100Z-second").exists()
    assert campus.log == []
    # and while a run is going on, from inside it
    refused: list[BaseException] = []

    def try_another(record: dict[str, Any]) -> None:
        if record["type"] == "wave-started" and record["wave"] == 0:
            holder = read_lock(settings.lock_path)
            assert holder is not None and holder.run_id == "20260113T053200Z-first1"
            try:
                start_run(inventory, plan, settings, OPTIONS, argv=ARGV, run_id="20260113T053300Z-second")
            except LockHeldError as exc:
                refused.append(exc)

    result = start_run(inventory, plan, settings, OPTIONS, argv=ARGV, run_id="20260113T053200Z-first1",
                       observers=[try_another])
    assert result.exit_code == 0, result.left
    assert len(refused) == 1 and "20260113T053200Z-first1" in str(refused[0])
    assert not settings.run_dir("20260113T053300Z-second").exists()
    assert not settings.lock_path.exists(), "the lock is released when the run ends"


# --------------------------------------------------------------------------------------------
# interruption and resume
# --------------------------------------------------------------------------------------------


def test_an_interrupted_run_resumes_without_redoing_verified_steps(
    inventory: Inventory, campus: FakeCampus, settings: Settings
) -> None:
    stop = threading.Event()
    campus.on_stop_hosts = lambda hosts: stop.set() if list(hosts) == ["app1"] else None
    plan = build_plan(inventory, Mode.SHUTDOWN)
    first = start_run(inventory, plan, settings, OPTIONS, argv=ARGV, stop_event=stop)
    assert first.interrupted and first.status == "interrupted" and first.exit_code == 1
    run_id = first.run_id
    recs = records(settings, run_id)
    assert [r["type"] for r in recs[-2:]] == ["run-interrupted", "run-finished"]
    assert recs[-1]["status"] == "interrupted"
    assert run_summary(settings, run_id)["status"] == "interrupted"
    verified_before = {s for s, r in first.results.items() if r.status is StepStatus.VERIFIED}
    assert "stop-host:app1" in verified_before and "stop-host:db1" not in first.results
    assert not settings.lock_path.exists()
    mark = len(campus.log)

    campus.on_stop_hosts = None
    resumed = resume_run(run_id, settings, OPTIONS)
    assert resumed.status == "completed" and resumed.exit_code == 0, resumed.left
    assert resumed.run_id == run_id
    recs = records(settings, run_id)
    assert verify_journal(settings.journal_path(run_id)).ok
    later = after_resume(recs)
    assert later[0]["verified_before"] == sorted(verified_before)
    started_again = {r["step_id"] for r in later if r["type"] == "step-started"}
    assert started_again == {"stop-host:db1", "stop-host:ad1", "verify:final"}
    assert not started_again & verified_before, "verified steps ran again"
    assert all(n == 1 for n in verified_once(recs).values()), verified_once(recs)
    assert set(verified_once(recs)) == {s.id for s in plan.steps()}
    # the campus saw only what was left: no backup, no device change, the last two stops
    assert campus.log[mark:].count(("stop", "db1")) == 1
    assert [e for e in campus.log[mark:] if e[0] in ("backup", "apply", "stop", "power_off")] == [
        ("stop", "db1"), ("stop", "ad1")]
    assert recs[-1]["type"] == "run-finished" and recs[-1]["status"] == "completed"
    assert [m["name"] for m in recs if m["type"] == "milestone"] == ["contained", "shutdown-complete"]
    state = read_run(settings, run_id)
    assert state.finished is not None and state.finished.status == "completed"
    summary = run_summary(settings, run_id)
    assert summary["status"] == "completed" and summary["left"] == []
    assert summary["time_to_shutdown_s"] is not None
    assert not settings.lock_path.exists()


def test_resume_retries_what_failed_and_only_that(
    inventory: Inventory, campus: FakeCampus, settings: Settings
) -> None:
    campus.device_failures[("core", "cut-link", "wan")] = CommandRejectedError("core", "nft add rule wan", "Error")
    first = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, OPTIONS, argv=ARGV)
    assert first.exit_code == 1 and [s for s, _ in first.left] == ["cut-link:wan"]
    del campus.device_failures[("core", "cut-link", "wan")]
    mark = len(campus.log)
    resumed = resume_run(first.run_id, settings, OPTIONS)
    assert resumed.exit_code == 0, resumed.left
    later = after_resume(records(settings, first.run_id))
    assert "cut-link:wan" in {r["step_id"] for r in later if r["type"] == "step-started"}
    assert [e for e in campus.log[mark:] if e[0] in ("backup", "apply")] == [("apply", "core", "cut-link", "wan")]
    assert ("cut-link", "wan") in campus.rules["core"]


def test_resume_that_completes_containment_records_the_contained_milestone(
    inventory: Inventory, campus: FakeCampus, settings: Settings
) -> None:
    campus.device_failures[("core", "cut-link", "wan")] = CommandRejectedError("core", "nft add rule wan", "Error")
    first = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, OPTIONS, argv=ARGV)
    assert first.time_to_containment_s is None
    del campus.device_failures[("core", "cut-link", "wan")]
    resumed = resume_run(first.run_id, settings, OPTIONS)
    assert resumed.exit_code == 0
    later = after_resume(records(settings, first.run_id))
    assert [m["name"] for m in later if m["type"] == "milestone"] == ["contained"]
    assert resumed.time_to_containment_s is not None
    assert run_summary(settings, first.run_id)["time_to_containment_s"] is not None


def test_resume_verifies_again_what_it_changed(
    inventory: Inventory, campus: FakeCampus, settings: Settings
) -> None:
    campus.device_failures[("core", "cut-link", "wan")] = CommandRejectedError("core", "nft add rule wan", "Error")
    first = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, OPTIONS, argv=ARGV)
    assert first.results["verify:final"].status is StepStatus.VERIFIED  # it checked what had succeeded
    del campus.device_failures[("core", "cut-link", "wan")]
    resume_run(first.run_id, settings, OPTIONS)
    later = after_resume(records(settings, first.run_id))
    final = [r for r in later if r["type"] == "step-finished" and r["step_id"] == "verify:final"]
    assert final, "the final verification ran after the resumed changes"
    assert final[-1]["evidence"]["checked"] == 7  # three cuts, three isolations, the kept host answering


def test_a_resumed_restore_still_knows_its_quarantined_hosts(
    inventory: Inventory, campus: FakeCampus, settings: Settings
) -> None:
    campus.shut_down()
    campus.integrity_findings["db1"] = (Difference("files", "/usr/local/bin/updater", "added"),)
    stop = threading.Event()
    asked: dict[str, str] = {}

    def approver(step: Step, summary: str) -> bool:
        asked[step.id] = summary
        if step.id == "gate:tier-1":
            stop.set()
        return True

    options = with_options(approve=ApprovalPolicy.EACH, approver=approver)
    first = start_run(inventory, build_plan(inventory, Mode.RESTORE), settings, options, argv=ARGV,
                      stop_event=stop)
    assert first.interrupted and first.quarantined == {"db1": "integrity: files /usr/local/bin/updater"}
    assert asked["gate:tier-1"].endswith("quarantined db1")
    resumed = resume_run(first.run_id, settings, options)
    assert not campus.hosts["db1"].powered
    assert "db1" in asked["gate:links"], asked["gate:links"]
    assert resumed.quarantined == {"db1": "integrity: files /usr/local/bin/updater"}
    assert records(settings, first.run_id)[-1]["quarantined"] == resumed.quarantined


# --------------------------------------------------------------------------------------------
# what a run did
# --------------------------------------------------------------------------------------------


@pytest.fixture
def partial_shutdown(inventory: Inventory, campus: FakeCampus, settings: Settings) -> str:
    """A shutdown where the wan cut and clin's isolation are rejected and app1 cannot be powered off
    (so db1 and ad1, which it depends on, are skipped). Returns the run id."""
    campus.device_failures[("core", "cut-link", "wan")] = CommandRejectedError("core", "nft add rule wan", "Error")
    campus.device_failures[("core", "isolate-segment", "clin")] = CommandRejectedError("core", "nft clin", "Error")
    campus.hosts["app1"].ignores_stop = True
    campus.hosts["app1"].power_off_fails = True
    result = start_run(inventory, build_plan(inventory, Mode.SHUTDOWN), settings, OPTIONS, argv=ARGV)
    assert result.exit_code == 1
    return result.run_id


def test_selection_from_run_is_exactly_what_the_run_verified(
    inventory: Inventory, settings: Settings, partial_shutdown: str
) -> None:
    sel = selection_from_run(settings, partial_shutdown, inventory)
    assert sel.links == ("internet", "vendor")  # not wan: its cut failed
    assert sel.segments == ("ed", "srv")  # not clin: its isolation failed
    # ws1 was stopped; ad1 and db1 (srv) and triage1 (ed) are in isolated segments; app1 is neither
    assert sel.hosts == ("ad1", "db1", "triage1", "ws1")
    assert sel.devices == ("core", "fw")
    plan = build_plan(inventory, Mode.RESTORE, selection=sel)
    ids = {s.id for s in plan.steps()}
    assert {i for i in ids if i.startswith(("reconnect-segment:", "restore-link:"))} == {
        "reconnect-segment:ed", "reconnect-segment:srv", "restore-link:internet", "restore-link:vendor"}
    assert "start-host:app1" not in ids and "start-host:ws1" in ids


def test_run_summary_counts_and_lists_what_is_left(settings: Settings, partial_shutdown: str) -> None:
    summary = run_summary(settings, partial_shutdown)
    assert summary["status"] == "failed" and summary["mode"] == "shutdown"
    assert summary["steps"] == 13
    assert summary["counts"] == {"verified": 8, "failed": 3, "skipped": 2}
    assert summary["left"] == [
        {"step_id": "cut-link:wan", "reason": summary["left"][0]["reason"]},
        {"step_id": "isolate-segment:clin", "reason": summary["left"][1]["reason"]},
        {"step_id": "stop-host:app1", "reason": "the host is still not off"},
        {"step_id": "stop-host:db1", "reason": "requires stop-host:app1 (failed)"},
        {"step_id": "stop-host:ad1", "reason": "requires stop-host:db1 (skipped)"},
    ]
    assert summary["left"][0]["reason"].startswith("command-rejected: core: device rejected")
    assert summary["time_to_containment_s"] is None and summary["time_to_shutdown_s"] is None
    assert summary["operator"] == "alice@ward" and summary["site"] == "fake-hospital"
    finished = records(settings, partial_shutdown)[-1]
    assert finished["type"] == "run-finished" and finished["counts"] == summary["counts"]


def test_run_summary_of_a_clean_contain_run(inventory: Inventory, campus: FakeCampus, settings: Settings) -> None:
    result = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, OPTIONS, argv=ARGV)
    summary = run_summary(settings, result.run_id)
    assert summary["status"] == "completed" and summary["left"] == []
    assert summary["counts"] == {"verified": len(result.plan.steps())}
    assert summary["time_to_containment_s"] == result.time_to_containment_s is not None
    assert summary["time_to_shutdown_s"] is None


def test_selection_from_run_names_links_the_inventory_no_longer_has(
    inventory: Inventory, campus: FakeCampus, settings: Settings, tmp_path: Path
) -> None:
    result = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, OPTIONS, argv=ARGV)
    text = FAKE_CAMPUS.read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines(keepends=True) if ln.startswith("  wan:"))
    without_wan = tmp_path / "without-wan.yml"
    without_wan.write_text(text.replace(line, ""), encoding="utf-8")
    with pytest.raises(UsageError) as err:
        selection_from_run(settings, result.run_id, load_inventory(without_wan))
    assert "wan" in str(err.value)

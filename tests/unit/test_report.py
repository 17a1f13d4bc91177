"""The incident report, built from synthetic journals written with the real Journal."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import UsageError
from orchestrator.journal import Journal, read_journal, verify_journal
from orchestrator.model import Inventory
from orchestrator.report import build_report, format_duration, render_report, topology_of

START = datetime(2026, 1, 13, 5, 32, 0, tzinfo=UTC)  # 06:32 in Brussels
RUN_ID = "20260113T053200Z-5a1e00"
RESTORE_RUN_ID = "20260114T080000Z-7e5700"
PASSWORD = "Pl4nted-Passw0rd-xyz"


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def __call__(self) -> datetime:
        return self.now


def _step(
    id: str, requires: tuple[str, ...] = (), tier: int | None = None, device: str | None = None
) -> dict[str, Any]:
    action, target = id.split(":", 1)
    out: dict[str, Any] = {"id": id, "action": action, "target": target, "requires": list(requires), "verify": "..."}
    if tier is not None:
        out["tier"] = tier
    if device is not None:
        out["device"] = device
    return out


def shutdown_plan() -> dict[str, Any]:
    """The shutdown plan of tests/data/small.yml, written out by hand (independent of the planner)."""
    waves = [
        ("contain", [_step("backup-config:ant-core"), _step("backup-config:ant-fw"), _step("backup-config:deu-core")]),
        (
            "contain",
            [
                _step("cut-link:vendor-registration", device="ant-fw"),
                _step("cut-link:internet", device="ant-fw"),
                _step("cut-link:wan-deurne", device="deu-core"),
            ],
        ),
        (
            "contain",
            [
                _step("isolate-segment:ant-servers", device="ant-core"),
                _step("isolate-segment:ant-ed", device="ant-core"),
                _step("isolate-segment:deu-servers", device="deu-core"),
            ],
        ),
        ("shutdown", [_step("stop-host:ant-emr-app1", tier=2), _step("stop-host:deu-ad1", tier=0)]),
        ("shutdown", [_step("stop-host:ant-emr-db1", ("stop-host:ant-emr-app1",), tier=1)]),
        ("shutdown", [_step("stop-host:ant-ad1", ("stop-host:ant-emr-db1", "stop-host:deu-ad1"), tier=0)]),
        ("verify", [_step("verify:final")]),
    ]
    return {
        "schema": "orchestrator.plan/v1",
        "mode": "shutdown",
        "site": "example-hospital",
        "inventory": "tests/data/small.yml",
        "inventory_sha256": "ab" * 32,
        "plan_id": "c0ffee" * 10 + "abcd",
        "scope": {"campuses": [], "segments": [], "hosts": []},
        "kept": {"ant-ed-triage1": "island emergency-department: ED keeps operating at reduced capacity"},
        "waves": [{"index": i, "phase": p, "steps": s} for i, (p, s) in enumerate(waves)],
    }


def _finish(j: Journal, clock: FakeClock, step: dict[str, Any], status: str = "verified", **extra: Any) -> None:
    fields: dict[str, Any] = {
        "changed": status == "verified",
        "already": False,
        "escalated": False,
        "error": None,
        "evidence": {"probe": "ok"},
        "duration_s": 0.0,
    }
    fields.update(extra)
    j.emit("step-finished", step_id=step["id"], action=step["action"], target=step["target"], status=status, **fields)


def write_shutdown_run(
    path: Path, *, failing: bool = True, finish: bool = True, topology: dict[str, Any] | None = None
) -> Path:
    """A shutdown of small.yml. failing: deu-ad1 will not stop, so ant-ad1 is skipped."""
    clock = FakeClock(START)
    plan = shutdown_plan()
    j = Journal.create(path, RUN_ID, secrets=[PASSWORD], clock=clock)
    j.emit(
        "run-started",
        operator="oncall@laptop",
        host="laptop",
        pid=4242,
        argv=["orchestrator", "shutdown", "tests/data/small.yml", "--yes"],
        mode="shutdown",
        plan_id=plan["plan_id"],
        inventory="tests/data/small.yml",
        inventory_sha256="ab" * 32,
        plan=plan,
        scope=plan["scope"],
        site="example-hospital",
        timezone="Europe/Brussels",
        **({"topology": topology} if topology is not None else {}),
    )
    for wave in plan["waves"]:
        clock.advance(0.5)
        j.emit("wave-started", wave=wave["index"], phase=wave["phase"])
        for step in wave["steps"]:
            j.emit("step-started", step_id=step["id"], action=step["action"], target=step["target"], wave=wave["index"])
        for n, step in enumerate(wave["steps"]):
            clock.advance(1.5 + n)
            sid = step["id"]
            if step["action"] in ("cut-link", "isolate-segment"):
                j.emit(
                    "command-sent",
                    step_id=sid,
                    driver="netmiko",
                    target=step["device"],
                    commands=[f"nft add rule inet orchestrator {step['target']} drop", f"enable {PASSWORD}"],
                )
            if sid == "stop-host:deu-ad1" and failing:
                j.emit(
                    "verification",
                    step_id=sid,
                    check="host-off",
                    passed=False,
                    evidence={"ssh": "answers", "password": PASSWORD},
                )
                _finish(
                    j,
                    clock,
                    step,
                    "failed",
                    error="the host is still not off",
                    evidence={"ssh": "10.99.12.10:22 answers", "power": "none"},
                    duration_s=30.0,
                )
            elif sid == "stop-host:ant-ad1" and failing:
                _finish(j, clock, step, "skipped", error="requires stop-host:deu-ad1 (failed)")
            elif sid == "stop-host:ant-emr-db1":
                j.emit(
                    "escalation",
                    step_id=sid,
                    to="out-of-band graceful power off",
                    reason="graceful stop did not finish in time",
                    host="ant-emr-db1",
                )
                clock.advance(4)
                _finish(j, clock, step, escalated=True, duration_s=9.0)
            elif sid == "verify:final" and failing:
                _finish(j, clock, step, "skipped", error="requires nothing failed")
            else:
                _finish(j, clock, step, duration_s=1.5 + n)
        if wave["index"] == 2:
            j.emit("milestone", name="contained", elapsed_s=(clock.now - START).total_seconds())
        if wave["index"] == 5 and not failing:
            j.emit("milestone", name="shutdown-complete", elapsed_s=(clock.now - START).total_seconds())
    if finish:
        clock.advance(1)
        if failing:
            j.emit(
                "run-finished",
                status="failed",
                counts={"verified": 11, "failed": 1, "skipped": 2},
                left=[
                    {"step_id": "stop-host:deu-ad1", "reason": "the host is still not off"},
                    {"step_id": "stop-host:ant-ad1", "reason": "requires stop-host:deu-ad1 (failed)"},
                ],
            )
        else:
            j.emit("run-finished", status="completed", counts={"verified": 14}, left=[])
    j.close()
    return path


def write_restore_run(path: Path) -> Path:
    """A restore: ant-emr-db1 fails integrity (planted binary, extra key) and is quarantined."""
    clock = FakeClock(datetime(2026, 1, 14, 8, 0, tzinfo=UTC))
    hosts = [("ant-ad1", 0), ("deu-ad1", 0), ("ant-emr-db1", 1)]
    waves: list[dict[str, Any]] = []
    for tier in (0, 1):
        names = [h for h, t in hosts if t == tier]
        waves.append({"phase": "restore", "steps": [_step(f"start-host:{h}", tier=tier) for h in names]})
        waves.append(
            {
                "phase": "restore",
                "steps": [_step(f"check-integrity:{h}", tier=tier) for h in names]
                + [_step(f"check-health:{h}", tier=tier) for h in names],
            }
        )
        waves.append({"phase": "restore", "steps": [_step(f"gate:tier-{tier}", tier=tier)]})
    waves.append(
        {
            "phase": "reconnect",
            "steps": [_step("reconnect-segment:deu-servers"), _step("reconnect-segment:ant-servers")],
        }
    )
    plan: dict[str, Any] = {
        "schema": "orchestrator.plan/v1",
        "mode": "restore",
        "site": "example-hospital",
        "plan_id": "r" * 64,
        "kept": {},
        "waves": [{"index": i, **w} for i, w in enumerate(waves)],
    }
    j = Journal.create(path, RESTORE_RUN_ID, clock=clock)
    j.emit(
        "run-started",
        operator="oncall@laptop",
        host="laptop",
        mode="restore",
        plan_id=plan["plan_id"],
        plan=plan,
        site="example-hospital",
        timezone="Europe/Brussels",
        inventory="tests/data/small.yml",
        inventory_sha256="ab" * 32,
        argv=["orchestrator", "restore", "--approve", "all"],
        scope={},
    )
    for wave in plan["waves"]:
        clock.advance(1)
        j.emit("wave-started", wave=wave["index"], phase=wave["phase"])
        for step in wave["steps"]:
            j.emit("step-started", step_id=step["id"], action=step["action"], target=step["target"], wave=wave["index"])
            clock.advance(2)
            if step["id"] == "check-integrity:ant-emr-db1":
                for cat, p in (
                    ("file-added", "/usr/local/bin/update-helper"),
                    ("authorized-key", "/root/.ssh/authorized_keys"),
                ):
                    j.emit("integrity-finding", host="ant-emr-db1", category=cat, path=p, detail="not in the baseline")
                j.emit(
                    "quarantine",
                    host="ant-emr-db1",
                    reason="integrity: file-added /usr/local/bin/update-helper",
                    powered_off=True,
                )
                _finish(j, clock, step, "failed", error="2 differences from the baseline", evidence={"differences": 2})
            elif step["id"] == "check-health:ant-emr-db1":
                _finish(j, clock, step, "skipped", error="requires check-integrity:ant-emr-db1 (failed)")
            elif step["action"] == "gate":
                j.emit(
                    "gate-approved",
                    gate=step["id"],
                    approver="oncall@laptop",
                    how="--approve all",
                    summary="passed ...",
                )
                _finish(j, clock, step)
            else:
                _finish(j, clock, step)
    j.emit(
        "run-finished",
        status="failed",
        counts={"verified": 10, "failed": 1, "skipped": 1},
        left=[{"step_id": "check-integrity:ant-emr-db1", "reason": "2 differences from the baseline"}],
    )
    j.close()
    return path


# --------------------------------------------------------------------------------------------


def test_shutdown_report_times_and_outcomes(tmp_path: Path, small_inventory: Inventory) -> None:
    records = read_journal(write_shutdown_run(tmp_path / "journal.jsonl"))
    r = build_report(records, small_inventory)
    assert r.run_id == RUN_ID and r.mode == "shutdown" and r.status == "failed"
    assert r.site == "example-hospital" and r.operator == "oncall@laptop"
    assert r.started is not None and r.started.utc == "2026-01-13 05:32:00Z"
    assert r.started.local == "2026-01-13 06:32:00 CET"
    assert r.time_to_containment_s == pytest.approx(24.0)
    assert r.time_to_shutdown_s is None
    assert r.counts == {"failed": 1, "skipped": 2, "verified": 11}
    outcome = {h.name: (h.outcome, h.why) for h in r.hosts}
    assert outcome["ant-emr-app1"][0] == "stopped"
    assert outcome["ant-emr-db1"] == (
        "stopped",
        "powered off, verified from outside (escalated to out-of-band power-off)",
    )
    assert outcome["deu-ad1"] == ("failed", "stop failed: the host is still not off")
    assert outcome["ant-ad1"] == ("not-stopped", "not attempted: stop-host:deu-ad1 failed")
    assert outcome["ant-ed-triage1"] == (
        "kept-running",
        "island emergency-department: ED keeps operating at reduced capacity",
    )
    assert [h.name for h in r.kept] == ["ant-ed-triage1"]
    assert [s.step_id for s in r.failures] == ["stop-host:deu-ad1"]
    assert r.failures[0].evidence == {"ssh": "10.99.12.10:22 answers", "power": "none"}
    assert r.failures[0].verifications[0]["passed"] is False
    assert [x["step_id"] for x in r.left] == ["stop-host:deu-ad1", "stop-host:ant-ad1"]
    assert len(r.escalations) == 1 and "out-of-band graceful power off" in r.escalations[0].summary
    assert any(m.startswith("external link vendor-registration (vendor: patient registration") for m in r.measures)
    assert ("ant-emr-db1", "ant-ad1") in r.graph_edges and ("ant-emr-app1", "ant-emr-db1") in r.graph_edges
    steps = {s.step_id: s for s in r.steps}
    assert steps["stop-host:ant-emr-db1"].escalated and steps["stop-host:ant-emr-db1"].duration_s == 9.0
    assert steps["cut-link:internet"].commands[0].startswith("[netmiko] nft add rule")


def test_successful_shutdown_has_both_milestones(tmp_path: Path, small_inventory: Inventory) -> None:
    r = build_report(read_journal(write_shutdown_run(tmp_path / "j.jsonl", failing=False)), small_inventory)
    assert r.status == "completed"
    assert r.time_to_containment_s is not None and r.time_to_shutdown_s is not None
    assert r.time_to_shutdown_s > r.time_to_containment_s
    assert [m.name for m in r.milestones] == ["contained", "shutdown-complete"]
    assert {h.outcome for h in r.hosts} == {"stopped", "kept-running"}
    assert not r.failures and not r.left


def test_nis2_fields_are_prefilled_with_deadlines_and_marked_for_people(
    tmp_path: Path, small_inventory: Inventory
) -> None:
    r = build_report(read_journal(write_shutdown_run(tmp_path / "j.jsonl")), small_inventory)
    sections = {s.key: s for s in r.nis2}
    assert list(sections) == ["early-warning", "incident-notification", "final-report", "personal-data"]
    early, notif, final = sections["early-warning"], sections["incident-notification"], sections["final-report"]
    assert early.due is not None and early.due.utc == "2026-01-14 05:32:00Z"
    assert notif.due is not None and notif.due.utc == "2026-01-16 05:32:00Z"
    assert final.due is not None and final.due.utc == "2026-02-16 05:32:00Z"
    fields = {f.label: f for f in early.fields}
    assert fields["Detection time"].value == "2026-01-13 05:32:00Z (2026-01-13 06:32:00 CET)"
    assert fields["Possible cross-border impact"].value == "unknown"
    assert fields["Possible cross-border impact"].complete_by
    assert "emr-database (postgresql) on ant-emr-db1: down" in fields["Affected services"].value
    assert "vendor-registration" in fields["Containment measures taken"].value
    assert fields["Time to containment"].value == "24.0 s"
    assert fields["Contact point for the CSIRT"].value == "" and fields["Contact point for the CSIRT"].complete_by
    md = render_report(r, "md")
    assert md.count("TO BE COMPLETED BY:") >= 10


def test_detection_time_can_be_given(tmp_path: Path, small_inventory: Inventory) -> None:
    records = read_journal(write_shutdown_run(tmp_path / "j.jsonl"))
    r = build_report(records, small_inventory, detected_at=START - timedelta(hours=2))
    assert r.detected is not None and r.detected.utc == "2026-01-13 03:32:00Z"
    assert r.nis2[0].due is not None and r.nis2[0].due.utc == "2026-01-14 03:32:00Z"


def test_restore_report_names_quarantined_hosts_findings_and_approvals(
    tmp_path: Path, small_inventory: Inventory
) -> None:
    r = build_report(read_journal(write_restore_run(tmp_path / "j.jsonl")), small_inventory)
    assert r.mode == "restore" and r.status == "failed"
    outcome = {h.name: h for h in r.hosts}
    assert outcome["ant-emr-db1"].outcome == "quarantined"
    assert "update-helper" in outcome["ant-emr-db1"].why and "powered off again" in outcome["ant-emr-db1"].why
    assert outcome["ant-ad1"].outcome == "restored" and outcome["deu-ad1"].outcome == "restored"
    assert {(f.host, f.path) for f in r.findings} == {
        ("ant-emr-db1", "/usr/local/bin/update-helper"),
        ("ant-emr-db1", "/root/.ssh/authorized_keys"),
    }
    assert [(a.gate, a.approved, a.approver) for a in r.approvals] == [
        ("gate:tier-0", True, "oncall@laptop"),
        ("gate:tier-1", True, "oncall@laptop"),
    ]
    assert r.approvals[0].at.local.endswith("CET")
    notif = {f.label: f.value for f in r.nis2[1].fields}
    assert "/usr/local/bin/update-helper" in notif["Indicators of compromise"]
    final = {f.label: f.value for f in r.nis2[2].fields}
    assert final["Mitigation measures ongoing; restoration"].startswith("2 host(s) restored, 1 quarantined")
    md = render_report(r, "md")
    assert "| gate:tier-0 | approved | oncall@laptop | --approve all |" in md
    assert "`/root/.ssh/authorized_keys`" in md


def test_report_without_inventory_uses_run_started_topology_or_the_plan(
    tmp_path: Path, small_inventory: Inventory
) -> None:
    with_topology = read_journal(write_shutdown_run(tmp_path / "a.jsonl", topology=topology_of(small_inventory)))
    r = build_report(with_topology, None)
    assert {h.name: h.outcome for h in r.hosts} == {
        h.name: h.outcome for h in build_report(with_topology, small_inventory).hosts
    }
    assert not r.notes
    bare = build_report(read_journal(write_shutdown_run(tmp_path / "b.jsonl")), None)
    assert any("inferred from the plan" in n for n in bare.notes)
    assert ("ant-emr-db1", "ant-ad1") in bare.graph_edges  # read back from the stop order
    assert {h.name for h in bare.hosts} >= {"ant-ad1", "ant-emr-db1", "ant-ed-triage1"}


def test_unfinished_run_is_reported_as_such(tmp_path: Path, small_inventory: Inventory) -> None:
    r = build_report(read_journal(write_shutdown_run(tmp_path / "j.jsonl", finish=False)), small_inventory)
    assert r.status == "unfinished"
    assert any("does not end with run-finished" in n for n in r.notes)
    assert {x["step_id"] for x in r.left} >= {"stop-host:deu-ad1", "stop-host:ant-ad1"}


def test_a_journal_that_does_not_verify_is_flagged(tmp_path: Path, small_inventory: Inventory) -> None:
    path = write_shutdown_run(tmp_path / "j.jsonl")
    lines = path.read_text().splitlines()
    del lines[5]
    path.write_text("\n".join(lines) + "\n")
    r = build_report(read_journal(path), small_inventory, verification=verify_journal(path))
    assert r.journal_ok is False and r.notes[0].startswith("THE JOURNAL DOES NOT VERIFY")
    md = render_report(r, "md")
    assert "DOES NOT VERIFY" in md and "line 6: deleted" in md


def test_renderings(tmp_path: Path, small_inventory: Inventory) -> None:
    path = write_shutdown_run(tmp_path / "j.jsonl")
    r = build_report(read_journal(path), small_inventory, verification=verify_journal(path))
    md = render_report(r, "md")
    assert md.startswith("# Incident report: example-hospital, run " + RUN_ID)
    assert "| **Time to containment** | **24.0 s** |" in md
    assert "| ant-ed-triage1 | **kept-running** |" in md
    assert re.search(
        r"\| 2026-01-13 05:32:00Z \| 2026-01-13 06:32:00 CET \| 0\.0 s \| run started by oncall@laptop", md
    )
    assert "chain verified" in md
    html = render_report(r, "html")
    assert html.startswith("<!DOCTYPE html>")
    assert '<svg id="dependency-graph"' in html and '<svg id="timeline-chart"' in html
    assert html.count('class="step-bar"') == len(r.steps)
    assert html.count('class="edge"') == len(r.graph_edges)
    assert 'class="milestone"' in html
    doc = json.loads(render_report(r, "json"))
    assert doc["schema"] == "orchestrator.report/v1"
    assert doc["time_to_containment_s"] == 24.0
    assert {h["name"] for h in doc["hosts"]} == set(small_inventory.hosts)
    with pytest.raises(UsageError):
        render_report(r, "pdf")


def test_html_is_self_contained(tmp_path: Path, small_inventory: Inventory) -> None:
    html = render_report(build_report(read_journal(write_shutdown_run(tmp_path / "j.jsonl")), small_inventory), "html")
    lowered = html.lower()
    assert "<script" not in lowered and "<link" not in lowered and "<img" not in lowered
    assert "src=" not in lowered and "@import" not in lowered and "url(http" not in lowered
    urls = set(re.findall(r"https?://[^\s\"'<>]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}
    assert "default-src 'none'" in html


def test_same_journal_same_bytes(tmp_path: Path, small_inventory: Inventory) -> None:
    records = read_journal(write_shutdown_run(tmp_path / "j.jsonl"))
    for fmt in ("md", "html", "json"):
        assert render_report(build_report(records, small_inventory), fmt) == render_report(
            build_report(records, small_inventory), fmt
        )


def test_markup_in_journal_values_is_escaped(tmp_path: Path, small_inventory: Inventory) -> None:
    clock = FakeClock(START)
    j = Journal.create(tmp_path / "j.jsonl", RUN_ID, clock=clock)
    plan: dict[str, Any] = {
        "mode": "contain",
        "waves": [{"index": 0, "phase": "contain", "steps": [_step("cut-link:internet")]}],
    }
    j.emit(
        "run-started",
        operator="<script>alert(1)</script>|x",
        mode="contain",
        plan=plan,
        site="s",
        timezone="Europe/Brussels",
    )
    _finish(j, clock, plan["waves"][0]["steps"][0], "failed", error="a | b\nc <b>bold</b>")
    j.close()
    r = build_report(read_journal(tmp_path / "j.jsonl"), small_inventory)
    html = render_report(r, "html")
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;bold" in html
    md = render_report(r, "md")
    assert "a \\| b<br>c" in md


def test_planted_secret_appears_in_no_output(tmp_path: Path, small_inventory: Inventory) -> None:
    path = write_shutdown_run(tmp_path / "j.jsonl")
    assert PASSWORD.encode() not in path.read_bytes()
    r = build_report(read_journal(path), small_inventory)
    for fmt in ("md", "html", "json"):
        assert PASSWORD not in render_report(r, fmt)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0.0 s"), (42.34, "42.3 s"), (185, "3 min 05 s"), (7440, "2 h 04 min")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_unknown_time_zone_falls_back_to_utc(tmp_path: Path) -> None:
    j = Journal.create(tmp_path / "j.jsonl", RUN_ID, clock=FakeClock(START))
    j.emit("run-started", mode="contain", plan={}, site="s", timezone="Mars/Olympus")
    j.close()
    r = build_report(read_journal(tmp_path / "j.jsonl"))
    assert any("Mars/Olympus" in n for n in r.notes)
    assert r.started is not None and r.started.local == "2026-01-13 05:32:00 UTC"


def test_json_report_top_level_keys_are_stable(tmp_path: Path, small_inventory: Inventory) -> None:
    doc = json.loads(
        render_report(build_report(read_journal(write_shutdown_run(tmp_path / "j.jsonl")), small_inventory), "json")
    )
    assert {
        "schema",
        "run_id",
        "site",
        "timezone",
        "mode",
        "status",
        "plan_id",
        "operator",
        "started",
        "finished",
        "detected",
        "time_to_containment_s",
        "time_to_shutdown_s",
        "time_to_restored_s",
        "counts",
        "milestones",
        "timeline",
        "steps",
        "hosts",
        "kept",
        "failures",
        "left",
        "approvals",
        "escalations",
        "findings",
        "measures",
        "affected_services",
        "nis2",
        "graph_nodes",
        "graph_edges",
        "notes",
        "journal_ok",
    } <= set(doc)
    assert set(doc["started"]) == {"iso", "utc", "local", "offset_s"}
    assert set(doc["hosts"][0]) >= {"name", "outcome", "why", "segment", "tier", "evidence"}
    assert set(doc["nis2"][0]) == {"key", "title", "basis", "due", "due_note", "fields"}
    assert set(doc["nis2"][0]["fields"][0]) == {"label", "value", "complete_by", "source"}


def test_dry_runs_and_lab_drills_say_so(tmp_path: Path, small_inventory: Inventory) -> None:
    j = Journal.create(tmp_path / "j.jsonl", RUN_ID, clock=FakeClock(START))
    j.emit(
        "run-started",
        mode="shutdown",
        plan={},
        site="s",
        timezone="UTC",
        dry_run=True,
        topology={**topology_of(small_inventory), "lab": True},
    )
    j.close()
    notes = build_report(read_journal(tmp_path / "j.jsonl")).notes
    assert any(n.startswith("DRY RUN") for n in notes)
    assert any("drill, not an incident" in n for n in notes)


# --------------------------------------------------------------------------------------------
# unproven isolation and how held-back hosts were cleared (issue 12: findings 13 and 5), from real
# executor runs on the in-memory campus of tests/fakes.py
# --------------------------------------------------------------------------------------------


def _fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, shape: Any, inventory_text: str = "",
              attestations: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    from fakes import FakeCampus

    from orchestrator.config import Settings
    from orchestrator.executor import ApprovalPolicy, Executor, Recorder, ResumeState, RunOptions
    from orchestrator.inventory import load_inventory
    from orchestrator.model import Mode
    from orchestrator.planner import build_plan

    source = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"
    path = tmp_path / "campus.yml"
    path.write_text(inventory_text or source.read_text(encoding="utf-8"), encoding="utf-8")
    inventory = load_inventory(path)
    campus = FakeCampus(inventory).install(monkeypatch)
    shape(campus)
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    run_id = "20260113T053200Z-fake01"
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True)
    journal = Journal.create(settings.journal_path(run_id), run_id)
    plan = build_plan(inventory, Mode(mode))
    journal.emit("run-started", operator="alice@ward", mode=mode, plan_id=plan.plan_id, plan=plan.as_dict(),
                 site=inventory.site.name, timezone="Europe/Brussels", topology=topology_of(inventory))
    options = RunOptions(forks=8, operator="alice@ward", stop_timeout_s=1.0, start_timeout_s=1.0,
                         power_off_timeout_s=1.0, approve=ApprovalPolicy.ALL)
    try:
        result = Executor(inventory=inventory, plan=plan, settings=settings, run_id=run_id, run_dir=run_dir,
                          recorder=Recorder(journal), options=options,
                          resume=ResumeState(attestations=attestations or {})).run()
        journal.emit("run-finished", status=result.status, left=[{"step_id": s, "reason": r} for s, r in result.left])
    finally:
        journal.close()
    return read_journal(settings.journal_path(run_id))


def test_an_unproven_isolation_is_reported_as_unproven_never_as_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def clin_off(campus: Any) -> None:
        for name in ("app1", "ws1"):
            campus.hosts[name].powered = False

    report = build_report(_fake_run(tmp_path, monkeypatch, "contain", clin_off))
    assert report.status == "unproven"
    assert [s.step_id for s in report.unproven] == ["isolate-segment:clin"]
    assert report.time_to_containment_s is None, "containment is not proven"
    (measure,) = [m for m in report.measures if "segment clin" in m]
    assert measure.startswith("UNPROVEN: segment clin isolated") and "(verified)" not in measure
    outcomes = {h.name: h for h in report.hosts}
    assert outcomes["app1"].outcome == "isolation-unproven" and "UNPROVEN" in outcomes["app1"].why
    md = render_report(report, "md")
    section = md.split("## Unproven (not verified)", 1)[1].split("##", 1)[0]
    assert "`isolate-segment:clin`" in section and "no host of clin answered" in section
    html = render_report(report, "html")
    assert 'id="unproven"' in html and "isolate-segment:clin" in html.split('id="unproven"', 1)[1].split("<h2", 1)[0]
    doc = json.loads(render_report(report, "json"))
    assert [s["step_id"] for s in doc["unproven"]] == ["isolate-segment:clin"]
    assert {s["step_id"]: s["status"] for s in doc["steps"]}["isolate-segment:clin"] == "unproven"


def test_the_report_says_how_each_held_back_host_was_cleared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = (Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml").read_text(encoding="utf-8")
    manual = source.replace("tier: 1, depends_on: [ad1], services: [db], power: lab",
                            "tier: 1, depends_on: [ad1], services: [db], power: manual")
    assert manual != source

    def tampered(campus: Any) -> None:
        from orchestrator.integrity import Difference

        campus.contained()
        campus.integrity_findings["db1"] = (Difference("files", "/usr/local/bin/updater", "added"),)
        campus.integrity_findings["triage1"] = (Difference("users", "intruder", "added"),)

    attested = {"db1": {"type": "attestation", "host": "db1", "claim": "physically-disconnected",
                        "by": "Jan Peeters", "reason": "cable pulled", "operator": "jan@laptop"}}
    report = build_report(_fake_run(tmp_path, monkeypatch, "restore", tampered, manual, attested))
    cleared = {c.host: c for c in report.clearances}
    assert cleared["db1"].text == "attested by Jan Peeters: physically disconnected, not verified"
    assert cleared["db1"].how == "attestation" and cleared["db1"].quarantined
    assert cleared["triage1"].text == "power driver: off" and cleared["triage1"].how == "power-driver"
    outcomes = {h.name: h for h in report.hosts}
    assert outcomes["db1"].outcome == "quarantined"
    assert outcomes["db1"].why.endswith("cleared for reconnecting segment srv: attested by Jan Peeters: "
                                        "physically disconnected, not verified")
    assert outcomes["triage1"].why.endswith("cleared for reconnecting segment ed: power driver: off")
    for fmt in ("md", "html"):
        text = render_report(report, fmt)
        assert "attested by Jan Peeters: physically disconnected, not verified" in text
        assert "power driver: off" in text
    doc = json.loads(render_report(report, "json"))
    assert {c["host"]: c["text"] for c in doc["clearances"]} == {
        "db1": "attested by Jan Peeters: physically disconnected, not verified", "triage1": "power driver: off"}


def _run_with(path: Path, *emitted: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's journal: run-started, then these records (as their writers write them), then run-finished."""
    clock = FakeClock(START)
    j = Journal.create(path, RUN_ID, clock=clock)
    j.emit("run-started", operator="oncall@laptop", host="laptop", pid=1, argv=["orchestrator"], mode="restore",
           plan_id="c0ffee" * 10 + "abcd", inventory="tests/data/small.yml", inventory_sha256="ab" * 32,
           plan=shutdown_plan(), scope={}, site="example-hospital", timezone="Europe/Brussels", topology=None)
    for kind, fields in emitted:
        clock.advance(1)
        j.emit(kind, **fields)
    j.emit("run-finished", status="failed", counts={}, left=[])
    j.close()
    return read_journal(path)


def test_a_refused_gate_shows_what_was_refused_in_the_approvals(tmp_path: Path) -> None:
    records = _run_with(tmp_path / "j.jsonl", ("gate-refused", {
        "gate": "gate:tier-0", "approver": "oncall@laptop", "how": "no approval given",
        "summary": "tier-0: passed none; quarantined ant-ad1"}))
    (approval,) = build_report(records).approvals
    assert not approval.approved and approval.reason == "tier-0: passed none; quarantined ant-ad1"
    assert "| REFUSED: tier-0: passed none; quarantined ant-ad1 |" in render_report(build_report(records), "md")


def test_a_taken_over_lock_names_its_holder_and_why_it_was_stale(tmp_path: Path) -> None:
    # runs.py journals the stale lock as lock.stale.as_dict(): the holder's fields and the reason, under "holder"
    holder = {"pid": 4242, "host": "laptop", "user": "jan", "run_id": "20260113T050000Z-0ld000",
              "command": "shutdown", "started": "2026-01-13T05:00:00Z", "proc_start": None,
              "reason": "process 4242 no longer exists"}
    r = build_report(_run_with(tmp_path / "j.jsonl", ("lock-taken-over", {"holder": holder})))
    (entry,) = [e for e in r.timeline if e.type == "lock-taken-over"]
    assert entry.summary == "stale run lock taken over (pid 4242: process 4242 no longer exists)"
    assert entry in r.interruptions

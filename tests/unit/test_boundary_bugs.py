"""Bugs found at the untyped boundaries between the executor, the journal, the CLI and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.inventory import load_inventory
from orchestrator.journal import Journal, read_journal
from orchestrator.model import Mode
from orchestrator.planner import build_plan, plan_to_json
from orchestrator.report import build_report, render_report

RUN_ID = "20260113T053200Z-b0a4d0"


def _write_run(state_dir: Path, small_inventory_path: Path, *, refused_gate: bool = False) -> Path:
    inventory = load_inventory(small_inventory_path)
    plan = build_plan(inventory, Mode.SHUTDOWN)
    path = state_dir / "runs" / RUN_ID / "journal.jsonl"
    path.parent.mkdir(parents=True)
    j = Journal.create(path, RUN_ID, secrets=[])
    j.emit("run-started", operator="oncall@laptop", host="laptop", pid=1, argv=["orchestrator"], mode="shutdown",
           plan_id=plan.plan_id, inventory=str(small_inventory_path), inventory_sha256=inventory.sha256,
           plan=json.loads(plan_to_json(plan)), scope={"campuses": [], "segments": [], "hosts": []},
           site="example-hospital", timezone="Europe/Brussels")
    j.emit("milestone", name="contained", elapsed_s=3.9)
    j.emit("milestone", name="shutdown-complete", elapsed_s=20.4)
    if refused_gate:
        j.emit("gate-refused", gate="gate:tier-0", approver="oncall@laptop", how="prompt",
               summary="ant-ad1 differs from its baseline: /usr/bin/sshd")
    j.emit("run-finished", status="completed", counts={}, left=[])
    j.close()
    return path


def test_status_names_both_milestones_in_full(
    tmp_path: Path, small_inventory_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_run(tmp_path, small_inventory_path)
    with pytest.raises(SystemExit) as info:
        main(["--state-dir", str(tmp_path), "status", RUN_ID])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "time to containment: 3.9 s" in out
    assert "time to shutdown: 20.4 s" in out


def test_a_refused_gate_shows_its_reason_in_the_report(tmp_path: Path, small_inventory_path: Path) -> None:
    path = _write_run(tmp_path, small_inventory_path, refused_gate=True)
    report = build_report(read_journal(path))
    md = render_report(report, "md")
    assert "refused by oncall@laptop (prompt): ant-ad1 differs from its baseline: /usr/bin/sshd" in md

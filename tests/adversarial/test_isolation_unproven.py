"""Finding 13: isolation "verified" from the config alone.

When no host of a segment answers, nothing can probe from inside it: the isolation rule is in the
gateway's running config, but no one has seen traffic stop. Such a step is ``unproven`` (the journal's
step result, the progress view, the result, ``status``, the report), never ``verified``, and the run
exits 1 with the step listed in what is left/unproven.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import LAB_YML, finished, orch, records, restore_lab, run_ids, wait_port

from orchestrator import lab
from orchestrator.model import Inventory

SEGMENT = "deu-clinical"


def test_a_scoped_contain_where_no_host_answers_is_unproven_with_exit_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fakes import FakeCampus

    from orchestrator.config import Settings
    from orchestrator.executor import RunOptions
    from orchestrator.inventory import load_inventory
    from orchestrator.model import Mode, Scope
    from orchestrator.planner import build_plan
    from orchestrator.runs import run_summary, selection_from_run, start_run

    inventory = load_inventory(Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml")
    campus = FakeCampus(inventory).install(monkeypatch)
    for name in ("app1", "ws1"):
        campus.hosts[name].powered = False
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    result = start_run(inventory, build_plan(inventory, Mode.CONTAIN, Scope(segments=("clin",))), settings,
                       RunOptions(forks=8, operator="alice@ward"), argv=["orchestrator", "test"])
    assert result.results["isolate-segment:clin"].status.value == "unproven"
    assert result.exit_code == 1 and result.status == "unproven"
    summary = run_summary(settings, result.run_id)
    assert summary["status"] == "unproven" and summary["counts"].get("unproven") == 1
    assert [i["step_id"] for i in summary["left"]] == ["isolate-segment:clin"]
    # the rule is in force all the same: `restore --run` undoes it
    assert selection_from_run(settings, result.run_id, inventory).segments == ("clin",)


# --------------------------------------------------------------------------------------------
# end to end on the lab
# --------------------------------------------------------------------------------------------


@pytest.fixture
def segment_powered_off(lab_up_status: lab.LabStatus, lab_inventory: Inventory) -> Iterator[list[str]]:
    from orchestrator.drivers.power import LabPower

    hosts = [h for h in lab_inventory.hosts_in_segment(SEGMENT)]
    power = LabPower()
    try:
        for host in hosts:
            power.power_off(host.name, graceful=False)
        for host in hosts:
            wait_port(str(host.management_address), 22, up=False, timeout=30)
        yield [h.name for h in hosts]
    finally:
        restore_lab(lab_inventory)


@pytest.mark.lab
def test_a_segment_whose_hosts_are_all_off_is_isolated_but_unproven_never_verified(
    tmp_path: Path, segment_powered_off: list[str]
) -> None:
    state = tmp_path / "state"
    res = orch(state, "shutdown", str(LAB_YML), "--contain-only", "--segment", SEGMENT, "--yes")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "Traceback" not in out
    step = f"isolate-segment:{SEGMENT}"
    (run_id,) = run_ids(state)
    recs = records(state, run_id)
    done = finished(recs)[step]
    assert done["status"] == "unproven", done
    assert done["evidence"]["rule_in_running_config"] is True
    assert done["evidence"]["after"]["probe_host"] is None
    assert recs[-1]["type"] == "run-finished" and recs[-1]["status"] == "unproven"
    assert not [r for r in recs if r["type"] == "milestone" and r["name"] == "contained"]
    # the progress view and the result say so, and list it as left
    assert f"unproven {step}" in " ".join(res.stdout.split()), res.stdout
    assert "UNPROVEN" in res.stdout and f"{step}: unproven: isolation unproven" in res.stdout
    assert "time to containment" not in res.stdout
    # status and the report too
    status = orch(state, "status", run_id)
    assert status.returncode == 0 and "unproven" in status.stdout and step in status.stdout, status.stdout
    report = orch(state, "report", run_id, "--format", "json")
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert doc["status"] == "unproven" and [s["step_id"] for s in doc["unproven"]] == [step]
    assert any(m.startswith(f"UNPROVEN: segment {SEGMENT} isolated") for m in doc["measures"])
    md = orch(state, "report", run_id, "--format", "md").stdout
    assert "## Unproven (not verified)" in md and f"`{step}`" in md.split("## Unproven (not verified)")[1]
    lines = [line for line in md.splitlines() if f"segment {SEGMENT} isolated" in line]
    assert lines and all("UNPROVEN" in line and "(verified)" not in line for line in lines), lines

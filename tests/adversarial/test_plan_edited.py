"""Finding 12: resume and apply never trust files on disk.

* ``apply`` re-plans from the inventory (the plan's mode and scope) and compares: a plan edited to
  drop the config backups, the ``requires`` and the final verification, with its plan_id
  recomputed, is refused (exit 3, "stale or edited plan", naming the steps that differ).
* ``resume`` checks the run's inventory copy against the hash journaled at the start, and uses
  the very bytes it checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeCampus

from orchestrator.config import Settings
from orchestrator.drivers.netmiko import CommandRejectedError
from orchestrator.errors import SafetyInterlock
from orchestrator.executor import RunOptions
from orchestrator.inventory import load_inventory
from orchestrator.model import Inventory, Mode
from orchestrator.planner import build_plan, plan_id_of
from orchestrator.runs import resume_run, start_run

FAKE_CAMPUS = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"
OPTIONS = RunOptions(forks=8, operator="alice@ward", stop_timeout_s=1.0, start_timeout_s=1.0,
                     power_off_timeout_s=1.0)


def orchestrator(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", "--state-dir", str(state), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_plan_edited_to_drop_backups_requires_and_verify_is_refused_by_apply(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    made = orchestrator("plan", str(FAKE_CAMPUS), "--mode", "shutdown", "-o", str(plan_file), "--json",
                        state=tmp_path / "state")
    assert made.returncode == 0, made.stderr
    doc = json.loads(plan_file.read_text())
    doc["waves"] = [w for w in doc["waves"] if w["phase"] != "verify"]
    doc["waves"] = [{**w, "steps": [s for s in w["steps"] if s["action"] != "backup-config"]} for w in doc["waves"]]
    doc["waves"] = [w for w in doc["waves"] if w["steps"]]
    for i, wave in enumerate(doc["waves"]):
        wave["index"] = i
        for step in wave["steps"]:
            step["requires"] = []
    doc["plan_id"] = plan_id_of(doc)  # what an attacker or a hurried engineer would do
    plan_file.write_text(json.dumps(doc, indent=2))
    applied = orchestrator("apply", str(plan_file), "--yes", "--dry-run", state=tmp_path / "state")
    assert applied.returncode == 3, (applied.stdout, applied.stderr)
    assert "stale or edited plan" in applied.stderr
    assert "step backup-config:" in applied.stderr and "is missing" in applied.stderr
    assert not (tmp_path / "state" / "runs").exists(), "refused before any run started"
    # the plan as made is accepted
    made = orchestrator("plan", str(FAKE_CAMPUS), "--mode", "shutdown", "-o", str(plan_file), state=tmp_path / "s2")
    dry = orchestrator("apply", str(plan_file), "--yes", "--dry-run", "--json", state=tmp_path / "state")
    assert "stale or edited plan" not in dry.stderr


@pytest.fixture
def inventory() -> Inventory:
    return load_inventory(FAKE_CAMPUS)


@pytest.fixture
def campus(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> FakeCampus:
    return FakeCampus(inventory).install(monkeypatch)


def test_resume_refuses_an_inventory_copy_changed_after_the_run_started(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    campus.device_failures[("core", "cut-link", "wan")] = CommandRejectedError("core", "nft add rule wan", "Error")
    first = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, OPTIONS, argv=["t"])
    assert first.exit_code == 1
    del campus.device_failures[("core", "cut-link", "wan")]
    copy = settings.run_dir(first.run_id) / "inventory.yml"
    copy.write_text(copy.read_text().replace("tier: 3,", "tier: 4,"))  # still a valid inventory
    mark = len(campus.log)
    with pytest.raises(SafetyInterlock, match="inventory copy was changed after the run started") as err:
        resume_run(first.run_id, settings, OPTIONS)
    assert err.value.exit_code == 3
    assert campus.log[mark:] == [], "nothing was touched"

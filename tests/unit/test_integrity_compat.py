"""The integrity code keeps its contracts with what is already stored and shown: a baseline written
before the refactor into a package still verifies and checks clean, a new one has the same format,
and every finding's text is the same as before (golden files made by the pre-refactor code)."""

from __future__ import annotations

import ipaddress
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.drivers.ssh import CommandResult
from orchestrator.errors import IntegrityError
from orchestrator.integrity import (
    Snapshot,
    capture_baseline,
    check_host,
    diff_snapshots,
    load_baseline,
    parse_collector_output,
)
from orchestrator.model import Credential, Host, Inventory, Site

DATA = Path(__file__).resolve().parents[1] / "data" / "integrity"
GOLDEN: dict[str, Any] = json.loads((DATA / "golden-findings.json").read_text())
SCENARIOS = {s["name"]: s for s in GOLDEN["scenarios"]}
# Fields of a baseline document that differ from one capture to the next.
PER_CAPTURE = ("taken", "duration_s", "signature")


class CannedHost:
    """Answers the collector's "state" part with canned output, the other parts with nothing."""

    def __init__(self, text: str) -> None:
        self.text = text

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        return CommandResult(host, command, 0, self.text if " state" in command else "", "", 0.01)


def _inventory() -> Inventory:
    address = ipaddress.IPv4Address("127.0.0.1")
    host = Host(name="web1", segment="servers", address=address, management_address=address,
                credentials="lab", integrity=("/opt/app",))
    return Inventory(path="test.yml", sha256="0" * 64, site=Site("test"), management_segment="mgmt", campuses={},
                     segments={}, devices={}, links={}, hosts={"web1": host}, islands={},
                     credentials={"lab": Credential(name="lab", username="root")})


@pytest.fixture
def old_state(tmp_path: Path) -> Settings:
    """A state dir holding the key and the baseline the pre-refactor code wrote."""
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli")
    settings.signing_key_path.parent.mkdir(parents=True, mode=0o700)
    shutil.copyfile(DATA / "baseline-signing.key", settings.signing_key_path)
    settings.signing_key_path.chmod(0o600)  # git keeps no mode
    (settings.baselines_dir / "web1").mkdir(parents=True)
    shutil.copyfile(DATA / "baseline-web1.json", settings.baselines_dir / "web1" / "20260101T000000.000000Z.json")
    return settings


def test_a_baseline_written_before_the_refactor_still_verifies_and_checks_clean(old_state: Settings) -> None:
    doc = load_baseline("web1", old_state)
    assert doc == json.loads((DATA / "baseline-web1.json").read_text())
    result = check_host(CannedHost(SCENARIOS["identical"]["baseline_text"]), _inventory(), "web1", old_state)
    assert result.clean and result.baseline_taken == doc["taken"]


def test_a_baseline_written_before_the_refactor_still_names_what_changed(old_state: Settings) -> None:
    scenario = SCENARIOS["files"]
    result = check_host(CannedHost(scenario["current_text"]), _inventory(), "web1", old_state)
    assert [[d.category, d.path, d.detail] for d in result.differences] == scenario["differences"]


def test_an_edited_old_baseline_still_fails_its_signature(old_state: Settings) -> None:
    path = next((old_state.baselines_dir / "web1").glob("*.json"))
    doc = json.loads(path.read_text())
    doc["snapshot"]["users"]["root"]["uid"] = "1"
    path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="its content was changed after signing"):
        load_baseline("web1", old_state)


def test_a_new_baseline_has_the_old_format_field_for_field(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli")
    path = capture_baseline(CannedHost(SCENARIOS["identical"]["baseline_text"]), _inventory(), "web1", settings)
    new, old = json.loads(path.read_text()), json.loads((DATA / "baseline-web1.json").read_text())
    assert {k: v for k, v in new.items() if k not in PER_CAPTURE} == {
        k: v for k, v in old.items() if k not in PER_CAPTURE}
    assert set(new["signature"]) == set(old["signature"]) and new["signature"]["alg"] == old["signature"]["alg"]
    # the same layout on disk: sorted keys, one space of indent, a final newline
    assert path.read_text() == json.dumps(new, sort_keys=True, indent=1) + "\n"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_collectors_output_parses_to_the_same_snapshot(name: str) -> None:
    scenario = SCENARIOS[name]
    baseline, meta = parse_collector_output(scenario["baseline_text"], host="web1")
    assert baseline.as_json() == scenario["baseline_snapshot"] and meta == scenario["baseline_meta"]
    current, _ = parse_collector_output(scenario["current_text"], host="web1")
    assert current.as_json() == scenario["current_snapshot"]
    # and a stored snapshot reads back as the same value
    assert Snapshot.from_json(scenario["baseline_snapshot"]) == baseline


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_finding_keeps_its_text(name: str) -> None:
    scenario = SCENARIOS[name]
    old, _ = parse_collector_output(scenario["baseline_text"], host="web1")
    new, _ = parse_collector_output(scenario["current_text"], host="web1")
    assert [[d.category, d.path, d.detail] for d in diff_snapshots(old, new)] == scenario["differences"]


def test_the_golden_findings_cover_every_category() -> None:
    seen = {category for s in GOLDEN["scenarios"] for category, _path, _detail in s["differences"]}
    assert seen == {"file-added", "file-removed", "file-changed", "package", "package-verify", "user", "group",
                    "authorized_keys", "cron", "timer", "unit", "port", "suid", "collector"}

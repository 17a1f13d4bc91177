"""Finding 11 (local half): the journal's chain is keyed. A journal rewritten with a recomputed
chain, or stripped of its MACs, no longer verifies: `journal verify` names the line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeCampus

from orchestrator.config import Settings
from orchestrator.executor import RunOptions
from orchestrator.inventory import load_inventory
from orchestrator.model import Inventory, Mode
from orchestrator.planner import build_plan
from orchestrator.runs import start_run

FAKE_CAMPUS = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"
OPTIONS = RunOptions(forks=8, operator="alice@ward", stop_timeout_s=1.0, start_timeout_s=1.0,
                     power_off_timeout_s=1.0)


@pytest.fixture
def inventory() -> Inventory:
    return load_inventory(FAKE_CAMPUS)


@pytest.fixture
def campus(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> FakeCampus:
    return FakeCampus(inventory).install(monkeypatch)


def rechain(lines: list[str], strip: set[int]) -> list[str]:
    """What someone with write access but without the key does: recompute every prev, and drop the
    MACs of the lines in ``strip``."""
    out: list[str] = []
    prev = "0" * 64
    for i, line in enumerate(lines):
        record = json.loads(line)
        record["prev"] = prev
        if i in strip:
            record.pop("hmac", None)
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        out.append(text)
        prev = hashlib.sha256(text.encode()).hexdigest()
    return out


def verify(state: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", "--state-dir", str(state), "journal", "verify",
                           run_id], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("strip", ["none", "edited", "all"])
def test_a_rewritten_journal_with_a_recomputed_chain_does_not_verify(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, strip: str
) -> None:
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    result = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, OPTIONS, argv=["t"])
    path = settings.journal_path(result.run_id)
    ok = verify(settings.state_dir, result.run_id)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = path.read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if '"type":"run-started"' in ln)
    lines[at] = lines[at].replace('"operator":"alice@ward"', '"operator":"mallory@ward"')
    stripped = {"none": set(), "edited": {at}, "all": set(range(len(lines)))}[strip]
    path.write_text("\n".join(rechain(lines, stripped)) + "\n")
    bad = verify(settings.state_dir, result.run_id)
    assert bad.returncode == 1, bad.stdout
    out = bad.stdout.replace("\n  ", " ")
    assert "does NOT verify" in out
    expected = {"none": f"line {at + 1}: hmac does not match",
                "edited": f"line {at + 1}: record carries no hmac",
                "all": "no record carries an hmac: the journal is unkeyed"}[strip]
    assert expected in out, out

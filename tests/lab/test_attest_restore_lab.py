"""Issue 15 end to end on the nspawn lab, through the console script: a host without a baseline is named
in the restore's preview, stays up but isolated (its whole segment held), a person vouches for it
(``attest --claim clean``), and the resumed restore reconnects its segment; the report, the journal and
``restore-status`` say "attested", never "verified".

The tests of this module run in order and share one state directory: they tell one restore.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import LAB_YML, finished, last_run_id, orch, records, restore_lab

from orchestrator import lab
from orchestrator.model import Inventory

SEGMENT = "deu-clinical"
UNCHECKABLE = "deu-ws2"  # no baseline is captured for it
CHECKED = ("deu-lab-app1", "deu-ws1")
Run = Callable[..., Any]


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attest-state")


@pytest.fixture(scope="module", autouse=True)
def lab_restored_afterwards(lab_up_status: lab.LabStatus, lab_inventory: Inventory) -> Iterator[None]:
    yield
    restore_lab(lab_inventory)


def reaches_beyond(run: Run, inv: Inventory) -> bool:
    """From inside the segment, a host beyond its gateway answers (the segment is not isolated)."""
    target = str(inv.hosts["deu-lab-db1"].address)
    return bool(run("deu-lab-app1", f"ping -n -q -c 2 -i 0.2 -W 1 {target}", check=False).rc == 0)


def test_the_plan_names_the_host_without_baseline_before_anything_is_powered(state_dir: Path) -> None:
    hosts = [a for h in CHECKED for a in ("--host", h)]
    res = orch(state_dir, "baseline", "capture", LAB_YML, *hosts)
    assert res.returncode == 0, res.stdout + res.stderr
    res = orch(state_dir, "plan", LAB_YML, "--mode", "restore", "--segment", SEGMENT, "--json")
    assert res.returncode == 0, res.stderr
    readiness = json.loads(res.stdout)["readiness"]
    by_host = {h["host"]: h for h in readiness["hosts"]}
    assert by_host[UNCHECKABLE]["integrity"]["proof"] == "attestation-required"
    for host in CHECKED:
        assert by_host[host]["integrity"]["proof"] == "baseline" and by_host[host]["integrity"]["baseline_taken"]
    assert readiness["held_segments"] == {SEGMENT: [UNCHECKABLE]}


def test_the_restore_previews_it_and_holds_its_segment_isolated(
    state_dir: Path, lab_inventory: Inventory, lab_run: Run
) -> None:
    res = orch(state_dir, "shutdown", LAB_YML, "--segment", SEGMENT, "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    shutdown_run = last_run_id(state_dir)
    res = orch(state_dir, "restore", LAB_YML, "--run", shutdown_run, "--approve", "all")
    assert res.returncode == 1, res.stdout + res.stderr
    preview = " ".join(res.stdout.split())
    assert "ATTESTATION REQUIRED: no baseline" in preview
    assert f"stays isolated unless attested: segment {SEGMENT} ({UNCHECKABLE})" in preview
    assert preview.index("ATTESTATION REQUIRED") < preview.index("start-host:"), "said before anything starts"
    run_id = last_run_id(state_dir)
    done = finished(records(state_dir, run_id))
    assert done[f"check-integrity:{UNCHECKABLE}"]["status"] == "failed"
    assert "--claim clean" in done[f"check-integrity:{UNCHECKABLE}"]["error"]
    for host in CHECKED:
        assert done[f"check-integrity:{host}"]["status"] == "verified"
    assert done[f"reconnect-segment:{SEGMENT}"]["status"] == "failed"
    status = {m.name: m.state for m in lab.lab_status(lab_inventory).machines}
    assert status[UNCHECKABLE] == "running", "kept up, isolated, for its health check after the attestation"
    assert not reaches_beyond(lab_run, lab_inventory), "the segment stays isolated"
    board = json.loads(orch(state_dir, "restore-status", LAB_YML, "--json").stdout)
    assert board["run"]["run_id"] == run_id
    rows = {h["host"]: h for t in board["tiers"] for h in t["hosts"]}
    assert rows[UNCHECKABLE]["state"] == "integrity failed"
    segments = {s["segment"]: s for t in board["tiers"] for s in t["segments"]}
    assert UNCHECKABLE in segments[SEGMENT]["blocking"]


def test_attested_then_resumed_the_segment_comes_back_and_says_attested(
    state_dir: Path, lab_inventory: Inventory, lab_run: Run, tmp_path: Path
) -> None:
    run_id = last_run_id(state_dir)
    ticket = tmp_path / "INC-4711.txt"
    ticket.write_text("deu-ws2 reimaged from the 2026-01-10 golden image; EDR full scan clean\n")
    res = orch(state_dir, "attest", run_id, UNCHECKABLE, "--claim", "clean", "--by", "Jan Peeters",
               "--reason", "reimaged from golden image of 2026-01-10, EDR scan clean", "--evidence", ticket)
    assert res.returncode == 0, res.stdout + res.stderr
    res = orch(state_dir, "resume", run_id, "--approve", "all")
    assert res.returncode == 1, res.stdout + res.stderr  # completed, but not everything verified: "unproven"
    assert "ATTESTED" in res.stdout and "unproven" in res.stdout
    done = finished(records(state_dir, run_id))
    integrity = done[f"check-integrity:{UNCHECKABLE}"]
    assert integrity["status"] == "attested"
    assert integrity["error"].startswith("attested by Jan Peeters, not verified")
    assert done[f"check-health:{UNCHECKABLE}"]["status"] == "verified"
    assert done[f"reconnect-segment:{SEGMENT}"]["status"] == "verified"
    assert reaches_beyond(lab_run, lab_inventory), "the segment is reconnected"
    assert orch(state_dir, "journal", "verify", run_id).returncode == 0

    md = orch(state_dir, "report", run_id, "--format", "md").stdout
    row = next(line for line in md.splitlines() if re.match(rf"\| \d+ \| {UNCHECKABLE} \|", line))
    assert "**ATTESTED**: attested by Jan Peeters, not verified" in row
    for host in CHECKED:
        other = next(line for line in md.splitlines() if re.match(rf"\| \d+ \| {host} \|", line))
        assert "| verified |" in other and "ATTESTED" not in other
    html = orch(state_dir, "report", run_id, "--format", "html").stdout
    cell = html.split(f'id="evidence-{UNCHECKABLE}"', 1)[1].split("</tr>", 1)[0]
    assert 'class="attested">ATTESTED</b>' in cell and "Jan Peeters" in cell
    board = json.loads(orch(state_dir, "restore-status", LAB_YML, "--json").stdout)
    rows = {h["host"]: h for t in board["tiers"] for h in t["hosts"]}
    assert rows[UNCHECKABLE]["state"] == "reconnected" and rows[UNCHECKABLE]["integrity"] == "attested"

"""Finding 5: a compromised host cannot get its segment reconnected by playing dead.

A host without a power driver that fails integrity cannot be powered off by the quarantine; the
readiness check used to accept "SSH closed and no ping" as off, which the host itself controls (stop
sshd, drop echo requests, keep running). Now a segment holding such a host comes back only when a
power driver proves the host off, or an operator attests its physical disconnection
(``orchestrator attest``, journaled with who, when, why, and the evidence's SHA-256); the report
says which. Without either the segment stays isolated, the step fails saying why, and restore exits 1.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import finished, lab_variant, orch, records, restore_lab, run_ids, wait_port
from rich.console import Console

from orchestrator import cli, lab
from orchestrator.model import Action, Inventory

ATTESTER = "Jan Peeters"
CLEARED_BY_ATTESTATION = f"attested by {ATTESTER}: physically disconnected, not verified"


def test_a_quarantined_host_playing_dead_keeps_its_segment_isolated_until_attested(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same story as the lab test below, on the in-memory campus, through runs and the CLI's attest."""
    from fakes import FakeCampus

    from orchestrator.config import Settings
    from orchestrator.executor import ApprovalPolicy, RunOptions
    from orchestrator.integrity import Difference
    from orchestrator.inventory import load_inventory
    from orchestrator.model import Mode
    from orchestrator.planner import build_plan
    from orchestrator.report import build_report, render_report
    from orchestrator.runs import resume_run, start_run

    source = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"
    manual = tmp_path / "campus.yml"
    text = source.read_text(encoding="utf-8")
    old = "tier: 1, depends_on: [ad1], services: [db], power: lab"
    assert text.count(old) == 1
    manual.write_text(text.replace(old, "tier: 1, depends_on: [ad1], services: [db], power: manual"))
    inventory = load_inventory(manual)
    campus = FakeCampus(inventory).install(monkeypatch)
    campus.contained()  # isolated, every host running
    campus.integrity_findings["db1"] = (Difference("files", "/usr/local/bin/updater", "added"),)
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    options = RunOptions(forks=8, operator="alice@ward", stop_timeout_s=1.0, start_timeout_s=1.0,
                         power_off_timeout_s=1.0, approve=ApprovalPolicy.ALL)
    first = start_run(inventory, build_plan(inventory, Mode.RESTORE), settings, options, argv=["orchestrator"])
    assert first.quarantined == {"db1": "integrity: files /usr/local/bin/updater"}
    assert first.results["reconnect-segment:srv"].status.value == "failed"
    # the compromised host plays dead: sshd stopped, echo requests dropped, still running
    campus.hosts["db1"].sshd = False
    campus.hosts["db1"].drops_icmp = True
    again = resume_run(first.run_id, settings, options)
    res = again.results["reconnect-segment:srv"]
    assert res.status.value == "failed", "SSH closed and no ping must not reconnect the segment"
    assert "orchestrator attest" in (res.error or "") and again.exit_code == 1
    assert ("isolate-segment", "srv") in campus.rules["core"]
    # an operator attests the physical disconnection, with evidence
    evidence = tmp_path / "photo.jpg"
    evidence.write_bytes(b"\xff\xd8 a photo of the pulled cable")
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=100))
    with pytest.raises(SystemExit) as info:
        cli.main(["--state-dir", str(settings.state_dir), "attest", first.run_id, "db1", "--by", ATTESTER,
                  "--reason", "cable pulled at ANT-SRV-SW2 port 14", "--evidence", str(evidence)])
    assert info.value.code == 0, out.getvalue()
    assert hashlib.sha256(evidence.read_bytes()).hexdigest() in out.getvalue()
    final = resume_run(first.run_id, settings, options)
    assert final.results["reconnect-segment:srv"].status.value == "verified"
    assert ("isolate-segment", "srv") not in campus.rules["core"]
    assert final.exit_code == 1, "the quarantined host is still left (not verified)"
    from orchestrator.journal import read_journal

    recs = read_journal(settings.journal_path(first.run_id))
    (attestation,) = [r for r in recs if r["type"] == "attestation"]
    assert attestation["by"] == ATTESTER and attestation["claim"] == "physically-disconnected"
    assert attestation["evidence"]["sha256"] == hashlib.sha256(evidence.read_bytes()).hexdigest()
    assert attestation["operator"] and attestation["reason"] == "cable pulled at ANT-SRV-SW2 port 14"
    (clearance,) = [r for r in recs if r["type"] == "clearance" and r["host"] == "db1"]
    assert clearance["text"] == CLEARED_BY_ATTESTATION
    md = render_report(build_report(recs, inventory), "md")
    assert CLEARED_BY_ATTESTATION in md


# --------------------------------------------------------------------------------------------
# end to end on the lab
# --------------------------------------------------------------------------------------------

HOST = "deu-ws2"
SEGMENT = "deu-clinical"
IMPLANT = "/usr/local/bin/orchestrator-test-playdead"
PLAY_DEAD = (
    "nft add table inet playdead && "
    "nft add chain inet playdead input '{ type filter hook input priority -20; policy accept; }' && "
    "nft add rule inet playdead input icmp type echo-request drop && "
    "(systemctl stop ssh.socket ssh.service 2>/dev/null; systemctl stop ssh; true)"
)


def _isolated(inv: Inventory) -> bool:
    from orchestrator.drivers.netmiko import NetmikoDriver

    net = NetmikoDriver(inv)
    try:
        return bool(net.is_in_force("deu-core", Action.ISOLATE_SEGMENT, SEGMENT))
    finally:
        net.close()


def _pings(address: str) -> bool:
    return subprocess.run(["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", address],
                          capture_output=True, check=False).returncode == 0


@pytest.fixture
def lab_put_back(lab_up_status: lab.LabStatus, lab_inventory: Inventory, lab_run: Callable[..., Any]) -> Iterator[None]:
    yield
    restore_lab(lab_inventory, power_cycle=(HOST,))  # gone: the stopped sshd and the nft table
    lab_run(HOST, f"rm -f {IMPLANT}")


@pytest.mark.lab
def test_a_lab_host_without_power_driver_playing_dead_stays_isolated_until_attested_then_resume_reconnects(
    tmp_path: Path, lab_inventory: Inventory, lab_run: Callable[..., Any], lab_put_back: None
) -> None:
    from orchestrator.drivers.power import LabPower

    variant = lab_variant(tmp_path, "lab-no-power.yml", (
        "depends_on: [deu-files1], services: [ssh],\n                 power: lab, credentials: lab}",
        "depends_on: [deu-files1], services: [ssh],\n                 credentials: lab}"))
    state = tmp_path / "state"
    res = orch(state, "baseline", "capture", str(variant), "--segment", SEGMENT)
    assert res.returncode == 0, res.stdout + res.stderr
    res = orch(state, "shutdown", str(variant), "--contain-only", "--segment", SEGMENT, "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    contain_run = run_ids(state)[-1]
    lab_run(HOST, f"printf '#!/bin/sh\\nexit 0\\n' > {IMPLANT} && chmod 755 {IMPLANT}")

    # 1. restore: the tampered host is quarantined but cannot be powered off; it still answers
    res = orch(state, "restore", str(variant), "--run", contain_run, "--approve", "all")
    assert res.returncode == 1, res.stdout + res.stderr
    restore_run = run_ids(state)[-1]
    recs = records(state, restore_run)
    (quarantine,) = [r for r in recs if r["type"] == "quarantine"]
    assert quarantine["host"] == HOST and quarantine["powered_off"] is False
    assert finished(recs)[f"reconnect-segment:{SEGMENT}"]["status"] == "failed"
    assert _isolated(lab_inventory)

    # 2. it plays dead: sshd stopped, echo requests dropped, the machine still running
    lab_run(HOST, PLAY_DEAD, check=False)
    address = str(lab_inventory.hosts[HOST].management_address)
    wait_port(address, 22, up=False, timeout=20)
    assert not _pings(address)
    assert LabPower().state(HOST) == "running"
    res = orch(state, "resume", restore_run)
    assert res.returncode == 1, res.stdout + res.stderr
    step = finished(records(state, restore_run)[len(recs):])[f"reconnect-segment:{SEGMENT}"]
    assert step["status"] == "failed", "playing dead must not reconnect the segment"
    assert step["evidence"]["blocking_hosts"] == [HOST]
    assert "orchestrator attest" in step["error"]
    assert _isolated(lab_inventory), "the segment stays isolated"

    # 3. an operator attests the physical disconnection; the resumed restore reconnects the segment
    evidence = tmp_path / "ticket.txt"
    evidence.write_text("INC-4711: patch cable of deu-ws2 pulled at DEU-SW1 port 7, 10:04\n")
    res = orch(state, "attest", restore_run, HOST, "--by", ATTESTER, "--reason", "cable pulled at DEU-SW1 port 7",
               "--evidence", str(evidence))
    assert res.returncode == 0, res.stdout + res.stderr
    assert hashlib.sha256(evidence.read_bytes()).hexdigest() in res.stdout
    before = len(records(state, restore_run))
    res = orch(state, "resume", restore_run)
    assert res.returncode == 1, "the quarantined host is still left: " + res.stdout + res.stderr
    after = records(state, restore_run)[before:]
    assert finished(after)[f"reconnect-segment:{SEGMENT}"]["status"] == "verified", res.stdout
    assert not _isolated(lab_inventory)
    (clearance,) = [r for r in after if r["type"] == "clearance"]
    assert clearance["host"] == HOST and clearance["text"] == CLEARED_BY_ATTESTATION
    assert orch(state, "journal", "verify", restore_run).returncode == 0
    for fmt in ("md", "html", "json"):
        rep = orch(state, "report", restore_run, "--format", fmt)
        assert rep.returncode == 0 and CLEARED_BY_ATTESTATION in rep.stdout, rep.stderr

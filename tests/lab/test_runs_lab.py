"""End to end through the console script, judged from outside: contain, escalate to shutdown, staged
restore with a tampered host, restore of exactly one run, escalation when sshd is gone, a rejected
device command, SIGKILL and resume, secrets never written.

The tests of this module run in order and share one state directory: they tell one incident.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    CLI,
    LAB_YML,
    REPO,
    finished,
    last_run_id,
    orch,
    records,
    restore_lab,
    wait_port,
    write_lab_copy,
)

from orchestrator import lab
from orchestrator.drivers.power import LabPower
from orchestrator.model import Inventory

TAMPERED = "ant-ws1"
PLANTED_BINARY = "/usr/local/bin/updater"
Run = Callable[..., Any]


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module", autouse=True)
def lab_restored_afterwards(lab_up_status: lab.LabStatus, lab_inventory: Inventory) -> Iterator[None]:
    """Leave the lab as found: every machine running, no isolation or cut in force."""
    yield
    restore_lab(lab_inventory)


def pings(run: Run, machine: str, address: str) -> bool:
    return bool(run(machine, f"ping -n -q -c 2 -i 0.2 -W 1 {address}", check=False).rc == 0)


def host_addr(inv: Inventory, name: str) -> str:
    return str(inv.hosts[name].address)


# --------------------------------------------------------------------------------------------


def test_restore_refuses_without_approval_and_without_a_terminal(state_dir: Path) -> None:
    res = orch(state_dir, "restore", LAB_YML)
    assert res.returncode == 3, res.stderr
    assert "--approve" in res.stderr
    assert not (state_dir / "runs").exists(), "nothing may be started when refused"


def test_baseline_then_tampering_is_named_by_integrity_check(state_dir: Path, lab_run: Run) -> None:
    res = orch(state_dir, "baseline", "capture", LAB_YML)
    assert res.returncode == 0, res.stdout + res.stderr
    lab_run(TAMPERED, f"printf '#!/bin/sh\\nexit 0\\n' > {PLANTED_BINARY} && chmod 755 {PLANTED_BINARY}")
    intruder = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake intruder"
    lab_run(TAMPERED, f"echo '{intruder}' >> /root/.ssh/authorized_keys")
    res = orch(state_dir, "integrity", "check", LAB_YML, "--host", TAMPERED)
    assert res.returncode == 1, res.stdout + res.stderr
    assert PLANTED_BINARY in res.stdout
    assert "/root/.ssh/authorized_keys" in res.stdout
    clean = orch(state_dir, "integrity", "check", LAB_YML, "--host", "ant-portal1")
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_contain_only_isolates_every_segment_and_cuts_the_vendor_without_powering_off(
    state_dir: Path, lab_run: Run, lab_inventory: Inventory
) -> None:
    res = orch(state_dir, "shutdown", LAB_YML, "--contain-only", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "time to containment" in res.stdout
    inv = lab_inventory
    # cisco_ios (FRR) gateway: ant-servers can no longer reach across ant-core, but reaches itself
    assert not pings(lab_run, "ant-ad1", host_addr(inv, "deu-ad1"))
    assert not pings(lab_run, "ant-ad1", host_addr(inv, "ant-portal1"))
    assert pings(lab_run, "ant-ad1", host_addr(inv, "ant-ad2"))
    # linux gateway: deu-clinical likewise across deu-core
    assert not pings(lab_run, "deu-lab-app1", host_addr(inv, "deu-lab-db1"))
    assert pings(lab_run, "deu-lab-app1", host_addr(inv, "deu-ws1"))
    # the vendor is cut off, even from the ED that keeps running
    assert not pings(lab_run, "vendor-registration", host_addr(inv, "ant-ed-triage1"))
    # management still reaches every host, and nothing was powered off
    status = lab.lab_status(inv)
    assert all(m.state == "running" for m in status.machines)
    for name in inv.hosts:
        assert lab_run(name, "true").rc == 0
    run_id = last_run_id(state_dir)
    assert orch(state_dir, "journal", "verify", run_id).returncode == 0


def test_escalating_to_shutdown_verifies_containment_and_powers_off_in_order(
    state_dir: Path, lab_inventory: Inventory, lab_run: Run
) -> None:
    contain_run = last_run_id(state_dir)
    res = orch(state_dir, "shutdown", LAB_YML, "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "time to shutdown" in res.stdout
    run_id = last_run_id(state_dir)
    assert run_id != contain_run
    recs = records(state_dir, run_id)
    done = finished(recs)
    for step_id, rec in done.items():
        if step_id.startswith(("cut-link:", "isolate-segment:")):
            assert rec["already"] is True, f"{step_id} was applied twice"
    sent = {r["step_id"] for r in recs if r["type"] == "command-sent"}
    assert not any(s.startswith(("cut-link:", "isolate-segment:")) for s in sent)
    kept = lab_inventory.keep_reasons()
    status = {m.name: m for m in lab.lab_status(lab_inventory).machines}
    for name, host in lab_inventory.hosts.items():
        if name in kept:
            assert status[name].state == "running"
            assert lab_run(name, "true").rc == 0
        else:
            assert status[name].state == "stopped", name
            with pytest.raises(OSError):
                import socket

                socket.create_connection((str(host.management_address), 22), timeout=1).close()
    # stop order: a host stopped after every host that depends on it
    order = [r["step_id"].split(":", 1)[1] for r in recs
             if r["type"] == "step-finished" and r["step_id"].startswith("stop-host:")]
    assert order.index("ant-emr-app1") < order.index("ant-emr-db1") < order.index("ant-ad1")


def test_staged_restore_quarantines_the_tampered_host_and_brings_the_rest_back(
    state_dir: Path, lab_inventory: Inventory, lab_run: Run
) -> None:
    res = orch(state_dir, "restore", LAB_YML, "--approve", "all")
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert TAMPERED in out and PLANTED_BINARY in out and "/root/.ssh/authorized_keys" in out
    run_id = last_run_id(state_dir)
    recs = records(state_dir, run_id)
    assert any(r["type"] == "gate-approved" and r["approver"] for r in recs)
    findings = {r["path"] for r in recs if r["type"] == "integrity-finding" and r["host"] == TAMPERED}
    assert {PLANTED_BINARY, "/root/.ssh/authorized_keys"} <= findings
    status = {m.name: m.state for m in lab.lab_status(lab_inventory).machines}
    assert status[TAMPERED] == "stopped", "a tampered host stays quarantined (off)"
    inv = lab_inventory
    for name, host in inv.hosts.items():
        if name == TAMPERED:
            continue
        assert status[name] == "running", name
        for dep in host.depends_on:
            assert pings(lab_run, name, host_addr(inv, dep)), f"{name} cannot reach its dependency {dep}"
    assert pings(lab_run, "vendor-registration", host_addr(inv, "ant-ed-triage1")), "links come back last"
    assert orch(state_dir, "journal", "verify", run_id).returncode == 0
    # clean the tampered host for the next tests: power on, remove what was planted, re-baseline
    LabPower().power_on(TAMPERED)
    wait_port(str(inv.hosts[TAMPERED].management_address), 22, up=True)
    time.sleep(1.0)
    lab_run(TAMPERED, f"rm -f {PLANTED_BINARY} && sed -i '/intruder/d' /root/.ssh/authorized_keys")
    assert orch(state_dir, "integrity", "check", LAB_YML, "--host", TAMPERED).returncode == 0


def test_restore_of_a_contain_only_run_reconnects_without_powering_anything(
    state_dir: Path, lab_inventory: Inventory, lab_run: Run
) -> None:
    inv = lab_inventory
    res = orch(state_dir, "shutdown", LAB_YML, "--contain-only", "--campus", "deurne", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    contain_run = last_run_id(state_dir)
    assert not pings(lab_run, "deu-lab-app1", host_addr(inv, "deu-lab-db1"))
    boot_ids = {h: lab_run(h, "cat /proc/sys/kernel/random/boot_id").stdout for h in ("deu-ad1", "deu-ws1")}
    res = orch(state_dir, "restore", LAB_YML, "--run", contain_run, "--approve", "all")
    assert res.returncode == 0, res.stdout + res.stderr
    recs = records(state_dir, last_run_id(state_dir))
    done = finished(recs)
    assert {s for s in done if s.startswith("reconnect-segment:")} == {
        "reconnect-segment:deu-clinical", "reconnect-segment:deu-servers"}
    assert all(r["already"] for s, r in done.items() if s.startswith("start-host:")), "nothing was powered"
    assert not any(r["type"] == "command-sent" and str(r.get("driver", "")).startswith("power") for r in recs)
    assert pings(lab_run, "deu-lab-app1", host_addr(inv, "deu-lab-db1"))
    for host, boot_id in boot_ids.items():
        assert lab_run(host, "cat /proc/sys/kernel/random/boot_id").stdout == boot_id, f"{host} rebooted"


def test_a_host_whose_sshd_is_gone_is_escalated_to_power_off(
    state_dir: Path, lab_inventory: Inventory, lab_run: Run
) -> None:
    victim = "deu-ws2"
    lab_run(victim, "systemctl stop ssh.socket ssh.service 2>/dev/null; systemctl stop ssh; true", check=False)
    wait_port(str(lab_inventory.hosts[victim].management_address), 22, up=False, timeout=20)
    res = orch(state_dir, "shutdown", LAB_YML, "--host", victim, "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    recs = records(state_dir, last_run_id(state_dir))
    assert finished(recs)[f"stop-host:{victim}"]["escalated"] is True
    assert any(r["type"] == "escalation" and r["host"] == victim for r in recs)
    assert LabPower().state(victim) == "stopped"
    restore_lab(lab_inventory)


def test_a_rejected_device_command_fails_its_step_with_evidence_and_skips_its_dependents(
    state_dir: Path, lab_inventory: Inventory, lab_run: Run, tmp_path: Path
) -> None:
    """A variant of the lab inventory: the FRR core is told to cut a link with an ACL (FRR refuses
    it), and one host has no power driver and no sshd (nothing can prove it off)."""
    text = Path(LAB_YML).read_text()
    text = text.replace(
        "ant-core: {campus: antwerp, platform: cisco_ios, address: 10.99.1.1, role: core, credentials: netops}",
        "ant-core: {campus: antwerp, platform: cisco_ios, address: 10.99.1.1, role: core, credentials: netops,\n"
        "             vars: {cut_link_method: acl}}")
    text = text.replace("links:\n", "links:\n  partner-lab: {kind: partner, device: ant-core, peer: 10.210.0.0/24, "
                                     "interface: vlan150}\n", 1)
    text = text.replace("role: emr-app, tier: 2, depends_on: [ant-emr-db1, ant-ad1], services: [ssh, emr-app],\n"
                        "                 vars: {service_ports: {emr-app: 8080}}, power: lab,",
                        "role: emr-app, tier: 2, depends_on: [ant-emr-db1, ant-ad1], services: [ssh, emr-app],\n"
                        "                 vars: {service_ports: {emr-app: 8080}}, power: manual,")
    assert "power: manual" in text and "partner-lab" in text and "cut_link_method" in text
    variant = write_lab_copy(tmp_path / "lab-variant.yml", text)
    # 1. FRR rejects the ACL: the cut fails with the device's own words; the rest goes on
    res = orch(state_dir, "shutdown", str(variant), "--contain-only", "--campus", "antwerp", "--yes")
    assert res.returncode == 1, res.stdout + res.stderr
    done = finished(records(state_dir, last_run_id(state_dir)))
    cut = done["cut-link:partner-lab"]
    assert cut["status"] == "failed" and "Unknown command" in json.dumps(cut), cut
    assert done["isolate-segment:ant-servers"]["status"] == "verified"
    assert "cut-link:partner-lab" in res.stdout and "left undone" in res.stdout
    restore_lab(lab_inventory)
    # 2. a host nothing can prove off fails its step; the host it depends on is not attempted
    lab_run("ant-emr-app1", "systemctl stop ssh.socket ssh.service 2>/dev/null; systemctl stop ssh; true", check=False)
    wait_port(str(lab_inventory.hosts["ant-emr-app1"].management_address), 22, up=False, timeout=20)
    res = orch(state_dir, "shutdown", str(variant), "--host", "ant-emr-app1", "--host", "ant-emr-db1", "--yes")
    assert res.returncode == 1, res.stdout + res.stderr
    done = finished(records(state_dir, last_run_id(state_dir)))
    assert done["stop-host:ant-emr-app1"]["status"] == "failed", done["stop-host:ant-emr-app1"]
    assert done["stop-host:ant-emr-db1"]["status"] == "skipped"
    assert "stop-host:ant-emr-app1" in done["stop-host:ant-emr-db1"]["error"]
    assert LabPower().state("ant-emr-db1") == "running", "a skipped step touched nothing"
    LabPower().power_off("ant-emr-app1", graceful=False)
    restore_lab(lab_inventory)


def test_sigkill_mid_wave_then_resume_completes_without_redoing_verified_steps(
    state_dir: Path, lab_inventory: Inventory
) -> None:
    env = {**os.environ, "ORCHESTRATOR_STATE_DIR": str(state_dir)}
    runs = state_dir / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    proc = subprocess.Popen([CLI, "shutdown", LAB_YML, "--campus", "deurne", "--yes", "--json"], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    killed = False
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("type") == "step-finished" and event["step_id"].startswith("stop-host:"):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole wave: controller and its ansible children
            killed = True
            break
    proc.wait(timeout=60)
    proc.stdout.close()
    assert killed, "the run ended before a host stopped"
    (run_dir,) = set(runs.iterdir()) - before
    run_id = run_dir.name
    verified_before = {s for s, r in finished(records(state_dir, run_id)).items() if r["status"] == "verified"}
    res = orch(state_dir, "resume", run_id)
    assert res.returncode == 0, res.stdout + res.stderr
    recs = records(state_dir, run_id)
    assert orch(state_dir, "journal", "verify", run_id).returncode == 0
    resumed_at = next(i for i, r in enumerate(recs) if r["type"] == "run-resumed")
    after = recs[resumed_at:]
    redone = {r["step_id"] for r in after if r["type"] == "step-started"} & verified_before
    assert not redone, f"verified steps ran again: {redone}"
    counts: dict[str, int] = {}
    for r in recs:
        if r["type"] == "step-finished" and r["status"] == "verified":
            counts[r["step_id"]] = counts.get(r["step_id"], 0) + 1
    assert all(n == 1 for n in counts.values()), counts
    assert recs[-1]["type"] == "run-finished" and recs[-1]["status"] == "completed"
    restore_lab(lab_inventory)


def test_a_tampered_journal_fails_verification(state_dir: Path) -> None:
    run_id = last_run_id(state_dir)
    path = state_dir / "runs" / run_id / "journal.jsonl"
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    try:
        for tampered in (
            b"".join(lines[:3] + lines[4:]),  # deleted
            b"".join([*lines[:3], lines[4], lines[3], *lines[5:]]),  # reordered
            original.replace(b'"verified"', b'"failed"', 1),  # edited
        ):
            path.write_bytes(tampered)
            res = orch(state_dir, "journal", "verify", run_id)
            assert res.returncode == 1, res.stdout
            assert "line" in res.stdout
    finally:
        path.write_bytes(original)
    assert orch(state_dir, "journal", "verify", run_id).returncode == 0


def test_no_secret_reaches_journal_output_reports_or_artifacts(
    state_dir: Path, lab_inventory: Inventory, tmp_path: Path
) -> None:
    password = "pw-" + secrets.token_hex(12)
    text = Path(LAB_YML).read_text().replace(
        "lab:    {username: root, key_file:", "lab:    {username: root, password_env: ORCH_TEST_PASSWORD, key_file:")
    assert "ORCH_TEST_PASSWORD" in text
    variant = write_lab_copy(tmp_path / "lab-secret.yml", text)
    secret_dir = tmp_path / "state"
    env = {"ORCH_TEST_PASSWORD": password}
    outputs = []
    res = orch(secret_dir, "baseline", "capture", str(variant), "--segment", "deu-servers", env=env)
    outputs += [res.stdout, res.stderr]
    assert res.returncode == 0, res.stdout + res.stderr
    res = orch(secret_dir, "shutdown", str(variant), "--contain-only", "--segment", "deu-servers", "--yes",
               env=env)
    outputs += [res.stdout, res.stderr]
    assert res.returncode == 0, res.stdout + res.stderr
    run_id = last_run_id(secret_dir)
    for fmt in ("md", "html", "json"):
        rep = orch(secret_dir, "report", run_id, "--format", fmt, env=env)
        assert rep.returncode == 0, rep.stderr
        outputs += [rep.stdout, rep.stderr]
    res = orch(secret_dir, "restore", str(variant), "--run", run_id, "--approve", "all", env=env)
    outputs += [res.stdout, res.stderr]
    assert res.returncode == 0, res.stdout + res.stderr
    key_lines = [ln for ln in Path(lab.keys.client_key_path(lab.LAB_ROOT)).read_text().splitlines()
                 if len(ln) > 16 and "PRIVATE KEY" not in ln]
    needles = [password, *key_lines]
    for blob in outputs:
        for needle in needles:
            assert needle not in blob
    for path in secret_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes().decode("utf-8", errors="ignore")
            for needle in needles:
                assert needle not in data, f"secret found in {path}"


def test_ctrl_c_finishes_the_steps_in_flight_journals_them_and_resume_completes(
    state_dir: Path, lab_inventory: Inventory
) -> None:
    env = {**os.environ, "ORCHESTRATOR_STATE_DIR": str(state_dir)}
    runs = state_dir / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    proc = subprocess.Popen([CLI, "shutdown", LAB_YML, "--campus", "deurne", "--yes", "--json"], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("type") == "wave-started" and event.get("phase") == "shutdown":
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            break
    proc.communicate(timeout=300)
    assert proc.returncode == 1
    (run_dir,) = set(runs.iterdir()) - before
    recs = records(state_dir, run_dir.name)
    assert any(r["type"] == "run-interrupted" for r in recs)
    assert recs[-1]["type"] == "run-finished" and recs[-1]["status"] == "interrupted"
    started = {r["step_id"] for r in recs if r["type"] == "step-started"}
    assert started <= set(finished(recs)), "a step in flight was not journaled"
    res = orch(state_dir, "resume", run_dir.name)
    assert res.returncode == 0, res.stdout + res.stderr
    assert records(state_dir, run_dir.name)[-1]["status"] == "completed"
    restore_lab(lab_inventory)

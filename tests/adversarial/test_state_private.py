"""Finding 8: secrets at rest are private, and device output is masked and capped.

Everything the product writes (device config backups, baselines, the run's inventory copy and plan,
the lock, the journal, reports) is 0600 in 0700 directories: by the umask the CLI sets, and by
explicit modes where files are written, so library use is private too whatever the caller's umask.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeCampus

from orchestrator.config import Settings
from orchestrator.drivers.ssh import CommandResult
from orchestrator.errors import DriverError
from orchestrator.executor import RunOptions
from orchestrator.integrity import capture_all
from orchestrator.inventory import load_inventory
from orchestrator.journal import read_journal
from orchestrator.lock import RunLock
from orchestrator.model import Credential, Host, Inventory, Mode, Site
from orchestrator.planner import build_plan
from orchestrator.runs import start_run

FAKE_CAMPUS = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"
OPTIONS = RunOptions(forks=8, operator="alice@ward", stop_timeout_s=1.0, start_timeout_s=1.0,
                     power_off_timeout_s=1.0)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A careless caller: files would be 0644 and directories 0755 unless the product says otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def inventory() -> Inventory:
    return load_inventory(FAKE_CAMPUS)


@pytest.fixture
def campus(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> FakeCampus:
    return FakeCampus(inventory).install(monkeypatch)


def collector_output() -> str:
    def section(name: str, lines: list[str]) -> str:
        return f"@@orchestrator:begin {name}\n" + "".join(f"{ln}\n" for ln in lines) + f"@@orchestrator:end {name} 0\n"

    return (section("meta", ["format\t1", "uid\t0"]) + section("files", [f"{'a' * 64}  /usr/bin/ls"])
            + section("users", ["@@orchestrator:file /etc/passwd", "|root:x:0:0:root:/root:/bin/bash"])
            + section("cron", ["@@orchestrator:file /etc/crontab", "|0 * * * * root backup --password Hunter2"]))


class CannedHost:
    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        return CommandResult(host, command, 0, collector_output() if " state" in command else "", "", 0.01)


def one_host_inventory() -> Inventory:
    addr = ipaddress.IPv4Address("127.0.0.1")
    host = Host(name="web1", segment="servers", address=addr, management_address=addr, credentials="lab")
    return Inventory(path="test.yml", sha256="0" * 64, site=Site("test"), management_segment="mgmt", campuses={},
                     segments={}, devices={}, links={}, hosts={"web1": host}, islands={},
                     credentials={"lab": Credential(name="lab", username="root")})


def modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def test_every_file_a_shutdown_and_a_baseline_capture_write_is_private(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, open_umask: None
) -> None:
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    seen_lock: dict[str, int] = {}

    def look_at_the_lock(record: dict[str, Any]) -> None:
        if record["type"] == "run-started":
            seen_lock["lock"] = stat.S_IMODE(settings.lock_path.stat().st_mode)

    result = start_run(inventory, build_plan(inventory, Mode.SHUTDOWN), settings, OPTIONS, argv=["t"],
                       observers=[look_at_the_lock])
    assert result.exit_code == 0, result.left
    captured = capture_all(CannedHost(), one_host_inventory(), ["web1"], settings)
    assert isinstance(captured["web1"], Path), captured
    found = modes(settings.state_dir)
    run = f"runs/{result.run_id}"
    for must in (f"{run}/journal.jsonl", f"{run}/plan.json", f"{run}/inventory.yml", f"{run}/backups/core.cfg",
                 "baselines/captures.jsonl", "keys/baseline-signing.key",
                 str(captured["web1"].relative_to(settings.state_dir))):
        assert must in found, (must, sorted(found))
    wide = {p: f"{m:o}" for p, m in found.items()
            if m & 0o077 or ((settings.state_dir / p).is_dir() and m != 0o700)}
    assert wide == {}, "everything under the state dir is 0600 / 0700"
    assert seen_lock == {"lock": 0o600}


def test_the_cli_writes_plans_and_reports_private_and_tightens_an_open_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "--state-dir", str(state), "plan", str(FAKE_CAMPUS),
                           "--mode", "contain", "-o", str(out)], capture_output=True, text=True, timeout=120,
                          check=False, preexec_fn=lambda: os.umask(0o022))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with RunLock(state / "lock", "x"):
        assert stat.S_IMODE((state / "lock").stat().st_mode) == 0o600


def test_an_existing_state_dir_open_to_others_is_tightened_and_journaled(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    settings.state_dir.mkdir()
    os.chmod(settings.state_dir, 0o777)
    result = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, OPTIONS, argv=["t"])
    assert stat.S_IMODE(settings.state_dir.stat().st_mode) == 0o700
    notes = [r for r in read_journal(settings.journal_path(result.run_id)) if r["type"] == "state-dir-tightened"]
    assert len(notes) == 1 and "777" in notes[0]["detail"]


def test_a_device_reply_with_secrets_is_masked_and_a_huge_one_capped_in_journal_and_console(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    reply = ("% Invalid input detected\nenable secret 5 $1$mERr$hx5rVt7rPNoS4wqbXKX7m0\n"
             "snmp-server community Tr0ub4dor RO\nusername admin password 7 0822455D0A16\n"
             "tacacs-server key 7 045802150C2E\n" + "interface Gi0/1\n description filler\n" * 40_000)
    campus.device_failures[("core", "cut-link", "wan")] = DriverError(f"device said: {reply}", target="core")
    console: list[dict[str, Any]] = []
    start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, OPTIONS, argv=["t"],
              observers=[console.append])
    data = settings.journal_path(console[0]["run_id"]).read_text()
    shown = repr(console)
    for secret in ("$1$mERr$hx5rVt7rPNoS4wqbXKX7m0", "Tr0ub4dor", "0822455D0A16", "045802150C2E"):
        assert secret not in data and secret not in shown
    failed = [r for r in console if r["type"] == "step-finished" and r["step_id"] == "cut-link:wan"]
    assert failed and "enable secret ***" in failed[0]["error"] and "community ***" in failed[0]["error"]
    assert "bytes dropped]" in failed[0]["error"]
    assert len(failed[0]["error"].encode()) < 9000 and max(len(line) for line in data.splitlines()) < 60_000

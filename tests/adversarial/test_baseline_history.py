"""Finding 10: a trusted baseline cannot be silently replaced.

Every capture is a new version (older ones are never overwritten), taken under the state lock and
journaled (keyed, like runs); a host that a run quarantined or found differing is not re-baselined
without --force --reason, and `integrity check` uses the newest version.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.drivers.ssh import CommandResult
from orchestrator.errors import LockHeldError
from orchestrator.integrity import BaselineRefused, capture_all, check_host, load_baseline
from orchestrator.journal import Journal, journal_key, read_journal, verify_journal
from orchestrator.lock import RunLock
from orchestrator.model import Credential, Host, Inventory, Site

GOOD = "a" * 64
PLANTED = "b" * 64


def collector_output(ls_hash: str) -> str:
    def section(name: str, lines: list[str]) -> str:
        return f"@@orchestrator:begin {name}\n" + "".join(f"{ln}\n" for ln in lines) + f"@@orchestrator:end {name} 0\n"

    return (section("meta", ["format\t1", "uid\t0"]) + section("files", [f"{ls_hash}  /usr/bin/ls"])
            + section("users", ["@@orchestrator:file /etc/passwd", "|root:x:0:0:root:/root:/bin/bash"]))


class CannedHost:
    def __init__(self, ls_hash: str) -> None:
        self.ls_hash = ls_hash

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        out = collector_output(self.ls_hash) if " state" in command else ""
        return CommandResult(host, command, 0, out, "", 0.01)


def inventory() -> Inventory:
    addr = ipaddress.IPv4Address("127.0.0.1")
    hosts = {n: Host(name=n, segment="servers", address=addr, management_address=addr, credentials="lab")
             for n in ("web1", "web2")}
    return Inventory(path="test.yml", sha256="0" * 64, site=Site("test"), management_segment="mgmt", campuses={},
                     segments={}, devices={}, links={}, hosts=hosts, islands={},
                     credentials={"lab": Credential(name="lab", username="root")})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=4)


def quarantine_in_a_run(settings: Settings, host: str) -> None:
    """What a restore run journals when a host differs from its baseline."""
    run_id = "20260113T090000Z-abc123"
    key = journal_key(settings.signing_key_path, create=True)
    with Journal.create(settings.journal_path(run_id), run_id, key=key) as journal:
        journal.emit("integrity-finding", host=host, category="file-changed", path="/usr/bin/ls", detail="changed")
        journal.emit("quarantine", host=host, reason="integrity: /usr/bin/ls", powered_off=True)


def test_a_host_quarantined_in_a_run_is_not_re_baselined_without_force_and_reason(settings: Settings) -> None:
    inv = inventory()
    first = capture_all(CannedHost(GOOD), inv, ["web1", "web2"], settings)
    assert all(isinstance(p, Path) for p in first.values()), first
    quarantine_in_a_run(settings, "web1")

    again = capture_all(CannedHost(PLANTED), inv, ["web1", "web2"], settings)  # after the incident
    assert isinstance(again["web1"], BaselineRefused) and again["web1"].exit_code == 3
    assert "quarantined in run 20260113T090000Z-abc123" in str(again["web1"])
    assert isinstance(again["web2"], Path)
    assert load_baseline("web1", settings)["snapshot"]["files"]["/usr/bin/ls"] == "sha256:" + GOOD
    assert not check_host(CannedHost(PLANTED), inv, "web1", settings).clean, "the compromise is still visible"

    forced = capture_all(CannedHost(PLANTED), inv, ["web1"], settings, force=True,
                         reason="rebuilt from the 2026-01-10 image", operator="alice@ctl")
    assert isinstance(forced["web1"], Path)
    versions = sorted((settings.baselines_dir / "web1").glob("*.json"))
    assert len(versions) == 2 and first["web1"] in versions, "the earlier baseline is kept, never overwritten"
    assert check_host(CannedHost(PLANTED), inv, "web1", settings).clean, "the newest baseline is used"

    key = journal_key(settings.signing_key_path, create=False)
    assert verify_journal(settings.baseline_journal_path, key).ok
    log = [(r["type"], r["host"]) for r in read_journal(settings.baseline_journal_path)]
    assert log.count(("baseline-captured", "web1")) == 2 and ("baseline-refused", "web1") in log
    forced_record = [r for r in read_journal(settings.baseline_journal_path)
                     if r["type"] == "baseline-captured" and r.get("forced")]
    assert forced_record[0]["reason"] == "rebuilt from the 2026-01-10 image"
    assert forced_record[0]["operator"] == "alice@ctl"


def test_capture_takes_the_state_lock(settings: Settings) -> None:
    with RunLock(settings.lock_path, "20260113T053000Z-run000", command="shutdown"), \
            pytest.raises(LockHeldError, match="20260113T053000Z-run000"):
        capture_all(CannedHost(GOOD), inventory(), ["web1"], settings)
    assert not (settings.baselines_dir / "web1").exists()


def test_force_without_a_reason_is_refused_by_the_cli(tmp_path: Path) -> None:
    inv = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "--state-dir", str(tmp_path / "s"), "baseline",
                           "capture", str(inv), "--force"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "--force needs --reason" in proc.stderr, proc.stderr


def test_an_empty_captures_journal_left_by_a_failed_capture_does_not_block_the_next(settings: Settings) -> None:
    settings.baseline_journal_path.parent.mkdir(parents=True, exist_ok=True)
    settings.baseline_journal_path.touch()  # a capture that died before its first record
    result = capture_all(CannedHost(GOOD), inventory(), ["web1"], settings)
    assert isinstance(result["web1"], Path)
    assert verify_journal(settings.baseline_journal_path, key=journal_key(settings.signing_key_path, create=False)).ok

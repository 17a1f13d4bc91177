"""Finding 11 (off-box half): every journal record also goes to a syslog collector, and
`journal verify --against-syslog FILE` names every record that differs or is missing.

The collector is a real rsyslog (imtcp, RFC 5424 with octet-counting framing, omfile), started by
the test as a child process on 127.0.0.1 with its own configuration and work directory, and stopped
by its PID at the end.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeCampus

from orchestrator.config import Settings
from orchestrator.executor import RunOptions
from orchestrator.inventory import load_inventory
from orchestrator.journal import journal_key, read_journal
from orchestrator.model import Inventory, Mode
from orchestrator.planner import build_plan
from orchestrator.runs import start_run
from orchestrator.syslog_copy import wait_until

FAKE_CAMPUS = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"
OPTIONS = RunOptions(forks=8, operator="alice@ward", stop_timeout_s=1.0, start_timeout_s=1.0,
                     power_off_timeout_s=1.0)
RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rsyslog:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.output = root / "received.log"
        work = root / "work"
        work.mkdir(parents=True)
        self.conf = root / "rsyslog.conf"
        self.conf.write_text(f"""
global(workDirectory="{work}" maxMessageSize="1m")
module(load="imtcp")
template(name="asReceived" type="string" string="%timegenerated:::date-rfc3339% %hostname% %app-name% %msgid% %msg%\\n")
input(type="imtcp" address="127.0.0.1" port="{self.port}")
action(type="omfile" file="{self.output}" template="asReceived")
""")
        with open(root / "rsyslogd.out", "wb") as log:
            self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(root / "rsyslogd.pid")],
                                         stdout=log, stderr=subprocess.STDOUT)
        try:
            if not wait_until(self._listening, 15.0):
                raise RuntimeError(f"rsyslogd did not listen on 127.0.0.1:{self.port}")
        except BaseException:
            self.stop()  # never leave the collector running
            raise

    def _listening(self) -> bool:
        with socket.socket() as probe:  # not create_connection: the fake campus forbids that one
            probe.settimeout(0.2)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines() if self.output.exists() else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    collector = Rsyslog(tmp_path / "rsyslog")
    try:
        yield collector
    finally:
        collector.stop()


@pytest.fixture
def inventory() -> Inventory:
    return load_inventory(FAKE_CAMPUS)


@pytest.fixture
def campus(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> FakeCampus:
    return FakeCampus(inventory).install(monkeypatch)


def verify(state: Path, run_id: str, against: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", "--state-dir", str(state), "journal", "verify",
                           run_id, "--against-syslog", str(against), "--json"],
                          capture_output=True, text=True, timeout=60, check=False)


def forge(lines: list[str], key: bytes) -> list[str]:
    """The controller's owner afterwards: edits, recomputes the chain AND the HMACs with the key."""
    out, prev = [], "0" * 64
    for line in lines:
        record = json.loads(line)
        record["prev"] = prev
        record.pop("hmac", None)
        body = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        record["hmac"] = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        out.append(text)
        prev = hashlib.sha256(text.encode()).hexdigest()
    return out


def test_a_journal_rewritten_with_the_key_is_caught_by_what_rsyslog_received(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path, rsyslog: Rsyslog
) -> None:
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8,
                        syslog=f"tcp://127.0.0.1:{rsyslog.port}")
    result = start_run(inventory, build_plan(inventory, Mode.SHUTDOWN), settings, OPTIONS, argv=["t"])
    assert result.exit_code == 0, result.left
    path = settings.journal_path(result.run_id)
    records = read_journal(path)
    assert not [r for r in records if r["type"].startswith("syslog-")]
    assert wait_until(lambda: len(rsyslog.lines()) >= len(records), 10.0), (len(rsyslog.lines()), len(records))
    first = rsyslog.lines()[0]
    assert " orchestrator run-started {" in first, first

    clean = verify(settings.state_dir, result.run_id, rsyslog.output)
    doc = json.loads(clean.stdout)
    assert clean.returncode == 0 and doc["ok"] and doc["collector"]["matched"] == len(records), doc

    key = journal_key(settings.signing_key_path, create=False)
    assert key is not None
    lines = path.read_text().splitlines()
    edited = next(i for i, ln in enumerate(lines) if '"step_id":"stop-host:' in ln and '"step-finished"' in ln)
    lines[edited] = lines[edited].replace('"status":"verified"', '"status":"failed"')
    lines = lines[:-2]  # and the end of the run cut off
    path.write_text("\n".join(forge(lines, key)) + "\n")
    forged = verify(settings.state_dir, result.run_id, rsyslog.output)
    doc = json.loads(forged.stdout)
    assert doc["ok"] is False and forged.returncode == 1, doc["collector"]
    assert doc["problems"] == [], "locally the forgery verifies: only the off-box copy can tell"
    problems = doc["collector"]["problems"]
    assert any(p.startswith(f"line {edited + 1} (seq {edited}, step-finished): differs") and "status" in p
               for p in problems), problems
    assert f"seq {len(records) - 1} (run-finished): at the collector but not in the local journal" in "\n".join(
        p.replace(" (deleted or cut off here)", "") for p in problems)


def test_a_collector_that_is_down_does_not_stop_the_run_and_is_noted_once(
    inventory: Inventory, campus: FakeCampus, tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8,
                        syslog=f"tcp://127.0.0.1:{free_port()}")
    started = time.monotonic()
    result = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, OPTIONS, argv=["t"])
    assert result.exit_code == 0, result.left
    assert time.monotonic() - started < 30
    kinds = [r["type"] for r in read_journal(settings.journal_path(result.run_id))]
    assert kinds.count("syslog-unavailable") == 1
    assert kinds[-1] == "syslog-undelivered" and "run-finished" in kinds

"""The journal: hash chain, fsync per record, tamper detection naming lines, torn tails, secret masking."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import JournalError
from orchestrator.journal import (
    GENESIS,
    Journal,
    new_run_id,
    read_journal,
    verify_journal,
)
from orchestrator.masking import mask_secrets

PASSWORD = "Hunter2-Sup3r-S3cret!"
KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBq1xK0fakefakefakefakefakefakefakefakefakefakeAAAAJgAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


def write_journal(path: Path, n: int = 6, **kwargs: Any) -> list[str]:
    """A journal of n records; returns its lines (without newlines)."""
    j = Journal.create(path, "20260113T053200Z-abcdef", **kwargs)
    j.emit("run-started", operator="oncall@laptop", mode="shutdown")
    for i in range(1, n - 1):
        j.emit("step-finished", step_id=f"stop-host:h{i}", status="verified")
    j.emit("run-finished", status="completed", counts={"verified": n - 2}, left=[])
    j.close()
    return path.read_text(encoding="utf-8").splitlines()


def rewrite(path: Path, lines: list[str], tail: str = "\n") -> None:
    path.write_text("\n".join(lines) + tail, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def test_records_form_a_hash_chain(tmp_path: Path) -> None:
    path = tmp_path / "run" / "journal.jsonl"
    lines = write_journal(path)
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == list(range(6))
    assert records[0]["prev"] == GENESIS == "0" * 64
    for before, after in zip(lines, records[1:], strict=False):
        assert after["prev"] == hashlib.sha256(before.encode()).hexdigest()
    for r in records:
        assert r["schema_version"] == 1
        assert r["run_id"] == "20260113T053200Z-abcdef"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", r["ts"])
        assert isinstance(r["mono"], float)
    # canonical serialisation, one record per line
    for line, r in zip(lines, records, strict=True):
        assert line == json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert read_journal(path) == records
    check = verify_journal(path)
    assert check.ok and check.records == 6 and check.problems == []
    assert check.head == hashlib.sha256(lines[-1].encode()).hexdigest()
    assert check.finished and check.run_id == "20260113T053200Z-abcdef"


def test_emit_returns_the_record_and_records_lists_them(tmp_path: Path) -> None:
    j = Journal.create(tmp_path / "j.jsonl", "r1")
    rec = j.emit("wave-started", wave=0, phase="contain")
    assert rec["type"] == "wave-started" and rec["wave"] == 0 and rec["seq"] == 0
    assert j.records() == [rec]
    assert j.head == hashlib.sha256((tmp_path / "j.jsonl").read_bytes().rstrip(b"\n")).hexdigest()
    j.close()


def test_every_record_is_fsynced_and_the_directory_on_create(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr("orchestrator.journal.os.fsync", counting_fsync)
    j = Journal.create(tmp_path / "new" / "journal.jsonl", "r1")
    after_create = len(calls)
    assert after_create >= 2  # the file and its directory
    for i in range(5):
        j.emit("milestone", name=f"m{i}", elapsed_s=float(i))
        assert len(calls) == after_create + i + 1
    j.close()


def test_create_refuses_an_existing_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    write_journal(path)
    before = path.read_bytes()
    with pytest.raises(JournalError) as err:
        Journal.create(path, "other")
    assert "already exists" in str(err.value) and "resume" in str(err.value)
    assert path.read_bytes() == before


def test_reserved_fields_are_refused(tmp_path: Path) -> None:
    j = Journal.create(tmp_path / "j.jsonl", "r1")
    with pytest.raises(JournalError, match="reserved"):
        j.emit("step-finished", seq=3)
    j.close()


def test_write_failure_raises_and_blocks_further_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal.create(tmp_path / "j.jsonl", "r1")
    j.emit("run-started")

    def full_disk(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("orchestrator.journal.os.write", full_disk)
    with pytest.raises(JournalError, match="No space left"):
        j.emit("step-started", step_id="x")
    monkeypatch.undo()
    with pytest.raises(JournalError, match="earlier write failed"):
        j.emit("step-started", step_id="x")
    j.close()
    assert verify_journal(tmp_path / "j.jsonl").ok


def test_unserialisable_values_are_an_error_not_a_silent_drop(tmp_path: Path) -> None:
    j = Journal.create(tmp_path / "j.jsonl", "r1")
    with pytest.raises(JournalError, match="JSON"):
        j.emit("verification", evidence={"latency": float("nan")})
    j.close()


class _Colour(Enum):
    RED = "red"


@dataclass(frozen=True)
class _Thing:
    name: str
    where: Path


def test_natural_python_values_are_written_as_json(tmp_path: Path) -> None:
    j = Journal.create(tmp_path / "j.jsonl", "r1")
    rec = j.emit(
        "x",
        colour=_Colour.RED,
        path=Path("/etc/hosts"),
        tup=(1, 2),
        thing=_Thing("a", Path("/b")),
        when=datetime(2026, 1, 13, 5, 32, tzinfo=UTC),
    )
    assert rec["colour"] == "red" and rec["path"] == "/etc/hosts" and rec["tup"] == [1, 2]
    assert rec["thing"] == {"name": "a", "where": "/b"}
    assert rec["when"] == "2026-01-13T05:32:00.000000Z"
    j.close()
    assert read_journal(tmp_path / "j.jsonl")[0] == rec


def test_concurrent_emits_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal.create(path, "r1")

    def worker(k: int) -> None:
        for i in range(40):
            j.emit("step-finished", step_id=f"s{k}-{i}", status="verified")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    j.close()
    check = verify_journal(path)
    assert check.ok, check.problems
    assert check.records == 320


def test_new_run_id_sorts_by_time_and_is_unique() -> None:
    a = new_run_id(datetime(2026, 11, 24, 18, 33, tzinfo=UTC))
    b = new_run_id(datetime(2026, 11, 24, 18, 34, tzinfo=UTC))
    assert re.fullmatch(r"20261124T183300Z-[0-9a-f]{6}", a)
    assert a < b
    assert len({new_run_id() for _ in range(200)}) == 200


# --------------------------------------------------------------------------------------------
# Verification: each kind of damage is named with its line
# --------------------------------------------------------------------------------------------


def test_edited_record_is_found_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = write_journal(path)
    record = json.loads(lines[2])
    record["status"] = "failed"  # re-serialised canonically: only the chain can tell
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    rewrite(path, lines)
    check = verify_journal(path)
    assert not check.ok
    assert any(p.startswith("line 3: edited record (hash mismatch") for p in check.problems), check.problems


def test_hand_edited_record_is_found_even_on_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = write_journal(path)
    lines[-1] = lines[-1].replace('"status":"completed"', '"status": "completed"')
    rewrite(path, lines)
    check = verify_journal(path)
    assert not check.ok
    assert any(p.startswith("line 6: edited record") for p in check.problems), check.problems


def test_deleted_record_is_found_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = write_journal(path)
    del lines[2]
    rewrite(path, lines)
    check = verify_journal(path)
    assert not check.ok
    assert check.problems == ["line 3: deleted record(s) before this line (seq 2 missing)"]


def test_deleted_first_record_is_found(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = write_journal(path)
    rewrite(path, lines[1:])
    check = verify_journal(path)
    assert not check.ok
    assert any(p.startswith("line 1: deleted record(s)") for p in check.problems), check.problems


def test_reordered_records_are_found_at_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = write_journal(path)
    lines[2], lines[3] = lines[3], lines[2]
    rewrite(path, lines)
    check = verify_journal(path)
    assert not check.ok
    assert any(p.startswith("line 3: reordered records") for p in check.problems), check.problems
    assert any(p.startswith("line 4: reordered records") for p in check.problems), check.problems
    assert not any("edited" in p or "deleted" in p for p in check.problems), check.problems


def test_truncated_last_line_is_found(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = write_journal(path)
    rewrite(path, [*lines[:-1], lines[-1][:25]], tail="")
    check = verify_journal(path)
    assert not check.ok
    assert check.problems[0].startswith("line 6: truncated last line (25 bytes")
    assert check.records == 5


def test_bad_json_line_is_found(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = write_journal(path)
    lines[1] = "{not json"
    rewrite(path, lines)
    check = verify_journal(path)
    assert any(p.startswith("line 2: bad JSON") for p in check.problems), check.problems
    with pytest.raises(JournalError, match="line 2 is not JSON"):
        read_journal(path)


def test_duplicated_record_is_found(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = write_journal(path)
    lines.insert(3, lines[2])
    rewrite(path, lines)
    check = verify_journal(path)
    assert any(p.startswith("line 4: duplicated record") for p in check.problems), check.problems


def test_empty_or_missing_journal(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert not verify_journal(tmp_path / "empty.jsonl").ok
    with pytest.raises(JournalError, match="cannot read"):
        verify_journal(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------------------------
# Reopening for resume
# --------------------------------------------------------------------------------------------


def test_open_existing_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    write_journal(path)
    j = Journal.open_existing(path)
    assert j.run_id == "20260113T053200Z-abcdef"
    assert len(j.records()) == 6 and j.repaired is None
    rec = j.emit("run-resumed", by="oncall@laptop")
    assert rec["seq"] == 6
    j.close()
    assert verify_journal(path).ok


def test_open_existing_sets_a_torn_tail_aside_and_keeps_every_complete_record(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = write_journal(path)
    torn = lines[-1][:30]
    rewrite(path, [*lines[:-1], torn], tail="")
    j = Journal.open_existing(path)
    assert j.repaired is not None
    assert j.repaired["type"] == "journal-repaired"
    assert j.repaired["torn_file"] == "j.jsonl.torn"
    assert j.repaired["line"] == 6 and j.repaired["torn_bytes"] == 30
    assert (tmp_path / "j.jsonl.torn").read_text(encoding="utf-8") == torn
    j.emit("run-resumed", by="oncall@laptop")
    j.close()
    records = read_journal(path)
    assert [r["seq"] for r in records] == list(range(7))
    assert [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in records[:5]] == lines[:5]
    assert records[5]["type"] == "journal-repaired"
    assert verify_journal(path).ok


def test_open_existing_refuses_a_tampered_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = write_journal(path)
    del lines[3]
    rewrite(path, lines)
    before = path.read_bytes()
    with pytest.raises(JournalError) as err:
        Journal.open_existing(path)
    assert "line 4: deleted" in str(err.value)
    assert path.read_bytes() == before


_WRITER = """
import sys
from orchestrator.journal import Journal
j = Journal.create(sys.argv[1], "20260113T053200Z-kill00")
i = 0
print("ready", flush=True)
while True:
    j.emit("step-finished", step_id=f"stop-host:h{i}", status="verified", evidence={"pad": "x" * 3000})
    i += 1
"""


def test_sigkill_mid_write_then_resume_loses_no_complete_record(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    data = path.read_bytes()
    complete = data.count(b"\n")
    assert complete > 0
    j = Journal.open_existing(path)
    j.emit("run-resumed", by="test")
    j.close()
    check = verify_journal(path)
    assert check.ok, check.problems
    records = read_journal(path)
    kept = [r for r in records if r["type"] == "step-finished"]
    assert len(kept) == complete
    assert [r["seq"] for r in records] == list(range(len(records)))


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------


def test_mask_secrets_is_recursive_and_covers_keys_and_key_names() -> None:
    value = {
        "cmd": f"sshpass -p {PASSWORD} ssh root@h",
        "nested": [{"out": f"x{PASSWORD}y"}, (PASSWORD,)],
        PASSWORD: "as a key",
        "password": "anything at all",
        "db_token": 12345,
        "Private_Key": KEY,
        "password_env": "ORCH_LAB_PASSWORD",
        "key_file": "~/.ssh/orchestrator_lab",
        "none_password": None,
    }
    masked = mask_secrets(value, [PASSWORD, "", KEY])
    text = json.dumps(masked)
    assert PASSWORD not in text
    assert masked["cmd"] == "sshpass -p *** ssh root@h"
    assert masked["nested"] == [{"out": "x***y"}, ("***",)]
    assert masked["***"] == "as a key"
    assert masked["password"] == "***" and masked["db_token"] == "***" and masked["Private_Key"] == "***"
    assert masked["password_env"] == "ORCH_LAB_PASSWORD"  # where the secret lives, not the secret
    assert masked["key_file"] == "~/.ssh/orchestrator_lab"
    assert masked["none_password"] is None


def test_a_line_of_a_key_is_masked_on_its_own() -> None:
    line = KEY.splitlines()[1]
    assert mask_secrets(f"error: {line}", [KEY]) == "error: ***"


def test_planted_secrets_never_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal.create(path, "r1", secrets=[PASSWORD])
    j.add_secret(KEY)
    j.emit("command-sent", step_id="cut-link:x", driver="netmiko", target="fw", commands=[f"enable {PASSWORD}"])
    j.emit(
        "step-finished",
        step_id="x",
        status="failed",
        error=f"auth failed for {PASSWORD}",
        evidence={"stderr": KEY, "password": "other"},
    )
    j.emit("verification", step_id="x", check=f"c-{PASSWORD}", passed=False, evidence={"k": KEY.splitlines()[2]})
    j.close()
    data = path.read_bytes()
    assert PASSWORD.encode() not in data
    assert b"other" not in data
    for line in KEY.splitlines():
        if len(line) >= 16 and "-----" not in line:
            assert line.encode() not in data
    assert data.count(b"***") >= 5
    assert verify_journal(path).ok


# --------------------------------------------------------------------------------------------
# Keyed chain and the off-box copy (orchestrator/syslog_copy.py)
# --------------------------------------------------------------------------------------------


def test_a_keyed_journal_verifies_only_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.create(path, "20260113T053200Z-abcdef", key=b"a" * 32) as j:
        j.emit("milestone", name="contained", elapsed_s=1.0)
    assert verify_journal(path, b"a" * 32).authenticated
    other = verify_journal(path, b"b" * 32)
    assert not other.ok and "another controller key" in other.problems[0]
    with pytest.raises(JournalError, match="hmac does not match"):
        Journal.open_existing(path, key=b"b" * 32)


def test_device_output_is_masked_and_capped_once_for_every_string() -> None:
    from orchestrator.masking import TEXT_CAP, mask_value

    out = mask_value({"reply": "snmp-server community public RO\n" + "é" * 10_000, "password_env": "X"})
    assert out["reply"].startswith("snmp-server community ***\n") and out["password_env"] == "X"
    assert out["reply"].endswith(" bytes dropped]") and len(out["reply"].encode()) <= TEXT_CAP + 40


class _Collector:
    """A TCP (optionally TLS) listener on 127.0.0.1 that keeps every octet-counted frame it gets."""

    def __init__(self, port: int = 0, tls: tuple[Path, Path] | None = None) -> None:
        import socket
        import ssl

        self.frames: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = int(self.sock.getsockname()[1])
        self.context: ssl.SSLContext | None = None
        if tls is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(str(tls[0]), str(tls[1]))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import ssl

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self.context is not None:
                    conn = self.context.wrap_socket(conn, server_side=True)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                    while b" " in data:
                        size, _, rest = data.partition(b" ")
                        if len(rest) < int(size):
                            break
                        self.frames.append(rest[: int(size)])
                        data = rest[int(size):]
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_syslog_collector_addresses_are_checked() -> None:
    from orchestrator.errors import UsageError
    from orchestrator.syslog_copy import SyslogTarget

    assert SyslogTarget.parse("tcp://127.0.0.1:6514").url == "tcp://127.0.0.1:6514"
    assert SyslogTarget.parse("tls://127.0.0.1:6514", "/ca.pem").tls
    for bad in ("udp://127.0.0.1:514", "tcp://127.0.0.1", "127.0.0.1:514", "tcp://h:1/x", "tcp://h:99999"):
        with pytest.raises(UsageError) as err:
            SyslogTarget.parse(bad)
        assert err.value.exit_code == 2


def test_the_copy_goes_over_tls_as_rfc5424_frames_whose_message_is_the_journal_line(tmp_path: Path) -> None:
    from orchestrator.syslog_copy import SyslogForwarder, SyslogTarget

    cert, key = _self_signed(tmp_path)
    collector = _Collector(tls=(cert, key))
    try:
        target = SyslogTarget.parse(f"tls://127.0.0.1:{collector.port}", str(cert))
        path = tmp_path / "j.jsonl"
        with Journal.create(path, "20260113T053200Z-abcdef", key=b"k" * 32, forwarder=SyslogForwarder(target)) as j:
            for i in range(3):
                j.emit("milestone", name=f"m{i}", note="café")
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(collector.frames) == 3
        for frame, line in zip(collector.frames, lines, strict=True):
            assert frame.startswith(b"<133>1 2") and b" orchestrator " in frame and b" milestone - " in frame
            assert frame.endswith(line.encode("utf-8"))
    finally:
        collector.close()


def test_a_collector_with_an_untrusted_certificate_is_refused_and_noted(tmp_path: Path) -> None:
    from orchestrator.syslog_copy import SyslogForwarder, SyslogTarget

    cert, key = _self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _ = _self_signed(tmp_path / "other")  # a CA that did not sign the collector's certificate
    collector = _Collector(tls=(cert, key))
    try:
        target = SyslogTarget.parse(f"tls://127.0.0.1:{collector.port}", str(other_ca))
        path = tmp_path / "j.jsonl"
        with Journal.create(path, "r", forwarder=SyslogForwarder(target)) as j:
            j.emit("milestone", name="m")
            j.close(flush_timeout_s=0.5)
        records = read_journal(path)
        assert collector.frames == []
        down = [r for r in records if r["type"] == "syslog-unavailable"]
        assert len(down) == 1 and "CERTIFICATE_VERIFY_FAILED" in down[0]["error"]
        assert records[-1]["type"] == "syslog-undelivered"
    finally:
        collector.close()


def test_a_collector_that_comes_back_gets_every_record_in_order_and_the_outage_is_noted_once(
    tmp_path: Path,
) -> None:
    from orchestrator.syslog_copy import SyslogForwarder, SyslogTarget, wait_until

    port = _free_port()
    forwarder = SyslogForwarder(SyslogTarget.parse(f"tcp://127.0.0.1:{port}"), backoff=(0.05, 0.2))
    path = tmp_path / "j.jsonl"
    j = Journal.create(path, "r", forwarder=forwarder)
    for i in range(20):
        j.emit("milestone", name=f"m{i}")
    assert wait_until(lambda: any(r["type"] == "syslog-unavailable" for r in j.records()), 5.0)
    collector = _Collector(port)
    try:
        j.close(flush_timeout_s=5.0)
        lines = path.read_text().splitlines()
        kinds = [json.loads(ln)["type"] for ln in lines]
        assert kinds.count("syslog-unavailable") == 1 and "syslog-undelivered" not in kinds
        assert [f.split(b" - ", 1)[1].decode() for f in collector.frames] == lines
    finally:
        collector.close()


def test_a_plan_in_the_journal_keeps_its_id_whatever_its_strings_look_like(tmp_path: Path) -> None:
    """A plan's id is its hash: pattern masking ("password reset ...", "lab-secret.yml") would make every
    later restore --run or resume refuse it as edited. Only known secrets are masked in it."""
    from orchestrator.inventory import load_inventory
    from orchestrator.model import Mode
    from orchestrator.planner import build_plan, plan_from_dict, plan_to_json

    source = (Path(__file__).resolve().parents[1] / "data" / "small.yml").read_text()
    inventory_path = tmp_path / "lab-secret.yml"
    kiosk = source.replace("reason: ED keeps operating", "reason: password reset kiosk; ED keeps operating")
    inventory_path.write_text(kiosk)
    plan = build_plan(load_inventory(inventory_path), Mode.SHUTDOWN)
    document = json.loads(plan_to_json(plan))
    assert "password reset kiosk" in json.dumps(document) and "lab-secret.yml" in json.dumps(document)
    path = tmp_path / "journal.jsonl"
    with Journal.create(path, "r1", secrets=["hunter2-long-password"]) as journal:
        journal.emit("run-started", plan=document, note="password: hunter3\nfile lab-secret.yml")
    record = read_journal(path)[0]
    assert plan_from_dict(record["plan"]).plan_id == plan.plan_id
    assert record["note"] == "password: ***\nfile lab-secret.yml"

"""Pins the journal's on-disk format (schema_version 1): scripts and auditors rely on it byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator import journal as journal_mod
from orchestrator.journal import GENESIS, HMAC_FIELD, SCHEMA_VERSION, Journal, verify_journal

ENVELOPE = {"schema_version", "seq", "prev", "run_id", "ts", "mono", "type"}

EVENT_TYPES = (
    "run-started",
    "wave-started",
    "step-started",
    "command-sent",
    "verification",
    "step-finished",
    "escalation",
    "gate-approved",
    "gate-refused",
    "milestone",
    "run-interrupted",
    "run-resumed",
    "run-finished",
    "integrity-finding",
    "observer-error",
    "clearance",
    "attestation",
    "journal-repaired",
    "state-dir-tightened",
    "syslog-unavailable",
    "syslog-dropped",
    "syslog-undelivered",
)


def test_exact_bytes_of_a_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orchestrator.journal.time.monotonic", lambda: 1234.5)
    clock = lambda: datetime(2026, 1, 13, 5, 32, 0, 123456, tzinfo=UTC)  # noqa: E731
    path = tmp_path / "journal.jsonl"
    j = Journal.create(path, "20260113T053200Z-3f9a1c", clock=clock)
    j.emit("milestone", name="contained", elapsed_s=42.5)
    j.emit("step-finished", step_id="cut-link:vendor-registration", status="verified", note="café")
    j.close()
    first = (
        '{"elapsed_s":42.5,"mono":1234.5,"name":"contained","prev":"' + "0" * 64 + '",'
        '"run_id":"20260113T053200Z-3f9a1c","schema_version":1,"seq":0,'
        '"ts":"2026-01-13T05:32:00.123456Z","type":"milestone"}'
    )
    second = (
        '{"mono":1234.5,"note":"café","prev":"' + hashlib.sha256(first.encode()).hexdigest() + '",'
        '"run_id":"20260113T053200Z-3f9a1c","schema_version":1,"seq":1,"status":"verified",'
        '"step_id":"cut-link:vendor-registration","ts":"2026-01-13T05:32:00.123456Z","type":"step-finished"}'
    )
    assert path.read_bytes() == (first + "\n" + second + "\n").encode("utf-8")


def test_envelope_of_every_record(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal.create(path, "20260113T053200Z-3f9a1c")
    for kind in EVENT_TYPES:
        j.emit(kind, detail=kind)
    j.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "every record ends with a newline"
    prev = GENESIS
    for seq, line in enumerate(lines[:-1]):
        record = json.loads(line)
        assert set(record) >= ENVELOPE
        assert record["schema_version"] == SCHEMA_VERSION == 1
        assert record["seq"] == seq
        assert record["prev"] == prev
        assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", record["run_id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["ts"])
        assert isinstance(record["mono"], float)
        assert line == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        prev = hashlib.sha256(line).hexdigest()
    check = verify_journal(path)
    assert check.ok and check.head == prev


def test_event_types_are_documented() -> None:
    doc = journal_mod.__doc__ or ""
    for kind in EVENT_TYPES:
        assert f"``{kind}``" in doc, kind


def test_verification_result_shape(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal.create(path, "r").close()
    path.write_text('{"seq":0}\n')
    out = verify_journal(path).as_dict()
    assert set(out) == {"ok", "records", "problems", "run_id", "head", "finished", "authenticated"}
    assert out["ok"] is False and all(p.startswith("line 1:") for p in out["problems"])


def test_a_keyed_record_is_the_envelope_plus_an_hmac_of_its_line_without_it(tmp_path: Path) -> None:
    """Keyed journals (every run's) add one field, ``hmac``: HMAC-SHA256 (hex), under the controller's
    journal key, of the record's canonical line without that field. ``prev`` stays the SHA-256 of
    the previous whole line, so an unkeyed reader still follows the chain."""
    import hmac as hmac_mod

    key = b"k" * 32
    path = tmp_path / "journal.jsonl"
    j = Journal.create(path, "20260113T053200Z-3f9a1c", key=key)
    for kind in EVENT_TYPES:
        j.emit(kind, detail=kind)
    j.close()
    prev = GENESIS
    for line in path.read_bytes().split(b"\n")[:-1]:
        record = json.loads(line)
        assert set(record) >= ENVELOPE | {HMAC_FIELD}
        assert record["prev"] == prev
        body = {k: v for k, v in record.items() if k != HMAC_FIELD}
        expected = hmac_mod.new(key, json.dumps(body, sort_keys=True, separators=(",", ":"),
                                                ensure_ascii=False).encode(), hashlib.sha256).hexdigest()
        assert record[HMAC_FIELD] == expected
        assert line == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        prev = hashlib.sha256(line).hexdigest()
    check = verify_journal(path, key)
    assert check.ok and check.authenticated and check.head == prev


# The fields of the run's own assurance events (issue 12: findings 1 and 5), as the real code writes them.
OBSERVER_ERROR_FIELDS = {"observer", "error_type", "message", "event_type", "event_seq", "consequence"}
CLEARANCE_FIELDS = {"step_id", "segment", "host", "quarantined", "how", "text"}
ATTESTATION_FIELDS = {"host", "claim", "statement", "by", "reason", "operator", "from_host", "pid", "evidence"}


def test_observer_error_record_fields(tmp_path: Path) -> None:
    from orchestrator.executor import Recorder

    def view(record: dict[str, object]) -> None:
        raise RuntimeError("boom")

    j = Journal.create(tmp_path / "journal.jsonl", "20260113T053200Z-3f9a1c")
    recorder = Recorder(j, [view])
    recorder.emit("wave-started", wave=0, phase="contain")
    recorder.emit("wave-started", wave=1, phase="contain")
    j.close()
    errors = [r for r in j.records() if r["type"] == "observer-error"]
    assert len(errors) == 1, "once per observer"
    assert set(errors[0]) - ENVELOPE - {HMAC_FIELD} == OBSERVER_ERROR_FIELDS
    assert errors[0]["observer"] == "view" and errors[0]["error_type"] == "RuntimeError"
    assert errors[0]["event_type"] == "wave-started" and errors[0]["event_seq"] == 0


def test_clearance_and_attestation_record_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fakes import FakeCampus

    from orchestrator.attest import attest_host
    from orchestrator.config import Settings
    from orchestrator.executor import ApprovalPolicy, RunOptions
    from orchestrator.integrity import Difference
    from orchestrator.inventory import load_inventory
    from orchestrator.journal import read_journal
    from orchestrator.model import Mode
    from orchestrator.planner import build_plan
    from orchestrator.runs import start_run

    inventory = load_inventory(Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml")
    campus = FakeCampus(inventory).install(monkeypatch)
    campus.shut_down()
    campus.integrity_findings["db1"] = (Difference("files", "/usr/local/bin/updater", "added"),)
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    run = start_run(inventory, build_plan(inventory, Mode.RESTORE), settings,
                    RunOptions(forks=8, operator="a@b", start_timeout_s=1.0, power_off_timeout_s=1.0,
                               approve=ApprovalPolicy.ALL), argv=["orchestrator"])
    evidence = tmp_path / "e.txt"
    evidence.write_text("x")
    attest_host(settings, run.run_id, "db1", by="Jan", reason="pulled", evidence=evidence)
    records = read_journal(settings.journal_path(run.run_id))
    clearance = next(r for r in records if r["type"] == "clearance" and r["host"] == "db1")
    assert set(clearance) - ENVELOPE - {HMAC_FIELD} == CLEARANCE_FIELDS | {"evidence"}
    assert clearance["how"] == "power-driver" and clearance["text"] == "power driver: off"
    attestation = records[-1]
    assert attestation["type"] == "attestation"
    assert set(attestation) - ENVELOPE - {HMAC_FIELD} == ATTESTATION_FIELDS
    assert set(attestation["evidence"]) == {"file", "bytes", "sha256"}

"""Pins the journal's on-disk format (schema_version 1): scripts and auditors rely on it byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator import journal as journal_mod
from orchestrator.journal import GENESIS, SCHEMA_VERSION, Journal, verify_journal

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
    "journal-repaired",
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
    assert set(out) == {"ok", "records", "problems", "run_id", "head", "finished"}
    assert out["ok"] is False and all(p.startswith("line 1:") for p in out["problems"])

"""Pins the journal's on-disk format (schema_version 1): scripts and auditors rely on it byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator import events
from orchestrator import journal as journal_mod
from orchestrator.journal import GENESIS, HMAC_FIELD, SCHEMA_VERSION, Journal, verify_journal

ENVELOPE = {"schema_version", "seq", "prev", "run_id", "ts", "mono", "type"}

# Every event type the code writes (orchestrator/events.py's registry), and every field of each: its name
# and its type as readers see it. A change here is a change of the journal's contract (schema_version 1).
EVENT_FIELDS: dict[str, dict[str, str]] = {
    "run-started": {"operator": "str", "host": "str", "pid": "int | None", "argv": "tuple[str, ...]", "mode": "str",
                    "plan_id": "str", "inventory": "str", "inventory_sha256": "str", "plan": "JsonObject",
                    "scope": "JsonObject", "site": "str", "timezone": "str", "topology": "JsonObject | None",
                    "detected_at": "str | None", "dry_run": "bool", "approve": "str"},
    "wave-started": {"wave": "int | None", "phase": "str", "steps": "tuple[str, ...]"},
    "step-started": {"step_id": "str", "action": "str", "target": "str", "wave": "int | None"},
    "command-sent": {"step_id": "str", "driver": "str", "target": "str", "commands": "tuple[str, ...]",
                     "sent_with": "tuple[str, ...]"},
    "verification": {"step_id": "str", "check": "str", "passed": "bool", "evidence": "JsonObject"},
    "step-finished": {"step_id": "str", "action": "str", "target": "str", "status": "str | None", "changed": "bool",
                      "already": "bool", "escalated": "bool", "error": "str | None", "evidence": "JsonObject",
                      "duration_s": "float | None"},
    "escalation": {"step_id": "str", "host": "str", "to": "str", "reason": "str"},
    "quarantine": {"host": "str", "reason": "str | None", "powered_off": "bool", "error": "str | None",
                   "evidence": "JsonObject"},
    "gate-approved": {"gate": "str", "approver": "str | None", "how": "str", "summary": "str"},
    "gate-refused": {"gate": "str", "approver": "str | None", "how": "str", "summary": "str"},
    "milestone": {"name": "str", "elapsed_s": "float | None"},
    "run-interrupted": {"signal": "str | None"},
    "run-resumed": {"by": "str | None", "pid": "int | None", "host": "str", "plan_id": "str",
                    "verified_before": "tuple[str, ...]"},
    "run-finished": {"status": "str | None", "counts": "JsonObject | None", "left": "tuple[JsonObject, ...] | None",
                     "time_to_containment_s": "float | None", "time_to_shutdown_s": "float | None",
                     "quarantined": "JsonObject"},
    "integrity-finding": {"host": "str", "category": "str", "path": "str", "detail": "str"},
    "observer-error": {"observer": "str | None", "error_type": "str", "message": "str", "event_type": "str",
                       "event_seq": "int | None", "consequence": "str"},
    "clearance": {"step_id": "str", "segment": "str", "host": "str", "quarantined": "bool", "how": "str",
                  "text": "str", "evidence": "JsonObject", "attestation": "JsonObject"},
    "attestation": {"host": "str", "claim": "str", "statement": "str", "by": "str | None", "reason": "str",
                    "operator": "str", "from_host": "str", "pid": "int | None", "evidence": "JsonObject | None"},
    "lock-taken-over": {"holder": "JsonObject"},
    "journal-repaired": {"torn_file": "str", "torn_bytes": "int | None", "torn_sha256": "str", "line": "int | None",
                         "reason": "str"},
    "state-dir-tightened": {"detail": "str"},
    "syslog-unavailable": {"collector": "str", "error": "str", "retry": "str"},
    "syslog-dropped": {"collector": "str", "queue": "int | None", "reason": "str"},
    "syslog-undelivered": {"collector": "str", "records": "int | None", "reason": "str"},
    "ansible-event": {"playbook": "str", "run": "str", "phase": "str", "hosts": "JsonValue",
                      "timeout_s": "float | None", "rc": "int | None", "status": "str", "duration_s": "float | None",
                      "host": "str", "task": "str", "message": "str", "ignored": "bool", "failed": "JsonObject",
                      "seconds": "float | None"},
    "baseline-captured": {"host": "str", "operator": "str", "file": "str", "sha256": "str", "forced": "bool",
                          "reason": "str | None", "suspect": "str | None"},
    "baseline-refused": {"host": "str", "operator": "str", "why": "str"},
}
# Fields a record may lack (written by newer code than some journals, or only in some shapes) ...
EVENT_OPTIONAL: dict[str, set[str]] = {
    "run-started": {"approve", "detected_at", "dry_run", "topology"},
    "wave-started": {"steps"},
    "command-sent": {"sent_with"},
    "quarantine": {"error", "evidence"},
    "run-resumed": {"host", "pid", "plan_id", "verified_before"},
    "run-finished": {"quarantined", "time_to_containment_s", "time_to_shutdown_s"},
    "clearance": {"attestation", "evidence"},
    "ansible-event": set(EVENT_FIELDS["ansible-event"]),
}
# ... and those the writer may set to null.
EVENT_NULLABLE: dict[str, set[str]] = {
    "run-started": {"topology", "detected_at"},
    "step-finished": {"error"},
    "run-finished": {"time_to_containment_s", "time_to_shutdown_s"},
    "observer-error": {"event_seq"},
    "attestation": {"evidence"},
    "baseline-captured": {"reason", "suspect"},
}
# The types a run's own journal holds (the captures journal holds the baseline ones).
EVENT_TYPES = tuple(t for t in EVENT_FIELDS if not t.startswith("baseline-"))


def test_the_registry_is_the_pinned_event_list() -> None:
    assert list(events.EVENT_TYPES) == list(EVENT_FIELDS)
    for kind, cls in events.EVENT_TYPES.items():
        assert kind == cls.TYPE
        assert events.field_types(cls) == EVENT_FIELDS[kind], kind
        assert set(cls.OPTIONAL) == EVENT_OPTIONAL.get(kind, set()), kind
        assert set(cls.NULLABLE) == EVENT_NULLABLE.get(kind, set()), kind


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


def _documented_events() -> dict[str, str]:
    """The journal docstring's event list: type -> the text that describes it."""
    doc = journal_mod.__doc__ or ""
    listed = doc[doc.index("Event types\n"):]
    found = {m.group(1): m.start() for m in re.finditer(r"^``([a-z-]+)``", listed, re.MULTILINE)}
    ends = [*sorted(found.values()), len(listed)]
    out = {kind: listed[start:ends[ends.index(start) + 1]] for kind, start in found.items()}
    for kind in ("baseline-captured", "baseline-refused"):  # the captures journal's, in its own paragraph
        at = listed.index(f"``{kind}``")
        out[kind] = listed[at:listed.index(")", at) + 1]
    return out


def test_the_documented_event_list_is_the_registry() -> None:
    documented = _documented_events()
    assert set(documented) == set(events.EVENT_TYPES)
    for kind, cls in events.EVENT_TYPES.items():
        missing = [name for name in events.field_types(cls) if not re.search(rf"\b{name}\b", documented[kind])]
        assert not missing, f"{kind}: the journal's docstring does not name {missing}"


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


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_what_a_fake_campus_run_writes_parses_strictly_into_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emitters and the readers share one list: every record real runs write (the executor, runs,
    the lock, the journal's own repair, attest; the drivers faked) is an event of the registry, with
    exactly its declared fields of their declared types."""
    import os
    import socket
    import threading

    from fakes import FakeCampus

    from orchestrator.attest import attest_host
    from orchestrator.config import Settings
    from orchestrator.executor import ApprovalPolicy, RunOptions
    from orchestrator.integrity import Difference
    from orchestrator.inventory import load_inventory
    from orchestrator.journal import read_journal
    from orchestrator.model import Mode
    from orchestrator.planner import build_plan
    from orchestrator.runs import resume_run, start_run

    inventory = load_inventory(Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml")
    campus = FakeCampus(inventory).install(monkeypatch)
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    settings.state_dir.mkdir(mode=0o755)
    os.chmod(settings.state_dir, 0o755)  # tightened (journaled) at the start
    settings.lock_path.write_text(json.dumps({  # a stale lock (its process is gone): taken over, journaled
        "pid": _dead_pid(), "host": socket.gethostname(), "user": "someone", "run_id": "20260113T053200Z-old000",
        "started": "2026-01-13T05:32:00Z", "command": "shutdown"}), encoding="utf-8")
    options = RunOptions(forks=8, operator="a@b", stop_timeout_s=1.0, start_timeout_s=1.0, power_off_timeout_s=1.0)

    def failing_view(record: dict[str, object]) -> None:
        raise RuntimeError("a view that fails")

    # shutdown: escalation (a host ignores its stop), an observer error, interrupted, then resumed
    campus.hosts["db1"].ignores_stop = True
    stop = threading.Event()
    campus.on_stop_hosts = lambda hosts: stop.set() if list(hosts) == ["app1"] else None
    shutdown = start_run(inventory, build_plan(inventory, Mode.SHUTDOWN), settings, options,
                         observers=[failing_view], argv=["orchestrator"], stop_event=stop)
    assert shutdown.interrupted
    with open(settings.journal_path(shutdown.run_id), "ab") as journal:
        journal.write(b'{"torn')  # a write cut short: set aside and journaled when the run is resumed
    campus.on_stop_hosts = None
    assert resume_run(shutdown.run_id, settings, options).exit_code == 0

    # restore without approval: every gate refused
    refused = start_run(inventory, build_plan(inventory, Mode.RESTORE), settings, options, argv=["orchestrator"])
    # restore with approval, a host that differs from its baseline: quarantine, clearance, attestation
    campus.shut_down()
    campus.integrity_findings["db1"] = (Difference("files", "/usr/local/bin/updater", "added"),)
    restore = start_run(inventory, build_plan(inventory, Mode.RESTORE), settings,
                        RunOptions(**{**options.__dict__, "approve": ApprovalPolicy.ALL}), argv=["orchestrator"])
    evidence = tmp_path / "e.txt"
    evidence.write_text("x")
    attest_host(settings, restore.run_id, "db1", by="Jan", reason="pulled", evidence=evidence)

    seen: set[str] = set()
    for run_id in (shutdown.run_id, refused.run_id, restore.run_id):
        for record in read_journal(settings.journal_path(run_id)):
            event = events.parse(record, strict=True)
            assert type(event) is events.EVENT_TYPES[record["type"]]
            seen.add(event.type)
    # what these runs cannot write without a collector, Ansible or a baseline capture is pinned above
    assert set(EVENT_TYPES) - seen == {"syslog-unavailable", "syslog-dropped", "syslog-undelivered", "ansible-event"}


def test_what_the_ansible_driver_reports_of_a_task_parses_strictly() -> None:
    from orchestrator.drivers.ansible import Masker, sink_event

    for name, res in (("runner_on_start", {}), ("runner_on_ok", {"changed": True}),
                      ("runner_on_failed", {"msg": "boom"}), ("runner_on_unreachable", {"msg": "gone"})):
        mapped = sink_event({"event": name, "event_data": {"host": "db1", "task": "stop", "res": res}},
                            "stop-host.yml", "run-1", Masker())
        assert mapped is not None
        # as the executor journals it: the driver's own type and time left out
        record = {"type": "ansible-event", **{k: v for k, v in mapped.items() if k not in ("type", "ts")}}
        assert isinstance(events.parse(record, strict=True), events.AnsibleEvent)


def test_a_newer_journals_event_is_kept_and_a_damaged_one_read_as_far_as_it_can_be() -> None:
    newer = events.parse({"type": "power-cycled", "seq": 4, "host": "db1"})
    assert isinstance(newer, events.UnknownEvent) and newer.payload() == {"host": "db1"} and newer.seq == 4
    damaged = events.parse({"type": "step-finished", "step_id": "stop-host:db1", "status": 3, "changed": "yes"})
    assert isinstance(damaged, events.StepFinished)
    assert damaged.status == "3" and damaged.changed is False and damaged.step_id == "stop-host:db1"
    with pytest.raises(events.EventError, match="unknown event type"):
        events.parse({"type": "power-cycled"}, strict=True)
    with pytest.raises(events.EventError, match="'changed'"):
        events.parse({"type": "step-finished", "step_id": "s", "changed": "yes"}, strict=True)

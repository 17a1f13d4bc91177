"""The journal's events as types: one frozen dataclass per event type, a registry, and one parser.

Records stay what :mod:`orchestrator.journal` writes (JSON lines, schema_version 1, the contract in its
docstring); this module is how readers (``report``, ``runs``, the board) see them. :func:`parse` turns
one record into its event once, so a reader works on named, typed fields instead of dict lookups, and
the contract test pins every field of every type in :data:`EVENT_TYPES`, so what the code writes and
what it reads cannot drift apart unnoticed.

Two ways to parse:

- ``parse(record)`` (readers): never raises. A field that is missing or of the wrong type takes its
  default (a scalar where text is expected is kept as text, an int where a float is expected as a
  float); a type this code does not know (a newer journal) becomes an :class:`UnknownEvent` that keeps
  its payload. A report of a damaged or newer journal still shows what it can.
- ``parse(record, strict=True)`` (tests, checks): raises :class:`EventError` for an unknown type, a
  missing field (those in ``OPTIONAL`` aside), a field of the wrong type, a null where the writer never
  writes one (``NULLABLE`` aside), or a field the type does not declare.

Each event keeps its ``record`` (the parsed JSON object) for readers that show it as it is.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Union

from orchestrator.journal import parse_timestamp

JsonValue = Union[str, int, float, bool, None, list["JsonValue"], dict[str, "JsonValue"]]  # noqa: UP007
JsonObject = Mapping[str, JsonValue]

ENVELOPE_FIELDS = frozenset({"schema_version", "seq", "prev", "run_id", "ts", "mono", "type", "hmac"})


class EventError(ValueError):
    """A record that is not the event its type says (strict parsing only)."""


# --------------------------------------------------------------------------------------------
# The base and the events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """The envelope every record carries (see :mod:`orchestrator.journal`), parsed.

    ``seq`` is None and ``at`` None when the record lacks them or they are not what they should be.
    """

    TYPE: ClassVar[str] = ""
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()  # payload fields a record may lack (older journals)
    # Payload fields the writer may set to null. A field typed ``X | None`` and not listed here is
    # optional for readers only (None: absent or unreadable); strict parsing refuses a null in it.
    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    type: str
    seq: int | None = None
    run_id: str = ""
    ts: str = ""
    at: datetime | None = None  # ``ts`` as a time
    mono: float | None = None
    record: JsonObject = field(default_factory=dict, repr=False, compare=False)

    def payload(self) -> dict[str, JsonValue]:
        """The record without its envelope."""
        return {k: v for k, v in self.record.items() if k not in ENVELOPE_FIELDS}


@dataclass(frozen=True)
class UnknownEvent(Event):
    """A record of a type this code does not know (a newer journal): kept, shown as it is."""


@dataclass(frozen=True)
class RunStarted(Event):
    TYPE = "run-started"
    OPTIONAL = frozenset({"topology", "detected_at", "dry_run", "approve"})
    NULLABLE = frozenset({"topology", "detected_at"})

    operator: str = ""
    host: str = ""
    pid: int | None = None
    argv: tuple[str, ...] = ()
    mode: str = ""
    plan_id: str = ""
    inventory: str = ""
    inventory_sha256: str = ""
    plan: JsonObject = field(default_factory=dict)
    scope: JsonObject = field(default_factory=dict)
    site: str = ""
    timezone: str = ""
    topology: JsonObject | None = None  # report.topology_of(inventory)
    detected_at: str | None = None  # ISO 8601 UTC, when the incident was detected
    dry_run: bool = False
    approve: str = ""


@dataclass(frozen=True)
class WaveStarted(Event):
    TYPE = "wave-started"
    OPTIONAL = frozenset({"steps"})

    wave: int | None = None
    phase: str = ""
    steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepStarted(Event):
    TYPE = "step-started"

    step_id: str = ""
    action: str = ""
    target: str = ""
    wave: int | None = None


@dataclass(frozen=True)
class CommandSent(Event):
    TYPE = "command-sent"
    OPTIONAL = frozenset({"sent_with"})

    step_id: str = ""
    driver: str = ""
    target: str = ""
    commands: tuple[str, ...] = ()  # secrets masked
    sent_with: tuple[str, ...] = ()  # the other steps of the same device batch


@dataclass(frozen=True)
class VerificationDone(Event):
    TYPE = "verification"

    step_id: str = ""
    check: str = ""
    passed: bool = False
    evidence: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class StepFinished(Event):
    TYPE = "step-finished"
    NULLABLE = frozenset({"error"})

    step_id: str = ""
    action: str = ""
    target: str = ""
    status: str | None = None  # verified|unproven|failed|skipped|pending|dry-run
    changed: bool = False
    already: bool = False
    escalated: bool = False
    error: str | None = None
    evidence: JsonObject = field(default_factory=dict)
    duration_s: float | None = None


@dataclass(frozen=True)
class Escalation(Event):
    TYPE = "escalation"

    step_id: str = ""
    host: str = ""
    to: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Quarantine(Event):
    TYPE = "quarantine"
    OPTIONAL = frozenset({"error", "evidence"})

    host: str = ""
    reason: str | None = None
    powered_off: bool = False
    error: str | None = None  # the power driver failed
    evidence: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class GateApproved(Event):
    TYPE = "gate-approved"

    gate: str = ""
    approver: str | None = None
    how: str = ""
    summary: str = ""


@dataclass(frozen=True)
class GateRefused(Event):
    TYPE = "gate-refused"

    gate: str = ""
    approver: str | None = None
    how: str = ""
    summary: str = ""  # what was put before the approver: the refusal's context


@dataclass(frozen=True)
class Milestone(Event):
    TYPE = "milestone"

    name: str = ""  # contained|shutdown-complete|restored
    elapsed_s: float | None = None


@dataclass(frozen=True)
class RunInterrupted(Event):
    TYPE = "run-interrupted"

    signal: str | None = None


@dataclass(frozen=True)
class RunResumed(Event):
    TYPE = "run-resumed"
    OPTIONAL = frozenset({"pid", "host", "plan_id", "verified_before"})

    by: str | None = None
    pid: int | None = None
    host: str = ""
    plan_id: str = ""
    verified_before: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunFinished(Event):
    TYPE = "run-finished"
    OPTIONAL = frozenset({"time_to_containment_s", "time_to_shutdown_s", "quarantined"})
    NULLABLE = frozenset({"time_to_containment_s", "time_to_shutdown_s"})

    status: str | None = None  # completed|unproven|failed|interrupted
    counts: JsonObject | None = None  # status -> number of steps
    left: tuple[JsonObject, ...] | None = None  # [{step_id, reason}]
    time_to_containment_s: float | None = None
    time_to_shutdown_s: float | None = None
    quarantined: JsonObject = field(default_factory=dict)  # host -> why


@dataclass(frozen=True)
class IntegrityFinding(Event):
    TYPE = "integrity-finding"

    host: str = ""
    category: str = ""
    path: str = ""
    detail: str = ""


@dataclass(frozen=True)
class ObserverError(Event):
    TYPE = "observer-error"
    NULLABLE = frozenset({"event_seq"})

    observer: str | None = None
    error_type: str = ""
    message: str = ""
    event_type: str = ""
    event_seq: int | None = None
    consequence: str = ""


@dataclass(frozen=True)
class Clearance(Event):
    TYPE = "clearance"
    OPTIONAL = frozenset({"evidence", "attestation"})

    step_id: str = ""
    segment: str = ""
    host: str = ""
    quarantined: bool = False
    how: str = ""  # power-driver | attestation
    text: str = ""
    evidence: JsonObject = field(default_factory=dict)  # power driver
    attestation: JsonObject = field(default_factory=dict)  # by, reason, operator, ts, seq, evidence


@dataclass(frozen=True)
class Attestation(Event):
    TYPE = "attestation"
    NULLABLE = frozenset({"evidence"})

    host: str = ""
    claim: str = ""  # physically-disconnected
    statement: str = ""
    by: str | None = None
    reason: str = ""
    operator: str = ""
    from_host: str = ""
    pid: int | None = None
    evidence: JsonObject | None = None  # {file, bytes, sha256}


@dataclass(frozen=True)
class LockTakenOver(Event):
    TYPE = "lock-taken-over"

    holder: JsonObject = field(default_factory=dict)  # pid, host, user, run_id, command, started, proc_start, reason


@dataclass(frozen=True)
class JournalRepaired(Event):
    TYPE = "journal-repaired"

    torn_file: str = ""
    torn_bytes: int | None = None
    torn_sha256: str = ""
    line: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class StateDirTightened(Event):
    TYPE = "state-dir-tightened"

    detail: str = ""


@dataclass(frozen=True)
class SyslogUnavailable(Event):
    TYPE = "syslog-unavailable"

    collector: str = ""
    error: str = ""
    retry: str = ""


@dataclass(frozen=True)
class SyslogDropped(Event):
    TYPE = "syslog-dropped"

    collector: str = ""
    queue: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class SyslogUndelivered(Event):
    TYPE = "syslog-undelivered"

    collector: str = ""
    records: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class AnsibleEvent(Event):
    """What the Ansible driver reported, one of three shapes (the driver's own ``type`` is not kept):
    a playbook starting (phase start: playbook, run, hosts, timeout_s) or ending (phase end: playbook,
    run, rc, status, duration_s, hosts), a task on a host (playbook, run, host, task, status, message,
    ignored), or the SSH connections opened ahead (phase opened: hosts, failed, seconds)."""

    TYPE = "ansible-event"
    OPTIONAL = frozenset({"playbook", "run", "phase", "hosts", "timeout_s", "rc", "status", "duration_s",
                          "host", "task", "message", "ignored", "failed", "seconds"})

    playbook: str = ""
    run: str = ""
    phase: str = ""
    hosts: JsonValue = None  # names (start, opened) or host -> status (end)
    timeout_s: float | None = None
    rc: int | None = None
    status: str = ""
    duration_s: float | None = None
    host: str = ""
    task: str = ""
    message: str = ""
    ignored: bool = False
    failed: JsonObject = field(default_factory=dict)  # host -> why (connections)
    seconds: float | None = None


@dataclass(frozen=True)
class BaselineCaptured(Event):
    """In the baseline captures journal (``baselines/captures.jsonl``), not a run's."""

    TYPE = "baseline-captured"
    NULLABLE = frozenset({"reason", "suspect"})

    host: str = ""
    operator: str = ""
    file: str = ""
    sha256: str = ""
    forced: bool = False
    reason: str | None = None
    suspect: str | None = None


@dataclass(frozen=True)
class BaselineRefused(Event):
    """In the baseline captures journal: a capture refused for a suspect host."""

    TYPE = "baseline-refused"

    host: str = ""
    operator: str = ""
    why: str = ""


EVENT_CLASSES: tuple[type[Event], ...] = (
    RunStarted, WaveStarted, StepStarted, CommandSent, VerificationDone, StepFinished, Escalation, Quarantine,
    GateApproved, GateRefused, Milestone, RunInterrupted, RunResumed, RunFinished, IntegrityFinding,
    ObserverError, Clearance, Attestation, LockTakenOver, JournalRepaired, StateDirTightened,
    SyslogUnavailable, SyslogDropped, SyslogUndelivered, AnsibleEvent, BaselineCaptured, BaselineRefused,
)
EVENT_TYPES: Mapping[str, type[Event]] = types.MappingProxyType({c.TYPE: c for c in EVENT_CLASSES})
"""Every event type the code writes, type name -> class."""


# --------------------------------------------------------------------------------------------
# Field types: what a record's JSON value must be, and how a reader takes one that is not
# --------------------------------------------------------------------------------------------

_MISSING = object()
_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(Event))


_RESOLVED: dict[str, Mapping[str, object]] = {}


def payload_fields(cls: type[Event]) -> Mapping[str, object]:
    """The payload fields of an event class, name -> type (resolved annotations, computed once)."""
    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in _RESOLVED:
        hints = typing.get_type_hints(cls)
        _RESOLVED[key] = types.MappingProxyType(
            {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS})
    return _RESOLVED[key]


def field_types(cls: type[Event]) -> dict[str, str]:
    """The payload fields of an event class, name -> type as written (``str | None``, ``JsonObject``)."""
    return {f.name: str(f.type) for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS}


def _is_json(value: object) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _is_json_value_hint(hint: object) -> bool:
    """``JsonValue`` (resolved annotations expand its forward references, so compare by shape)."""
    return typing.get_origin(hint) is Union and any(typing.get_origin(a) is list for a in typing.get_args(hint))


def _matches(hint: object, value: object) -> bool:
    """Whether a JSON value is of the field type ``hint`` as written (lists stand for tuples)."""
    if _is_json_value_hint(hint):
        return _is_json(value)
    if typing.get_origin(hint) is Mapping:  # JsonObject
        return isinstance(value, dict) and _is_json(value)
    if isinstance(hint, types.UnionType):
        return any(_matches(arm, value) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is tuple:
        arm = typing.get_args(hint)[0]
        return isinstance(value, list) and all(_matches(arm, v) for v in value)
    raise TypeError(f"events: unsupported field type {hint!r}")


def _coerce(hint: object, value: object) -> object:
    """A matching value as the dataclass holds it (lists as tuples, ints as floats)."""
    if hint is float and isinstance(value, int):
        return float(value)
    if isinstance(hint, types.UnionType):
        arm = next(a for a in typing.get_args(hint) if _matches(a, value))
        return _coerce(arm, value)
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    return value


def _lenient(hint: object, value: object) -> object:
    """What a reader takes for a value that is not of its field's type: text for a scalar where text is
    expected, else the default (``_MISSING``)."""
    wants_text = hint is str or (isinstance(hint, types.UnionType) and str in typing.get_args(hint))
    if wants_text and isinstance(value, int | float | bool):
        return str(value)
    return _MISSING


def _envelope(record: Mapping[str, object]) -> dict[str, object]:
    seq = record.get("seq")
    ts = record.get("ts")
    mono = record.get("mono")
    at: datetime | None = None
    if isinstance(ts, str):
        try:
            at = parse_timestamp(ts)
        except ValueError:
            at = None
    return {
        "type": str(record.get("type", "")),
        "seq": seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        "run_id": str(record.get("run_id", "")),
        "ts": ts if isinstance(ts, str) else "",
        "at": at,
        "mono": float(mono) if isinstance(mono, int | float) and not isinstance(mono, bool) else None,
        "record": record,
    }


def _strict_problems(cls: type[Event], record: Mapping[str, object]) -> list[str]:
    declared = payload_fields(cls)
    problems = [f"field {name!r} is not declared" for name in record
                if name not in ENVELOPE_FIELDS and name not in declared]
    for name, hint in declared.items():
        if name not in record:
            if name not in cls.OPTIONAL:
                problems.append(f"field {name!r} is missing")
        elif not _matches(hint, record[name]):
            problems.append(f"field {name!r} is {record[name]!r}, not {field_types(cls)[name]}")
        elif record[name] is None and name not in cls.NULLABLE:
            problems.append(f"field {name!r} is null")
    return problems


def parse(record: Mapping[str, object], *, strict: bool = False) -> Event:
    """The event of one journal record (see the module docstring for ``strict``)."""
    kind = str(record.get("type", ""))
    cls = EVENT_TYPES.get(kind)
    if strict:
        where = f"record seq {record.get('seq')!r} ({kind or 'no type'})"
        if cls is None:
            raise EventError(f"{where}: unknown event type")
        problems = _strict_problems(cls, record)
        if problems:
            raise EventError(f"{where}: " + "; ".join(problems))
    values = _envelope(record)
    if cls is None:
        return UnknownEvent(**values)  # type: ignore[arg-type]
    for name, hint in payload_fields(cls).items():
        value = record.get(name, _MISSING)
        if value is _MISSING:
            continue
        value = _coerce(hint, value) if _matches(hint, value) else _lenient(hint, value)
        if value is not _MISSING:
            values[name] = value
    return cls(**values)  # type: ignore[arg-type]


def parse_all(records: Sequence[Mapping[str, object]], *, strict: bool = False) -> list[Event]:
    """The events of a journal's records, in order."""
    return [parse(r, strict=strict) for r in records]


E = typing.TypeVar("E", bound=Event)


def of_type(events: Sequence[Event], cls: type[E]) -> list[E]:
    """The events of one class, in order."""
    return [e for e in events if isinstance(e, cls)]


def first(events: Sequence[Event], cls: type[E], where: Callable[[E], bool] | None = None) -> E | None:
    """The first event of one class (that ``where`` accepts), or None."""
    return next((e for e in events if isinstance(e, cls) and (where is None or where(e))), None)

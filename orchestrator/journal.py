"""The run journal: append-only, hash-chained JSON lines, fsynced per record.

One file per run (``STATE_DIR/runs/RUN_ID/journal.jsonl``), one event per line. It is the evidence of
what was done and the only input to ``resume``, ``restore --run`` and ``report``. A write that cannot be
made durable raises :class:`JournalError`: a run does not go on without its record (STYLE rule 7).

Record format (contract, ``schema_version: 1``)
-----------------------------------------------
Every line is ``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` encoded
as UTF-8, followed by ``\\n``. Every record carries:

``schema_version``  1
``seq``             0, 1, 2, ... without gaps
``prev``            SHA-256 (hex) of the previous line's bytes without its newline; 64 zeros for seq 0
``run_id``          the run (see :func:`new_run_id`)
``ts``              UTC wall clock, ISO 8601 with microseconds and ``Z`` (``2026-11-24T18:33:00.123456Z``)
``mono``            ``time.monotonic()`` of the writing process (comparable only between records written
                    by the same process, i.e. between a ``run-started``/``run-resumed`` and the next one)
``type``            the event type, below

``hmac``            (keyed journals: every run's) HMAC-SHA256 (hex) of the record's line without this
                    field, under the controller's journal key (derived from ``keys/baseline-signing.key``
                    for this purpose only; hosts never see it)

and the event's payload fields beside them. A record's hash is the SHA-256 of its line (without the
newline); the next record's ``prev`` holds it, so an edited, deleted or reordered record breaks the
chain at a line that :func:`verify_journal` names. The chain alone proves only that the file is
internally consistent: anyone who can write it can recompute it. The ``hmac`` makes a rewrite need
the controller key; and the off-box copy (:mod:`orchestrator.syslog_copy`, a syslog collector
elsewhere) makes it detectable even by someone who holds the key afterwards, for every record the
collector received. Neither proves that what the controller wrote was true, nor (locally) that
records were not cut off the end: compare with the collector for that.

Secrets never reach the file: every payload goes through the product's one masker
(:mod:`orchestrator.masking`) with the journal's known secret strings (passwords read from
environment variables, key contents: pass them as ``secrets=`` or :meth:`Journal.add_secret`); any
value under a key named like password / secret / token / passphrase / private_key is replaced by
``***`` (keys ending in ``_env``, ``_file`` or ``_path`` name where a secret lives, not the secret,
and are kept); lines of device output that carry a secret by their syntax (``enable secret 5 ..``,
``snmp-server community ..``) lose their value; and every string is capped at
:data:`orchestrator.masking.TEXT_CAP` bytes, the cut saying how many bytes were dropped.

Event types
-----------
The executor emits these; ``report`` and ``runs`` read them as the types of :mod:`orchestrator.events`
(one class per type; the contract test checks this list against that registry). Unknown types are kept
and shown as they are.

``run-started``        operator (user@host), host, pid, argv, mode, plan_id, inventory, inventory_sha256,
                       plan (the whole plan dict), scope, site, timezone; optional ``topology``
                       (``report.topology_of(inventory)``: hosts with segment, tier, depends_on, so the
                       report does not need the inventory file) and ``detected_at`` (ISO 8601 UTC, when
                       the incident was detected, if earlier than the run), dry_run, approve (the
                       approval policy)
``wave-started``       wave, phase, steps (the ids of the steps it runs)
``step-started``       step_id, action, target, wave
``command-sent``       step_id, driver, target, commands (list of strings, secrets masked); optional
                       ``sent_with`` (the other steps of the same device batch)
``verification``       step_id, check, passed, evidence
``step-finished``      step_id, action, target, status (verified|unproven|attested|failed|skipped|dry-run),
                       changed, already, escalated, error, evidence, duration_s; ``unproven``: done as far as
                       the device says, proven by no probe (an isolation with no host inside to probe from);
                       ``attested``: an integrity step the tool could not make, passed on a person's
                       vouched-clean attestation (error: "attested by X, not verified ...")
``escalation``         step_id, host, to, reason
``quarantine``         host, reason, powered_off; optional ``error`` (the power driver failed) or ``evidence``
``gate-approved``      gate, approver, how, summary (what the approver was shown)
``gate-refused``       gate, approver, how, summary
``milestone``          name (contained|shutdown-complete|restored), elapsed_s
``run-interrupted``    signal
``run-resumed``        by (user@host), pid, host, plan_id, verified_before; a new process: ``mono`` restarts
``run-finished``       status (completed|unproven|failed|interrupted), counts, left: [{step_id, reason}],
                       time_to_containment_s, time_to_shutdown_s, quarantined (host -> why)
``integrity-finding``  host, category, path, detail
``observer-error``     observer, error_type, message, event_type, event_seq, consequence: a view of the run
                       (progress view, JSON printer) raised; journaled once per observer, the run goes on
``clearance``          step_id, segment, host, quarantined, how (power-driver|attestation), text, and
                       ``evidence`` (power driver) or ``attestation`` (by, reason, operator, ts, seq,
                       evidence): why a host that did not pass its checks no longer holds its segment back
``attestation``        host, claim (physically-disconnected|vouched-clean), statement, by, reason, operator, from_host,
                       pid, evidence ({file, bytes, sha256} or null): ``orchestrator attest``, a person's word
``lock-taken-over``    holder: the stale lock's holder (pid, host, user, run_id, command, started,
                       proc_start) and why it was stale (reason)
``journal-repaired``   torn_file, torn_bytes, torn_sha256, line, reason: a partial last line (a write
                       cut by SIGKILL or power loss) was moved to ``torn_file`` before appending again
``state-dir-tightened`` detail: the state directory was open to others and was made 0700
``syslog-unavailable`` collector, error, retry: the off-box copy could not be delivered (noted once a
                       run; the run goes on, the sender retries with a bounded backoff)
``syslog-dropped``     collector, queue, reason: the copy's queue was full; newer records local only
``syslog-undelivered`` collector, records, reason: at the end, records the collector did not get
``ansible-event``      what the Ansible driver reported, each field optional: a playbook's start or end
                       (playbook, run, phase, hosts, timeout_s, rc, status, duration_s), a task on a host
                       (playbook, run, host, task, status, message, ignored), or the SSH connections opened
                       ahead (phase, hosts, failed, seconds)

The baseline captures journal (``baselines/captures.jsonl``, run id ``baseline-captures``, keyed and
copied off-box like a run's) holds ``baseline-captured`` (host, operator, file, sha256, forced,
reason, suspect) and ``baseline-refused`` (host, operator, why).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import hmac
import json
import os
import secrets as _secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, Protocol, TypeGuard

from orchestrator import masking, storage
from orchestrator.errors import JournalError

SCHEMA_VERSION = 1
GENESIS = "0" * 64
HMAC_FIELD = "hmac"
JOURNAL_KEY_PURPOSE = "orchestrator journal chain v1"
JOURNAL_NAME = "journal.jsonl"
TORN_SUFFIX = ".torn"

RESERVED_FIELDS = frozenset({"schema_version", "seq", "prev", "run_id", "ts", "mono", "type", HMAC_FIELD})

class EventSink(Protocol):
    """Where the executor sends events. The journal is one; a live progress view can be another."""

    def emit(self, type: str, **fields: Any) -> dict[str, Any]: ...


# --------------------------------------------------------------------------------------------
# Serialisation, hashing, masking
# --------------------------------------------------------------------------------------------


def canonical_line(record: Mapping[str, Any]) -> str:
    """The one serialisation of a record (without the newline)."""
    try:
        return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JournalError(
            f"record cannot be serialised as JSON: {exc}",
            target=str(record.get("type", "record")),
            hint="pass plain values (str, int, float, bool, None, lists, dicts) in event fields",
        ) from exc


def line_hash(line: str | bytes) -> str:
    """SHA-256 (hex) of a journal line without its newline."""
    data = line.encode("utf-8") if isinstance(line, str) else line
    return hashlib.sha256(data.rstrip(b"\n")).hexdigest()


def record_mac(record: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 (hex) of a record's canonical line without its ``hmac`` field, under ``key``."""
    body = {k: v for k, v in record.items() if k != HMAC_FIELD}
    return hmac.new(key, canonical_line(body).encode("utf-8"), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short public name of a journal key (which key wrote this?), never the key."""
    return hashlib.sha256(b"orchestrator-journal-key-id:" + key).hexdigest()[:16]


def utc_timestamp(now: datetime | None = None) -> str:
    """``2026-11-24T18:33:00.123456Z``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    """Inverse of :func:`utc_timestamp` (accepts any ISO 8601 with an offset or ``Z``)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def new_run_id(now: datetime | None = None) -> str:
    """``20261124T183300Z-3f9a1c``: sorts by start time, unique by its random suffix."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{_secrets.token_hex(3)}"


def current_operator() -> str:
    """``user@host`` of whoever runs this process; under sudo, the person behind it is named."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    host = socket.gethostname()
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != user:
        return f"{sudo_user}@{host} (sudo as {user})"
    return f"{user}@{host}"


def _jsonable(value: Any) -> Any:
    """Plain JSON values from what an executor naturally holds (Enums, Paths, dataclasses, tuples)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, datetime):
        return utc_timestamp(value) if value.tzinfo else value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalVerification:
    """What :func:`verify_journal` found. ``problems`` name line numbers (1-based)."""

    ok: bool
    records: int
    problems: list[str] = field(default_factory=list)
    run_id: str | None = None
    head: str | None = None  # SHA-256 of the last complete line: pin it to detect a rewritten file
    finished: bool = False  # the journal ends with run-finished
    authenticated: bool = False  # every record's HMAC checked against the controller's journal key

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "problems": list(self.problems),
            "run_id": self.run_id,
            "head": self.head,
            "finished": self.finished,
            "authenticated": self.authenticated,
        }


@dataclass(frozen=True)
class _Line:
    number: int  # 1-based
    raw: bytes  # without newline
    complete: bool  # ended with a newline


def _split_lines(data: bytes) -> list[_Line]:
    lines: list[_Line] = []
    start = 0
    number = 0
    while start < len(data):
        number += 1
        end = data.find(b"\n", start)
        if end < 0:
            lines.append(_Line(number, data[start:], complete=False))
            break
        lines.append(_Line(number, data[start:end], complete=True))
        start = end + 1
    return lines


def _parse_lines(lines: list[_Line], problems: list[str]) -> list[tuple[_Line, dict[str, Any]]]:
    """Each complete line that is a JSON object, with its record; every other line is a problem."""
    parsed: list[tuple[_Line, dict[str, Any]]] = []
    for line in lines:
        if not line.complete:
            problems.append(
                f"line {line.number}: truncated last line ({len(line.raw)} bytes without a newline: a write "
                "cut short, e.g. by SIGKILL or power loss; `orchestrator resume` moves it aside)"
            )
            continue
        try:
            record = json.loads(line.raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"line {line.number}: bad JSON ({exc})")
            continue
        if not isinstance(record, dict):
            problems.append(f"line {line.number}: bad JSON (a record must be an object)")
            continue
        parsed.append((line, record))
    return parsed


def _is_seq(seq: object) -> TypeGuard[int]:
    return isinstance(seq, int) and not isinstance(seq, bool)


def _envelope_problems(line: _Line, record: dict[str, Any]) -> list[str]:
    """The record's envelope: schema version, type/ts/prev, and the canonical form it was written in."""
    n = line.number
    problems = []
    if record.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"line {n}: unknown schema_version {record.get('schema_version')!r}")
    for key in ("type", "ts", "prev"):
        if not isinstance(record.get(key), str):
            problems.append(f"line {n}: record lacks {key!r}")
    if canonical_line(record).encode("utf-8") != line.raw:
        problems.append(f"line {n}: edited record (not in the canonical serialisation it was written in)")
    return problems


def _seq_problem(line: _Line, seq: int, last_seq: int, seqs: dict[int, _Line]) -> str | None:
    """Duplicated, reordered or deleted records, judged by ``seq`` after ``last_seq``."""
    n = line.number
    expected = last_seq + 1
    if seqs.get(seq) is not line:
        return f"line {n}: duplicated record (seq {seq} already at line {seqs[seq].number})"
    if seq < expected:
        return f"line {n}: reordered records (seq {seq} comes after seq {last_seq})"
    if seq > expected:
        missing = range(expected, seq)
        later = [m for m in missing if m in seqs]
        if later:
            return (f"line {n}: reordered records (seq {seq} where seq {expected} was expected; "
                    f"seq {later[0]} is at line {seqs[later[0]].number})")
        gap = f"seq {expected}" if len(missing) == 1 else f"seq {expected}..{seq - 1}"
        return f"line {n}: deleted record(s) before this line ({gap} missing)"
    return None


def _mac_problem(n: int, record: dict[str, Any], mac_key: bytes) -> str | None:
    mac = record.get(HMAC_FIELD)
    if not isinstance(mac, str):
        return (f"line {n}: record carries no {HMAC_FIELD} (written without the controller's journal key, "
                "or its MAC was stripped): it cannot be authenticated")
    if not hmac.compare_digest(mac, record_mac(record, mac_key)):
        return (f"line {n}: {HMAC_FIELD} does not match (the record was edited and its chain recomputed, or "
                f"it was written under another controller key than {key_id(mac_key)})")
    return None


def _prev_problem(n: int, seq: int, prev: object, seqs: dict[int, _Line], hashes: dict[int, str]) -> str | None:
    """The chain: the first record starts at genesis, every other one names its predecessor's hash."""
    if seq == 0:
        if prev != GENESIS:
            return f"line {n}: first record's prev is not {GENESIS[:8]}... (records deleted before it?)"
    elif seq - 1 in hashes and prev != hashes[seq - 1]:
        return (f"line {seqs[seq - 1].number}: edited record (hash mismatch: its SHA-256 is not the prev "
                f"recorded at line {n})")
    return None


def _verify_lines(lines: list[_Line], mac_key: bytes | None = None) -> JournalVerification:
    problems: list[str] = []
    parsed = _parse_lines(lines, problems)

    run_ids = {r.get("run_id") for _, r in parsed}
    run_id = parsed[0][1].get("run_id") if parsed else None
    if len(run_ids) > 1:
        problems.append(f"journal mixes run ids: {sorted(str(r) for r in run_ids)}")

    seqs: dict[int, _Line] = {}
    hashes: dict[int, str] = {}
    for line, record in parsed:
        seq = record.get("seq")
        if _is_seq(seq) and seq not in seqs:
            seqs[seq] = line
            hashes[seq] = line_hash(line.raw)

    unkeyed = mac_key is not None and bool(parsed) and not any(HMAC_FIELD in r for _, r in parsed)
    if unkeyed:
        problems.append(
            f"no record carries an {HMAC_FIELD}: the journal is unkeyed (written before journals were keyed, or "
            "every MAC was stripped); its chain proves nothing against anyone who could write the file"
        )
    last_seq = -1
    for line, record in parsed:
        problems.extend(_envelope_problems(line, record))
        seq = record.get("seq")
        if not _is_seq(seq):
            problems.append(f"line {line.number}: record lacks an integer 'seq'")
            continue
        found = [_seq_problem(line, seq, last_seq, seqs)]
        last_seq = max(last_seq, seq)
        if mac_key is not None and not unkeyed:
            found.append(_mac_problem(line.number, record, mac_key))
        found.append(_prev_problem(line.number, seq, record.get("prev"), seqs, hashes))
        problems.extend(p for p in found if p is not None)

    complete = [line for line in lines if line.complete]
    return JournalVerification(
        ok=not problems,
        records=len(parsed),
        problems=problems,
        run_id=run_id if isinstance(run_id, str) else None,
        head=line_hash(complete[-1].raw) if complete else None,
        finished=bool(parsed) and parsed[-1][1].get("type") == "run-finished",
        authenticated=mac_key is not None and not problems,
    )


def verify_journal(path: Path, key: bytes | None = None) -> JournalVerification:
    """Check the whole chain. Every problem names its line: edited, deleted, reordered, torn, bad JSON.

    With ``key`` (the controller's journal key, :func:`journal_key`) every record must also carry a
    valid HMAC: a journal rewritten with a recomputed chain, or stripped of its MACs, fails. Without
    it only the chain is checked, which anyone who can write the file can recompute.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise JournalError(
            f"cannot read the journal: {exc.strerror or exc}",
            target=str(path),
            hint="check the run id (`orchestrator status`) and the state directory (--state-dir)",
        ) from exc
    if not data:
        return JournalVerification(ok=False, records=0, problems=["line 1: empty journal (no run-started)"])
    return _verify_lines(_split_lines(data), key)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every complete record, in file order. A torn last line is left out (it never completed).

    Raises JournalError on a line in the middle that is not JSON; it does not check the chain
    (use :func:`verify_journal` for that).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise JournalError(
            f"cannot read the journal: {exc.strerror or exc}",
            target=str(path),
            hint="check the run id (`orchestrator status`) and the state directory (--state-dir)",
        ) from exc
    out: list[dict[str, Any]] = []
    for line in _split_lines(data):
        if not line.complete:
            break
        try:
            record = json.loads(line.raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise JournalError(
                f"line {line.number} is not JSON ({exc})",
                target=str(path),
                hint="run `orchestrator journal verify` on this run; the journal was damaged or edited",
            ) from exc
        if not isinstance(record, dict):
            raise JournalError(f"line {line.number} is not a JSON object", target=str(path))
        out.append(record)
    return out


# --------------------------------------------------------------------------------------------
# The journal
# --------------------------------------------------------------------------------------------


_fsync_dir = storage.fsync_dir
_write_all = storage._write_all


class Forwarder(Protocol):
    """An off-box copy of every record (:class:`orchestrator.syslog_copy.SyslogForwarder`)."""

    destination: str

    def bind(self, note: Callable[..., Any]) -> None: ...

    def submit(self, line: str, record: Mapping[str, Any]) -> None: ...

    def close(self, timeout_s: float) -> int: ...


FLUSH_TIMEOUT_S = 5.0  # at the end of a run, how long the off-box copy may take to catch up


class Journal:
    """The append-only journal of one run. Thread-safe: steps of a wave emit from several threads."""

    def __init__(
        self,
        path: Path,
        run_id: str,
        fd: int,
        records: list[dict[str, Any]],
        prev: str,
        secrets: Iterable[str] = (),
        clock: Callable[[], datetime] | None = None,
        key: bytes | None = None,
        forwarder: Forwarder | None = None,
    ) -> None:
        # Use Journal.create / Journal.open_existing. ``clock`` replaces the wall clock (tests, replays).
        # ``key``: the controller's journal key; every record then carries an HMAC of its line.
        # ``forwarder``: the off-box copy; every record is handed to it after it is durable here.
        self.path = path
        self.run_id = run_id
        self._fd: int | None = fd
        self._records = records
        self._prev = prev
        self._masker = masking.Masker(secrets)
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._clock = clock
        self._key = key
        self._forwarder = forwarder
        self.repaired: dict[str, Any] | None = None  # the journal-repaired record, if open_existing repaired
        if forwarder is not None:
            forwarder.bind(self._note_forwarder)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        run_id: str,
        *,
        secrets: Iterable[str] = (),
        clock: Callable[[], datetime] | None = None,
        key: bytes | None = None,
        forwarder: Forwarder | None = None,
    ) -> Journal:
        """A new, empty journal. Refuses if the file exists (one journal per run, never overwritten)."""
        path = Path(path)
        try:
            storage.private_mkdir(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except FileExistsError as exc:
            raise JournalError(
                "a journal already exists here",
                target=str(path),
                hint="use a new run id, or `orchestrator resume RUN_ID` to continue that run",
            ) from exc
        except OSError as exc:
            raise JournalError(
                f"cannot create the journal: {exc.strerror or exc}",
                target=str(path),
                hint="check that the state directory is writable and the disk is not full",
            ) from exc
        try:
            os.fsync(fd)
            _fsync_dir(path.parent)
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"cannot make the journal durable: {exc.strerror or exc}", target=str(path)) from exc
        return cls(path, run_id, fd, [], GENESIS, secrets, clock, key, forwarder)

    @classmethod
    def open_existing(
        cls,
        path: Path,
        *,
        secrets: Iterable[str] = (),
        clock: Callable[[], datetime] | None = None,
        key: bytes | None = None,
        forwarder: Forwarder | None = None,
    ) -> Journal:
        """Reopen a run's journal to append (resume). The chain (and, with ``key``, every record's
        HMAC) must verify first.

        A torn last line (a write cut by SIGKILL) is moved to ``journal.jsonl.torn`` and a
        ``journal-repaired`` record naming it is appended; every complete record is kept.
        Any other problem (edited, deleted, reordered records) refuses: JournalError lists them.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise JournalError(
                f"cannot read the journal: {exc.strerror or exc}",
                target=str(path),
                hint="check the run id (`orchestrator status`) and the state directory (--state-dir)",
            ) from exc
        lines = _split_lines(data)
        torn = lines[-1] if lines and not lines[-1].complete else None
        complete = [line for line in lines if line.complete]
        check = _verify_lines(complete, key)
        if not complete:
            raise JournalError(
                "the journal holds no complete record",
                target=str(path),
                hint="the run never started writing; start a new run",
            )
        if not check.ok:
            raise JournalError(
                "the journal does not verify; refusing to append to it:\n"
                + "\n".join(f"  {p}" for p in check.problems),
                target=str(path),
                hint="keep this file as evidence; start a new run rather than resuming this one",
            )
        records = [json.loads(line.raw.decode("utf-8")) for line in complete]
        run_id = str(records[0]["run_id"])
        torn_record: dict[str, Any] | None = None
        if torn is not None:
            torn_record = cls._set_torn_aside(path, torn, len(data) - len(torn.raw))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            raise JournalError(f"cannot open the journal: {exc.strerror or exc}", target=str(path)) from exc
        journal = cls(path, run_id, fd, records, line_hash(complete[-1].raw), secrets, clock, key, forwarder)
        if torn_record is not None:
            journal.repaired = journal.emit("journal-repaired", **torn_record)
        return journal

    @staticmethod
    def _set_torn_aside(path: Path, torn: _Line, keep_bytes: int) -> dict[str, Any]:
        side = path.with_name(path.name + TORN_SUFFIX)
        n = 1
        while side.exists():
            side = path.with_name(f"{path.name}{TORN_SUFFIX}.{n}")
            n += 1
        try:
            fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, torn.raw)
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(path.parent)
            with open(path, "r+b") as handle:
                handle.truncate(keep_bytes)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise JournalError(
                f"cannot set the torn last line aside: {exc.strerror or exc}",
                target=str(path),
                hint="check that the run directory is writable",
            ) from exc
        return {
            "reason": "partial last line (write cut short); moved aside, every complete record kept",
            "line": torn.number,
            "torn_file": side.name,
            "torn_bytes": len(torn.raw),
            "torn_sha256": hashlib.sha256(torn.raw).hexdigest(),
        }

    # -- writing ---------------------------------------------------------------------------

    def add_secret(self, secret: str) -> None:
        """Mask this string from now on (a password read after the journal was opened)."""
        if secret:
            with self._lock:
                self._masker.add(secret)

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """Append one event, durably (write + fsync). Returns the record as written.

        Raises JournalError if it cannot be written; after that the journal refuses further writes
        (a half-written record may be on disk; ``open_existing`` repairs it on resume).
        """
        clash = RESERVED_FIELDS.intersection(fields)
        if clash:
            raise JournalError(
                f"event fields {sorted(clash)} are reserved for the journal",
                target=type,
                hint="rename the payload field",
            )
        with self._lock:
            if self._fd is None:
                raise JournalError("the journal is closed", target=str(self.path))
            if self._broken is not None:
                raise JournalError(
                    f"an earlier write failed ({self._broken}); no further records are accepted",
                    target=str(self.path),
                    hint="resume the run once the disk problem is fixed: `orchestrator resume RUN_ID`",
                )
            fields = dict(fields)
            plan = fields.pop("plan", None)  # its id is its hash: masked for known secrets only
            payload = self._masker.value(_jsonable(fields))
            if plan is not None:
                payload["plan"] = self._masker.exact(_jsonable(plan))
            record: dict[str, Any] = {
                **payload,
                "schema_version": SCHEMA_VERSION,
                "seq": len(self._records),
                "prev": self._prev,
                "run_id": self.run_id,
                "ts": utc_timestamp(self._clock() if self._clock else None),
                "mono": time.monotonic(),
                "type": self._masker.text(str(type)),
            }
            if self._key is not None:
                record[HMAC_FIELD] = record_mac(record, self._key)
            line = canonical_line(record)
            try:
                _write_all(self._fd, (line + "\n").encode("utf-8"))
                os.fsync(self._fd)
            except OSError as exc:
                self._broken = exc.strerror or str(exc)
                raise JournalError(
                    f"cannot write the journal: {self._broken}",
                    target=str(self.path),
                    hint="free disk space or fix the state directory, then `orchestrator resume RUN_ID`",
                ) from exc
            self._records.append(record)
            self._prev = line_hash(line)
            if self._forwarder is not None:
                self._forwarder.submit(line, record)  # never blocks: a bounded queue, a sender thread
            return dict(record)

    def _note_forwarder(self, type: str, **fields: Any) -> None:
        """The off-box copy's own notes (collector down, records dropped): journaled, never raised."""
        with contextlib.suppress(JournalError):
            self.emit(type, **fields)

    def records(self) -> list[dict[str, Any]]:
        """Copies of every record, this process's and earlier ones (after open_existing)."""
        with self._lock:
            return [dict(r) for r in self._records]

    @property
    def head(self) -> str:
        """SHA-256 of the last line written (GENESIS when empty)."""
        return self._prev

    def close(self, flush_timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Close the file. The off-box copy gets up to ``flush_timeout_s`` to catch up first; what it
        could not deliver is counted in a last local ``syslog-undelivered`` record."""
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            undelivered = forwarder.close(flush_timeout_s)
            if undelivered:
                with contextlib.suppress(JournalError):
                    self.emit("syslog-undelivered", collector=forwarder.destination, records=undelivered,
                              reason=f"not delivered within {flush_timeout_s:g} s of the end of the run")
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def journal_key(key_path: Path, *, create: bool) -> bytes | None:
    """The controller's journal key: derived from the controller key (``keys/baseline-signing.key``,
    which hosts never see) for this purpose only, so a journal MAC can never pass as a baseline
    signature or the reverse. None when the controller key does not exist and ``create`` is false."""
    master = storage.load_key(key_path, create=create)
    return None if master is None else storage.derive_key(master, JOURNAL_KEY_PURPOSE)

"""The off-box copy of the journal: every record also sent to a syslog collector, and the comparison.

Someone who owns the controller after a run can rewrite its journal, and with the controller key even
recompute its HMACs. What a collector elsewhere already received, they cannot. So every journal
record, once durable locally, is also sent as one RFC 5424 message over TCP (octet-counting framing,
RFC 6587 §3.4.1; optionally TLS with a CA file, RFC 5425), whose MSG is the journal line itself.

Sending never blocks a run: records go into a bounded queue that a sender thread drains. A collector
that is down or goes away is noted in the journal once (``syslog-unavailable``), the run goes on,
and the sender retries with a bounded exponential backoff (0.5 s doubling up to 30 s), sending the
queued records in order when it is back. A full queue drops the newest records for the collector
(never locally) and is noted once (``syslog-dropped``). At the end of a run the journal gives the
copy a bounded time to catch up and counts what was not delivered (``syslog-undelivered``).

:func:`compare_with_collector` reads what the collector wrote (any line format that ends with the
message, e.g. rsyslog's default file format, or ``%msg%`` alone) and names every local record that
is missing there or differs, and every record the collector has that the local journal lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator.errors import UsageError

QUEUE_SIZE = 20_000  # records waiting for the collector (a 100-host shutdown writes ~2,000)
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
CONNECT_TIMEOUT_S = 3.0
SEND_TIMEOUT_S = 5.0
FACILITY_LOCAL0 = 16
SEVERITY_NOTICE = 5
APP_NAME = "orchestrator"


@dataclass(frozen=True)
class SyslogTarget:
    """Where the copy goes: ``tcp://HOST:PORT`` or ``tls://HOST:PORT`` (with ``ca_file``)."""

    host: str
    port: int
    tls: bool = False
    ca_file: str | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str, ca_file: str | None = None, *, source: str = "ORCHESTRATOR_SYSLOG") -> SyslogTarget:
        parts = urlsplit(url.strip())
        hint = "write tcp://HOST:PORT or tls://HOST:PORT (TLS with ORCHESTRATOR_SYSLOG_CA=CA-FILE)"
        if parts.scheme not in ("tcp", "tls") or not parts.hostname:
            raise UsageError(f"not a syslog collector address: {url!r}", target=source, hint=hint)
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None or parts.path not in ("", "/") or parts.query or parts.username:
            raise UsageError(f"not a syslog collector address: {url!r} (a port is needed, nothing else)",
                             target=source, hint=hint)
        if ca_file is not None and parts.scheme != "tls":
            raise UsageError("a CA file is given but the collector address is not tls://", target=source, hint=hint)
        return cls(host=parts.hostname, port=port, tls=parts.scheme == "tls", ca_file=ca_file)


def _printable(text: str, limit: int) -> str:
    """RFC 5424 header fields: printable US-ASCII without spaces, ``-`` when empty."""
    out = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in text)[:limit]
    return out or "-"


def format_message(line: str, record: Mapping[str, Any], hostname: str, procid: int) -> bytes:
    """One octet-counted RFC 5424 frame whose MSG is the journal line, byte for byte."""
    pri = FACILITY_LOCAL0 * 8 + SEVERITY_NOTICE
    ts = str(record.get("ts") or "-")
    header = (f"<{pri}>1 {_printable(ts, 64)} {_printable(hostname, 255)} {APP_NAME} {procid} "
              f"{_printable(str(record.get('type', '')), 32)} - ")
    message = header.encode("ascii") + line.encode("utf-8")
    return str(len(message)).encode("ascii") + b" " + message


def _open_tcp(host: str, port: int, timeout_s: float) -> socket.socket:
    """A TCP connection to the collector (each address in turn, like ``socket.create_connection``)."""
    error: OSError | None = None
    for family, kind, proto, _name, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout_s)
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"no address for {host}")


class SyslogForwarder:
    """Sends journal lines to one collector from a background thread (see the module's docstring)."""

    def __init__(self, target: SyslogTarget, *, queue_size: int = QUEUE_SIZE,
                 backoff: tuple[float, float] = (BACKOFF_FIRST_S, BACKOFF_MAX_S),
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.target = target
        self.destination = target.url
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=queue_size)
        self._backoff = backoff
        self._connect_timeout_s = connect_timeout_s
        self._note: Callable[..., Any] | None = None
        self._sock: socket.socket | None = None
        self._pending: bytes | None = None
        self._closing = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._noted_down = False
        self._noted_drop = False
        self.dropped = 0
        self.sent = 0
        self._hostname = socket.gethostname()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="syslog-copy", daemon=True)
        self._thread.start()

    # -- the journal's side -------------------------------------------------------------------

    def bind(self, note: Callable[..., Any]) -> None:
        """Where the forwarder notes its troubles (``journal.emit``-like: type, then fields)."""
        self._note = note

    def submit(self, line: str, record: Mapping[str, Any]) -> None:
        frame = format_message(line, record, self._hostname, self._pid)
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                first = not self._noted_drop
                self._noted_drop = True
            if first:
                self._notify("syslog-dropped", collector=self.destination, queue=self._queue.maxsize,
                             reason="the collector's queue is full: newer records go to the local journal only")

    def close(self, timeout_s: float) -> int:
        """Deliver what is queued within ``timeout_s``, then stop. Returns how many were not delivered."""
        self._closing.set()
        self._thread.join(max(0.0, timeout_s))
        self._stop.set()
        self._thread.join(1.0)
        with self._lock:
            left = self._queue.qsize() + (1 if self._pending is not None else 0) + self.dropped
        self._disconnect()
        return left

    # -- the sender thread --------------------------------------------------------------------

    def _notify(self, type: str, **fields: Any) -> None:
        if self._note is not None:
            self._note(type, **fields)

    def _connect(self) -> socket.socket:
        sock = _open_tcp(self.target.host, self.target.port, self._connect_timeout_s)
        if self.target.tls:
            context = ssl.create_default_context(cafile=self.target.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                sock = context.wrap_socket(sock, server_hostname=self.target.host)
            except BaseException:
                sock.close()
                raise
        sock.settimeout(SEND_TIMEOUT_S)
        return sock

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _next(self) -> bytes | None:
        if self._pending is not None:
            return self._pending
        try:
            frame = self._queue.get(timeout=0.2)
        except queue.Empty:
            return None
        with self._lock:
            self._pending = frame
        return frame

    def _run(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            frame = self._next()
            if frame is None:
                if self._closing.is_set():
                    return  # everything delivered
                continue
            try:
                if self._sock is None:
                    self._sock = self._connect()
                self._sock.sendall(frame)
            except Exception as exc:  # noqa: BLE001 - whatever fails, the copy waits and retries; the run goes on
                self._disconnect()
                if not self._noted_down:
                    self._noted_down = True
                    self._notify("syslog-unavailable", collector=self.destination,
                                 error=f"{type(exc).__name__}: {exc}",
                                 retry=f"every {self._backoff[0]:g} s doubling up to {self._backoff[1]:g} s; "
                                       "records stay queued meanwhile, the run goes on")
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            delay = self._backoff[0]
            with self._lock:
                self._pending = None
                self.sent += 1


# --------------------------------------------------------------------------------------------
# Comparing with what the collector received
# --------------------------------------------------------------------------------------------

_SEQ = re.compile(r'"seq":(\d+)')
_RUN = re.compile(r'"run_id":"([^"\\]*)"')


@dataclass(frozen=True)
class CollectorComparison:
    ok: bool
    local_records: int
    collector_records: int
    matched: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "local_records": self.local_records, "collector_records": self.collector_records,
                "matched": self.matched, "problems": list(self.problems), "notes": list(self.notes)}


def _collector_lines(path: Path, run_id: str) -> dict[int, list[str]]:
    """seq -> every message line the collector holds for ``run_id`` (JSON after the syslog header)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the collector's file: {exc.strerror or exc}", target=str(path),
                         hint="give the file the syslog collector wrote (e.g. its omfile output)") from exc
    out: dict[int, list[str]] = {}
    for raw in data.decode("utf-8", errors="replace").splitlines():
        start = raw.find('{"')
        if start < 0:
            continue
        message = raw[start:].rstrip()
        run = _RUN.search(message)
        seq = _SEQ.search(message)
        if not run or run.group(1) != run_id or not seq:
            continue
        out.setdefault(int(seq.group(1)), []).append(message)
    return out


def compare_with_collector(journal_path: Path, collector_file: Path) -> CollectorComparison:
    """Every local record must be at the collector byte for byte; name each that is missing or
    differs, and each the collector has that the local journal does not (deleted or cut off here).

    A record the collector cut short (its message size limit) still counts as received when the
    collector's copy of the next record carries the local record's SHA-256 in ``prev``."""
    import hashlib

    from orchestrator.journal import read_journal

    local_lines = [ln for ln in Path(journal_path).read_bytes().decode("utf-8", errors="replace").split("\n")
                   if ln]
    records = read_journal(journal_path)
    if not records:
        return CollectorComparison(False, 0, 0, 0, ["the local journal holds no record"])
    run_id = str(records[0].get("run_id"))
    remote = _collector_lines(collector_file, run_id)
    problems: list[str] = []
    notes: list[str] = []
    matched = 0
    local_seqs: set[int] = set()
    for number, (line, record) in enumerate(zip(local_lines, records, strict=False), start=1):
        seq = record.get("seq")
        kind = record.get("type")
        if not isinstance(seq, int):
            problems.append(f"line {number}: local record without a seq")
            continue
        local_seqs.add(seq)
        copies = remote.get(seq, [])
        if line in copies:
            matched += 1
            if any(c != line for c in copies):
                problems.append(f"line {number} (seq {seq}, {kind}): the collector also holds a different "
                                "record with this seq")
            continue
        if not copies:
            problems.append(f"line {number} (seq {seq}, {kind}): missing at the collector")
            continue
        digest = hashlib.sha256(line.encode("utf-8")).hexdigest()
        successor = [c for c in remote.get(seq + 1, []) if f'"prev":"{digest}"' in c]
        if successor and all(line.startswith(c[:-32] if len(c) > 32 else c) for c in copies):
            matched += 1
            notes.append(f"line {number} (seq {seq}, {kind}): cut short by the collector; its hash is pinned "
                         "by the next record the collector received")
            continue
        problems.append(f"line {number} (seq {seq}, {kind}): differs from what the collector received"
                        + _field_diff(line, copies[0]))
    for seq in sorted(set(remote) - local_seqs):
        kinds = {_kind_of(c) for c in remote[seq]}
        problems.append(f"seq {seq} ({', '.join(sorted(kinds))}): at the collector but not in the local journal "
                        "(deleted or cut off here)")
    collector_records = sum(len(v) for v in remote.values())
    return CollectorComparison(not problems, len(records), collector_records, matched, problems, notes)


def _kind_of(message: str) -> str:
    match = re.search(r'"type":"([^"\\]*)"', message)
    return match.group(1) if match else "?"


def _field_diff(local: str, remote: str) -> str:
    try:
        a, b = json.loads(local), json.loads(remote)
    except ValueError:
        return " (the collector's copy is not complete JSON)"
    if not isinstance(a, dict) or not isinstance(b, dict):
        return ""
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return f" (fields: {', '.join(keys)})" if keys else " (same fields, different bytes)"


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes (tests and the end-of-run flush)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()

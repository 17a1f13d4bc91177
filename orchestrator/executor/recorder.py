"""The run's record: events to the journal first, then to the observers (progress views)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.journal import EventSink

Observer = Callable[[dict[str, Any]], None]

OBSERVER_ERROR_LIMIT = 500  # characters of an observer's exception message kept in the journal


def observer_name(observer: Observer) -> str:
    """How an observer is named in the journal: its ``name`` attribute, else its function or class name."""
    name = getattr(observer, "name", None)
    if isinstance(name, str) and name:
        return name
    return str(getattr(observer, "__name__", None) or type(observer).__name__)


@dataclass
class Recorder:
    """Writes events to the journal (the record) and forwards them to observers (progress views).

    The journal is the record: a journal write that fails raises and ends the run (STYLE rule 7).
    An observer is only a view of it: one that raises never stops the run. Its first error is
    journaled (``observer-error``: the observer's name, the exception type and message, masked by
    the journal like every field); later errors of the same observer are counted, not journaled, and
    it keeps receiving events (one bad line must not blind the whole view)."""

    journal: EventSink  # orchestrator.journal.Journal
    observers: list[Observer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    observer_errors: dict[str, int] = field(default_factory=dict)  # observer name -> errors so far

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            record: dict[str, Any] = self.journal.emit(type, **fields)
        self._notify(record)
        return record

    def _notify(self, record: dict[str, Any], skip: str | None = None) -> None:
        for observer in self.observers:
            name = observer_name(observer)
            if name == skip:
                continue
            try:
                observer(record)
            except Exception as exc:  # noqa: BLE001 - a view never stops a run: journaled once, run goes on
                self._observer_failed(name, exc, record)

    def _observer_failed(self, name: str, exc: Exception, record: dict[str, Any]) -> None:
        with self._lock:
            count = self.observer_errors.get(name, 0) + 1
            self.observer_errors[name] = count
            if count > 1:
                return
            message = str(exc)
            if len(message) > OBSERVER_ERROR_LIMIT:
                message = message[:OBSERVER_ERROR_LIMIT] + f"... ({len(message)} characters)"
            error: dict[str, Any] = self.journal.emit(
                "observer-error", observer=name, error_type=type(exc).__name__, message=message,
                event_type=str(record.get("type", "")), event_seq=record.get("seq"),
                consequence="the run goes on; this observer's later errors are counted, not journaled")
        self._notify(error, skip=name)  # the other views learn of it; the failing one is spared

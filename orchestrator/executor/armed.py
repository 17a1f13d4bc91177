"""A shutdown's stops armed ahead: one stop run started for every host to stop (nothing reaches a
host before its release), each host released the moment everything that depends on it is verified
off, and each host's power-off verdict kept for its verification (``PlaybookProgress``).

Why: a new ``ansible-playbook`` per batch of hosts ready together costs a process start and its
imports, on the same CPUs as the machines going down, once per batch; the armed run pays it once,
during containment. The absence of a release is the safe default: a host is never stopped because
it was armed, only because it was released (``drivers.base.ArmedStops``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from orchestrator.drivers.base import ArmedStops, PlaybookRun, PowerOffReport
from orchestrator.errors import OrchestratorError, SafetyInterlock

# At most this many hosts in one armed run (one waiting Ansible worker each); the hosts after them,
# in plan order, are stopped by a playbook of their own when they become ready.
ARMED_STOPS_MAX = 512


class PlaybookProgress:
    """Per host, the stop playbook's verdict as soon as it is known: its power-off result (reported
    by the host stopper), or else the whole run's outcome for that host once the run has ended."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self._hosts = frozenset(hosts)
        self._verdicts: dict[str, tuple[dict[str, Any], float]] = {}  # host -> (verdict, when it came)
        self._lock = threading.Lock()

    def on_power_off(self, report: PowerOffReport) -> None:
        self._settle(report.host, {"status": report.status, "message": report.message})

    def on_done(self, future: Future[PlaybookRun]) -> None:
        try:
            run = future.result()
            verdicts = {h: {"status": o.status, "message": o.message} for h, o in run.hosts.items()}
        except Exception as exc:  # noqa: BLE001 - the run itself failed: every host carries why
            text = f"{exc.code}: {exc}" if isinstance(exc, OrchestratorError) else f"{type(exc).__name__}: {exc}"
            # A refusal (a host that must keep running) is never overridden by an out-of-band power off.
            status = "refused" if isinstance(exc, SafetyInterlock) else "error"
            verdicts = {h: {"status": status, "message": text} for h in self._hosts}
        for host in self._hosts:
            self._settle(host, verdicts.get(host, {"status": "error", "message": "no result from the playbook"}))

    def _settle(self, host: str, verdict: dict[str, Any]) -> None:
        """The first verdict for a host of this run stands."""
        with self._lock:
            if host in self._hosts and host not in self._verdicts:
                self._verdicts[host] = (verdict, time.monotonic())

    def peek(self, host: str) -> tuple[dict[str, Any], float] | None:
        """The host's verdict and when it came (monotonic), or None while it has not come."""
        with self._lock:
            found = self._verdicts.get(host)
            return None if found is None else (dict(found[0]), found[1])


@dataclass(frozen=True)
class ArmedStopRun:
    """The run's armed stops and the verdicts they report."""

    stops: ArmedStops
    progress: PlaybookProgress

    def covers(self, host: str) -> bool:
        """This host was armed and the run can still stop it when released (it has not ended)."""
        return host in self.stops.hosts and self.stops.running()

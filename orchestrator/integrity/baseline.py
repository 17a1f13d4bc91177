"""Capturing and checking hosts: a new signed baseline per capture (refused for a host a run found
suspect), and a check of a host against its newest baseline; both over many hosts in parallel."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator import storage
from orchestrator.config import Settings
from orchestrator.errors import IntegrityError, OrchestratorError, UnreachableError, UsageError
from orchestrator.integrity.collector import CommandRunner, collect, collector_script, host_roots
from orchestrator.integrity.diff import Difference, IntegrityResult, diff_snapshots, ordered
from orchestrator.integrity.snapshot import VOLATILE_FILES
from orchestrator.integrity.store import (
    BASELINE_SCHEMA,
    now,
    open_captures_journal,
    read_baseline,
    signing_key,
    store_baseline,
)
from orchestrator.model import Inventory

if TYPE_CHECKING:
    from orchestrator.journal import Journal

T = TypeVar("T")

COLLECT_ATTEMPTS = 3  # collections of a host at most, while a part of it could not be read
RECOLLECT_PAUSE_S = 2.0


class BaselineRefused(IntegrityError):  # noqa: N818 - a refusal by a safety interlock, not a bug
    """Re-baselining a host that a run found compromised, without ``--force --reason``."""

    code = "baseline-refused"
    exit_code = 3


def _host_or_error(inventory: Inventory, host: str) -> None:
    if host not in inventory.hosts:
        raise IntegrityError(
            "no such host in the inventory",
            target=host,
            hint=f"check the name against {inventory.path}",
        )
    if inventory.hosts[host].never_ssh:  # issue 14: windows and ESXi hosts never get an SSH command
        raise IntegrityError(
            "the collector is Linux-only and this host is never reached over SSH (os: windows, or an ESXi "
            "host through vCenter): nothing was sent to it",
            target=host,
            hint="at restore its integrity step takes an attestation (orchestrator attest RUN_ID HOST --claim clean)",
        )


def capture_baseline(ssh: CommandRunner, inventory: Inventory, host: str, settings: Settings) -> Path:
    """Collect ``host``'s state and store it, signed, as a new version ``baselines/HOST/TAKEN.json``
    (earlier versions are kept). Returns the path. Use :func:`capture_all` from a command: it takes
    the state lock, refuses suspect hosts and journals every capture."""
    _host_or_error(inventory, host)
    key = signing_key(settings, create=True)
    roots = host_roots(inventory, host)
    collected = collect(ssh, host, roots)
    if collected.meta.get("uid") != "0":
        raise IntegrityError(
            f"the collector ran as uid {collected.meta.get('uid', '?')}, not root: it cannot read every file",
            target=host,
            hint="give the host a credential that logs in as root",
        )
    failed = collected.snapshot.failed_sections()
    if failed:
        raise IntegrityError(
            "the collector could not read " + ", ".join(f"{n} (exit {rc})" for n, rc in sorted(failed.items()))
            + ": no baseline was written",
            target=host,
            hint="run the capture again once the host is idle (a busy host's systemctl can time out)",
        )
    doc: dict[str, Any] = {
        "schema": BASELINE_SCHEMA,
        "host": host,
        "address": str(inventory.hosts[host].management_address),
        "taken": now(),
        "duration_s": round(collected.duration_s, 3),
        "collector_sha256": hashlib.sha256(collector_script().encode()).hexdigest(),
        "roots": list(roots),
        "excluded": sorted(VOLATILE_FILES),
        "meta": collected.meta,
        "collector_stderr": collected.stderr,
        "snapshot": collected.snapshot.as_json(),
    }
    return store_baseline(host, doc, key, settings)


def check_host(ssh: CommandRunner, inventory: Inventory, host: str, settings: Settings) -> IntegrityResult:
    """Compare ``host`` now with its signed baseline; every difference, by category and path."""
    _host_or_error(inventory, host)
    baseline = read_baseline(host, settings)  # before touching the host: no baseline, no check
    roots = tuple(dict.fromkeys((*baseline.roots, *host_roots(inventory, host))))
    started = time.monotonic()
    # Up to COLLECT_ATTEMPTS collections, RECOLLECT_PAUSE_S apart, while the last one is not whole:
    # * a part the host could not read now (a busy host's `systemctl list-unit-files` times out while
    #   30 machines boot): one slow answer does not quarantine a host; what still cannot be read
    #   stays a difference (not proven clean);
    # * the connection lost under the collector (once: one host of a 300-host lab restore, at a load
    #   average over 100): a lost collection yields nothing to compare and proves nothing; a host
    #   that stays unreachable still fails the check (unless an earlier collection has its verdict).
    # A difference seen in any collection counts: a host cannot clean up between two collections.
    seen: set[Difference] = set()
    differences: Sequence[Difference] = ()  # the last collection's that came back
    came_back = False
    for attempt in range(1, COLLECT_ATTEMPTS + 1):
        if attempt > 1:
            time.sleep(RECOLLECT_PAUSE_S)
        try:
            collected = collect(ssh, host, roots)
        except UnreachableError:
            if not came_back and attempt == COLLECT_ATTEMPTS:
                raise
            continue
        came_back = True
        differences = diff_snapshots(baseline.snapshot, collected.snapshot)
        seen.update(d for d in differences if d.category != "collector")
        if not collected.snapshot.failed_sections():
            break
    return IntegrityResult(
        host=host,
        differences=ordered({*differences, *seen}),
        baseline_taken=baseline.taken,
        checked=now(),
        duration_s=time.monotonic() - started,
        collections=attempt,
    )


def listening_ports(baseline: Mapping[str, Any]) -> tuple[str, ...]:
    """The baseline's listening sockets ("tcp 0.0.0.0:22", ...), for the health check."""
    return tuple(baseline.get("snapshot", {}).get("ports", ()))


def listening_tcp_ports(baseline: Mapping[str, Any]) -> tuple[int, ...]:
    ports = {int(p.rsplit(":", 1)[1]) for p in listening_ports(baseline) if p.startswith("tcp")}
    return tuple(sorted(ports))


def _in_parallel(fn: Callable[[str], T], hosts: Iterable[str], forks: int) -> dict[str, T | OrchestratorError]:
    hosts = list(dict.fromkeys(hosts))
    if not hosts:
        return {}

    def one(host: str) -> T | OrchestratorError:
        try:
            return fn(host)
        except OrchestratorError as exc:  # per-host outcome: recorded, the others go on
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        return dict(zip(hosts, pool.map(one, hosts), strict=True))


# --------------------------------------------------------------------------------------------
# suspect hosts: what the journals say since
# --------------------------------------------------------------------------------------------

# One journal record -> (host, why it is suspect) or (host, None) when it clears the host; None: no bearing.
_Verdict = tuple[str, str | None] | None


def _quarantined(r: Mapping[str, Any], run: str) -> _Verdict:
    return (r["host"], f"quarantined in run {run}: {r.get('reason', '')}") if isinstance(r.get("host"), str) else None


def _finding(r: Mapping[str, Any], run: str) -> _Verdict:
    return (r["host"], f"differed from its baseline in run {run}") if isinstance(r.get("host"), str) else None


def _integrity_step(r: Mapping[str, Any], run: str) -> _Verdict:
    host = r.get("target")
    if r.get("action") != "check-integrity" or not isinstance(host, str):
        return None
    if r.get("status") == "verified":
        return host, None
    if r.get("status") == "failed":
        return host, f"failed its integrity check in run {run}"
    return None


def _forced_capture(r: Mapping[str, Any], run: str) -> _Verdict:
    del run
    return (r["host"], None) if r.get("forced") and isinstance(r.get("host"), str) else None


_VERDICTS: dict[str, Callable[[Mapping[str, Any], str], _Verdict]] = {
    "quarantine": _quarantined,
    "integrity-finding": _finding,
    "step-finished": _integrity_step,
    "baseline-captured": _forced_capture,
}


def suspect_hosts(settings: Settings) -> dict[str, str]:
    """Hosts that a run quarantined or found differing from their baseline, and that nothing has
    cleared since (a later verified integrity check, or a forced capture), with why.

    Every run's journal counts, however old: a host quarantined months ago and never proven clean
    since is still suspect. A journal that cannot be read makes every host of its plan suspect.
    """
    from orchestrator.journal import read_journal

    events: list[tuple[str, int, str, str | None]] = []  # (ts, order, host, why or None when cleared)
    runs = sorted(p for p in settings.runs_dir.glob("*/journal.jsonl")) if settings.runs_dir.is_dir() else []
    for order, path in enumerate([*runs, settings.baseline_journal_path]):
        if not path.is_file():
            continue
        run = path.parent.name if path in runs else "baseline captures"
        try:
            records = read_journal(path)
        except OrchestratorError as exc:
            return {"*": f"the journal of {run} cannot be read ({exc.message}): nothing can be ruled out"}
        for r in records:
            judge = _VERDICTS.get(str(r.get("type")))
            verdict = judge(r, run) if judge else None
            if verdict is not None:
                events.append((str(r.get("ts", "")), order, *verdict))
    suspect: dict[str, str] = {}
    for _ts, _order, host, why in sorted(events, key=lambda e: (e[0], e[1])):
        if why is None:
            suspect.pop(host, None)
        else:
            suspect[host] = why
    return suspect


# --------------------------------------------------------------------------------------------
# many hosts
# --------------------------------------------------------------------------------------------


def capture_all(
    ssh: CommandRunner,
    inventory: Inventory,
    hosts: Iterable[str],
    settings: Settings,
    forks: int | None = None,
    *,
    force: bool = False,
    reason: str | None = None,
    operator: str = "",
) -> dict[str, Path | OrchestratorError]:
    """Capture every host in parallel (``forks`` at a time, default ``settings.forks``), under the
    state-dir lock, each as a new version, each capture journaled (``baselines/captures.jsonl``).

    A host that a run quarantined or found differing (:func:`suspect_hosts`) is refused
    (:class:`BaselineRefused`) unless ``force`` with a ``reason``: a capture after an incident would
    sign the compromised state. Each value is the baseline's path, or why that host was not captured.
    """
    from orchestrator.journal import current_operator
    from orchestrator.lock import RunLock

    if force and not (reason or "").strip():
        raise UsageError("--force needs --reason: say why this host's current state is trusted",
                         target="--force", hint="e.g. --reason 'rebuilt from the 2026-01-10 image, EDR scan clean'")
    hosts = list(dict.fromkeys(hosts))
    settings.syslog_target()  # a malformed collector address: exit 2 before anything
    storage.ensure_private_dir(settings.state_dir)
    signing_key(settings, create=True)  # once, before the threads
    with RunLock(settings.lock_path, command="baseline capture"):
        suspects = suspect_hosts(settings)
        journal = open_captures_journal(settings)
        capture = _Capture(ssh, inventory, settings, journal, operator or current_operator(), force, reason)
        try:
            return _in_parallel(lambda host: capture.one(host, suspects.get(host) or suspects.get("*")),
                                hosts, forks or settings.forks)
        finally:
            journal.close()


class _Capture:
    """One capture of :func:`capture_all`, journaled: refused for a suspect host unless forced."""

    def __init__(self, ssh: CommandRunner, inventory: Inventory, settings: Settings, journal: Journal,
                 operator: str, force: bool, reason: str | None) -> None:
        self.ssh, self.inventory, self.settings, self.journal = ssh, inventory, settings, journal
        self.operator, self.force, self.reason = operator, force, reason

    def one(self, host: str, why: str | None) -> Path:
        if why and not self.force:
            self.journal.emit("baseline-refused", host=host, operator=self.operator, why=why)
            raise BaselineRefused(
                f"not re-baselined: {why}; a capture now could sign a compromised state",
                target=host,
                hint="prove it clean first (integrity check / restore), or, if it was rebuilt or "
                     "cleared, pass --force --reason TEXT (journaled with who and why)")
        path = capture_baseline(self.ssh, self.inventory, host, self.settings)
        self.journal.emit("baseline-captured", host=host, operator=self.operator, file=str(path),
                          sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                          forced=bool(why) and self.force, reason=self.reason if self.force else None, suspect=why)
        return path


def check_all(
    ssh: CommandRunner,
    inventory: Inventory,
    hosts: Iterable[str],
    settings: Settings,
    forks: int | None = None,
) -> dict[str, IntegrityResult | OrchestratorError]:
    """Check every host in parallel. Each value is the result, or why the host could not be checked
    (no baseline, a forged baseline, unreachable): such a host is not clean."""
    return _in_parallel(lambda h: check_host(ssh, inventory, h, settings), hosts, forks or settings.forks)


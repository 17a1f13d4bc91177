"""The ansible driver: one typed wrapper over ``ansible_runner.run`` and the playbooks in ``playbooks/``.

Only ansible-runner's public interface is used (``ansible_runner.run``); Ansible itself is never
imported. Each call runs one ``ansible-playbook`` process for a whole wave of hosts and returns a
value: a :class:`PlaybookRun` with one :class:`HostOutcome` per host. Exceptions mean "cannot
continue" (unknown host, missing playbook, an event sink that fails, a refused power-off).

Secure, explicit settings (ansible-runner's ``envvars``/``settings``, never ambient config):
host-key checking on, strict SSH options from the inventory export, pipelining, bounded forks,
SSH ControlMaster with a short control-path directory, no retry files, no implicit fact
gathering, nothing printed (``quiet``), a job timeout reported as a failure.

Nothing from the inventory is ever templated or decides how Ansible connects: the inventory file
and the extra variables are written with every string marked unsafe (``ansible_inventory.dumps``,
``{"__ansible_unsafe": ...}``), a host's ``vars:`` may not hold ``ansible_*`` keys, and host vars a
caller adds may not either. SSH control sockets live in a private directory (0700, checked).

Stops may start on connections opened ahead (``open_connections``: OpenSSH control masters with
the same options, see ``ssh_masters``); every other playbook gets a control directory of its own.

Runner events become small dicts for ``event_sink`` (task started/ok/changed/failed/unreachable/
skipped per host), carrying a short message with every known secret masked, never raw results.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from orchestrator import masking
from orchestrator.drivers.ansible_inventory import dumps, mark_unsafe, to_ansible_inventory
from orchestrator.drivers.base import HostOutcome as HostOutcome  # the interface's values, re-exported
from orchestrator.drivers.base import PlaybookRun as PlaybookRun
from orchestrator.drivers.base import PowerOffCallback, PowerOffReport
from orchestrator.drivers.ssh_masters import SshMasters, private_dir
from orchestrator.errors import DriverError, SafetyInterlock, UsageError
from orchestrator.model import Inventory
from orchestrator.storage import atomic_write, private_mkdir, write_new

EventSink = Callable[[dict[str, Any]], None]

STOP_HOST_PLAYBOOK = "stop-host.yml"
RELEASE_FILE_NAME = "verdict"  # an armed host's release: RELEASE_DIR/HOST/verdict (stop-host.yml builds the same)
CHECK_HEALTH_PLAYBOOK = "check-health.yml"
# The stop-host task whose lost connection means "the machine is going down": let verification judge.
POWER_OFF_TASK_PREFIX = "Power off"

_MESSAGE_MAX = 400
_MASK = masking.MASK  # the product's one mask string (orchestrator/masking.py)
# Environment variables whose values stay readable in ansible-runner's ``command`` artifact.
_ENV_KEEP_PREFIXES = ("ANSIBLE_",)
_ENV_KEEP = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "PWD", "USER", "SHELL", "TERM"})
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9_./-]+$")  # a control directory Ansible quotes as ControlPath="DIR/%C"


def default_playbooks_dir() -> Path:
    """``playbooks/`` next to the package (a source checkout or an editable install)."""
    return Path(__file__).resolve().parents[2] / "playbooks"


class RunnerResult(Protocol):
    """What this driver reads from ``ansible_runner.run``'s return value."""

    rc: int
    status: str


RunFunction = Callable[..., RunnerResult]


# --------------------------------------------------------------------------------------------
# Pure logic: runner events -> sink events and host outcomes (unit-tested without Ansible)
# --------------------------------------------------------------------------------------------

_RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


class Masker(masking.Masker):
    """The product's one masker, loaded with the passwords the inventory's credentials reference."""

    @classmethod
    def for_inventory(cls, inventory: Inventory, environ: Mapping[str, str] | None = None) -> Masker:
        env = os.environ if environ is None else environ
        names = {c.password_env for c in inventory.credentials.values() if c.password_env}
        return cls(env.get(n, "") for n in names)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 3] + "..."


def result_message(res: Mapping[str, Any]) -> str:
    """A one-line summary of a task result: its failed loop items, else msg, stderr, stdout."""
    results = res.get("results")
    if isinstance(results, list):
        parts = [
            f"{r.get('item', '?')}: {result_message(r)}"
            for r in results
            if isinstance(r, Mapping) and (r.get("failed") or r.get("unreachable"))
        ]
        if parts:
            return _short("; ".join(parts))
    for key in ("msg", "stderr", "stdout", "module_stderr", "module_stdout"):
        value = res.get(key)
        if isinstance(value, str) and value.strip():
            return _short(value)
        if isinstance(value, list) and value:
            return _short(" ".join(str(v) for v in value))
    return ""


def _event_status(event: str, res: Mapping[str, Any]) -> str | None:
    status = _RESULT_EVENTS.get(event)
    if status == "ok" and res.get("changed"):
        return "changed"
    return status


def sink_event(runner_event: Mapping[str, Any], playbook: str, ident: str, mask: Masker) -> dict[str, Any] | None:
    """The event the orchestrator journals for one runner event, or None for events it ignores.

    Only names, statuses and a short masked message leave: never raw task results.
    """
    name = runner_event.get("event")
    data = runner_event.get("event_data") or {}
    host = data.get("host")
    base = {"type": "ansible.task", "playbook": playbook, "run": ident}
    if name == "runner_on_start" and host:
        return {**base, "host": host, "task": data.get("task", ""), "status": "started", "message": ""}
    if name in _RESULT_EVENTS and host:
        res = data.get("res") or {}
        status = _event_status(str(name), res)
        message = mask(result_message(res)) if status in ("failed", "unreachable") else ""
        out = {**base, "host": host, "task": data.get("task", ""), "status": status, "message": message}
        if status == "failed" and data.get("ignore_errors"):
            out["ignored"] = True
        return out
    return None


@dataclass
class _HostTrace:
    """What happened to one host, in event order."""

    tasks: list[dict[str, str]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None  # message of the last unrescued failure
    unreachable: tuple[str, str] | None = None  # (task, message)
    started: str | None = None  # task started with no result yet


def _trace_events(events: Iterable[Mapping[str, Any]], mask: Masker) -> tuple[dict[str, _HostTrace], dict[str, Any]]:
    traces: dict[str, _HostTrace] = {}
    stats: dict[str, Any] = {}
    for ev in events:
        name = ev.get("event")
        data = ev.get("event_data") or {}
        if name == "playbook_on_stats":
            stats = dict(data)
            continue
        host = data.get("host")
        if not host:
            continue
        trace = traces.setdefault(str(host), _HostTrace())
        task = str(data.get("task", ""))
        if name == "runner_on_start":
            trace.started = task
            continue
        if name not in _RESULT_EVENTS:
            continue
        res = data.get("res") or {}
        status = _event_status(str(name), res) or "ok"
        trace.started = None
        message = mask(result_message(res))
        trace.tasks.append({"task": task, "status": status, "message": message if status != "ok" else ""})
        if status in ("ok", "changed"):
            facts = res.get("ansible_facts")
            if isinstance(facts, Mapping):
                trace.facts.update(facts)
        if task.startswith(POWER_OFF_TASK_PREFIX) and isinstance(res.get("stdout"), str):
            trace.facts["stop_host_report"] = stop_host_report(res["stdout"])
        elif status == "failed" and not data.get("ignore_errors"):
            trace.failed = f"{task}: {message}" if message else task
        elif status == "unreachable":
            trace.unreachable = (task, message)
    return traces, stats


def stop_host_report(stdout: str) -> dict[str, Any]:
    """The lines stop-host.yml's power-off task prints (``stopped NAME``, ``failed NAME``,
    ``poweroff scheduled in N ms``, or ``N s`` from older playbooks) as the host's report, in the
    order the services were stopped."""
    report: dict[str, Any] = {"services_stopped": [], "services_failed": [], "poweroff_in_s": None}
    for line in stdout.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "stopped" and rest:
            report["services_stopped"].append(rest)
        elif word == "failed" and rest:
            report["services_failed"].append(rest)
        elif word == "poweroff" and rest.startswith("scheduled in "):
            delay = rest.removeprefix("scheduled in ")
            number, _, unit = delay.partition(" ")
            scale = {"ms": 0.001, "s": 1}.get(unit)
            report["poweroff_in_s"] = int(number) * scale if number.isdigit() and scale else delay
    return report


def _count(stats: Mapping[str, Any], key: str, host: str) -> int:
    table = stats.get(key) or {}
    value = table.get(host, 0) if isinstance(table, Mapping) else 0
    return int(value or 0)


def _unreachable_outcome(host: str, task: str, message: str, results: dict[str, Any]) -> HostOutcome:
    if task.startswith(POWER_OFF_TASK_PREFIX):
        text = (
            "connection lost during power-off (expected while the machine goes down); "
            "verification decides whether it is off"
        )
    else:
        text = f"unreachable at task '{task}'"
    if message:
        text = f"{text}: {message}"
    return HostOutcome(host, "unreachable", text, results)


def host_outcomes(
    hosts: Sequence[str],
    events: Iterable[Mapping[str, Any]],
    *,
    runner_status: str,
    rc: int,
    timeout_s: float,
    mask: Masker | None = None,
) -> dict[str, HostOutcome]:
    """One outcome per requested host, from the runner's events and final status.

    Precedence: unreachable, then failed, then timeout (a host still running when the job was
    killed, or never seen), then the play's stats (changed/ok/skipped).
    """
    mask = mask or Masker(())
    traces, stats = _trace_events(events, mask)
    out: dict[str, HostOutcome] = {}
    for host in hosts:
        trace = traces.get(host, _HostTrace())
        results: dict[str, Any] = {"tasks": list(trace.tasks), **trace.facts}
        if trace.unreachable is not None:
            out[host] = _unreachable_outcome(host, trace.unreachable[0], trace.unreachable[1], results)
        elif trace.failed is not None and (not stats or _count(stats, "failures", host) > 0):
            out[host] = HostOutcome(host, "failed", trace.failed, results)
        elif runner_status in ("timeout", "canceled") and not (stats and host in stats.get("processed", {})):
            last = trace.started or (trace.tasks[-1]["task"] if trace.tasks else None)
            where = f" (last task: {last})" if last else " (no task started)"
            what = f"timed out after {timeout_s:g}s" if runner_status == "timeout" else "canceled"
            out[host] = HostOutcome(host, "failed", f"{what}{where}", results)
        elif not stats and not trace.tasks:
            out[host] = HostOutcome(
                host,
                "failed",
                f"ansible-playbook exited {rc} ({runner_status}) without running a task",
                results,
            )
        elif _count(stats, "changed", host) > 0 or any(t["status"] == "changed" for t in trace.tasks):
            out[host] = HostOutcome(host, "changed", _rescued_note(stats, host), results)
        elif _count(stats, "ok", host) > 0 or any(t["status"] == "ok" for t in trace.tasks):
            out[host] = HostOutcome(host, "ok", _rescued_note(stats, host), results)
        else:
            out[host] = HostOutcome(host, "skipped", "every task was skipped", results)
    return out


def _rescued_note(stats: Mapping[str, Any], host: str) -> str:
    rescued = _count(stats, "rescued", host)
    return f"{rescued} failed task(s) rescued; see results" if rescued else ""


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


def _default_run(**kwargs: Any) -> RunnerResult:
    import ansible_runner  # deferred: importing ansible-runner is slow and only this driver needs it

    result: RunnerResult = ansible_runner.run(**kwargs)
    return result


def _power_off_reporter(report: PowerOffCallback) -> Callable[[Mapping[str, Any]], None]:
    """A task-result hook that passes on stop-host.yml's power-off results, one per host."""

    def on_result(event: Mapping[str, Any]) -> None:
        if str(event.get("task", "")).startswith(POWER_OFF_TASK_PREFIX):
            report(PowerOffReport(host=str(event.get("host", "")), status=str(event.get("status", "")),
                                  message=str(event.get("message", ""))))

    return on_result


class _RunnerEvents:
    """ansible-runner's ``event_handler`` for one run: keeps every event (for the outcomes), sends
    each mapped one to the sink (a sink that fails cancels the run: re-raised after it) and each
    task result to ``on_result``."""

    def __init__(self, playbook: str, ident: str, mask: Masker, emit: EventSink,
                 on_result: Callable[[Mapping[str, Any]], None] | None,
                 on_start: Callable[[], object] | None = None, *, journal_starts: bool = True) -> None:
        self.playbook = playbook
        self.ident = ident
        self.mask = mask
        self.emit = emit
        self.on_result = on_result
        self.on_start = on_start  # called at the first event (ansible-playbook's start), before it is journaled
        self.journal_starts = journal_starts  # False: a task's start is kept (outcomes), not sent to the sink
        self.events: list[Mapping[str, Any]] = []
        self.sink_failure: list[BaseException] = []

    def on_event(self, event: dict[str, Any]) -> bool:
        if not self.events and self.on_start is not None:
            with contextlib.suppress(Exception):  # a caller's hook must never break the run
                self.on_start()
        self.events.append(event)
        mapped = sink_event(event, self.playbook, self.ident, self.mask)
        if mapped is not None and not self.journal_starts and mapped.get("status") == "started":
            mapped = None
        if mapped is not None and not self.sink_failure:
            try:
                self.emit(mapped)
            except Exception as exc:  # noqa: BLE001 - the journal cannot record: stop the run, re-raise after
                self.sink_failure.append(exc)
        if mapped is not None and self.on_result is not None and mapped.get("status") != "started":
            with contextlib.suppress(Exception):  # a caller's hook must never break the run
                self.on_result(mapped)
        return True


ARMED_NICE_STEP = 10  # how much lower than the orchestrator the armed run waits (nice +10: weight 110 vs 1024)


def armed_release_nice() -> int | None:
    """The priority (nice value) an armed worker takes back at its release: the orchestrator's own.

    The armed run forks one worker per host while containment is still proving its cuts and the
    first hosts go down; on a busy controller that preparation should take only what the critical
    path leaves, so its ``ansible-playbook`` waits at nice +10 (``BornLowered``) and each
    worker takes this value back at its release, before it sends anything (``raw_when_released``'s
    ``release_nice``): the stop command itself is never slowed. None when a worker could not take it
    back (raising a priority needs root): then the run keeps the orchestrator's priority throughout."""
    if os.geteuid() != 0:
        return None
    return os.getpriority(os.PRIO_PROCESS, 0)


class BornLowered:
    """``ansible-playbook`` started at a lower CPU priority (its nice value ``step`` higher) from its
    first instruction: its start and the workers it forks then take only what the rest leaves.

    Linux keeps the nice value per thread and a forked process inherits its thread's. ansible-runner
    reports the status "running" just before it forks ``ansible-playbook``: the thread that starts
    the run lowers itself then (``on_status``), and takes its own priority back (``restore``) at the
    run's first sign of life (its first event, or its first poll a second later, whichever comes
    first), before it writes anything that other threads wait for (the journal). Raising a priority
    back needs root: a caller that is not root must not use this."""

    def __init__(self, step: int = ARMED_NICE_STEP) -> None:
        self.step = step
        self._thread: int | None = None
        self._was: int | None = None

    def on_status(self, status: Mapping[str, Any], **_: Any) -> None:
        """ansible-runner's ``status_handler``."""
        if status.get("status") != "running" or self._thread is not None:
            return
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):
            was = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(19, was + self.step))
            self._thread, self._was = thread, was

    def restore(self) -> None:
        """The starting thread's own priority back (idempotent; only from that thread)."""
        if self._was is None or threading.get_native_id() != self._thread:
            return
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self._thread, self._was)
        self._was = None


class AnsibleArmedStops:
    """stop-host.yml started ahead for many hosts (``AnsibleDriver.arm_stops``): each host's command
    waits on the controller (the playbook's ``raw_when_released``) until its release file appears
    (:meth:`release_file`): ``stop`` sends it, ``skip`` ends the host's play without sending anything.
    Each host is decided once: released, or stood down.

    Each host has its own directory under ``release_dir`` (0700, made here, before the run starts):
    a worker's wait watches only its own, so a release wakes one worker. One shared directory woke
    every waiting worker at every release: N x N wake-ups. For 270 hosts released in 90 batches the
    waiting workers used 3.18 CPU-s with one directory, 1.03 with one per host, 0.73 for the fork
    and exit alone (``bench/release_wait.py``, medians of 5 on an idle 2-core controller): CPU the
    machines shutting down needed."""

    def __init__(self, hosts: Sequence[str], release_dir: Path, masters: SshMasters | None) -> None:
        for host in hosts:
            if Path(host).name != host or host in (".", ".."):
                raise UsageError(f"{host!r} cannot name a release file", target=STOP_HOST_PLAYBOOK,
                                 hint="host names are plain names (validate refuses others)")
        self.hosts = frozenset(hosts)
        self.release_dir = release_dir
        for host in self.hosts:
            private_mkdir(release_dir / host)
        self._masters = masters
        self._decided: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="armed-stops")
        self._future: Future[PlaybookRun] | None = None

    def release_file(self, host: str) -> Path:
        """Where ``host``'s release is written: stop-host.yml builds the same path from its extra var
        ``stop_host_release_dir``."""
        return self.release_dir / host / RELEASE_FILE_NAME

    def start(self, run: Callable[[], PlaybookRun]) -> None:
        self._future = self._pool.submit(run)

    def running(self) -> bool:
        return self._future is not None and not self._future.done()

    def release(self, hosts: Sequence[str]) -> None:
        with self._lock:
            unknown = [h for h in hosts if h not in self.hosts]
            again = [h for h in hosts if h in self._decided]
            if unknown or again:
                raise UsageError(f"cannot release {', '.join(unknown + again)}: "
                                 + ("not armed" if unknown else "already released or stood down"),
                                 target=STOP_HOST_PLAYBOOK, hint="release each armed host once")
            self._decided.update(hosts)
        if self._masters is not None:
            self._masters.give_up_on(hosts)
        for host in hosts:
            write_new(self.release_file(host), "stop\n")

    def stand_down(self, hosts: Sequence[str]) -> None:
        with self._lock:
            todo = [h for h in dict.fromkeys(hosts) if h in self.hosts and h not in self._decided]
            self._decided.update(todo)
        for host in todo:
            with contextlib.suppress(OSError):  # the run may be gone with its directory: nothing to tell
                write_new(self.release_file(host), "skip\n")

    def add_done_callback(self, callback: Callable[[Future[PlaybookRun]], None]) -> None:
        if self._future is None:
            raise UsageError("the armed run was never started", target=STOP_HOST_PLAYBOOK)
        self._future.add_done_callback(callback)

    def close(self) -> None:
        self.stand_down(sorted(self.hosts))
        self._pool.shutdown(wait=True)


class AnsibleDriver:
    """Runs the host playbooks for a wave of hosts in one ``ansible-playbook`` process."""

    name = "ansible"

    def __init__(
        self,
        inventory: Inventory,
        work_dir: Path,
        forks: int = 50,
        event_sink: EventSink | None = None,
        *,
        playbooks_dir: Path | None = None,
        run_function: RunFunction | None = None,
    ) -> None:
        if forks < 1:
            raise UsageError(f"forks must be at least 1, not {forks}", target="ansible", hint="pass --forks 1 or more")
        self.inventory = inventory
        self.work_dir = Path(work_dir).absolute()
        self.forks = forks
        self.event_sink = event_sink
        self.playbooks_dir = (playbooks_dir or default_playbooks_dir()).absolute()
        self._run = run_function or _default_run
        self._mask = Masker.for_inventory(inventory)
        self._masters: SshMasters | None = None
        self._masters_lock = threading.Lock()
        self._control_root: Path | None = None
        self._control_lock = threading.Lock()
        self._control_root_made = False  # a directory of our own under /tmp: removed by close()

    # -- public API ---------------------------------------------------------------------------

    def run_playbook(
        self,
        playbook: str,
        hosts: Sequence[str],
        extravars: Mapping[str, Any] | None = None,
        timeout_s: float = 120,
        *,
        host_vars: Mapping[str, Mapping[str, Any]] | None = None,
        on_result: Callable[[Mapping[str, Any]], None] | None = None,
        control_dir: Path | None = None,
        forks: int | None = None,
        lower_priority: bool = False,
        journal_starts: bool = True,
    ) -> PlaybookRun:
        """Run ``playbook`` (a name in ``playbooks/`` or a path) against ``hosts``, at most ``timeout_s``.

        ``on_result`` sees each task result as it arrives (the journaled event: host, task, status,
        masked message), so a caller can start verifying a host before the whole play ends.
        ``control_dir`` points SSH at connections already open there (``open_connections``);
        without it the run gets a control directory of its own, removed when it ends.
        ``forks``: this run's own bound (an armed stop run needs one worker per host), else the driver's.
        ``lower_priority``: ``ansible-playbook`` started at nice +10 (``BornLowered``), and so the
        workers it forks: preparation that should take only what the rest leaves.
        ``journal_starts=False``: a task's start is not sent to the event sink (an armed run's tasks
        start by waiting, nothing sent: one durable journal record per host for that would only
        compete with containment's records); the results are, and the outcomes still see the starts.
        """
        if timeout_s <= 0:
            raise UsageError(f"timeout must be positive, not {timeout_s}", target=playbook, hint="pass seconds > 0")
        path = self._playbook_path(playbook)
        hosts = list(dict.fromkeys(hosts))
        ansible_inventory = self._inventory_with(playbook, hosts, host_vars or {})
        ident = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{path.stem}-{uuid.uuid4().hex[:8]}"
        artifact_root = self.work_dir / "artifacts"
        if not hosts:
            return PlaybookRun(path.name, 0, "successful", {}, 0.0, str(artifact_root / ident))

        inventory_file = self._write_inventory(ident, ansible_inventory)
        self._emit({"type": "ansible.playbook", "phase": "start", "playbook": path.name, "run": ident,
                    "hosts": list(hosts), "timeout_s": timeout_s})
        lowered = BornLowered() if lower_priority else None
        collected = _RunnerEvents(path.name, ident, self._mask, self._emit, on_result,
                                  lowered.restore if lowered is not None else None, journal_starts=journal_starts)

        def cancelled() -> bool:
            if lowered is not None:
                lowered.restore()
            return bool(collected.sink_failure)

        own_control_dir = control_dir is None
        if control_dir is None:
            control_dir = private_dir(self.control_path_dir() / ident[-8:])
        started = time.monotonic()
        try:
            result = self._run(
                private_data_dir=str(self.work_dir),
                project_dir=str(path.parent),
                playbook=path.name,
                inventory=str(inventory_file),
                artifact_dir=str(artifact_root),
                ident=ident,
                limit=",".join(hosts),
                forks=min(forks or self.forks, len(hosts)),
                extravars=mark_unsafe(dict(extravars or {})),  # text, never templated
                envvars=self.envvars(timeout_s, control_dir),
                settings={"pexpect_timeout": 1, "suppress_ansible_output": True},
                quiet=True,
                suppress_env_files=True,
                timeout=max(1, round(timeout_s)),
                event_handler=collected.on_event,
                cancel_callback=cancelled,
                **({"status_handler": lowered.on_status} if lowered is not None else {}),
            )
        finally:
            if lowered is not None:
                lowered.restore()
            self._scrub_command_artifact(artifact_root / ident)
            if own_control_dir:
                shutil.rmtree(control_dir, ignore_errors=True)  # idle masters exit after ControlPersist
        duration = time.monotonic() - started
        if collected.sink_failure:
            raise collected.sink_failure[0]
        rc = int(result.rc if result.rc is not None else 254)
        status = str(result.status)
        if status == "failed" and not any(e.get("event") == "playbook_on_start" for e in collected.events):
            raise DriverError(
                f"ansible-playbook did not start (rc {rc}): {self._stdout_tail(artifact_root / ident)}",
                target=path.name,
                hint="check that ansible-core is installed next to the orchestrator (`make setup`) "
                f"and that `ansible-playbook --syntax-check {path}` passes",
            )
        outcomes = host_outcomes(hosts, collected.events, runner_status=status, rc=rc, timeout_s=timeout_s,
                                 mask=self._mask)
        run = PlaybookRun(path.name, rc, status, outcomes, duration, str(artifact_root / ident))
        self._emit({"type": "ansible.playbook", "phase": "end", "playbook": path.name, "run": ident, "rc": rc,
                    "status": status, "duration_s": round(duration, 3),
                    "hosts": {h: o.status for h, o in outcomes.items()}})
        return run

    def _inventory_with(self, playbook: str, hosts: Sequence[str],
                        host_vars: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The Ansible inventory of ``hosts``, with the caller's host vars (never ``ansible_*``)."""
        ansible_inventory = to_ansible_inventory(self.inventory, hosts)
        for host, extra in host_vars.items():
            if host not in ansible_inventory["all"]["hosts"]:
                raise UsageError(
                    f"host vars given for {host}, which is not in this run",
                    target=playbook,
                    hint="pass host_vars only for hosts in the run",
                )
            for key in extra:
                if str(key).lower().startswith("ansible_"):
                    raise UsageError(f"host var {key} for {host} would change how Ansible connects",
                                     target=playbook, hint="pass only the playbook's own variables")
            ansible_inventory["all"]["hosts"][host].update(extra)
        return ansible_inventory

    def stop_hosts(self, hosts: Sequence[str], timeout_s: float = 120,
                   on_power_off: PowerOffCallback | None = None) -> PlaybookRun:
        """Stop each host's services, then power it off: one ``ansible-playbook`` for the whole wave.

        ``on_power_off`` hears of each host's power-off task result the moment it arrives (the
        playbook's task names are this driver's business, not its caller's), so the caller can
        start verifying a host before the whole play has ended.
        A host whose connection drops during the power-off comes back "unreachable" with a
        message saying so; whether it is really off is for verification to judge.
        Refuses (SafetyInterlock) to touch a host that must keep running.
        """
        self._refuse_kept(hosts)
        masters = self._masters
        if masters is not None:
            masters.give_up_on(hosts)
        on_result = None if on_power_off is None else _power_off_reporter(on_power_off)
        return self.run_playbook(STOP_HOST_PLAYBOOK, hosts, timeout_s=timeout_s, on_result=on_result,
                                 control_dir=masters.control_dir if masters is not None else None)

    def arm_stops(self, hosts: Sequence[str], *, wait_s: float,
                  on_power_off: PowerOffCallback | None = None) -> AnsibleArmedStops:
        """Start stop-host.yml now for every host of a shutdown, each host's command held on the
        controller until it is released (``AnsibleArmedStops.release``): one ``ansible-playbook``
        start for the whole shutdown instead of one per batch of hosts ready together.

        Nothing reaches a host before its release: its task waits for a file in a private directory
        (``raw_when_released``), and a host not released within ``wait_s`` fails without anything
        sent. One worker per host (a worker waits for one host), on connections opened ahead
        (``open_connections``) where there are some. Refuses (SafetyInterlock) a kept host.
        """
        self._refuse_kept(hosts)
        if wait_s <= 0:
            raise UsageError(f"wait must be positive, not {wait_s}", target=STOP_HOST_PLAYBOOK, hint="pass seconds > 0")
        names = list(dict.fromkeys(hosts))
        release_dir = self.work_dir / f"release-{uuid.uuid4().hex[:8]}"  # made 0700 with its hosts' own
        masters = self._stop_masters()  # opened later (open_connections): the workers connect at release
        armed = AnsibleArmedStops(names, release_dir, masters)
        on_result = None if on_power_off is None else _power_off_reporter(on_power_off)
        nice = armed_release_nice()
        armed.start(partial(
            self.run_playbook, STOP_HOST_PLAYBOOK, names,
            extravars={"stop_host_release_dir": str(release_dir), "stop_host_release_wait_s": int(wait_s),
                       **({} if nice is None else {"stop_host_release_nice": nice})},
            timeout_s=wait_s + 120, on_result=on_result, forks=len(names), lower_priority=nice is not None,
            journal_starts=False,
            control_dir=masters.control_dir))
        return armed

    def _refuse_kept(self, hosts: Sequence[str]) -> None:
        kept = self.inventory.keep_reasons()
        refused = [h for h in hosts if h in kept]
        if refused:
            raise SafetyInterlock(
                "refusing to power off host(s) that must keep running: "
                + "; ".join(f"{h} ({kept[h]})" for h in refused),
                target=",".join(refused),
                hint="remove them from the wave; kept hosts are isolated, never powered off",
            )

    def open_connections(self, hosts: Sequence[str]) -> None:
        """Open SSH connections to ``hosts`` now, in the background, for their ``stop_hosts`` later.

        Returns at once. A stop wave then starts on connections that are already up instead of
        opening 20-30 at once (see ``ssh_masters``); a host whose connection could not be opened is
        connected to by Ansible itself, as without this. Used for stops only: a stopped host is
        never played against again in the same run, so no connection outlives its machine's use.
        Kept hosts are refused here as in ``stop_hosts``.
        """
        kept = self.inventory.keep_reasons()
        wanted = [h for h in hosts if h not in kept and h in self.inventory.hosts]
        if not wanted:
            return
        self._stop_masters().open(wanted)

    def _stop_masters(self) -> SshMasters:
        """The stops' control masters (none opened yet when first asked): one directory for the run."""
        with self._masters_lock:
            if self._masters is None:
                directory = self.control_path_dir() / f"open-{uuid.uuid4().hex[:3]}"
                self._masters = SshMasters(self.inventory, directory, on_opened=self._emit_opened)
            return self._masters

    def _emit_opened(self, event: dict[str, Any]) -> None:
        failed = event.get("failed") or {}
        self._emit({**event, "failed": {host: self._mask(str(why)) for host, why in failed.items()}})

    def close(self) -> None:
        """Close the connections ``open_connections`` opened (those still up). Idempotent."""
        with self._masters_lock:
            masters, self._masters = self._masters, None
        if masters is not None:
            masters.close()
        with self._control_lock:
            root, made = self._control_root, self._control_root_made
            self._control_root, self._control_root_made = None, False
        if root is not None and made:
            shutil.rmtree(root, ignore_errors=True)

    def check_health(
        self, hosts: Sequence[str], expected_ports: Mapping[str, Sequence[int]], timeout_s: float = 60
    ) -> PlaybookRun:
        """Services active and ports listening per host; ``results["health"]`` holds the details."""
        host_vars = {h: {"expected_ports": [int(p) for p in expected_ports.get(h, ())]} for h in hosts}
        return self.run_playbook(CHECK_HEALTH_PLAYBOOK, hosts, timeout_s=timeout_s, host_vars=host_vars)

    # -- settings -----------------------------------------------------------------------------

    def envvars(self, timeout_s: float, control_dir: Path | None = None) -> dict[str, str]:
        """Everything Ansible needs, explicit: nothing is left to ambient configuration.

        ``control_dir`` holds this run's SSH control sockets: one per run, so a run never reuses a
        master connection to a machine that has since been powered off (it would hang, not fail).
        """
        env = {
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_FORKS": str(self.forks),
            "ANSIBLE_GATHERING": "explicit",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_STDOUT_CALLBACK": "minimal",
            "ANSIBLE_NOCOLOR": "True",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
            "ANSIBLE_TIMEOUT": "10",
            "ANSIBLE_SSH_RETRIES": "0",
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=30s -o ServerAliveInterval=5"
            " -o ServerAliveCountMax=2",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir or self.control_path_dir()),
            "ANSIBLE_SSH_CONTROL_PATH": "%(directory)s/%%C",
            "ANSIBLE_LOCAL_TEMP": str(self.work_dir / "tmp"),
            "ANSIBLE_HOME": str(self.work_dir / "home"),
            # The settings that have no environment variable (internal_poll_interval), from the
            # product's own file, whatever directory Ansible runs in; every value above wins over it.
            "ANSIBLE_CONFIG": str(default_playbooks_dir() / "ansible.cfg"),
        }
        bin_dir = Path(sys.executable).parent
        if (bin_dir / "ansible-playbook").exists():
            # The console script may run without its virtualenv on PATH: use that venv's Ansible.
            env["PATH"] = os.pathsep.join([str(bin_dir), os.environ.get("PATH", os.defpath)])
        if timeout_s >= 20:
            # A hung task fails its own host instead of the job timeout killing the whole wave.
            env["ANSIBLE_TASK_TIMEOUT"] = str(int(timeout_s * 0.8))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self._without_paramiko()), os.environ.get("PYTHONPATH"))
                                            if p)
        return env

    def _without_paramiko(self) -> Path:
        """A directory that, first on Ansible's PYTHONPATH, makes ``import paramiko`` fail at once.

        ansible-core 2.19 imports paramiko in every forked worker (its connection attribute asks
        whether paramiko is there: ansible/playbook/attribute.py) when it is importable, and it is:
        the orchestrator's own SSH driver needs it in this virtualenv. That import costs each host
        of a wave ~0.1 s of CPU (a 27-host `raw` task: 3.5-5.5 s -> 2.1-2.3 s wall on 2 cores).
        Ansible here always connects with OpenSSH (the ssh plugin), never with paramiko, so
        hiding it changes nothing else. Only the ansible-playbook processes this driver starts
        see this path; the orchestrator's own process imports the real paramiko.
        """
        directory = self.work_dir / "pythonpath"
        stub = directory / "paramiko" / "__init__.py"
        if not stub.is_file():
            stub.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            stub.write_text('raise ImportError("paramiko is hidden from Ansible: it connects with OpenSSH")\n')
        return directory

    def control_path_dir(self) -> Path:
        """The parent of the per-run control-socket directories: private and short enough for SSH.

        A socket path is this directory, ``/`` + 8 characters of run id, ``/`` + ``%C`` (40), and
        while ssh sets the master up, a random ``.XXXXXXXXXXXXXXXX`` suffix (17): at most 107 bytes
        (``sun_path``), so at most 39 here. ``WORK_DIR/cp`` when that fits (and has only plain
        characters), else a directory of this driver's own made by ``mkdtemp`` under /tmp (random
        name, 0700, removed by ``close``). Either is checked by ``private_dir`` on every use: a
        directory that is a symbolic link, another user's, or open to others is refused.
        """
        with self._control_lock:
            if self._control_root is None:
                candidate = self.work_dir / "cp"
                if len(str(candidate)) <= 39 and _PLAIN_PATH.match(str(candidate)):
                    candidate.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    self._control_root_made = False
                else:
                    candidate = Path(tempfile.mkdtemp(prefix="orc-cp-", dir="/tmp"))
                    self._control_root_made = True
                    # removed by close(), or when the driver is collected without one
                    weakref.finalize(self, shutil.rmtree, str(candidate), True)
                self._control_root = candidate
            root = self._control_root
        return private_dir(root)

    # -- helpers ------------------------------------------------------------------------------

    def _playbook_path(self, playbook: str) -> Path:
        candidate = Path(playbook)
        if not candidate.is_absolute():
            candidate = self.playbooks_dir / playbook
        if not candidate.is_file():
            available = sorted(p.name for p in self.playbooks_dir.glob("*.yml")) if self.playbooks_dir.is_dir() else []
            raise DriverError(
                f"playbook not found: {candidate}",
                target=playbook,
                hint=f"playbooks in {self.playbooks_dir}: {', '.join(available) or '(none)'}",
            )
        return candidate

    def _write_inventory(self, ident: str, data: Mapping[str, Any]) -> Path:
        directory = self.work_dir / "inventories"
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / f"{ident}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(dumps(data))  # every string marked unsafe: Ansible never templates it
        return path

    def _stdout_tail(self, artifact_dir: Path) -> str:
        try:
            text = (artifact_dir / "stdout").read_text(errors="replace")
        except OSError:
            return "(no output recorded)"
        return _short(self._mask(" ".join(text.strip().splitlines()[-5:]))) or "(no output)"

    def _emit(self, event: dict[str, Any]) -> None:
        if self.event_sink is not None:
            self.event_sink(event)

    def _scrub_command_artifact(self, artifact_dir: Path) -> None:
        """ansible-runner records the whole environment in ``command``: keep names, drop values."""
        path = artifact_dir / "command"
        if not path.is_file():
            return
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            return
        env = data.get("env")
        if isinstance(env, dict):
            data["env"] = {
                k: (v if k in _ENV_KEEP or k.startswith(_ENV_KEEP_PREFIXES) else _MASK) for k, v in env.items()
            }
        atomic_write(path, self._mask(json.dumps(data)))

"""Runs a Plan wave by wave: for every step probe -> act -> verify, every outcome journaled.

* Steps of one wave run in parallel (bounded by ``forks``); commands to one device are serialised
  by its driver, probes are not.
* A step whose ``requires`` did not succeed is skipped and reported; the rest goes on.
* Containment already in force is verified, not applied twice (escalating from contain-only).
* A graceful stop that does not finish escalates to an out-of-band power off, recorded.
* Interrupting (Ctrl-C / SIGTERM) finishes the steps in flight, journals them and stops; ``resume``
  continues from the journal without redoing verified steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, assert_never

from orchestrator.config import Settings
from orchestrator.drivers.ansible import POWER_OFF_TASK_PREFIX
from orchestrator.errors import DriverError, OrchestratorError, SafetyInterlock
from orchestrator.model import (
    Action,
    Host,
    Inventory,
    Mode,
    Phase,
    Plan,
    Step,
    StepResult,
    StepStatus,
    Verification,
    Wave,
)
from orchestrator.storage import atomic_write
from orchestrator.verify import Probes, wait_until


class ApprovalPolicy(StrEnum):
    ALL = "all"  # approve every gate up front (journaled as such)
    EACH = "each"  # ask the operator at each gate
    NONE = "none"  # no approval given: gates refuse


Approver = Callable[[Step, str], bool]
Observer = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    forks: int = 32
    approve: ApprovalPolicy = ApprovalPolicy.NONE
    approver: Approver | None = None
    operator: str = ""
    stop_timeout_s: float = 45.0  # graceful stop before escalating
    start_timeout_s: float = 90.0
    power_off_timeout_s: float = 20.0
    boot_settle_timeout_s: float = 60.0  # a started host's boot must finish before it is checked


@dataclass(frozen=True)
class RunResult:
    run_id: str
    plan: Plan
    results: Mapping[str, StepResult]
    interrupted: bool
    time_to_containment_s: float | None
    time_to_shutdown_s: float | None
    quarantined: Mapping[str, str]
    journal_path: Path

    @property
    def left(self) -> list[tuple[str, str]]:
        out = []
        for step in self.plan.steps():
            res = self.results.get(step.id)
            if res is None:
                out.append((step.id, "not reached (run interrupted)" if self.interrupted else "not reached"))
            elif not res.ok:
                out.append((step.id, f"{res.status.value}: {res.error or ''}".strip()))
        return out

    @property
    def unproven(self) -> list[tuple[str, str]]:
        """Steps done as far as the devices say, but that no independent probe could prove."""
        return [(s, r.error or "") for s, r in self.results.items() if r.status is StepStatus.UNPROVEN]

    @property
    def status(self) -> str:
        """completed (everything verified), unproven (nothing failed, but something could not be
        proven: never reported as verified), failed or interrupted."""
        if self.interrupted:
            return "interrupted"
        if not self.left:
            return "completed"
        unproven = {s for s, _ in self.unproven}
        return "unproven" if all(s in unproven for s, _ in self.left) else "failed"

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "completed" else 1


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

    journal: Any  # orchestrator.journal.Journal
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


class Drivers:
    """The drivers a run needs, opened lazily so a plan that touches no device opens no session."""

    def __init__(self, inventory: Inventory, run_dir: Path, forks: int,
                 event_sink: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.inventory = inventory
        self.run_dir = run_dir
        self.forks = forks
        self.event_sink = event_sink
        self._ssh: Any = None
        self._net: Any = None
        self._ansible: Any = None
        self._power: dict[str, Any] = {}
        self._lock = threading.Lock()
        # Hosts presumed compromised (every host a restore brings back): the SSH driver sends them no
        # password unless the credential opts in (allow_password_on_suspect_hosts).
        self.suspect_hosts: frozenset[str] = frozenset()

    @property
    def ssh(self) -> Any:
        with self._lock:
            if self._ssh is None:
                from orchestrator.drivers import driver_class

                self._ssh = driver_class("ssh")(self.inventory)
                if self.suspect_hosts:
                    self._ssh.treat_as_suspect(self.suspect_hosts)
            return self._ssh

    @property
    def net(self) -> Any:
        with self._lock:
            if self._net is None:
                from orchestrator.drivers import driver_class

                self._net = driver_class("netmiko")(self.inventory)
            return self._net

    @property
    def ansible(self) -> Any:
        with self._lock:
            if self._ansible is None:
                from orchestrator.drivers import driver_class

                self._ansible = driver_class("ansible")(
                    self.inventory, self.run_dir / "ansible", forks=max(self.forks, 10),
                    event_sink=self.event_sink)
            return self._ansible

    def power_for(self, host: Host) -> Any | None:
        if not host.power or host.power == "manual":
            return None
        with self._lock:
            if host.power not in self._power:
                from orchestrator.drivers import power_driver_class

                self._power[host.power] = power_driver_class(host.power)()
            return self._power[host.power]

    def close(self) -> None:
        for driver in (self._ssh, self._net, self._ansible):
            if driver is not None:
                with contextlib.suppress(Exception):  # closing must not hide the run's outcome
                    driver.close()


class StepFailed(Exception):  # noqa: N818 - internal control flow, never escapes the executor
    def __init__(self, message: str, evidence: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evidence = dict(evidence or {})


class _PlaybookProgress:
    """Per host, the stop playbook's verdict as soon as it is known: its power-off task's result
    event, or else the whole run's outcome for that host once the run has ended."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self._verdicts: dict[str, dict[str, Any]] = {}
        self._ready = {h: threading.Event() for h in hosts}
        self._lock = threading.Lock()

    def on_result(self, event: Mapping[str, Any]) -> None:
        host = str(event.get("host", ""))
        if host in self._ready and str(event.get("task", "")).startswith(POWER_OFF_TASK_PREFIX):
            self._settle(host, {"status": event.get("status"), "message": event.get("message", "")})

    def on_done(self, future: Future[Any]) -> None:
        try:
            run = future.result()
            verdicts = {h: {"status": o.status, "message": o.message} for h, o in run.hosts.items()}
        except Exception as exc:  # noqa: BLE001 - the run itself failed: every host carries why
            text = f"{exc.code}: {exc}" if isinstance(exc, OrchestratorError) else f"{type(exc).__name__}: {exc}"
            # A refusal (a host that must keep running) is never overridden by an out-of-band power off.
            status = "refused" if isinstance(exc, SafetyInterlock) else "error"
            verdicts = {h: {"status": status, "message": text} for h in self._ready}
        for host in self._ready:
            self._settle(host, verdicts.get(host, {"status": "error", "message": "no result from the playbook"}))

    def _settle(self, host: str, verdict: dict[str, Any]) -> None:
        with self._lock:
            if self._ready[host].is_set():
                return
            self._verdicts[host] = verdict
            self._ready[host].set()

    def wait(self, host: str) -> dict[str, Any]:
        self._ready[host].wait()
        with self._lock:
            return dict(self._verdicts[host])


@dataclass(frozen=True)
class _DeviceChange:
    """What a device batch did for one step: sent (or found in force), and what the config says after."""

    changed: bool
    commands: tuple[str, ...]
    in_force: bool
    error: BaseException | None = None


@dataclass
class _Outcome:
    changed: bool = False
    already: bool = False
    escalated: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)
    unproven: str | None = None  # done, but nothing independent proves it: why (never "verified")


class Executor:
    def __init__(self, *, inventory: Inventory, plan: Plan, settings: Settings, run_id: str, run_dir: Path,
                 recorder: Recorder, options: RunOptions, prior: Mapping[str, StepResult] | None = None,
                 started_mono: float | None = None, approvals: Iterable[str] = (),
                 stop_event: threading.Event | None = None, milestones: Mapping[str, float] | None = None,
                 quarantined: Mapping[str, str] | None = None,
                 attestations: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.inventory = inventory
        self.plan = plan
        self.settings = settings
        self.run_id = run_id
        self.run_dir = run_dir
        self.rec = recorder
        self.options = options
        self.results: dict[str, StepResult] = dict(prior or {})
        self.stop_event = stop_event or threading.Event()
        self.started = started_mono if started_mono is not None else time.monotonic()
        self.drivers = Drivers(inventory, run_dir, options.forks, self._ansible_event)
        if plan.mode is Mode.RESTORE:  # what comes back after an incident is presumed compromised
            self.drivers.suspect_hosts = frozenset(inventory.hosts)
        self.probes = Probes(inventory, _LazySsh(self.drivers), self.drivers.power_for)
        self.quarantined: dict[str, str] = dict(quarantined or {})
        # host -> its physical-disconnection attestation record (``attest``), from the run's journal
        self.attestations: dict[str, Mapping[str, Any]] = dict(attestations or {})
        self.milestones: dict[str, float] = dict(milestones or {})
        self._preflight: dict[str, Future[dict[str, Any]]] = {}
        self._device_changes: dict[str, Future[dict[str, _DeviceChange]]] = {}
        self._background: list[ThreadPoolExecutor] = []  # stop playbooks still ending
        self._stop_connections_opened = False
        self.approved_gates = set(approvals)
        self.time_to_containment: float | None = self.milestones.get("contained")
        self.time_to_shutdown: float | None = self.milestones.get("shutdown-complete")

    # ---- the run ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop_event.set()

    def _start_preflight(self) -> ThreadPoolExecutor | None:
        """Probe, before anything changes, what each cut and isolation should stop: done in the
        background while the configs are backed up, so the "before" evidence costs no time."""
        steps = [s for s in self.plan.steps() if s.action in (Action.CUT_LINK, Action.ISOLATE_SEGMENT)
                 and not (s.id in self.results and self.results[s.id].ok)]
        if not steps or self.options.dry_run:
            return None
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.options.forks, len(steps))))
        for step in steps:
            probe = self._reach_probe if step.action is Action.ISOLATE_SEGMENT else self._link_probe
            self._preflight[step.id] = pool.submit(_safe_probe, probe, step)
        return pool

    def _open_stop_connections(self, wave: Wave) -> None:
        """Hosts to be stopped get their SSH connections opened in the background, in wave order,
        so each stop wave starts on connections already up (AnsibleDriver.open_connections).
        Begun once the configuration backups are taken: the backup wave is the one containment
        step that needs the CPUs, the cuts and isolations after it mostly wait for their proofs."""
        if self._stop_connections_opened or self.options.dry_run:
            return
        if wave.steps and all(s.action is Action.BACKUP_CONFIG for s in wave.steps):
            return
        self._stop_connections_opened = True
        hosts = [s.target for s in self.plan.steps() if s.action is Action.STOP_HOST
                 and not (s.id in self.results and self.results[s.id].ok)]
        if hosts:
            with contextlib.suppress(Exception):  # only a head start: the stop waves connect anyway
                self.drivers.ansible.open_connections(hosts)

    def run(self) -> RunResult:
        interrupted = False
        preflight = self._start_preflight()
        try:
            for wave in self.plan.waves:
                if self.stop_event.is_set():
                    interrupted = True
                    break
                todo = [s for s in wave.steps if not (s.id in self.results and self.results[s.id].ok)]
                if not todo:
                    continue
                self.rec.emit("wave-started", wave=wave.index, phase=wave.phase.value,
                              steps=[s.id for s in todo])
                self._open_stop_connections(wave)
                self._run_wave(wave, todo)
                if self.stop_event.is_set():
                    interrupted = any(s.id not in self.results for s in self.plan.steps())
                self._milestones()
        finally:
            if preflight is not None:
                preflight.shutdown(wait=True, cancel_futures=True)
            for background in self._background:
                background.shutdown(wait=True)
            self.drivers.close()
        return RunResult(
            run_id=self.run_id, plan=self.plan, results=dict(self.results), interrupted=interrupted,
            time_to_containment_s=self.time_to_containment, time_to_shutdown_s=self.time_to_shutdown,
            quarantined=dict(self.quarantined), journal_path=self.settings.journal_path(self.run_id),
        )

    def _milestones(self) -> None:
        """Each milestone once, when its phase is first complete (also when a resume completes it)."""
        if self.options.dry_run:
            return  # nothing was contained: a dry run has no milestones

        def phase_done(phase: Phase) -> bool:
            steps = [s for w in self.plan.waves if w.phase is phase for s in w.steps]
            return bool(steps) and all(s.id in self.results and self.results[s.id].ok for s in steps)

        elapsed = round(time.monotonic() - self.started, 3)
        reached = []
        if phase_done(Phase.CONTAIN):
            reached.append("contained")
            if phase_done(Phase.SHUTDOWN):
                reached.append("shutdown-complete")
        if self.plan.mode is Mode.RESTORE and all(s.id in self.results and self.results[s.id].ok
                                                  for s in self.plan.steps()):
            reached.append("restored")
        for name in reached:
            if name not in self.milestones:
                self.milestones[name] = elapsed
                self.rec.emit("milestone", name=name, elapsed_s=elapsed)
        self.time_to_containment = self.milestones.get("contained")
        self.time_to_shutdown = self.milestones.get("shutdown-complete")

    def _run_wave(self, wave: Wave, todo: list[Step]) -> None:
        runnable: list[Step] = []
        for step in todo:
            missing = [r for r in step.requires if not (r in self.results and self.results[r].ok)]
            if missing:
                reason = "requires " + ", ".join(
                    f"{r} ({self.results[r].status.value if r in self.results else 'not done'})" for r in missing)
                self._finish(step, StepResult(step.id, StepStatus.SKIPPED, error=reason))
            else:
                runnable.append(step)
        stops = [s for s in runnable if s.action is Action.STOP_HOST]
        others = [s for s in runnable if s.action is not Action.STOP_HOST]
        if stops:
            self._stop_hosts(wave, stops)
        if others:
            batches = self._start_device_batches(others)
            try:
                with ThreadPoolExecutor(max_workers=max(1, min(self.options.forks, len(others)))) as pool:
                    list(pool.map(lambda s: self._run_step(wave, s), others))
            finally:
                if batches is not None:
                    batches.shutdown(wait=True)
                self._device_changes.clear()

    def _start_device_batches(self, steps: list[Step]) -> ThreadPoolExecutor | None:
        """The wave's cuts and isolations, grouped per device: each device gets one config read, one
        change (all its lines at once) and one read back, in the background, devices in parallel.
        Each step then waits for its device's batch and verifies its own target independently."""
        contain = [s for s in steps if s.action in (Action.CUT_LINK, Action.ISOLATE_SEGMENT) and s.device]
        if not contain or self.options.dry_run or self.stop_event.is_set():
            return None
        by_device: dict[str, list[Step]] = {}
        for step in contain:
            by_device.setdefault(str(step.device), []).append(step)
        pool = ThreadPoolExecutor(max_workers=len(by_device))
        for device, device_steps in by_device.items():
            future = pool.submit(self._contain_on_device, device, device_steps)
            for step in device_steps:
                self._device_changes[step.id] = future
        return pool

    def _contain_on_device(self, device: str, steps: list[Step]) -> dict[str, _DeviceChange]:
        net = self.drivers.net
        keys = {s.id: (s.action.value, s.target) for s in steps}
        for step in steps:
            # The "before" evidence must be taken before anything changes: a probe still running
            # (a slow host) holds its device's change back, never the other way round.
            pending = self._preflight.get(step.id)
            if pending is not None:
                pending.result()
        # What is already in force, from the config last read (the backup, or the previous wave's
        # read-back) when nothing was sent since: it only spares sending a change twice.
        before = net.in_force_map(device, list(keys.values()), fresh=False)
        todo = [s for s in steps if not before[keys[s.id]]]
        errors: dict[str, BaseException] = {}
        sent: dict[str, tuple[str, ...]] = {}
        batch = [s.id for s in todo]
        if todo:
            try:
                outcome = net.apply_many(device, [keys[s.id] for s in todo])
                sent.update(zip(batch, outcome.parts, strict=True))
            except Exception:  # noqa: BLE001 - whatever went wrong, each change is retried alone below
                # Something in the batch was refused: find out which, one change at a time, so
                # every other target is still contained and each step carries its own error.
                batch = []
                now = net.in_force_map(device, [keys[s.id] for s in todo])
                for step in todo:
                    if now[keys[step.id]]:
                        continue
                    try:
                        sent[step.id] = net.apply(device, *keys[step.id]).commands
                    except Exception as exc:  # noqa: BLE001 - recorded against its step
                        errors[step.id] = exc
        for step_id, commands in sent.items():
            self.rec.emit("command-sent", step_id=step_id, driver="netmiko", target=device, commands=list(commands),
                          sent_with=[b for b in batch if b != step_id])
        after = net.in_force_map(device, list(keys.values()))  # always read back: this is the verification
        return {s.id: _DeviceChange(changed=s.id in sent, commands=sent.get(s.id, ()), in_force=after[keys[s.id]],
                                    error=errors.get(s.id)) for s in steps}

    # ---- one step -----------------------------------------------------------------------------

    def _run_step(self, wave: Wave, step: Step) -> None:
        if self.stop_event.is_set():
            return
        self.rec.emit("step-started", step_id=step.id, action=step.action.value, target=step.target,
                      wave=wave.index)
        t0 = time.monotonic()
        if self.options.dry_run:
            self._finish(step, StepResult(step.id, StepStatus.DRY_RUN, evidence={"would": step.verify}))
            return
        try:
            outcome = self._dispatch(step)  # the netmiko driver serialises commands per device
            status = StepStatus.VERIFIED if outcome.unproven is None else StepStatus.UNPROVEN
            result = StepResult(step.id, status, changed=outcome.changed, already=outcome.already,
                                escalated=outcome.escalated, evidence=outcome.evidence, error=outcome.unproven,
                                duration_s=round(time.monotonic() - t0, 3))
        except StepFailed as exc:
            result = StepResult(step.id, StepStatus.FAILED, error=str(exc), evidence=exc.evidence,
                                duration_s=round(time.monotonic() - t0, 3))
        except OrchestratorError as exc:
            result = StepResult(step.id, StepStatus.FAILED, error=f"{exc.code}: {exc}",
                                duration_s=round(time.monotonic() - t0, 3))
        except Exception as exc:  # noqa: BLE001 - any failure is recorded against the step, the run goes on
            result = StepResult(step.id, StepStatus.FAILED, error=f"{type(exc).__name__}: {exc}",
                                duration_s=round(time.monotonic() - t0, 3))
        self._finish(step, result)

    def _finish(self, step: Step, result: StepResult) -> None:
        self.results[step.id] = result
        self.rec.emit("step-finished", step_id=step.id, action=step.action.value, target=step.target,
                      status=result.status.value, changed=result.changed, already=result.already,
                      escalated=result.escalated, error=result.error, evidence=dict(result.evidence),
                      duration_s=result.duration_s)

    def _verification(self, step: Step, v: Verification) -> Verification:
        self.rec.emit("verification", step_id=step.id, check=v.check, passed=v.passed, evidence=dict(v.evidence))
        return v

    def _dispatch(self, step: Step) -> _Outcome:
        action = step.action
        if action is Action.BACKUP_CONFIG:
            return self._backup_config(step)
        if action in (Action.CUT_LINK, Action.ISOLATE_SEGMENT):
            return self._contain(step)
        if action in (Action.RESTORE_LINK, Action.RECONNECT_SEGMENT):
            return self._reconnect(step)
        if action is Action.VERIFY:
            return self._verify_final(step)
        if action is Action.START_HOST:
            return self._start_host(step)
        if action is Action.CHECK_INTEGRITY:
            return self._check_integrity(step)
        if action is Action.CHECK_HEALTH:
            return self._check_health(step)
        if action is Action.GATE:
            return self._gate(step)
        if action is Action.STOP_HOST:
            raise StepFailed("stop-host runs per wave, not alone")
        assert_never(action)

    # ---- devices ------------------------------------------------------------------------------

    def _backup_config(self, step: Step) -> _Outcome:
        device = step.target
        text = self.drivers.net.backup_config(device)
        if not text.strip():
            raise StepFailed(f"{device} returned an empty configuration", {"bytes": 0})
        path = self.run_dir / "backups" / f"{device}.cfg"
        atomic_write(path, text)  # 0600 in a 0700 directory, fsynced: a config holds secrets
        digest = hashlib.sha256(text.encode()).hexdigest()
        stored = hashlib.sha256(path.read_bytes()).hexdigest()
        v = self._verification(step, Verification(stored == digest, "backup-stored",
                                                  {"path": str(path), "sha256": digest, "bytes": len(text)}))
        if not v.passed:
            raise StepFailed("the stored backup does not match what the device returned", v.evidence)
        return _Outcome(evidence=dict(v.evidence))

    def _undo_device_action(self, step: Step, undo_of: str) -> tuple[bool, dict[str, Any]]:
        """Apply the step's restore-link or reconnect-segment unless ``undo_of`` is not in force any
        more; returns (changed, evidence). Cuts and isolations go per device: _contain_on_device."""
        assert step.device is not None
        net = self.drivers.net
        if not net.is_in_force(step.device, undo_of, step.target):
            return False, {"already_in_force": True}
        outcome = net.apply(step.device, step.action.value, step.target)
        self.rec.emit("command-sent", step_id=step.id, driver="netmiko", target=step.device,
                      commands=list(outcome.commands))
        return True, {"commands": list(outcome.commands)}

    def _contain(self, step: Step) -> _Outcome:
        action = step.action.value
        assert step.device is not None
        pending = self._preflight.get(step.id)
        before = pending.result() if pending is not None else {"note": "not probed"}
        # The wave started this step's device batch (_start_device_batches); a device that cannot be
        # read fails all its steps here.
        change = self._device_changes[step.id].result()[step.id]
        if change.error is not None:
            raise change.error
        changed, in_force = change.changed, change.in_force
        evidence: dict[str, Any] = {"commands": list(change.commands)} if changed else {"already_in_force": True}
        evidence["rule_in_running_config"] = in_force
        after = self._reach_probe(step) if step.action is Action.ISOLATE_SEGMENT else self._link_probe(step)
        evidence["before"] = before
        evidence["after"] = after
        problems = []
        if not in_force:
            problems.append(f"the {action} rule is not in {step.device}'s running config")
        if after.get("crosses"):
            problems.append(f"still reachable across: {after['crosses']}")
        if after.get("same_segment_broken"):
            problems.append("hosts of the segment no longer reach each other")
        unproven = None
        if not problems and step.action is Action.ISOLATE_SEGMENT and not after.get("probe_host"):
            # The rule is in the running config, but no host inside answered to probe from: nothing
            # shows that traffic really stops at the gateway. Never reported as verified.
            unproven = (f"isolation unproven: no host of {step.target} answered to probe from; the rule is in "
                        f"{step.device}'s running config, but nothing shows traffic stops at the gateway")
            evidence["proof"] = "unproven: running config only, no probe from inside"
        v = self._verification(step, Verification(not problems, action, evidence))
        if not v.passed:
            raise StepFailed("; ".join(problems), evidence)
        return _Outcome(changed=changed, already=not changed, evidence=evidence, unproven=unproven)

    def _reconnect(self, step: Step) -> _Outcome:
        assert step.device is not None
        readiness = self._check_segment_ready(step.target) if step.action is Action.RECONNECT_SEGMENT else {}
        undo_of = "cut-link" if step.action is Action.RESTORE_LINK else "isolate-segment"
        changed, evidence = self._undo_device_action(step, undo_of)
        evidence.update(readiness)
        gone = not self.drivers.net.is_in_force(step.device, undo_of, step.target)
        evidence["rule_removed"] = gone
        problems = [] if gone else [f"the {undo_of} rule is still in {step.device}'s running config"]
        if step.action is Action.RECONNECT_SEGMENT:
            probe: dict[str, Any] = {}
            ok = wait_until(lambda: bool((probe.update(self._reach_probe(step, expect_reach=True)) or True)
                                         and probe.get("reaches_beyond")), 8.0, 0.5)
            evidence["after"] = dict(probe)
            if not ok and probe.get("probe_host"):
                problems.append("from inside the segment nothing beyond the gateway answers yet")
        else:
            after = self._link_probe(step, expect_reach=True)
            evidence["after"] = after
            if after.get("probed") and not after.get("reaches"):
                problems.append("the peer still cannot reach inside")
        v = self._verification(step, Verification(not problems, step.action.value, evidence))
        if not v.passed:
            raise StepFailed("; ".join(problems), evidence)
        return _Outcome(changed=changed, already=not changed, evidence=evidence)

    def _check_segment_ready(self, segment: str) -> dict[str, Any]:
        """A segment comes back only when each of its hosts in this restore passed its checks, or is
        cleared: its power driver proves it off, or an operator attested that it is physically
        disconnected (``orchestrator attest``, journaled with who, when and why). "SSH closed and no
        ping" is never enough: a compromised host can fake it by playing dead. Returns the evidence
        (each cleared host and how) and journals one ``clearance`` record per cleared host."""
        planned = {s.id for s in self.plan.steps()}
        blocking: dict[str, str] = {}
        cleared: dict[str, dict[str, Any]] = {}
        for host in self.inventory.hosts_in_segment(segment):
            health = self.results.get(f"check-health:{host.name}")
            if f"start-host:{host.name}" not in planned:
                continue
            if health is not None and health.ok:
                continue
            off: Verification | None = None
            if self.drivers.power_for(host) is not None:
                off = self.probes.host_off(host)
                if off.passed:
                    cleared[host.name] = {"how": "power-driver", "text": "power driver: off",
                                          "evidence": dict(off.evidence)}
                    continue
            attestation = self.attestations.get(host.name)
            if attestation is not None:
                cleared[host.name] = {
                    "how": "attestation",
                    "text": f"attested by {attestation.get('by', '?')}: physically disconnected, not verified",
                    "attestation": {k: attestation.get(k) for k in
                                    ("by", "reason", "operator", "ts", "seq", "evidence") if k in attestation}}
                continue
            if off is None:
                blocking[host.name] = ("no power driver can prove it off (SSH closed and no ping is what a "
                                       "compromised host can fake)")
            else:
                blocking[host.name] = f"its power driver does not prove it off ({_compact_evidence(off.evidence)})"
        if blocking:
            names = ", ".join(blocking)
            raise StepFailed(
                f"hosts of {segment} neither passed their checks nor are safely off: {names}; the segment stays "
                f"isolated until each is powered off (proven by its power driver) or an operator attests its "
                f"physical disconnection (orchestrator attest {self.run_id} HOST --by NAME --reason TEXT), "
                f"then resume {self.run_id}",
                {"blocking_hosts": list(blocking), "why": blocking,
                 "cleared": {h: c["text"] for h, c in cleared.items()}})
        for name, how in cleared.items():
            self.rec.emit("clearance", step_id=f"reconnect-segment:{segment}", segment=segment, host=name,
                          quarantined=name in self.quarantined, **how)
        return {"cleared": {h: c["text"] for h, c in cleared.items()}} if cleared else {}

    def _reach_probe(self, step: Step, expect_reach: bool = False) -> dict[str, Any]:
        """From a running host inside the segment: what beyond the gateway answers, and does the
        segment still reach itself."""
        segment = step.target
        hosts = self.probes.running_hosts_in(segment, limit=2)  # a probe host and its neighbour
        if not hosts:
            return {"probe_host": None, "note": "no running host in the segment to probe from"}
        probe_host = hosts[0]
        targets = self.probes.cross_gateway_targets(segment)[:3]
        neighbour = str(hosts[1].address) if len(hosts) > 1 else None
        answers = self.probes.reach_map(probe_host.name, targets + ([neighbour] if neighbour else []),
                                        expect=expect_reach, expect_reach=[neighbour] if neighbour else [])
        crosses = [t for t in targets if answers[t]]
        out: dict[str, Any] = {"probe_host": probe_host.name, "targets": targets, "crosses": crosses,
                               "reaches_beyond": bool(crosses)}
        if neighbour is not None:
            out["same_segment_peer"] = hosts[1].name
            out["same_segment_broken"] = not answers[neighbour]
        return out

    def _link_probe(self, step: Step, expect_reach: bool = False) -> dict[str, Any]:
        link = self.inventory.links[step.target]
        lab = self.inventory.lab
        if lab is None or link.name not in lab.peers:
            return {"probed": False, "note": "no lab peer: judged from the running config"}
        targets = self._inside_targets()
        answers = self.probes.peer_reach_map(link.name, targets, expect=expect_reach)
        crosses = [t for t in targets if answers[t]]
        return {"probed": True, "from": f"peer of {link.name}", "targets": targets, "crosses": crosses,
                "reaches": bool(crosses)}

    def _inside_targets(self) -> list[str]:
        segs = sorted((s for s in self.inventory.segments.values()
                       if s.gateway_address is not None and s.name != self.inventory.management_segment),
                      key=lambda s: s.name)
        return [str(s.gateway_address) for s in segs[:2]]

    # ---- hosts --------------------------------------------------------------------------------

    def _stop_hosts(self, wave: Wave, steps: list[Step]) -> None:
        """One playbook run for the whole wave; each host is verified independently, in parallel,
        from the moment its own power-off result arrives (not when the whole play has ended)."""
        if self.stop_event.is_set():
            return
        t0 = time.monotonic()
        for step in steps:
            self.rec.emit("step-started", step_id=step.id, action=step.action.value, target=step.target,
                          wave=wave.index)
        if self.options.dry_run:
            for step in steps:
                self._finish(step, StepResult(step.id, StepStatus.DRY_RUN, evidence={"would": step.verify}))
            return
        hosts = {s.target: self.inventory.hosts[s.target] for s in steps}

        def probe(h: Host) -> tuple[str, Verification, bool]:
            try:
                off = self.probes.host_off(h)
            except OrchestratorError as exc:
                off = Verification(False, "host-off", {"probe": f"{exc.code}: {exc}"})
            up = off.evidence.get("ssh_port_22")
            return h.name, off, up == "answers" if up in ("answers", "closed") else self.probes.ssh_answers(h)

        with ThreadPoolExecutor(max_workers=max(1, min(self.options.forks, len(hosts)))) as pool:
            before = {name: (off, up) for name, off, up in pool.map(probe, hosts.values())}
        to_stop = sorted(n for n, (off, up) in before.items() if not off.passed and up)
        played = _PlaybookProgress(to_stop)
        runner: ThreadPoolExecutor | None = None
        if to_stop:
            self.rec.emit("command-sent", step_id=f"stop-host wave {wave.index}", driver="ansible",
                          target=",".join(to_stop), commands=[f"playbooks/stop-host.yml --limit {','.join(to_stop)}"])
            runner = ThreadPoolExecutor(max_workers=1)
            future = runner.submit(self.drivers.ansible.stop_hosts, to_stop,
                                   timeout_s=self.options.stop_timeout_s + 60, on_result=played.on_result)
            future.add_done_callback(played.on_done)

        def finish(step: Step) -> None:
            try:
                finish_one(step)
            except Exception as exc:  # noqa: BLE001 - recorded against the step, the wave goes on
                self._finish(step, StepResult(step.id, StepStatus.FAILED, error=f"{type(exc).__name__}: {exc}",
                                              duration_s=round(time.monotonic() - t0, 3)))

        def finish_one(step: Step) -> None:
            host = hosts[step.target]
            off_before, up_before = before[host.name]
            if off_before.passed:
                evidence: dict[str, Any] = {"before": dict(off_before.evidence), "playbook": "not sent (already off)"}
                self._verification(step, off_before)
                self._finish(step, StepResult(step.id, StepStatus.VERIFIED, already=True, evidence=evidence,
                                              duration_s=round(time.monotonic() - t0, 3)))
                return
            outcome = played.wait(host.name) if up_before else {}
            evidence = {"before": dict(off_before.evidence),
                        "playbook": outcome if up_before else "not sent (SSH not answering)"}
            if outcome.get("status") == "refused":
                self._finish(step, StepResult(step.id, StepStatus.FAILED, evidence=evidence,
                                              error=str(outcome.get("message", "refused")),
                                              duration_s=round(time.monotonic() - t0, 3)))
                return
            play_failed = outcome.get("status") in ("failed", "error")
            # A host whose play failed will not go down by itself: a short look, then escalate.
            timeout = self.options.stop_timeout_s if up_before and not play_failed else 3.0
            v = self._verification(step, self.probes.wait_host_off(host, timeout))
            escalated = False
            if not v.passed:
                escalated = True
                why = (f"the stop playbook failed: {outcome.get('message', '')}".strip() if play_failed
                       else "graceful stop did not finish in time")
                v = self._escalate_power_off(step, host, why if up_before
                                             else "SSH does not answer: the host cannot be stopped from inside")
            evidence["after"] = dict(v.evidence)
            status = StepStatus.VERIFIED if v.passed else StepStatus.FAILED
            self._finish(step, StepResult(step.id, status, changed=True, escalated=escalated, evidence=evidence,
                                          error=None if v.passed else "the host is still not off",
                                          duration_s=round(time.monotonic() - t0, 3)))

        try:
            with ThreadPoolExecutor(max_workers=max(1, min(self.options.forks, len(steps)))) as pool:
                list(pool.map(finish, steps))
        finally:
            if runner is not None:
                # The play's own ending (stats, process exit) need not hold the next wave back: it is
                # joined when the run ends, and its journal events land whenever it finishes.
                runner.shutdown(wait=False)
                self._background.append(runner)

    def _escalate_power_off(self, step: Step, host: Host, reason: str) -> Verification:
        power = self.drivers.power_for(host)
        if power is None:
            v = Verification(False, "host-off", {"escalation": "impossible: no power driver", "reason": reason})
            return self._verification(step, v)
        for graceful in (True, False):
            how = "out-of-band graceful power off" if graceful else "out-of-band hard power off"
            self.rec.emit("escalation", step_id=step.id, to=how, reason=reason, host=host.name)
            try:
                power.power_off(host.name, graceful=graceful)
            except DriverError as exc:
                self.rec.emit("escalation", step_id=step.id, to=how, reason=f"failed: {exc}", host=host.name)
                continue
            v = self.probes.wait_host_off(host, self.options.power_off_timeout_s if graceful else 10.0)
            self._verification(step, v)
            if v.passed:
                return Verification(True, "host-off", {**v.evidence, "escalation": how})
            reason = "graceful out-of-band power off did not finish in time"
        return Verification(False, "host-off", {"escalation": "hard power off did not take effect"})

    def _start_host(self, step: Step) -> _Outcome:
        host = self.inventory.hosts[step.target]
        if self.probes.ssh_answers(host):
            v = self._verification(step, self.probes.host_up(host))
            if v.passed:
                return _Outcome(already=True, evidence={**v.evidence, "system_state": self._boot_settled(host)})
        power = self.drivers.power_for(host)
        if power is None:
            raise StepFailed(f"{host.name} is off and has no power driver: power it on by hand, then resume",
                             {"power": host.power or "none"})
        self.rec.emit("command-sent", step_id=step.id, driver=f"power.{host.power}", target=host.name,
                      commands=["power on"])
        power.power_on(host.name)
        v = self._verification(step, self.probes.wait_host_up(host, self.options.start_timeout_s))
        if not v.passed:
            raise StepFailed(f"{host.name} did not answer SSH within {self.options.start_timeout_s:.0f} s",
                             dict(v.evidence))
        return _Outcome(changed=True, evidence={**v.evidence, "system_state": self._boot_settled(host)})

    def _boot_settled(self, host: Host) -> str:
        """Wait (bounded) until the host's boot has finished, so that its integrity and health checks
        see the settled system, not one still starting units. Returns systemd's word for the state
        (running, degraded, ...); the checks that follow judge the host, not this."""
        limit = int(self.options.boot_settle_timeout_s)
        try:
            res = self.drivers.ssh.run(host.name, f"timeout {limit} systemctl is-system-running --wait",
                                       timeout_s=limit + 10)
        except OrchestratorError as exc:
            return f"unknown ({exc.code})"
        state = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if res.exit_status == 124:  # timeout(1): the boot is still going on
            return f"not settled after {limit} s" + (f" ({state})" if state else "")
        return state or f"exit {res.exit_status}"

    def _quarantine(self, step: Step, host: Host, why: str) -> dict[str, Any]:
        """Keep a suspect host out: power it off again (it is never reconnected)."""
        self.quarantined[host.name] = why
        power = self.drivers.power_for(host)
        if power is None:
            self.rec.emit("quarantine", host=host.name, reason=why, powered_off=False)
            return {"quarantine": "no power driver: its segment stays isolated until an operator attests the "
                                  f"host's physical disconnection (orchestrator attest {self.run_id} {host.name} "
                                  "--by NAME --reason TEXT)"}
        try:
            power.power_off(host.name, graceful=False)
        except DriverError as exc:
            self.rec.emit("quarantine", host=host.name, reason=why, powered_off=False, error=str(exc))
            return {"quarantine": f"power off failed: {exc}"}
        off = self.probes.wait_host_off(host, 15.0)
        self.rec.emit("quarantine", host=host.name, reason=why, powered_off=off.passed, evidence=dict(off.evidence))
        return {"quarantine": "powered off" if off.passed else "power off not confirmed"}

    def _check_integrity(self, step: Step) -> _Outcome:
        from orchestrator.integrity import check_host

        host = self.inventory.hosts[step.target]
        result = check_host(self.drivers.ssh, self.inventory, host.name, self.settings)
        diffs = [{"category": d.category, "path": d.path, "detail": d.detail} for d in result.differences]
        for d in diffs:
            self.rec.emit("integrity-finding", host=host.name, **d)
        evidence: dict[str, Any] = {"differences": diffs, "baseline_taken": result.baseline_taken}
        self._verification(step, Verification(result.clean, "integrity", evidence))
        if not result.clean:
            paths = ", ".join(f"{d['category']} {d['path']}" for d in diffs[:20])
            evidence.update(self._quarantine(step, host, f"integrity: {paths}"))
            raise StepFailed(f"{len(diffs)} difference(s) from the baseline: {paths}", evidence)
        return _Outcome(evidence=evidence)

    def _check_health(self, step: Step) -> _Outcome:
        """The host's services are active and its baseline's TCP listening ports are back."""
        from orchestrator.integrity import listening_tcp_ports, load_baseline

        host = self.inventory.hosts[step.target]
        problems: list[str] = []
        evidence: dict[str, Any] = {}
        want = set(listening_tcp_ports(load_baseline(host.name, self.settings)))
        states: dict[str, str] = {}
        have: set[int] = set()

        def healthy() -> bool:
            if host.services:
                # Every service name quoted, after `--`: a name is never read as shell or as an option.
                units = " ".join(shlex.quote(s) for s in host.services)
                res = self.drivers.ssh.run(host.name, f"systemctl is-active -- {units}", timeout_s=15)
                states.clear()
                states.update(zip(host.services, res.stdout.split(), strict=False))
                for service in host.services:  # a service systemd gave no answer for is never "active"
                    states.setdefault(service, "unknown (no answer)")
            res = self.drivers.ssh.run(host.name, "ss -ltnH", timeout_s=10)
            have.clear()
            have.update(_tcp_ports(res.stdout))
            return all(st == "active" for st in states.values()) and want <= have

        wait_until(healthy, 20.0, 1.0)  # services may still be starting right after boot
        evidence["services"] = dict(states)
        evidence["ports_expected"] = sorted(want)
        evidence["ports_missing"] = sorted(want - have)
        problems += [f"service {s} is {st}" for s, st in states.items() if st != "active"]
        problems += [f"port {p} is not listening" for p in sorted(want - have)]
        v = self._verification(step, Verification(not problems, "health", evidence))
        if not v.passed:
            evidence.update(self._quarantine(step, host, "health: " + "; ".join(problems)))
            raise StepFailed("; ".join(problems), evidence)
        return _Outcome(evidence=evidence)

    def _gate(self, step: Step) -> _Outcome:
        if step.id in self.approved_gates:
            return _Outcome(already=True, evidence={"approved": "earlier in this run"})
        summary = self._gate_summary(step)
        policy = self.options.approve
        approver = self.options.operator
        if policy is ApprovalPolicy.ALL:
            how = "--approve all"
            approved = True
        elif policy is ApprovalPolicy.EACH:
            how = "--approve each (asked at the gate)"
            approved = bool(self.options.approver and self.options.approver(step, summary))
        elif policy is ApprovalPolicy.NONE:
            how = "no approval given"
            approved = False
        else:
            assert_never(policy)
        if not approved:
            self.rec.emit("gate-refused", gate=step.id, approver=approver, how=how, summary=summary)
            raise StepFailed(f"gate {step.target} not approved ({how})", {"summary": summary})
        self.approved_gates.add(step.id)
        self.rec.emit("gate-approved", gate=step.id, approver=approver, how=how, summary=summary)
        return _Outcome(evidence={"approver": approver, "how": how, "summary": summary})

    def _gate_summary(self, step: Step) -> str:
        passed = sorted(s.target for s in self.plan.steps() if s.action is Action.CHECK_HEALTH
                        and s.tier == step.tier and self.results.get(s.id, None) is not None
                        and self.results[s.id].ok)
        quarantined = sorted(h for h in self.quarantined if self.inventory.hosts[h].tier == step.tier)
        if step.target == "links":
            links = [s.target for s in self.plan.steps() if s.action is Action.RESTORE_LINK]
            held = ", ".join(self.quarantined) or "none"
            return f"restore external links: {', '.join(links)}; quarantined hosts: {held}"
        return (f"{step.target}: passed {', '.join(passed) or 'none'}; "
                f"quarantined {', '.join(quarantined) or 'none'}")

    # ---- final verification ---------------------------------------------------------------------

    def _verify_final(self, step: Step) -> _Outcome:
        checks: list[tuple[str, Callable[[], bool]]] = []
        net = self.drivers.net
        for s in self.plan.steps():
            res = self.results.get(s.id)
            if res is None or not (res.ok or res.status is StepStatus.UNPROVEN):
                continue  # an unproven isolation is in force all the same: it must still be there
            if s.action in (Action.CUT_LINK, Action.ISOLATE_SEGMENT):
                checks.append((s.id, _in_force_check(net, s)))
            elif s.action is Action.STOP_HOST:
                checks.append((s.id, _off_check(self.probes, self.inventory.hosts[s.target])))
        for name in self.plan.kept:
            checks.append((f"kept:{name}", _answers_check(self.probes, self.inventory.hosts[name])))
        with ThreadPoolExecutor(max_workers=max(1, min(self.options.forks, len(checks) or 1))) as pool:
            outcomes = dict(zip([c[0] for c in checks], pool.map(lambda c: _safe(c[1]), checks), strict=True))
        failed = sorted(k for k, ok in outcomes.items() if not ok)
        v = self._verification(step, Verification(not failed, "final", {"checked": len(outcomes), "failed": failed}))
        if not v.passed:
            raise StepFailed(f"no longer true: {', '.join(failed)}", dict(v.evidence))
        return _Outcome(evidence=dict(v.evidence))

    def _ansible_event(self, event: dict[str, Any]) -> None:
        self.rec.emit("ansible-event", **{k: v for k, v in event.items() if k not in ("type", "ts")})


def _in_force_check(net: Any, step: Step) -> Callable[[], bool]:
    return lambda: bool(net.is_in_force(step.device, step.action.value, step.target))


def _off_check(probes: Probes, host: Host) -> Callable[[], bool]:
    return lambda: probes.host_off(host).passed


def _answers_check(probes: Probes, host: Host) -> Callable[[], bool]:
    return lambda: probes.ssh_answers(host, 2.0)


def _compact_evidence(evidence: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in evidence.items())


def _safe_probe(probe: Callable[[Step], dict[str, Any]], step: Step) -> dict[str, Any]:
    try:
        return probe(step)
    except OrchestratorError as exc:
        return {"probe_error": f"{exc.code}: {exc}"}


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:  # noqa: BLE001 - a probe that cannot run proves nothing: counted as failed
        return False


def _tcp_ports(ss_output: str) -> set[int]:
    """``ss -ltnH`` lines -> the listening TCP ports."""
    out = set()
    for line in ss_output.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            port = parts[3].rsplit(":", 1)[-1]
            if port.isdigit():
                out.add(int(port))
    return out


class _LazySsh:
    """Lets the probes use the SSH driver without opening it before it is needed."""

    def __init__(self, drivers: Drivers) -> None:
        self._drivers = drivers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._drivers.ssh, name)

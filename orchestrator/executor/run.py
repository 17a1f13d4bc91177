"""The run loop: waves in order, the steps of a wave in parallel, every outcome journaled.

A step whose ``requires`` did not succeed is skipped and reported; the rest goes on. Each step is
dispatched to its phase (``containment``, ``stopping``, ``restore``, ``final``), which shares the
run's state through one ``RunContext``. Milestones (contained, shutdown-complete, restored) are
journaled once, when their phase is first complete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, assert_never

from orchestrator import drivers as registry
from orchestrator.config import Settings
from orchestrator.errors import OrchestratorError
from orchestrator.executor import containment, final, restore, schedule, stopping
from orchestrator.executor.context import (
    Drivers,
    LazySsh,
    Outcome,
    ResumeState,
    RunContext,
    RunOptions,
    RunResult,
    StepFailed,
)
from orchestrator.executor.recorder import Recorder
from orchestrator.model import Action, Inventory, Mode, Phase, Plan, Step, StepResult, StepStatus, Wave
from orchestrator.verify import Probes


class Executor:
    """Runs one plan (or resumes it: ``resume``) and returns its ``RunResult``."""

    def __init__(self, *, inventory: Inventory, plan: Plan, settings: Settings, run_id: str, run_dir: Path,
                 recorder: Recorder, options: RunOptions, stop_event: threading.Event | None = None,
                 resume: ResumeState | None = None) -> None:
        resume = resume or ResumeState()
        if not options.dry_run and any(s.device or s.action is Action.BACKUP_CONFIG for s in plan.steps()):
            # Code loading is the process's setup, not the incident's timeline: done before the clock
            # starts (as a floor's imports are), not inside the first containment wave.
            registry.load_device_library()
        drivers = Drivers(inventory, run_dir, options.forks, self._ansible_event)
        if plan.mode is Mode.RESTORE:  # what comes back after an incident is presumed compromised
            drivers.suspect_hosts = frozenset(inventory.hosts)
        self.rec = recorder
        self.ctx = RunContext(
            inventory=inventory, plan=plan, settings=settings, run_id=run_id, run_dir=run_dir, rec=recorder,
            options=options, drivers=drivers, probes=Probes(inventory, LazySsh(drivers), drivers.power_for),
            stop_event=stop_event or threading.Event(), results=dict(resume.results),
            quarantined=dict(resume.quarantined), attestations=dict(resume.attestations),
            vouched=dict(resume.vouched), approved_gates=set(resume.approvals))
        self.started = resume.started_mono if resume.started_mono is not None else time.monotonic()
        self.milestones: dict[str, float] = dict(resume.milestones)
        self.time_to_containment: float | None = self.milestones.get("contained")
        self.time_to_shutdown: float | None = self.milestones.get("shutdown-complete")

    @property
    def drivers(self) -> Drivers:
        return self.ctx.drivers

    def run(self) -> RunResult:
        ctx = self.ctx
        interrupted = False
        preflight = containment.start_preflight(ctx)
        try:
            for group in wave_groups(ctx.plan.waves):
                if ctx.stop_event.is_set():
                    interrupted = True
                    break
                todo = [s for w in group for s in w.steps if not ctx.done(s.id)]
                if not todo:
                    continue
                stopping.open_stop_connections(ctx, group[0])
                if _dag_kind(group[0]) == "stop":
                    stopping.stop_when_ready(ctx, group, todo)
                elif _dag_kind(group[0]) == "restore":
                    self._restore_when_ready(group, todo)
                else:
                    (wave,) = group
                    ctx.rec.emit("wave-started", wave=wave.index, phase=wave.phase.value,
                                 steps=[s.id for s in todo])
                    self._run_wave(wave, todo)
                if ctx.stop_event.is_set():
                    interrupted = any(s.id not in ctx.results for s in ctx.plan.steps())
                self._milestones()
        finally:
            if preflight is not None:
                preflight.shutdown(wait=True, cancel_futures=True)
            if ctx.armed_stops is not None:
                ctx.armed_stops.stops.close()  # stands down whatever was not released, waits for the run
            for background in ctx.background:
                background.shutdown(wait=True)
            ctx.drivers.close()
        return RunResult(
            run_id=ctx.run_id, plan=ctx.plan, results=dict(ctx.results), interrupted=interrupted,
            time_to_containment_s=self.time_to_containment, time_to_shutdown_s=self.time_to_shutdown,
            quarantined=dict(ctx.quarantined), journal_path=ctx.settings.journal_path(ctx.run_id),
        )

    def _milestones(self) -> None:
        """Each milestone once, when its phase is first complete (also when a resume completes it)."""
        ctx = self.ctx
        if ctx.options.dry_run:
            return  # nothing was contained: a dry run has no milestones

        def phase_done(phase: Phase) -> bool:
            steps = [s for w in ctx.plan.waves if w.phase is phase for s in w.steps]
            return bool(steps) and all(ctx.done(s.id) for s in steps)

        elapsed = round(time.monotonic() - self.started, 3)
        reached = []
        if phase_done(Phase.CONTAIN):
            reached.append("contained")
            if phase_done(Phase.SHUTDOWN):
                reached.append("shutdown-complete")
        if ctx.plan.mode is Mode.RESTORE and all(ctx.done(s.id) for s in ctx.plan.steps()):
            reached.append("restored")
        for name in reached:
            if name not in self.milestones:
                self.milestones[name] = elapsed
                ctx.rec.emit("milestone", name=name, elapsed_s=elapsed)
        self.time_to_containment = self.milestones.get("contained")
        self.time_to_shutdown = self.milestones.get("shutdown-complete")

    def _run_wave(self, wave: Wave, todo: list[Step]) -> None:
        ctx = self.ctx
        runnable: list[Step] = []
        for step in todo:
            missing = [r for r in step.requires if not ctx.done(r)]
            if missing:
                reason = "requires " + ", ".join(
                    f"{r} ({ctx.results[r].status.value if r in ctx.results else 'not done'})" for r in missing)
                ctx.finish(step, StepResult(step.id, StepStatus.SKIPPED, error=reason))
            else:
                runnable.append(step)
        stops = [s for s in runnable if s.action is Action.STOP_HOST]
        others = [s for s in runnable if s.action is not Action.STOP_HOST]
        if stops:  # a wave that mixes stops with other steps: its stops together, as one batch
            for step in stops:
                ctx.rec.emit("step-started", step_id=step.id, action=step.action.value, target=step.target,
                             wave=wave.index)
            stopping.stop_hosts(ctx, wave.index, stops)
        if others:
            batches = containment.start_device_batches(ctx, others)
            try:
                with ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(others)))) as pool:
                    list(pool.map(lambda s: self._run_step(wave, s), others))
            finally:
                if batches is not None:
                    batches.shutdown(wait=True)
                ctx.device_changes.clear()
                ctx.device_sent.clear()

    def _restore_when_ready(self, waves: list[Wave], todo: list[Step]) -> None:
        """A tier's starts, integrity and health checks, dependency-driven (``schedule``): a host's
        integrity check starts once it is up and its health check once its integrity is proven, not
        when the slowest host of the tier is; at most ``forks`` steps at a time."""
        ctx = self.ctx
        wave_of = {s.id: w for w in waves for s in w.steps}
        todo_ids = {s.id for s in todo}
        started: set[int] = set()

        def launch(ready: list[Step]) -> list[Future[None]]:
            for step in ready:
                wave = wave_of[step.id]
                if wave.index not in started:
                    started.add(wave.index)
                    ctx.rec.emit("wave-started", wave=wave.index, phase=wave.phase.value,
                                 steps=[s.id for s in wave.steps if s.id in todo_ids])
            return [pool.submit(self._run_step, wave_of[s.id], s) for s in ready]

        with ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(todo)))) as pool:
            schedule.run_when_ready(ctx, todo, launch)

    def _run_step(self, wave: Wave, step: Step) -> None:
        ctx = self.ctx
        if ctx.stop_event.is_set():
            return
        ctx.rec.emit("step-started", step_id=step.id, action=step.action.value, target=step.target,
                     wave=wave.index)
        t0 = time.monotonic()
        if ctx.options.dry_run:
            ctx.finish(step, StepResult(step.id, StepStatus.DRY_RUN, evidence={"would": step.verify}))
            return
        try:
            outcome = _dispatch(ctx, step)  # the netmiko driver serialises commands per device
            status = (StepStatus.ATTESTED if outcome.attested is not None else
                      StepStatus.VERIFIED if outcome.unproven is None else StepStatus.UNPROVEN)
            result = StepResult(step.id, status, changed=outcome.changed, already=outcome.already,
                                escalated=outcome.escalated, evidence=outcome.evidence,
                                error=outcome.attested or outcome.unproven,
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
        ctx.finish(step, result)

    def _ansible_event(self, event: dict[str, Any]) -> None:
        self.rec.emit("ansible-event", **{k: v for k, v in event.items() if k not in ("type", "ts")})


_DAG_KINDS = {Action.STOP_HOST: "stop", Action.START_HOST: "restore", Action.CHECK_INTEGRITY: "restore",
              Action.CHECK_HEALTH: "restore"}


def _dag_kind(wave: Wave) -> str | None:
    """"stop" or "restore" for a wave whose order is only its steps' ``requires`` (run
    dependency-driven with its neighbours of the same kind), None for a wave that is a barrier."""
    kinds = {_DAG_KINDS.get(s.action) for s in wave.steps}
    return kinds.pop() if len(kinds) == 1 else None


def wave_groups(waves: Sequence[Wave]) -> list[list[Wave]]:
    """The plan's waves in order, consecutive ones of the same dependency-driven kind together."""
    groups: list[list[Wave]] = []
    for wave in waves:
        kind = _dag_kind(wave)
        if kind is not None and groups and _dag_kind(groups[-1][0]) == kind:
            groups[-1].append(wave)
        else:
            groups.append([wave])
    return groups


def _dispatch(ctx: RunContext, step: Step) -> Outcome:
    action = step.action
    if action is Action.BACKUP_CONFIG:
        return containment.backup_config(ctx, step)
    if action in (Action.CUT_LINK, Action.ISOLATE_SEGMENT):
        return containment.contain(ctx, step)
    if action in (Action.RESTORE_LINK, Action.RECONNECT_SEGMENT):
        return restore.reconnect(ctx, step)
    if action is Action.VERIFY:
        return final.verify_final(ctx, step)
    if action is Action.START_HOST:
        return restore.start_host(ctx, step)
    if action is Action.CHECK_INTEGRITY:
        return restore.check_integrity(ctx, step)
    if action is Action.CHECK_HEALTH:
        return restore.check_health(ctx, step)
    if action is Action.GATE:
        return restore.gate(ctx, step)
    if action is Action.STOP_HOST:
        raise StepFailed("stop-host runs per wave, not alone")
    assert_never(action)

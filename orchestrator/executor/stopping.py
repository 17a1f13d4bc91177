"""Stopping hosts, dependency-driven: a host's stop starts once every host that depends on it is
verified off; one stop playbook per batch of hosts ready together, each host verified off on its own
from the moment its power-off is reported, and escalated out of band (graceful, then hard) when it
does not go down."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from orchestrator.drivers.base import PlaybookRun, PowerOffReport
from orchestrator.errors import DriverError, OrchestratorError, SafetyInterlock
from orchestrator.executor import schedule
from orchestrator.executor.context import RunContext
from orchestrator.model import Action, Host, HostOs, Step, StepResult, StepStatus, Verification, Wave

Before = tuple[Verification, bool]  # a host's off-probe before the wave, and whether SSH answered


class PlaybookProgress:
    """Per host, the stop playbook's verdict as soon as it is known: its power-off result (reported
    by the host stopper), or else the whole run's outcome for that host once the run has ended."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self._verdicts: dict[str, dict[str, Any]] = {}
        self._ready = {h: threading.Event() for h in hosts}
        self._lock = threading.Lock()

    def on_power_off(self, report: PowerOffReport) -> None:
        if report.host in self._ready:
            self._settle(report.host, {"status": report.status, "message": report.message})

    def on_done(self, future: Future[PlaybookRun]) -> None:
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


def open_stop_connections(ctx: RunContext, wave: Wave) -> None:
    """Hosts to be stopped get their SSH connections opened in the background, in wave order,
    so each stop wave starts on connections already up (AnsibleDriver.open_connections).
    Begun once the configuration backups are taken: the backup wave is the one containment
    step that needs the CPUs, the cuts and isolations after it mostly wait for their proofs."""
    if ctx.stop_connections_opened or ctx.options.dry_run:
        return
    if wave.steps and all(s.action is Action.BACKUP_CONFIG for s in wave.steps):
        return
    ctx.stop_connections_opened = True
    hosts = [s.target for s in ctx.plan.steps() if s.action is Action.STOP_HOST and not ctx.done(s.id)
             and not ctx.inventory.hosts[s.target].never_ssh]
    if hosts:
        with contextlib.suppress(Exception):  # only a head start: the stop waves connect anyway
            ctx.drivers.ansible.open_connections(hosts)


def stop_when_ready(ctx: RunContext, waves: list[Wave], todo: list[Step]) -> None:
    """The stop waves of a shutdown, dependency-driven: a host's stop starts as soon as every host
    that depends on it is verified off (its ``requires``), never before, whatever wave it is listed
    in; hosts that become ready together (within ``RunOptions.stop_gather_s``) share one playbook.
    Each plan wave's ``wave-started`` is journaled when its first stop starts, and every
    ``step-started`` when that host's stop really starts: the journal shows the order used."""
    wave_of = {s.id: w.index for w in waves for s in w.steps}
    todo_ids = {s.id for s in todo}
    started: set[int] = set()
    batches = ThreadPoolExecutor(max_workers=max(1, len(todo)), thread_name_prefix="stop-batch")

    def launch(ready: list[Step]) -> list[Future[None]]:
        for wave in waves:
            if wave.index not in started and any(wave_of[s.id] == wave.index for s in ready):
                started.add(wave.index)
                ctx.rec.emit("wave-started", wave=wave.index, phase=wave.phase.value,
                             steps=[s.id for s in wave.steps if s.id in todo_ids])
        for step in ready:
            ctx.rec.emit("step-started", step_id=step.id, action=step.action.value, target=step.target,
                         wave=wave_of[step.id])
        return [batches.submit(stop_hosts, ctx, min(wave_of[s.id] for s in ready), ready)]

    try:
        schedule.run_when_ready(ctx, todo, launch, gather_s=ctx.options.stop_gather_s)
    finally:
        batches.shutdown(wait=True)


def stop_hosts(ctx: RunContext, wave: int, steps: list[Step]) -> None:
    """One playbook run for a batch of hosts whose stops have started (``step-started`` journaled);
    each host is verified independently, in parallel, from the moment its own power-off result
    arrives (not when the whole play has ended)."""
    t0 = time.monotonic()
    if ctx.options.dry_run:
        for step in steps:
            ctx.finish(step, StepResult(step.id, StepStatus.DRY_RUN, evidence={"would": step.verify}))
        return
    hosts = {s.target: ctx.inventory.hosts[s.target] for s in steps}
    with ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(hosts)))) as pool:
        before = dict(zip(hosts, pool.map(partial(_probe_before, ctx), hosts.values()), strict=True))
    to_stop = sorted(n for n, (off, up) in before.items() if not off.passed and up)
    played = PlaybookProgress(to_stop)
    runner = _start_playbook(ctx, wave, to_stop, played)

    def finish(step: Step) -> None:
        try:
            _finish_stop(ctx, step, hosts[step.target], before[step.target], played, t0)
        except Exception as exc:  # noqa: BLE001 - recorded against the step, the others go on
            ctx.finish(step, StepResult(step.id, StepStatus.FAILED, error=f"{type(exc).__name__}: {exc}",
                                        duration_s=_since(t0)))

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(steps)))) as pool:
            list(pool.map(finish, steps))
    finally:
        if runner is not None:
            # The play's own ending (stats, process exit) need not hold the next stops back: it is
            # joined when the run ends, and its journal events land whenever it finishes.
            runner.shutdown(wait=False)
            ctx.background.append(runner)


def _since(t0: float) -> float:
    return round(time.monotonic() - t0, 3)


def _probe_before(ctx: RunContext, host: Host) -> Before:
    try:
        off = ctx.probes.host_off(host)
    except OrchestratorError as exc:
        off = Verification(False, "host-off", {"probe": f"{exc.code}: {exc}"})
    up = off.evidence.get("ssh_port_22")
    return off, up == "answers" if up in ("answers", "closed") else ctx.probes.ssh_answers(host)


def _start_playbook(ctx: RunContext, wave: int, to_stop: list[str],
                    played: PlaybookProgress) -> ThreadPoolExecutor | None:
    """The batch's stop playbook, in the background, for the hosts that answer and are not off."""
    if not to_stop:
        return None
    ctx.rec.emit("command-sent", step_id=f"stop-host wave {wave}", driver="ansible",
                 target=",".join(to_stop), commands=[f"playbooks/stop-host.yml --limit {','.join(to_stop)}"])
    runner = ThreadPoolExecutor(max_workers=1)
    future = runner.submit(ctx.drivers.ansible.stop_hosts, to_stop,
                           timeout_s=ctx.options.stop_timeout_s + 60, on_power_off=played.on_power_off)
    future.add_done_callback(played.on_done)
    return runner


def _finish_stop(ctx: RunContext, step: Step, host: Host, before: Before, played: PlaybookProgress,
                 t0: float) -> None:
    """One host of the wave: already off, refused, or verified off (escalated if need be)."""
    off_before, up_before = before
    if off_before.passed:
        evidence: dict[str, Any] = {"before": dict(off_before.evidence), "playbook": "not sent (already off)"}
        ctx.verification(step, off_before)
        ctx.finish(step, StepResult(step.id, StepStatus.VERIFIED, already=True, evidence=evidence,
                                    duration_s=_since(t0)))
        return
    if host.never_ssh:  # windows, or an ESXi host through vCenter: only its power controller stops it
        _finish_outside_stop(ctx, step, host, off_before, t0)
        return
    outcome = played.wait(host.name) if up_before else {}
    evidence = {"before": dict(off_before.evidence),
                "playbook": outcome if up_before else "not sent (SSH not answering)"}
    if outcome.get("status") == "refused":
        ctx.finish(step, StepResult(step.id, StepStatus.FAILED, evidence=evidence,
                                    error=str(outcome.get("message", "refused")), duration_s=_since(t0)))
        return
    play_failed = outcome.get("status") in ("failed", "error")
    # A host whose play failed will not go down by itself: a short look, then escalate.
    timeout = ctx.options.stop_timeout_s if up_before and not play_failed else 3.0
    v = ctx.verification(step, ctx.probes.wait_host_off(host, timeout))
    escalated = False
    if not v.passed:
        escalated = True
        why = (f"the stop playbook failed: {outcome.get('message', '')}".strip() if play_failed
               else "graceful stop did not finish in time")
        v = escalate_power_off(ctx, step, host, why if up_before
                               else "SSH does not answer: the host cannot be stopped from inside")
    evidence["after"] = dict(v.evidence)
    status = StepStatus.VERIFIED if v.passed else StepStatus.FAILED
    ctx.finish(step, StepResult(step.id, status, changed=True, escalated=escalated, evidence=evidence,
                                error=None if v.passed else "the host is still not off", duration_s=_since(t0)))


def _finish_outside_stop(ctx: RunContext, step: Step, host: Host, off_before: Verification, t0: float) -> None:
    """A host never reached over SSH: no playbook, straight to its power controller (graceful, then hard)."""
    why = ("os: windows: stopped through its power controller only" if host.os is HostOs.WINDOWS else
           "an ESXi host: maintenance mode, then shutdown, through vCenter")
    evidence: dict[str, Any] = {"before": dict(off_before.evidence), "playbook": f"not sent ({why})"}
    v = escalate_power_off(ctx, step, host, why)
    evidence["after"] = dict(v.evidence)
    status = StepStatus.VERIFIED if v.passed else StepStatus.FAILED
    ctx.finish(step, StepResult(step.id, status, changed=True, escalated=True, evidence=evidence,
                                error=None if v.passed else "the host is still not off", duration_s=_since(t0)))


def escalate_power_off(ctx: RunContext, step: Step, host: Host, reason: str) -> Verification:
    """Out-of-band power off through the host's power driver (its power controller, or the lab's):
    graceful, then hard; each attempt journaled, and what the driver did or answered (a task, a
    fault, a refused graceful shutdown) kept in the evidence under ``out_of_band``."""
    power = ctx.drivers.power_for(host)
    if power is None:
        v = Verification(False, "host-off", {"escalation": "impossible: no power driver", "reason": reason})
        return ctx.verification(step, v)
    attempts: dict[str, dict[str, object]] = {}
    for graceful in (True, False):
        how = "out-of-band graceful power off" if graceful else "out-of-band hard power off"
        ctx.rec.emit("escalation", step_id=step.id, to=how, reason=reason, host=host.name)
        try:
            power.power_off(host.name, graceful=graceful)
        except DriverError as exc:
            attempts[how] = {"error": f"{exc.code}: {exc.message}", **power.evidence(host.name)}
            ctx.rec.emit("escalation", step_id=step.id, to=how, reason=f"failed: {exc}", host=host.name)
            if graceful:
                reason = f"the graceful out-of-band power off failed ({exc.code})"
            continue
        attempts[how] = {"sent": True, **power.evidence(host.name)}
        v = ctx.probes.wait_host_off(host, ctx.options.power_off_timeout_s if graceful else 10.0)
        ctx.verification(step, v)
        if v.passed:
            return Verification(True, "host-off", {**v.evidence, "escalation": how, **_said(attempts)})
        reason = "graceful out-of-band power off did not finish in time"
    return Verification(False, "host-off", {"escalation": "hard power off did not take effect", **_said(attempts)})


def _said(attempts: dict[str, dict[str, object]]) -> dict[str, object]:
    """The attempts' evidence, when a driver had anything to say beyond "sent" (the lab's drivers do not)."""
    if all(set(a) == {"sent"} for a in attempts.values()):
        return {}
    return {"out_of_band": attempts}

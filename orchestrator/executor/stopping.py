"""Stopping hosts, dependency-driven: a host's stop starts once every host that depends on it is
verified off. The stop run is armed ahead for every host (``executor.armed``: one playbook start for
the whole shutdown, each host released when ready); hosts it does not cover get one stop playbook per
batch ready together. Each host is verified off on its own from the moment its power-off is
reported, and escalated out of band (graceful, then hard) when it does not go down."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from orchestrator.drivers.base import PowerOffReport
from orchestrator.errors import DriverError, OrchestratorError
from orchestrator.executor import schedule
from orchestrator.executor.armed import ARMED_STOPS_MAX, ArmedStopRun, PlaybookProgress
from orchestrator.executor.context import RunContext
from orchestrator.model import Action, Host, HostOs, Phase, Step, StepResult, StepStatus, Verification, Wave

Before = tuple[Verification, bool]  # a host's off-probe before the wave, and whether SSH answered
# The "before" probes taken ahead run a few at a time: they have until each host's release, and as many
# threads as forks (50) took the controller's interpreter from containment, which runs at that moment.
PROBES_AHEAD_AT_ONCE = 4


def open_stop_connections(ctx: RunContext, wave: Wave) -> None:
    """Preparation for the stops, in the background, in plan order, so each host's stop starts on
    what is already up, in two parts:

    * the armed stop run (``_arm``), started once the backups are taken, beside the cuts: its
      ``ansible-playbook`` is born at nice +10 (``BornLowered``), so its start and its hundred
      forked workers take only the CPU containment leaves, and they are ready when the first
      hosts are released instead of being started then;
    * the SSH connections (``AnsibleDriver.open_connections``) and the "before" probes, once
      containment is verified, never beside it: the connections' handshakes delayed the cuts'
      commands by a second, and the probes' TCP connects (an sshd fork each on the hosts) cost
      containment 0.6 s for no shutdown time (bench journals and A/B runs, 100-host lab)."""
    if ctx.options.dry_run or ctx.stop_connections_opened:
        return
    if wave.phase is Phase.CONTAIN and any(s.action is Action.BACKUP_CONFIG for s in wave.steps):
        return  # the backups go first: nothing is changed before them
    hosts = [s.target for s in ctx.plan.steps() if s.action is Action.STOP_HOST and not ctx.done(s.id)
             and not ctx.inventory.hosts[s.target].never_ssh]
    if not hosts:
        return
    if not ctx.stop_run_armed:
        ctx.stop_run_armed = True
        _arm(ctx, hosts[:ARMED_STOPS_MAX])
    if wave.phase is Phase.CONTAIN or ctx.stop_connections_opened:
        return
    ctx.stop_connections_opened = True
    with contextlib.suppress(Exception):  # only a head start: the stop waves connect anyway
        ctx.drivers.ansible.open_connections(hosts)
    _probe_ahead(ctx, hosts)


def _probe_ahead(ctx: RunContext, hosts: list[str]) -> None:
    """Each host's "before" probe (off already? SSH answering?), taken now in the background, in plan
    order, instead of when its stop comes: containment changes neither a host's power nor its
    management SSH, and nothing is sent to a host before its own stop, so it is still the state before
    that stop, and a dependency level no longer waits for its hosts' probes. A few at a time
    (``PROBES_AHEAD_AT_ONCE``); a host whose probe has not run by its stop waits for it."""
    pool = ThreadPoolExecutor(max_workers=max(1, min(PROBES_AHEAD_AT_ONCE, len(hosts))), thread_name_prefix="before")
    for name in hosts:
        ctx.stop_before[name] = pool.submit(_probe_before, ctx, ctx.inventory.hosts[name])
    pool.shutdown(wait=False)
    ctx.background.append(pool)


def _arm(ctx: RunContext, hosts: list[str]) -> None:
    """The stop run for ``hosts`` (plan order), started now and held until each host's release; when
    it cannot be started, each batch of ready hosts gets a playbook of its own (journaled why)."""
    progress = PlaybookProgress(hosts)
    try:
        stops = ctx.drivers.ansible.arm_stops(hosts, wait_s=_release_budget_s(ctx), on_power_off=progress.on_power_off)
    except OrchestratorError as exc:
        ctx.rec.emit("ansible-event", playbook="stop-host.yml", phase="not-armed", hosts=hosts,
                     message=f"a stop playbook per batch instead: {exc.code}: {exc}")
        return
    stops.add_done_callback(progress.on_done)
    ctx.armed_stops = ArmedStopRun(stops, progress)


def _release_budget_s(ctx: RunContext) -> float:
    """How long an armed host may wait for its release: every stop wave's worst case (the play's
    verdict, the wait for off, a graceful then hard escalation), twice over. Past it, the host's
    stop fails without anything sent, and its verification escalates as for a failed play."""
    waves = sum(1 for w in ctx.plan.waves if any(s.action is Action.STOP_HOST for s in w.steps))
    o = ctx.options
    per_wave = _verdict_wait_s(ctx) + o.stop_timeout_s + o.power_off_timeout_s + 10.0
    return 2 * max(1, waves) * per_wave + 60.0


def _verdict_wait_s(ctx: RunContext) -> float:
    """How long a host's verification waits for its stop playbook's verdict (the batch playbook's
    own time limit: its stop timeout plus a minute)."""
    return ctx.options.stop_timeout_s + 60.0


def stand_down_armed(ctx: RunContext) -> None:
    """The armed hosts not released by now are not stopped by the armed run: it ends for them."""
    if ctx.armed_stops is not None:
        ctx.armed_stops.stops.stand_down(sorted(ctx.armed_stops.stops.hosts))


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
        schedule.run_when_ready(ctx, todo, launch, gather_s=_gather_s(ctx, todo))
    finally:
        batches.shutdown(wait=True)
        stand_down_armed(ctx)


def _gather_s(ctx: RunContext, todo: list[Step]) -> float:
    """No gathering when every stop is armed: a release costs no process start, so each host goes the
    moment it is ready; otherwise ``RunOptions.stop_gather_s`` (one playbook for hosts ready together)."""
    armed = ctx.armed_stops
    if armed is not None and all(armed.covers(s.target) or ctx.inventory.hosts[s.target].never_ssh for s in todo):
        return 0.0
    return ctx.options.stop_gather_s


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
    ahead = {name: ctx.stop_before.pop(name) for name in hosts if name in ctx.stop_before}
    now = [h for name, h in hosts.items() if name not in ahead]
    with ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(now) or 1))) as pool:
        probed = dict(zip((h.name for h in now), pool.map(partial(_probe_before, ctx), now), strict=True))
    before = {name: ahead[name].result() if name in ahead else probed[name] for name in hosts}
    to_stop = sorted(n for n, (off, up) in before.items() if not off.passed and up)
    armed = ctx.armed_stops
    released = [h for h in to_stop if armed.covers(h)] if armed is not None else []
    batch = [h for h in to_stop if h not in released]
    batch_progress = PlaybookProgress(batch)
    played = {h: batch_progress for h in batch}
    if armed is not None:
        armed.stops.stand_down([h for h in hosts if h not in released])
        played.update({h: armed.progress for h in released})
        if released:
            _release(ctx, wave, released, armed)
    runner = _start_playbook(ctx, wave, batch, batch_progress)

    def finish(step: Step) -> None:
        try:
            _finish_stop(ctx, step, hosts[step.target], before[step.target], played.get(step.target), t0)
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


def _release(ctx: RunContext, wave: int, hosts: list[str], armed: ArmedStopRun) -> None:
    """Release these hosts to the armed stop run: their stop command goes now."""
    ctx.rec.emit("command-sent", step_id=f"stop-host wave {wave}", driver="ansible", target=",".join(hosts),
                 commands=[f"playbooks/stop-host.yml (armed ahead): released {','.join(hosts)}"])
    try:
        armed.stops.release(hosts)
    except (OrchestratorError, OSError) as exc:  # not written: each host's verification escalates
        why = f"{exc.code}: {exc}" if isinstance(exc, OrchestratorError) else f"{type(exc).__name__}: {exc}"
        for host in hosts:
            armed.progress.on_power_off(PowerOffReport(host, "error", f"not released: {why}"))


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


def _finish_stop(ctx: RunContext, step: Step, host: Host, before: Before, played: PlaybookProgress | None,
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
    if up_before and played is not None:
        # Watched from outside from the moment the stop is sent, not from when its play reports (an
        # Ansible run reports late when it is busy): a host verified off needs no verdict to wait for.
        sent_at = time.monotonic()
        v = ctx.verification(step, ctx.probes.wait_host_off(
            host, 0.0, keep_waiting=lambda: time.monotonic() < _off_deadline(ctx, played, host.name, sent_at)))
        verdict = played.peek(host.name)
        outcome = verdict[0] if verdict is not None else (
            {"status": "pending", "message": "verified off before the play reported (its result is journaled)"}
            if v.passed else {"status": "error", "message": f"no power-off result within {_verdict_wait_s(ctx):g} s"})
    else:
        outcome = {}
        v = ctx.verification(step, ctx.probes.wait_host_off(host, 3.0))
    evidence = {"before": dict(off_before.evidence),
                "playbook": outcome if up_before else "not sent (SSH not answering)"}
    if outcome.get("status") == "refused" and not v.passed:
        ctx.finish(step, StepResult(step.id, StepStatus.FAILED, evidence=evidence,
                                    error=str(outcome.get("message", "refused")), duration_s=_since(t0)))
        return
    play_failed = outcome.get("status") in ("failed", "error")
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


def _off_deadline(ctx: RunContext, played: PlaybookProgress, host: str, sent_at: float) -> float:
    """Until when a host whose stop was sent at ``sent_at`` is watched for off: while its play has
    not reported, as long as the play may take (it may still be stopping services); then the stop
    timeout from its report, or a short look when the play failed (a host whose play failed will not
    go down by itself: escalate), or none when it refused (a host that must keep running)."""
    verdict = played.peek(host)
    if verdict is None:
        return sent_at + _verdict_wait_s(ctx)
    outcome, at = verdict
    status = outcome.get("status")
    if status == "refused":
        return at
    return at + (3.0 if status in ("failed", "error") else ctx.options.stop_timeout_s)


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

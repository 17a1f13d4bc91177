"""Containment: configuration backups, then cuts and isolations, sent per device in batches and
each proven on its own (the rule in the running config, and a probe that no longer crosses)."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orchestrator.executor.context import DeviceChange, Outcome, RunContext, StepFailed
from orchestrator.executor.reach import link_probe, reach_probe, safe_probe
from orchestrator.model import Action, Step, Verification
from orchestrator.storage import atomic_write

CONTAINMENT = (Action.CUT_LINK, Action.ISOLATE_SEGMENT)


def start_preflight(ctx: RunContext) -> ThreadPoolExecutor | None:
    """Probe, before anything changes, what each cut and isolation should stop: done in the
    background while the configs are backed up, so the "before" evidence costs no time."""
    steps = [s for s in ctx.plan.steps() if s.action in CONTAINMENT and not ctx.done(s.id)]
    if not steps or ctx.options.dry_run:
        return None
    pool = ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(steps))))
    for step in steps:
        probe = reach_probe if step.action is Action.ISOLATE_SEGMENT else link_probe
        ctx.preflight[step.id] = pool.submit(safe_probe, probe, ctx, step)
    return pool


def start_device_batches(ctx: RunContext, steps: list[Step]) -> ThreadPoolExecutor | None:
    """The wave's cuts and isolations, grouped per device: each device gets one config read, one
    change (all its lines at once) and one read back, in the background, devices in parallel.
    Each step then waits for its device's batch and verifies its own target independently."""
    contain = [s for s in steps if s.action in CONTAINMENT and s.device]
    if not contain or ctx.options.dry_run or ctx.stop_event.is_set():
        return None
    by_device: dict[str, list[Step]] = {}
    for step in contain:
        by_device.setdefault(str(step.device), []).append(step)
    pool = ThreadPoolExecutor(max_workers=len(by_device))
    for device, device_steps in by_device.items():
        sent = threading.Event()
        for step in device_steps:
            ctx.device_sent[step.id] = sent
        future = pool.submit(_contain_on_device, ctx, device, device_steps, sent)
        for step in device_steps:
            ctx.device_changes[step.id] = future
    return pool


def _contain_on_device(ctx: RunContext, device: str, steps: list[Step], sent_event: threading.Event,
                       ) -> dict[str, DeviceChange]:
    try:
        return _change_and_read_back(ctx, device, steps, sent_event)
    finally:
        sent_event.set()  # also when the batch failed: the step then reports the batch's error


def _change_and_read_back(ctx: RunContext, device: str, steps: list[Step], sent_event: threading.Event,
                          ) -> dict[str, DeviceChange]:
    net = ctx.drivers.net
    keys = {s.id: (s.action, s.target) for s in steps}
    for step in steps:
        # The "before" evidence must be taken before anything changes: a probe still running
        # (a slow host) holds its device's change back, never the other way round.
        pending = ctx.preflight.get(step.id)
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
        ctx.rec.emit("command-sent", step_id=step_id, driver="netmiko", target=device, commands=list(commands),
                     sent_with=[b for b in batch if b != step_id])
    sent_event.set()  # the proofs from outside may start; the read-back below runs alongside them
    after = net.in_force_map(device, list(keys.values()))  # always read back: this is the verification
    return {s.id: DeviceChange(changed=s.id in sent, commands=sent.get(s.id, ()), in_force=after[keys[s.id]],
                               error=errors.get(s.id)) for s in steps}


def backup_config(ctx: RunContext, step: Step) -> Outcome:
    device = step.target
    text = ctx.drivers.net.backup_config(device)
    if not text.strip():
        raise StepFailed(f"{device} returned an empty configuration", {"bytes": 0})
    path = ctx.run_dir / "backups" / f"{device}.cfg"
    atomic_write(path, text)  # 0600 in a 0700 directory, fsynced: a config holds secrets
    digest = hashlib.sha256(text.encode()).hexdigest()
    stored = hashlib.sha256(path.read_bytes()).hexdigest()
    v = ctx.verification(step, Verification(stored == digest, "backup-stored",
                                            {"path": str(path), "sha256": digest, "bytes": len(text)}))
    if not v.passed:
        raise StepFailed("the stored backup does not match what the device returned", v.evidence)
    return Outcome(evidence=dict(v.evidence))


def contain(ctx: RunContext, step: Step) -> Outcome:
    """A cut or an isolation: its device batch's result (start_device_batches), then proven."""
    action = step.action.value
    assert step.device is not None
    pending = ctx.preflight.get(step.id)
    before = pending.result() if pending is not None else {"note": "not probed"}
    # The wave started this step's device batch. The proof from outside starts once the change is
    # sent (or found in force), alongside the batch's read-back of the config: two independent
    # checks, neither waiting for the other. A device that cannot be read fails all its steps here.
    sent = ctx.device_sent.get(step.id)
    if sent is not None:
        sent.wait()
    probe = reach_probe if step.action is Action.ISOLATE_SEGMENT else link_probe
    with ThreadPoolExecutor(max_workers=1) as prover:
        proof = prover.submit(probe, ctx, step)
        change = ctx.device_changes[step.id].result()[step.id]
        after = proof.result()
    if change.error is not None:
        raise change.error
    changed, in_force = change.changed, change.in_force
    evidence: dict[str, Any] = {"commands": list(change.commands)} if changed else {"already_in_force": True}
    evidence["rule_in_running_config"] = in_force
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
    v = ctx.verification(step, Verification(not problems, action, evidence))
    if not v.passed:
        raise StepFailed("; ".join(problems), evidence)
    return Outcome(changed=changed, already=not changed, evidence=evidence, unproven=unproven)

"""Powering a host on at restore through its power driver, the same way for every kind of host: the
command is journaled, a refusal is the step's failure, and the host counts as started only when its own
probe (SSH for a Linux host, RDP/WinRM/SMB for a Windows one) says so."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.drivers.base import PowerDriver
from orchestrator.errors import DriverError
from orchestrator.executor.context import RunContext, StepFailed
from orchestrator.model import Host, Step, Verification


def power_said(power: PowerDriver, host: Host) -> dict[str, object]:
    """``{"power_driver": ...}``: what the power driver did or answered (nothing for the lab's)."""
    said = power.evidence(host.name)
    return {"power_driver": said} if said else {}


def power_on_verified(ctx: RunContext, step: Step, host: Host, power: PowerDriver,
                      wait_up: Callable[[], Verification], not_up: str) -> dict[str, object]:
    """Power ``host`` on, then wait for ``wait_up`` to prove it up; the evidence of both. ``not_up`` ends
    the failure's sentence "HOST was powered on through DRIVER but ..."."""
    label = ctx.drivers.power_label(host)
    ctx.rec.emit("command-sent", step_id=step.id, driver=label, target=host.name, commands=["power on"])
    try:
        power.power_on(host.name)
    except DriverError as exc:
        raise StepFailed(f"power on through {label} failed: {exc}", power_said(power, host)) from None
    said = power_said(power, host)
    v = ctx.verification(step, wait_up())
    if not v.passed:
        raise StepFailed(f"{host.name} was powered on through {label} but {not_up}", {**v.evidence, **said})
    return {**v.evidence, **said}

"""The final verification of a contain or shutdown run: everything done is still true (each cut and
isolation in force, each stopped host off) and every kept host still answers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from orchestrator.drivers.base import DeviceDriver
from orchestrator.executor.context import Outcome, RunContext, StepFailed
from orchestrator.model import Action, Host, Step, StepStatus, Verification
from orchestrator.verify import Probes


def verify_final(ctx: RunContext, step: Step) -> Outcome:
    checks: list[tuple[str, Callable[[], bool]]] = []
    net = ctx.drivers.net
    for s in ctx.plan.steps():
        res = ctx.results.get(s.id)
        if res is None or not (res.ok or res.status is StepStatus.UNPROVEN):
            continue  # an unproven isolation is in force all the same: it must still be there
        if s.action in (Action.CUT_LINK, Action.ISOLATE_SEGMENT):
            checks.append((s.id, _in_force_check(net, s)))
        elif s.action is Action.STOP_HOST:
            checks.append((s.id, _off_check(ctx.probes, ctx.inventory.hosts[s.target])))
    for name in ctx.plan.kept:
        checks.append((f"kept:{name}", _answers_check(ctx.probes, ctx.inventory.hosts[name])))
    with ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(checks) or 1))) as pool:
        outcomes = dict(zip([c[0] for c in checks], pool.map(lambda c: _safe(c[1]), checks), strict=True))
    failed = sorted(k for k, ok in outcomes.items() if not ok)
    v = ctx.verification(step, Verification(not failed, "final", {"checked": len(outcomes), "failed": failed}))
    if not v.passed:
        raise StepFailed(f"no longer true: {', '.join(failed)}", dict(v.evidence))
    return Outcome(evidence=dict(v.evidence))


def _in_force_check(net: DeviceDriver, step: Step) -> Callable[[], bool]:
    device = step.device
    return lambda: device is not None and net.is_in_force(device, step.action, step.target)


def _off_check(probes: Probes, host: Host) -> Callable[[], bool]:
    return lambda: probes.host_off(host).passed


def _answers_check(probes: Probes, host: Host) -> Callable[[], bool]:
    return lambda: probes.answers(host, 2.0)


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:  # noqa: BLE001 - a probe that cannot run proves nothing: counted as failed
        return False

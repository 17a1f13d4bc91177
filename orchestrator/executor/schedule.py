"""Dependency-driven dispatch: a step starts as soon as every step it ``requires`` is done (verified,
or a dry run's), never before, and regardless of the plan wave it is listed in.

The plan keeps its waves (the contract, the display, the order of the journal's ``wave-started``
records); the executor uses this for runs of waves whose order is only their ``requires``: the
stop waves of a shutdown (a host stops once everything that depends on it is verified off, so a slow
host holds back only what needs it), and a restore tier's starts, integrity and health checks (a
host's checks begin once it is up, not once the slowest host of the tier is).

``RunContext.finish`` journals a step's result and then wakes this loop (``RunContext.progress``), so
a dependent's ``step-started`` record always comes after the ``step-finished`` of what it requires.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures

from orchestrator.executor.context import RunContext
from orchestrator.model import Step, StepResult, StepStatus

Launch = Callable[[list[Step]], Sequence[Future[None]]]


def run_when_ready(ctx: RunContext, steps: Sequence[Step], launch: Launch, *, gather_s: float = 0.0) -> None:
    """Launch each of ``steps`` once what it requires is done; skip it once that can no longer be.

    ``launch`` starts a batch of ready steps in the background and returns the futures that are done
    when the batch is. ``gather_s``: ready steps wait up to this long for more to become ready while others
    are still in flight, so they go in one batch (one stop playbook instead of one per host).
    A stop request (``ctx.stop_event``) launches nothing more; what is in flight finishes. Returns
    when every launched batch has ended.
    """
    pending = {s.id: s for s in steps}
    ids = frozenset(pending)
    running: list[Future[None]] = []
    ready_since: float | None = None
    try:
        while pending and not ctx.stop_event.is_set():
            with ctx.progress:
                ready, blocked = _sort(ctx, pending.values(), ids)
                busy = any(not f.done() for f in running)
                if not ready and not blocked:
                    if busy:
                        ctx.progress.wait(0.5)
                        continue
                    blocked = list(pending.values())  # nothing in flight can make them ready any more
                elif ready and not blocked and busy and gather_s > 0:
                    ready_since = ready_since if ready_since is not None else time.monotonic()
                    left = gather_s - (time.monotonic() - ready_since)
                    if left > 0:
                        ctx.progress.wait(left)
                        continue
            ready_since = None
            for step in blocked:
                del pending[step.id]
                ctx.finish(step, StepResult(step.id, StepStatus.SKIPPED, error=_why_skipped(ctx, step)))
            if ready:
                for step in ready:
                    del pending[step.id]
                for future in launch(ready):
                    future.add_done_callback(lambda _f: _wake(ctx))
                    running.append(future)
    finally:
        wait_futures(running)


def _sort(ctx: RunContext, pending: Iterable[Step], ids: frozenset[str]) -> tuple[list[Step], list[Step]]:
    """The pending steps that may start now, and those that never will (a requirement failed, was
    skipped, or lies outside these steps and is not done)."""
    ready: list[Step] = []
    blocked: list[Step] = []
    for step in pending:
        waiting = False
        for req in step.requires:
            if ctx.done(req):
                continue
            if req in ctx.results or req not in ids:
                blocked.append(step)
                break
            waiting = True
        else:
            if not waiting:
                ready.append(step)
    return ready, blocked


def _why_skipped(ctx: RunContext, step: Step) -> str:
    missing = [r for r in step.requires if not ctx.done(r)]
    return "requires " + ", ".join(
        f"{r} ({ctx.results[r].status.value if r in ctx.results else 'not done'})" for r in missing)


def _wake(ctx: RunContext) -> None:
    with ctx.progress:
        ctx.progress.notify_all()

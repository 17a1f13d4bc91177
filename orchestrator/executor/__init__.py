"""Runs a Plan wave by wave: for every step probe -> act -> verify, every outcome journaled.

* Steps of one wave run in parallel (bounded by ``forks``); commands to one device are serialised
  by its driver, probes are not.
* Stops, and a restore tier's starts and checks, are dependency-driven (``schedule``): a step starts
  as soon as every step it requires is verified, never before, whatever wave the plan lists it in
  (a host stops once everything depending on it is verified off); the journal shows the order used.
* A step whose ``requires`` did not succeed is skipped and reported; the rest goes on.
* Containment already in force is verified, not applied twice (escalating from contain-only).
* A graceful stop that does not finish escalates to an out-of-band power off, recorded.
* Interrupting (Ctrl-C / SIGTERM) finishes the steps in flight, journals them and stops; ``resume``
  continues from the journal (a ``ResumeState``) without redoing verified steps.

One module per job: ``run`` (the loop, ``Executor``), ``containment`` (backups, cuts and isolations
in per-device batches), ``stopping`` (stops, escalation), ``schedule`` (dependency-driven dispatch),
``restore`` (start, integrity, health, gates, reconnect), ``final`` (the final verification),
``reach`` (the reachability probes they share), ``context`` (``RunContext``: the run's state the
phases share; options, results, drivers) and ``recorder`` (journal first, then the observers).
"""

from orchestrator.executor.context import (
    ApprovalPolicy,
    Approver,
    Drivers,
    ResumeState,
    RunContext,
    RunOptions,
    RunResult,
    StepFailed,
)
from orchestrator.executor.recorder import OBSERVER_ERROR_LIMIT, Observer, Recorder, observer_name
from orchestrator.executor.run import Executor

__all__ = [
    "OBSERVER_ERROR_LIMIT",
    "ApprovalPolicy",
    "Approver",
    "Drivers",
    "Executor",
    "Observer",
    "Recorder",
    "ResumeState",
    "RunContext",
    "RunOptions",
    "RunResult",
    "StepFailed",
    "observer_name",
]

"""``orchestrator health check``: every in-scope host's health suites, read-only, any time (peacetime
validation, after a change, during the restore board). The same runner as restore's check-health
step; nothing is started, stopped or reconnected, and no run is recorded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.health.suites import NO_SSH, HostSuites, SuiteOptions, run_suites, suites_apply
from orchestrator.model import Inventory, Scope
from orchestrator.planner import resolve_scope


@dataclass(frozen=True)
class HealthCheck:
    """Each in-scope host that names suites, with their outcomes; ``without``: in scope, no suites."""

    hosts: tuple[HostSuites, ...]
    without: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return all(h.passed for h in self.hosts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "hosts": {h.host: {"passed": h.passed, "counts": h.counts(), "duration_s": h.duration_s,
                               "not_run": h.not_run, "suites": list(h.suites),
                               "tests": [t.as_dict() for t in h.tests]} for h in self.hosts},
            "without_suites": list(self.without),
        }


def check_health(inventory: Inventory, scope: Scope, *, forks: int = 16,
                 options: SuiteOptions | None = None) -> HealthCheck:
    """Run the suites of every in-scope host that has any (those of a host never sent SSH are listed,
    not run).
    UsageError for a scope naming what the inventory does not have."""
    names = resolve_scope(inventory, scope).hosts
    with_suites = [n for n in names if inventory.hosts[n].health]
    runnable = [n for n in with_suites if suites_apply(inventory.hosts[n])]
    results = run_suites(inventory, runnable, options, forks=forks)
    skipped = {n: HostSuites(n, (), (), 0.0, not_run=NO_SSH) for n in with_suites if n not in results}
    merged = {**results, **skipped}
    return HealthCheck(tuple(merged[n] for n in sorted(merged)),
                       tuple(sorted(n for n in names if not inventory.hosts[n].health)))

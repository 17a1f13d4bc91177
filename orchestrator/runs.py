"""A run's lifecycle around the executor: lock, run directory, journal, resume, status, and what a
run did (for ``restore --run``).

Layout: ``STATE_DIR/runs/RUN_ID/{journal.jsonl, plan.json, inventory.yml, backups/, ansible/}``. The
inventory and the plan are copied into the run so ``resume`` continues with exactly what was approved.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.errors import PlanError, StalePlanError, UsageError
from orchestrator.executor import Executor, Observer, Recorder, RunOptions, RunResult
from orchestrator.inventory import load_inventory
from orchestrator.journal import Journal, current_operator, new_run_id, read_journal
from orchestrator.lock import RunLock
from orchestrator.model import Action, Inventory, Mode, Plan, StepResult, StepStatus
from orchestrator.planner import Selection, canonical_json, plan_from_dict, plan_to_json


def collect_secrets(inventory: Inventory) -> list[str]:
    """Strings that must never be written: passwords from env vars and private key contents."""
    secrets: list[str] = []
    for cred in inventory.credentials.values():
        if cred.password_env and os.environ.get(cred.password_env):
            secrets.append(os.environ[cred.password_env])
        if cred.key_file:
            try:
                text = Path(os.path.expanduser(cred.key_file)).read_text(encoding="utf-8", errors="ignore")
            except OSError:
                continue
            secrets += [line for line in text.splitlines() if len(line) > 16 and "PRIVATE KEY" not in line]
    return secrets


def load_plan_file(path: str | Path) -> Plan:
    import json

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"cannot read the plan: {exc.strerror}", target=str(path), hint="check the path") from None
    except ValueError as exc:
        raise PlanError(f"the plan is not JSON: {exc}", target=str(path),
                        hint="create plans with `orchestrator plan ... -o FILE`") from None
    if not isinstance(document, dict):
        raise PlanError("the plan is not a JSON object", target=str(path))
    return plan_from_dict(document)


def check_plan_matches(plan: Plan, inventory: Inventory) -> None:
    if plan.inventory_sha256 != inventory.sha256:
        raise StalePlanError(
            f"the inventory changed since this plan was made (plan {plan.inventory_sha256[:12]}, "
            f"inventory now {inventory.sha256[:12]})", target=plan.plan_id,
            hint=f"make a new plan: orchestrator plan {inventory.path} --mode {plan.mode.value} -o PLAN")


def _write_once(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _finish_run(recorder: Recorder, result: RunResult) -> None:
    counts: dict[str, int] = {}
    for res in result.results.values():
        counts[res.status.value] = counts.get(res.status.value, 0) + 1
    recorder.emit("run-finished", status=result.status, counts=counts,
                  left=[{"step_id": s, "reason": r} for s, r in result.left],
                  time_to_containment_s=result.time_to_containment_s,
                  time_to_shutdown_s=result.time_to_shutdown_s, quarantined=dict(result.quarantined))


def start_run(inventory: Inventory, plan: Plan, settings: Settings, options: RunOptions, *,
              observers: Iterable[Observer] = (), stop_event: threading.Event | None = None,
              argv: list[str] | None = None, run_id: str | None = None) -> RunResult:
    """Run a plan from the start under the state-dir lock; everything is journaled."""
    check_plan_matches(plan, inventory)
    run_id = run_id or new_run_id()
    with RunLock(settings.lock_path, run_id, command=" ".join(argv or sys.argv)) as lock:
        run_dir = settings.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=False)
        _write_once(run_dir / "plan.json", plan_to_json(plan))
        _write_once(run_dir / "inventory.yml", Path(inventory.path).read_text(encoding="utf-8"))
        journal = Journal.create(settings.journal_path(run_id), run_id, secrets=collect_secrets(inventory))
        recorder = Recorder(journal, list(observers))
        try:
            from orchestrator.report import topology_of

            topology: Any = topology_of(inventory)
        except Exception:  # noqa: BLE001 - the report's topology is a convenience, not evidence
            topology = None
        recorder.emit(
            "run-started", operator=options.operator or current_operator(), host=socket.gethostname(),
            pid=os.getpid(), argv=list(argv or sys.argv), mode=plan.mode.value, plan_id=plan.plan_id,
            inventory=inventory.path, inventory_sha256=inventory.sha256, plan=plan.as_dict(),
            scope=plan.scope.as_dict(), site=inventory.site.name, timezone=inventory.site.timezone,
            topology=topology, dry_run=options.dry_run, approve=options.approve.value,
        )
        if lock.stale is not None:
            recorder.emit("lock-taken-over", holder=lock.stale.as_dict())
        executor = Executor(inventory=inventory, plan=plan, settings=settings, run_id=run_id, run_dir=run_dir,
                            recorder=recorder, options=options, stop_event=stop_event)
        try:
            result = executor.run()
            if result.interrupted:
                recorder.emit("run-interrupted", signal="stop requested")
            _finish_run(recorder, result)
        finally:
            journal.close()
    return result


@dataclass(frozen=True)
class RunState:
    """What a journal says about a run."""

    run_id: str
    records: list[dict[str, Any]]

    @property
    def started(self) -> dict[str, Any]:
        for r in self.records:
            if r.get("type") == "run-started":
                return r
        raise UsageError(f"run {self.run_id} has no run-started record", target=self.run_id)

    @property
    def plan(self) -> Plan:
        return plan_from_dict(self.started["plan"])

    def step_results(self) -> dict[str, StepResult]:
        out: dict[str, StepResult] = {}
        for r in self.records:
            if r.get("type") == "step-finished":
                out[r["step_id"]] = StepResult(
                    r["step_id"], StepStatus(r["status"]), changed=bool(r.get("changed")),
                    already=bool(r.get("already")), evidence=r.get("evidence") or {}, error=r.get("error"),
                    escalated=bool(r.get("escalated")), duration_s=float(r.get("duration_s") or 0))
        return out

    @property
    def finished(self) -> dict[str, Any] | None:
        last = None
        for r in self.records:
            if r.get("type") == "run-finished":
                last = r
            elif r.get("type") == "run-resumed":
                last = None
        return last

    @property
    def approved_gates(self) -> set[str]:
        return {r["gate"] for r in self.records if r.get("type") == "gate-approved"}

    def elapsed_before_resume(self) -> float:
        """Seconds the run had already been going when it stopped (monotonic, per process)."""
        total = 0.0
        start = None
        last = None
        for r in self.records:
            if r.get("type") in ("run-started", "run-resumed"):
                if start is not None and last is not None:
                    total += last - start
                start = float(r["mono"])
            last = float(r["mono"])
        if start is not None and last is not None:
            total += last - start
        return total


def read_run(settings: Settings, run_id: str) -> RunState:
    path = settings.journal_path(run_id)
    if not path.exists():
        known = ", ".join(list_run_ids(settings)[-5:]) or "none"
        raise UsageError(f"no run {run_id} in {settings.state_dir}", target=run_id,
                         hint=f"recent runs: {known}; or pass --state-dir")
    return RunState(run_id, read_journal(path))


def list_run_ids(settings: Settings) -> list[str]:
    if not settings.runs_dir.exists():
        return []
    return sorted(p.name for p in settings.runs_dir.iterdir() if (p / "journal.jsonl").exists())


def resume_run(run_id: str, settings: Settings, options: RunOptions, *, observers: Iterable[Observer] = (),
               stop_event: threading.Event | None = None) -> RunResult:
    """Continue a run from its journal: verified steps are not redone; the rest is probed first."""
    run_dir = settings.run_dir(run_id)
    inventory_copy = run_dir / "inventory.yml"
    with RunLock(settings.lock_path, run_id, command=f"resume {run_id}") as lock:
        state = read_run(settings, run_id)
        plan = state.plan
        inventory = load_inventory(inventory_copy)
        inventory = _with_path(inventory, state.started.get("inventory", str(inventory_copy)))
        journal = Journal.open_existing(settings.journal_path(run_id), secrets=collect_secrets(inventory))
        recorder = Recorder(journal, list(observers))
        recorder.emit("run-resumed", by=options.operator or current_operator(), pid=os.getpid(),
                      host=socket.gethostname(), plan_id=plan.plan_id,
                      verified_before=sorted(k for k, v in state.step_results().items() if v.ok))
        if lock.stale is not None:
            recorder.emit("lock-taken-over", holder=lock.stale.as_dict())
        prior = {k: v for k, v in state.step_results().items() if v.ok}
        if any(s.id not in prior for s in plan.steps() if s.action is not Action.VERIFY):
            # what this resume changes must pass the final verification again
            prior = {k: v for k, v in prior.items() if plan.step(k).action is not Action.VERIFY}
        executor = Executor(
            inventory=inventory, plan=plan, settings=settings, run_id=run_id, run_dir=run_dir, recorder=recorder,
            options=options, prior=prior, approvals=state.approved_gates, stop_event=stop_event,
            started_mono=time.monotonic() - state.elapsed_before_resume(),
            milestones={r["name"]: float(r["elapsed_s"]) for r in state.records if r.get("type") == "milestone"},
            quarantined={r["host"]: r["reason"] for r in state.records if r.get("type") == "quarantine"})
        try:
            result = executor.run()
            if result.interrupted:
                recorder.emit("run-interrupted", signal="stop requested")
            _finish_run(recorder, result)
        finally:
            journal.close()
    return result


def _with_path(inventory: Inventory, path: str) -> Inventory:
    from dataclasses import replace

    return replace(inventory, path=path)


def run_summary(settings: Settings, run_id: str) -> dict[str, Any]:
    state = read_run(settings, run_id)
    started = state.started
    results = state.step_results()
    plan = state.plan
    finished = state.finished
    counts: dict[str, int] = {}
    for res in results.values():
        counts[res.status.value] = counts.get(res.status.value, 0) + 1
    left = [{"step_id": s.id, "reason": (results[s.id].error or results[s.id].status.value) if s.id in results
             else "not reached"} for s in plan.steps() if s.id not in results or not results[s.id].ok]
    milestones = {r["name"]: r.get("elapsed_s") for r in state.records if r.get("type") == "milestone"}
    return {
        "run_id": run_id, "mode": plan.mode.value, "plan_id": plan.plan_id, "site": started.get("site"),
        "operator": started.get("operator"), "started": started.get("ts"),
        "status": finished["status"] if finished else "running or interrupted",
        "steps": len(plan.steps()), "counts": counts, "left": left,
        "time_to_containment_s": milestones.get("contained"),
        "time_to_shutdown_s": milestones.get("shutdown-complete"),
        "journal": str(settings.journal_path(run_id)),
    }


def selection_from_run(settings: Settings, run_id: str, inventory: Inventory) -> Selection:
    """Exactly what a run took down: its verified cuts, isolations and stops."""
    state = read_run(settings, run_id)
    plan = state.plan
    results = state.step_results()
    done = [s for s in plan.steps() if s.id in results and results[s.id].status is StepStatus.VERIFIED]
    hosts = sorted({s.target for s in done if s.action is Action.STOP_HOST})
    segments = sorted({s.target for s in done if s.action is Action.ISOLATE_SEGMENT})
    links = sorted({s.target for s in done if s.action is Action.CUT_LINK})
    # hosts that stayed running in an isolated segment are checked before it is reconnected
    hosts = sorted(set(hosts) | {h.name for h in inventory.hosts.values() if h.segment in segments})
    unknown = ([n for n in hosts if n not in inventory.hosts] + [n for n in segments if n not in inventory.segments]
               + [n for n in links if n not in inventory.links])
    if unknown:
        raise UsageError(f"run {run_id} touched things the inventory no longer has: {', '.join(unknown)}",
                         hint="restore with the inventory that run used: " + str(settings.run_dir(run_id) /
                                                                                  "inventory.yml"))
    gateways = {inventory.segments[s].gateway for s in segments}
    devices = sorted({g for g in gateways if g is not None} | {inventory.links[k].device for k in links})
    return Selection(hosts=tuple(hosts), segments=tuple(segments), links=tuple(links), devices=tuple(devices))


def plan_fingerprint(plan: Plan) -> str:
    return canonical_json(plan.as_dict())


__all__ = ["Mode", "RunOptions", "check_plan_matches", "load_plan_file", "resume_run", "run_summary",
           "selection_from_run", "start_run"]

"""A run's lifecycle around the executor: lock, run directory, journal, resume, status, and what a
run did (for ``restore --run``).

Layout: ``STATE_DIR/runs/RUN_ID/{journal.jsonl, plan.json, inventory.yml, backups/, ansible/}``. The
inventory and the plan are copied into the run so ``resume`` continues with exactly what was approved.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import events as events_mod
from orchestrator import storage
from orchestrator.attest import disconnection_attestations, vouched_attestations
from orchestrator.config import Settings
from orchestrator.errors import JournalError, PlanError, SafetyInterlock, StalePlanError, UsageError
from orchestrator.executor import Executor, Observer, Recorder, ResumeState, RunOptions, RunResult
from orchestrator.inventory import validate_text
from orchestrator.journal import Forwarder, Journal, current_operator, journal_key, new_run_id, read_journal
from orchestrator.lock import RunLock
from orchestrator.model import Action, Inventory, Mode, Plan, StepResult, StepStatus
from orchestrator.planner import Selection, build_plan, plan_from_dict, plan_to_json


def collect_secrets(inventory: Inventory) -> list[str]:
    """Strings that must never be written: passwords from env vars and password files (power
    controllers' credentials use both), and private key contents."""
    secrets: list[str] = []
    for cred in inventory.credentials.values():
        if cred.password_env and os.environ.get(cred.password_env):
            secrets.append(os.environ[cred.password_env])
        if cred.password_file:
            try:
                secret = Path(os.path.expanduser(cred.password_file)).read_text(encoding="utf-8").strip("\r\n")
            except (OSError, UnicodeDecodeError):
                secret = ""  # unreadable here: the driver that needs it fails and says so
            if secret:
                secrets.append(secret)
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


def check_plan_is_current(plan: Plan, inventory: Inventory) -> None:
    """Refuse a plan that is not what the inventory plans today for its mode and scope.

    ``plan_id`` is only a hash of the content: anyone can edit a plan (drop the backups, the
    ``requires``, the final verify) and recompute it. Planning is pure and deterministic, so the
    plan is made again from the inventory and must be the same, step for step (its ``inventory``
    path aside: ``apply --inventory`` may name the same bytes elsewhere).
    """
    check_plan_matches(plan, inventory)
    fresh = build_plan(inventory, plan.mode, plan.scope)
    given_doc = {k: v for k, v in plan.as_dict().items() if k not in ("inventory", "plan_id")}
    fresh_doc = {k: v for k, v in fresh.as_dict().items() if k not in ("inventory", "plan_id")}
    if given_doc == fresh_doc:
        return
    raise StalePlanError(
        "stale or edited plan: it is not what the inventory plans for "
        f"--mode {plan.mode.value} and its scope: " + "; ".join(_plan_differences(plan, fresh)),
        target=plan.plan_id,
        hint=f"make a new plan and review it: orchestrator plan {inventory.path} --mode {plan.mode.value} -o PLAN",
    )


def _plan_differences(given: Plan, fresh: Plan, limit: int = 8) -> list[str]:
    out: list[str] = []
    for key in ("mode", "site", "scope", "kept"):
        if given.as_dict()[key] != fresh.as_dict()[key]:
            out.append(f"{key} differs")
    given_steps = {s.id: (w.index, s) for w in given.waves for s in w.steps}
    fresh_steps = {s.id: (w.index, s) for w in fresh.waves for s in w.steps}
    for step_id, (wave, _) in sorted(fresh_steps.items(), key=lambda kv: (kv[1][0], kv[0])):
        if step_id not in given_steps:
            out.append(f"wave {wave}: step {step_id} is missing")
    for step_id, (wave, step) in sorted(given_steps.items(), key=lambda kv: (kv[1][0], kv[0])):
        if step_id not in fresh_steps:
            out.append(f"wave {wave}: step {step_id} is not in the inventory's plan")
            continue
        fresh_wave, fresh_step = fresh_steps[step_id]
        if fresh_wave != wave:
            out.append(f"step {step_id} is in wave {wave}, the inventory's plan has it in wave {fresh_wave}")
        elif step.as_dict() != fresh_step.as_dict():
            fields = sorted(k for k, v in step.as_dict().items() if fresh_step.as_dict().get(k) != v)
            out.append(f"wave {wave}: step {step_id} differs ({', '.join(fields)})")
    if len(given.waves) != len(fresh.waves):
        out.append(f"{len(given.waves)} waves where the inventory's plan has {len(fresh.waves)}")
    for g, f in zip(given.waves, fresh.waves, strict=False):
        if g.phase != f.phase:
            out.append(f"wave {g.index}: phase {g.phase.value}, the inventory's plan has {f.phase.value}")
    if len(out) > limit:
        out = [*out[:limit], f"and {len(out) - limit} more"]
    return out or ["the documents differ"]


def open_forwarder(settings: Settings) -> Forwarder | None:
    """The off-box copy of a journal, when a syslog collector is configured."""
    target = settings.syslog_target()
    if target is None:
        return None
    from orchestrator.syslog_copy import SyslogForwarder

    return SyslogForwarder(target)


_open_forwarder = open_forwarder  # the name attest.py uses


def _journal_key(settings: Settings, *, create: bool) -> bytes:
    key = journal_key(settings.signing_key_path, create=create)
    if key is None:
        raise JournalError(
            f"the controller key {settings.signing_key_path} does not exist: this run's journal cannot be "
            "authenticated", target=str(settings.signing_key_path),
            hint="restore the key from the controller's backup (or use the right --state-dir)")
    return key


def _validated_bytes(inventory: Inventory) -> bytes:
    """The inventory file's bytes, which must be the ones validated (read once more, then compared)."""
    try:
        raw = Path(inventory.path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the inventory again to copy it: {exc.strerror or exc}",
                         target=inventory.path, hint="check the path") from exc
    if hashlib.sha256(raw).hexdigest() != inventory.sha256:
        raise StalePlanError(
            "the inventory file changed after it was validated", target=inventory.path,
            hint="validate and plan again; do not edit the inventory while a run starts")
    return raw


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
    settings.syslog_target()  # a malformed collector address is bad input (exit 2) before anything exists
    run_id = run_id or new_run_id()
    tightened = storage.ensure_private_dir(settings.state_dir)
    inventory_bytes = _validated_bytes(inventory)
    with RunLock(settings.lock_path, run_id, command=" ".join(argv or sys.argv)) as lock:
        run_dir = settings.run_dir(run_id)
        storage.private_mkdir(settings.runs_dir)
        run_dir.mkdir(mode=storage.DIR_MODE, exist_ok=False)
        storage.atomic_write(run_dir / "plan.json", plan_to_json(plan))
        storage.atomic_write(run_dir / "inventory.yml", inventory_bytes)
        journal = Journal.create(settings.journal_path(run_id), run_id, secrets=collect_secrets(inventory),
                                 key=_journal_key(settings, create=True), forwarder=open_forwarder(settings))
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
        if tightened:
            recorder.emit("state-dir-tightened", detail=tightened)
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
    """What a journal says about a run: its records, read as typed events once (:attr:`events`)."""

    run_id: str
    records: list[dict[str, Any]]  # as read (``attest`` and ``status`` take them as they are)

    @functools.cached_property
    def events(self) -> list[events_mod.Event]:
        return events_mod.parse_all(self.records)

    @property
    def started(self) -> events_mod.RunStarted:
        started = events_mod.first(self.events, events_mod.RunStarted)
        if started is None:
            raise UsageError(f"run {self.run_id} has no run-started record", target=self.run_id)
        return started

    @property
    def plan(self) -> Plan:
        return plan_from_dict(self.started.plan)

    def step_results(self) -> dict[str, StepResult]:
        out: dict[str, StepResult] = {}
        for e in events_mod.of_type(self.events, events_mod.StepFinished):
            out[e.step_id] = StepResult(
                e.step_id, StepStatus(e.status or ""), changed=e.changed, already=e.already, evidence=dict(e.evidence),
                error=e.error, escalated=e.escalated, duration_s=e.duration_s or 0.0)
        return out

    @property
    def finished(self) -> events_mod.RunFinished | None:
        last = None
        for e in self.events:
            if isinstance(e, events_mod.RunFinished):
                last = e
            elif isinstance(e, events_mod.RunResumed):
                last = None
        return last

    @property
    def approved_gates(self) -> set[str]:
        return {e.gate for e in events_mod.of_type(self.events, events_mod.GateApproved)}

    def milestones(self) -> dict[str, float]:
        """Milestone name -> seconds since the run started."""
        out: dict[str, float] = {}
        for e in events_mod.of_type(self.events, events_mod.Milestone):
            if e.elapsed_s is not None:
                out[e.name] = e.elapsed_s
        return out

    def quarantined(self) -> dict[str, str]:
        """Host -> why, for the hosts the run quarantined."""
        return {e.host: e.reason or "" for e in events_mod.of_type(self.events, events_mod.Quarantine)}

    def elapsed_before_resume(self) -> float:
        """Seconds the run had already been going when it stopped (monotonic, per process)."""
        total = 0.0
        start = None
        last = None
        for e in self.events:
            if e.mono is None:
                continue
            if isinstance(e, events_mod.RunStarted | events_mod.RunResumed):
                if start is not None and last is not None:
                    total += last - start
                start = e.mono
            last = e.mono
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
    read_run(settings, run_id)  # a clear error for an unknown run id, before the lock
    settings.syslog_target()
    tightened = storage.ensure_private_dir(settings.state_dir)
    with RunLock(settings.lock_path, run_id, command=f"resume {run_id}") as lock:
        # The journal first, verified with the controller key: it is what vouches for the rest.
        journal = Journal.open_existing(settings.journal_path(run_id), key=_journal_key(settings, create=False),
                                        forwarder=open_forwarder(settings))
        try:
            state = RunState(run_id, [r for r in journal.records() if r.get("type") != "journal-repaired"])
            plan = state.plan
            inventory = _inventory_copy(inventory_copy, state.started)
        except BaseException:
            journal.close(flush_timeout_s=1.0)
            raise
        inventory = _with_path(inventory, state.started.inventory or str(inventory_copy))
        for secret in collect_secrets(inventory):
            journal.add_secret(secret)
        recorder = Recorder(journal, list(observers))
        recorder.emit("run-resumed", by=options.operator or current_operator(), pid=os.getpid(),
                      host=socket.gethostname(), plan_id=plan.plan_id,
                      verified_before=sorted(k for k, v in state.step_results().items() if v.ok))
        if lock.stale is not None:
            recorder.emit("lock-taken-over", holder=lock.stale.as_dict())
        if tightened:
            recorder.emit("state-dir-tightened", detail=tightened)
        prior = {k: v for k, v in state.step_results().items() if v.ok}
        if any(s.id not in prior for s in plan.steps() if s.action is not Action.VERIFY):
            # what this resume changes must pass the final verification again
            prior = {k: v for k, v in prior.items() if plan.step(k).action is not Action.VERIFY}
        executor = Executor(
            inventory=inventory, plan=plan, settings=settings, run_id=run_id, run_dir=run_dir, recorder=recorder,
            options=options, stop_event=stop_event,
            resume=ResumeState(results=prior, approvals=state.approved_gates,
                               started_mono=time.monotonic() - state.elapsed_before_resume(),
                               milestones=state.milestones(), quarantined=state.quarantined(),
                               attestations=disconnection_attestations(state.records),
                               vouched=vouched_attestations(state.records)))
        try:
            result = executor.run()
            if result.interrupted:
                recorder.emit("run-interrupted", signal="stop requested")
            _finish_run(recorder, result)
        finally:
            journal.close()
    return result


def _inventory_copy(path: Path, started: events_mod.RunStarted) -> Inventory:
    """The run's inventory copy, read once: its bytes must hash to what the journal recorded at the
    start, and the same bytes are validated and used."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SafetyInterlock(f"cannot read the run's inventory copy: {exc.strerror or exc}", target=str(path),
                              hint="the run directory is damaged; start a new run from the site's inventory") from exc
    expected = started.inventory_sha256
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise SafetyInterlock(
            f"the run's inventory copy was changed after the run started (sha256 {actual[:12]}, the journal "
            f"recorded {expected[:12]}): refusing to resume on it", target=str(path),
            hint="keep the directory as evidence; start a new run from the site's inventory (verified steps "
                 "already in force are recognised, not redone)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SafetyInterlock("the run's inventory copy is not UTF-8", target=str(path)) from exc
    # relative key_file/known_hosts paths resolve against the original inventory's directory, as at the start
    original = Path(started.inventory or path)
    return validate_text(text, str(path), base_dir=original.parent).inventory


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
    milestones = state.milestones()
    return {
        "run_id": run_id, "mode": plan.mode.value, "plan_id": plan.plan_id, "site": started.site,
        "operator": started.operator, "started": started.ts,
        "status": finished.status if finished else "running or interrupted",
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
    # an unproven isolation is in force all the same (only nothing could prove it): it is undone too
    done = [s for s in plan.steps() if s.id in results
            and results[s.id].status in (StepStatus.VERIFIED, StepStatus.UNPROVEN)]
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


__all__ = ["Mode", "RunOptions", "check_plan_matches", "load_plan_file", "resume_run", "run_summary",
           "selection_from_run", "start_run"]

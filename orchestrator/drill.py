"""The rehearsal: lab up, baseline, precautionary shutdown, independent verification, staged restore,
verification, report, lab down. Returns data; the CLI prints it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.executor import ApprovalPolicy, Observer, RunOptions, RunResult
from orchestrator.model import Inventory, Mode
from orchestrator.planner import build_plan
from orchestrator.storage import atomic_write, private_mkdir

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class DrillResult:
    timings: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    runs: dict[str, RunResult] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)
    lab_kept: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.error is None and all(c.passed for c in self.checks)
                and all(r.status == "completed" for r in self.runs.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "error": self.error, "timings_s": self.timings,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks],
            "runs": {k: {"run_id": r.run_id, "status": r.status, "left": r.left} for k, r in self.runs.items()},
            "reports": self.reports, "lab_kept": self.lab_kept,
        }


def _timed(result: DrillResult, name: str, progress: Progress) -> Any:
    class _Timer:
        def __enter__(self) -> None:
            progress(f"{name} ...")
            self.t0 = time.monotonic()

        def __exit__(self, *exc: object) -> None:
            result.timings[name] = round(time.monotonic() - self.t0, 2)
            progress(f"{name}: {result.timings[name]:.1f} s")

    return _Timer()


def verify_shut_down(inventory: Inventory, probes: Any) -> list[Check]:
    """Judged from outside: stopped hosts are off (SSH closed, container stopped), kept hosts answer,
    the vendor peer cannot reach inside, and a kept host cannot cross its gateway."""
    kept = inventory.keep_reasons()

    def judge(host: Any) -> Check:
        if host.name in kept:
            v = probes.host_up(host)
            return Check(f"kept {host.name} answers", v.passed, str(dict(v.evidence)))
        v = probes.host_off(host)
        return Check(f"{host.name} is off", v.passed, str(dict(v.evidence)))

    with ThreadPoolExecutor(max_workers=16) as pool:
        checks = list(pool.map(judge, inventory.hosts.values()))
    checks += _reach_checks(inventory, probes, expect=False)
    return checks


def verify_restored(inventory: Inventory, probes: Any) -> list[Check]:
    def judge(host: Any) -> Check:
        v = probes.host_up(host)
        return Check(f"{host.name} is back", v.passed, str(dict(v.evidence)))

    with ThreadPoolExecutor(max_workers=16) as pool:
        checks = list(pool.map(judge, inventory.hosts.values()))
    checks += _reach_checks(inventory, probes, expect=True)
    return checks


def _reach_checks(inventory: Inventory, probes: Any, *, expect: bool) -> list[Check]:
    """Cross-segment and vendor reachability from a running host of each segment."""
    word = "reaches" if expect else "cannot reach"

    def judge(seg: Any) -> list[Check]:
        inside = [h for h in inventory.hosts_in_segment(seg.name) if probes.ssh_answers(h)]
        if not inside:
            return []
        targets = probes.cross_gateway_targets(seg.name)[:2]
        answers = probes.reach_map(inside[0].name, targets, expect=expect)
        return [Check(f"{seg.name} ({inside[0].name}) {word} {t} across {seg.gateway}", got == expect,
                      f"ping {'answered' if got else 'failed'}") for t, got in answers.items()]

    segments = [s for s in sorted(inventory.segments.values(), key=lambda s: s.name)
                if s.name != inventory.management_segment]
    with ThreadPoolExecutor(max_workers=16) as pool:
        checks = [c for group in pool.map(judge, segments) for c in group]
    if inventory.lab is not None:
        inside_targets = [str(s.gateway_address) for s in sorted(inventory.segments.values(), key=lambda s: s.name)
                          if s.gateway_address is not None][:1]
        for link in sorted(inventory.lab.peers):
            for target in inside_targets:
                got = probes.peer_reaches(link, target, expect=expect)
                checks.append(Check(f"peer of {link} {word} {target}", got == expect,
                                    f"ping {'answered' if got else 'failed'}"))
    return checks


def run_drill(inventory: Inventory, settings: Settings, *, keep: bool, reports_dir: Path,
              observers: Iterable[Observer] = (), progress: Progress = lambda _m: None,
              stop_event: threading.Event | None = None, operator: str = "", board: bool = False) -> DrillResult:
    from orchestrator.drivers.power import LabPower
    from orchestrator.drivers.ssh import SshDriver
    from orchestrator.integrity import capture_all
    from orchestrator.journal import read_journal
    from orchestrator.lab import lab_down, lab_up
    from orchestrator.report import build_report, render_report
    from orchestrator.runs import start_run
    from orchestrator.verify import Probes

    result = DrillResult()
    t_all = time.monotonic()
    observers = list(observers)
    watch = _start_board(settings, progress) if board else None
    try:
        with _timed(result, "lab-up", progress):
            lab_up(inventory)
        ssh = SshDriver(inventory)
        power = LabPower()
        probes = Probes(inventory, ssh, lambda h: power if h.power == "lab" else None)
        try:
            with _timed(result, "baseline-capture", progress):
                # the drill rebuilt every machine from the lab image: a host quarantined by an earlier
                # drill in this state dir is a new machine now, so re-baselining it is the truth
                capture_all(ssh, inventory, sorted(inventory.hosts), settings, forks=settings.forks,
                            force=True, reason="the drill rebuilt the lab from its image", operator=operator)
            options = RunOptions(forks=settings.forks, operator=operator, approve=ApprovalPolicy.NONE)
            with _timed(result, "shutdown", progress):
                shut = start_run(inventory, build_plan(inventory, Mode.SHUTDOWN), settings, options,
                                 observers=observers, stop_event=stop_event, argv=["orchestrator", "drill"])
            result.runs["shutdown"] = shut
            if shut.time_to_containment_s is not None:
                result.timings["time-to-containment"] = shut.time_to_containment_s
            if shut.time_to_shutdown_s is not None:
                result.timings["time-to-shutdown"] = shut.time_to_shutdown_s
            with _timed(result, "verify-shutdown", progress):
                result.checks += verify_shut_down(inventory, probes)
            if shut.interrupted:
                result.error = "the drill was interrupted"
                return result
            options = RunOptions(forks=settings.forks, operator=operator, approve=ApprovalPolicy.ALL)
            with _timed(result, "restore", progress):
                rest = start_run(inventory, build_plan(inventory, Mode.RESTORE), settings, options,
                                 observers=observers, stop_event=stop_event, argv=["orchestrator", "drill"])
            result.runs["restore"] = rest
            with _timed(result, "verify-restore", progress):
                result.checks += verify_restored(inventory, probes)
            with _timed(result, "report", progress):
                private_mkdir(reports_dir)
                for name, run in result.runs.items():
                    records = read_journal(settings.journal_path(run.run_id))
                    rep = build_report(records, inventory)
                    for fmt in ("md", "html", "json"):
                        path = reports_dir / f"drill-{name}-{run.run_id}.{fmt}"
                        atomic_write(path, render_report(rep, fmt))
                        result.reports.append(str(path))
        finally:
            ssh.close()
    except Exception as exc:  # noqa: BLE001 - the drill reports what broke and still tears the lab down
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if keep:
            result.lab_kept = True
        else:
            with _timed(result, "lab-down", progress):
                try:
                    lab_down(inventory)
                except Exception as exc:  # noqa: BLE001 - a failed teardown is reported, not raised over the result
                    result.error = result.error or f"lab down failed: {exc}"
        if watch is not None:
            watch.stop()
        result.timings["total"] = round(time.monotonic() - t_all, 2)
    return result


def _start_board(settings: Settings, progress: Progress) -> Any:
    """The crisis cell's board beside the drill (a child process on 127.0.0.1 that reads the journals):
    its link goes to ``progress``; a board that does not start is said, and the drill goes on."""
    from orchestrator.board.process import start_board_process
    from orchestrator.errors import OrchestratorError

    try:
        watch = start_board_process(settings.state_dir)
    except OrchestratorError as exc:
        progress(f"the board did not start ({exc}); the drill goes on without it")
        return None
    progress(f"watch it live: {watch.url}")
    return watch

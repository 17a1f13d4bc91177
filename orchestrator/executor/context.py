"""What every phase of a run shares: the options, the result types, the drivers, and ``RunContext``
(the run's state, passed to each phase's functions instead of one object's ``self``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import drivers as registry
from orchestrator.config import Settings
from orchestrator.drivers.base import CommandResult, DeviceDriver, HostStopper, PowerDriver, SshRunner
from orchestrator.drivers.controller_power import ControllerSessions
from orchestrator.executor.recorder import Recorder
from orchestrator.model import Credential, Host, Inventory, Plan, Step, StepResult, StepStatus, Verification
from orchestrator.verify import Probes

if TYPE_CHECKING:
    from orchestrator.executor.armed import ArmedStopRun


class ApprovalPolicy(StrEnum):
    ALL = "all"  # approve every gate up front (journaled as such)
    EACH = "each"  # ask the operator at each gate
    NONE = "none"  # no approval given: gates refuse


Approver = Callable[[Step, str], bool]


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    forks: int = 32
    approve: ApprovalPolicy = ApprovalPolicy.NONE
    approver: Approver | None = None
    operator: str = ""
    stop_timeout_s: float = 45.0  # graceful stop before escalating
    start_timeout_s: float = 90.0
    power_off_timeout_s: float = 20.0
    boot_settle_timeout_s: float = 60.0  # a started host's boot must finish before it is checked
    # Hosts not covered by the armed stop run (``executor.armed``) whose stops become ready within
    # this long of each other share one stop playbook (each playbook costs a process start); never a
    # reason to start a stop before its dependents are off.
    stop_gather_s: float = 0.3


@dataclass(frozen=True)
class ResumeState:
    """Where a resumed run takes up (``runs.resume_run`` reads it from the run's journal).

    ``results``: the steps already done (a verified step is not done again); ``started_mono``: the
    monotonic time the run counts from (its elapsed time before the resume included); ``approvals``:
    gates already approved; ``milestones``: those already reached (name -> seconds); ``quarantined``:
    host -> why; ``attestations``: host -> its physical-disconnection attestation (``attest``);
    ``vouched``: host -> the attestation that vouches for it at its integrity step (``attest --claim clean``)."""

    results: Mapping[str, StepResult] = field(default_factory=dict)
    started_mono: float | None = None
    approvals: Collection[str] = frozenset()
    milestones: Mapping[str, float] = field(default_factory=dict)
    quarantined: Mapping[str, str] = field(default_factory=dict)
    attestations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    vouched: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    run_id: str
    plan: Plan
    results: Mapping[str, StepResult]
    interrupted: bool
    time_to_containment_s: float | None
    time_to_shutdown_s: float | None
    quarantined: Mapping[str, str]
    journal_path: Path

    @property
    def left(self) -> list[tuple[str, str]]:
        out = []
        for step in self.plan.steps():
            res = self.results.get(step.id)
            if res is None:
                out.append((step.id, "not reached (run interrupted)" if self.interrupted else "not reached"))
            elif not res.ok:
                out.append((step.id, f"{res.status.value}: {res.error or ''}".strip()))
        return out

    @property
    def unproven(self) -> list[tuple[str, str]]:
        """Steps done as far as the devices say, but that no independent probe could prove, and steps
        passed on a person's attestation (the tool could not check them)."""
        return [(s, r.error or "") for s, r in self.results.items()
                if r.status in (StepStatus.UNPROVEN, StepStatus.ATTESTED)]

    @property
    def attested(self) -> dict[str, str]:
        """Steps passed on a person's attestation (never verified by the tool): step id -> what it says."""
        return {s: r.error or "" for s, r in sorted(self.results.items()) if r.status is StepStatus.ATTESTED}

    @property
    def status(self) -> str:
        """completed (everything verified), unproven (nothing failed, but something could not be
        proven: never reported as verified), failed or interrupted."""
        if self.interrupted:
            return "interrupted"
        if not self.left and not any(r.status is StepStatus.ATTESTED for r in self.results.values()):
            return "completed"
        unproven = {s for s, _ in self.unproven}
        return "unproven" if all(s in unproven for s, _ in self.left) else "failed"

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "completed" else 1


class StepFailed(Exception):  # noqa: N818 - internal control flow, never escapes the executor
    def __init__(self, message: str, evidence: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evidence = dict(evidence or {})


@dataclass
class Outcome:
    """What one step did, for its ``step-finished`` record."""

    changed: bool = False
    already: bool = False
    escalated: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)
    unproven: str | None = None  # done, but nothing independent proves it: why (never "verified")
    attested: str | None = None  # passed on a person's attestation, not checked by the tool: whose (never "verified")


@dataclass(frozen=True)
class DeviceChange:
    """What a device batch did for one step: sent (or found in force), and what the config says after."""

    changed: bool
    commands: tuple[str, ...]
    in_force: bool
    error: BaseException | None = None


class Drivers:
    """The drivers a run needs, opened lazily (through ``orchestrator.drivers.open_*``) so a plan that
    touches no device opens no session.

    Power: a host with a short ``power:`` (lab, vagrant) gets that driver; a host with a structured
    ``power: {controller: ...}`` gets its view onto its controller's driver
    (``controller_power.HostOnController``): one driver, one session, per controller for the whole
    run, opened on first use and closed (logged out) by ``close()`` with the others."""

    def __init__(self, inventory: Inventory, run_dir: Path, forks: int,
                 event_sink: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.inventory = inventory
        self.run_dir = run_dir
        self.forks = forks
        self.event_sink = event_sink
        self._ssh: SshRunner | None = None
        self._net: DeviceDriver | None = None
        self._ansible: HostStopper | None = None
        self._power: dict[str, PowerDriver] = {}
        self._controllers = ControllerSessions(inventory, registry.open_power_controller)
        self._lock = threading.Lock()
        # Hosts presumed compromised (every host a restore brings back): the SSH driver sends them no
        # password unless the credential opts in (allow_password_on_suspect_hosts).
        self.suspect_hosts: frozenset[str] = frozenset()

    @property
    def ssh(self) -> SshRunner:
        with self._lock:
            if self._ssh is None:
                self._ssh = registry.open_ssh(self.inventory)
                if self.suspect_hosts:
                    self._ssh.treat_as_suspect(self.suspect_hosts)
            return self._ssh

    @property
    def net(self) -> DeviceDriver:
        with self._lock:
            if self._net is None:
                self._net = registry.open_devices(self.inventory)
            return self._net

    @property
    def ansible(self) -> HostStopper:
        with self._lock:
            if self._ansible is None:
                self._ansible = registry.open_host_stopper(self.inventory, self.run_dir / "ansible",
                                                           max(self.forks, 10), self.event_sink)
            return self._ansible

    def power_for(self, host: Host) -> PowerDriver | None:
        """The host's power driver, or None (``power: manual`` or no ``power:``)."""
        if host.power_target is not None:
            return self._controllers.view_for(host)
        if not host.power or host.power == "manual":
            return None
        with self._lock:
            if host.power not in self._power:
                self._power[host.power] = registry.open_power(host.power)
            return self._power[host.power]

    def power_label(self, host: Host) -> str:
        """How the journal names the host's power driver: ``power.lab``, ``power.vsphere:vc-antwerp``."""
        if host.power_target is not None:
            return self._controllers.view_for(host).label
        return f"power.{host.power or 'none'}"

    def close(self) -> None:
        for driver in (self._ssh, self._net, self._ansible):
            if driver is not None:
                with contextlib.suppress(Exception):  # closing must not hide the run's outcome
                    driver.close()
        self._controllers.close()  # every controller session the run opened is logged out


class LazySsh:
    """Lets the probes use the SSH driver without opening it before it is needed."""

    def __init__(self, drivers: Drivers) -> None:
        self._drivers = drivers

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        return self._drivers.ssh.run(host, command, timeout_s, stdin=stdin)

    def run_at(self, address: str, credential: Credential, command: str, timeout_s: float = 30.0, *,
               stdin: str | None = None, port: int | None = None) -> CommandResult:
        return self._drivers.ssh.run_at(address, credential, command, timeout_s, stdin=stdin, port=port)

    def port_open(self, address: str, port: int = 22, timeout_s: float = 1.0) -> bool:
        return self._drivers.ssh.port_open(address, port, timeout_s)

    def treat_as_suspect(self, hosts: Iterable[str]) -> None:
        self._drivers.ssh.treat_as_suspect(hosts)

    def close(self) -> None:
        """The run closes the driver itself (``Drivers.close``): the probes never do."""


@dataclass
class RunContext:
    """One run's state, shared by its phases (containment, stopping, restore, final verification).

    Fixed for the run: what it runs (``inventory``, ``plan``), where it writes (``settings``,
    ``run_id``, ``run_dir``, ``rec``), how (``options``), with what (``drivers``, ``probes``).
    Growing as it runs: ``results`` (step id -> result), ``quarantined`` (host -> why) and
    ``approved_gates``; the background work of the current waves (``preflight`` probes, per-device
    ``device_changes``, stop playbooks still ending in ``background``)."""

    inventory: Inventory
    plan: Plan
    settings: Settings
    run_id: str
    run_dir: Path
    rec: Recorder
    options: RunOptions
    drivers: Drivers
    probes: Probes
    stop_event: threading.Event
    results: dict[str, StepResult] = field(default_factory=dict)
    quarantined: dict[str, str] = field(default_factory=dict)
    attestations: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    vouched: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # host -> its clean attestation
    approved_gates: set[str] = field(default_factory=set)
    preflight: dict[str, Future[dict[str, Any]]] = field(default_factory=dict)
    device_changes: dict[str, Future[dict[str, DeviceChange]]] = field(default_factory=dict)
    # Set once a step's device batch has sent its change (or found it in force), before the batch
    # reads the config back: the step's reachability proof need not wait for that read.
    device_sent: dict[str, threading.Event] = field(default_factory=dict)
    background: list[ThreadPoolExecutor] = field(default_factory=list)  # stop playbooks still ending
    stop_run_armed: bool = False  # the armed stop run was started (or could not be: journaled)
    stop_connections_opened: bool = False
    armed_stops: ArmedStopRun | None = None  # the shutdown's stops, started ahead, released host by host
    # Each host's "before" probe for its stop (off already? SSH answering?), taken ahead in the background.
    stop_before: dict[str, Future[tuple[Verification, bool]]] = field(default_factory=dict)
    # Notified after each step's result is journaled: what dispatches steps as they become ready
    # (``schedule.run_when_ready``) waits on it.
    progress: threading.Condition = field(default_factory=threading.Condition)

    def done(self, step_id: str) -> bool:
        """The step has a result and it is ok (verified, or a dry run's)."""
        return step_id in self.results and self.results[step_id].ok

    def verification(self, step: Step, v: Verification) -> Verification:
        self.rec.emit("verification", step_id=step.id, check=v.check, passed=v.passed, evidence=dict(v.evidence))
        return v

    def finish(self, step: Step, result: StepResult) -> None:
        """Record and journal the step's result, then wake whatever waits for it (its dependents)."""
        with self.progress:
            self.results[step.id] = result
            try:
                self.rec.emit("step-finished", step_id=step.id, action=step.action.value, target=step.target,
                              status=result.status.value, changed=result.changed, already=result.already,
                              escalated=result.escalated, error=result.error, evidence=dict(result.evidence),
                              duration_s=result.duration_s)
            finally:
                self.progress.notify_all()

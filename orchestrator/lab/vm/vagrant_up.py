"""Running ``vagrant up`` for the VM lab: its environment, its time limit (:class:`UpBudget`), and
following its ``--machine-readable`` output into each VM's stage, with a kernel panic on a VM's
serial console reported as soon as it is seen. Past its limit it is stopped, with all it started."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from orchestrator.errors import LabError
from orchestrator.lab.vm import libvirt
from orchestrator.lab.vm.host import BOX_NAME, POOL, SYSTEM_UMASK, Progress, vagrant_dir, vm_lab_root

UP_TIMEOUT_ENV = "ORCHESTRATOR_VM_LAB_UP_TIMEOUT"
PROGRESS_EVERY_S = 60.0  # while vagrant up runs, every VM's stage this often
CONSOLE_CHECK_EVERY_S = 10.0  # and its console logs for kernel panics this often
# Seconds of one CPU that one VM needs from `vagrant up` to provisioned (measured: under software
# emulation 5 VMs took 430 s on 2 cores, ~170 s each; under KVM a few seconds each).
VM_CPU_SECONDS = {"qemu": 180.0, "kvm": 30.0}
# Copying the box's image into the libvirt pool, once per box: measured 2 s for 143 MB; allowed
# 30 s plus 10 MB/s.
BOX_UPLOAD_FIXED_SECONDS = 30.0
BOX_UPLOAD_MB_PER_SECOND = 10.0


def vagrant_env(inventory_path: str) -> dict[str, str]:
    root = vm_lab_root()
    wrapper = root / "bin" / "qemu-tcg-wrapper"  # readable by libvirt's qemu user wherever the repo is
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vagrant_dir() / "qemu-tcg-wrapper", wrapper)
    wrapper.chmod(0o755)
    (root / "console").mkdir(parents=True, exist_ok=True)
    for directory in (root, wrapper.parent, root / "console"):  # the CLI's umask made them 0700
        libvirt.let_qemu_through(directory)
    return {
        **os.environ,
        "VAGRANT_CWD": str(vagrant_dir()),
        "VAGRANT_HOME": str(root / "vagrant.d"),
        "VAGRANT_DOTFILE_PATH": str(root / "dotvagrant"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        "VAGRANT_NO_COLOR": "1",
        "ORCHESTRATOR_LAB_INVENTORY": str(Path(inventory_path).resolve()),
        "ORCHESTRATOR_VM_LAB_ROOT": str(root),
        "ORCHESTRATOR_PYTHON": sys.executable,
        "ORCHESTRATOR_LAB_BOX": BOX_NAME,
        "ORCHESTRATOR_LAB_LIBVIRT_DRIVER": libvirt.libvirt_driver(),
        "ORCHESTRATOR_LAB_EMULATOR": str(wrapper),
        "ORCHESTRATOR_LAB_STORAGE_POOL": POOL,
        "ORCHESTRATOR_LAB_CONSOLE_DIR": str(root / "console"),
    }


# --------------------------------------------------------------------------------------------
# the time limit
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpBudget:
    """How long ``vagrant up`` may take, from what it has to do."""

    vms: int
    driver: str  # kvm or qemu
    cpus: int
    upload: bool  # the box's image is not in the libvirt pool yet
    box_mb: float = 0.0  # the box's size (what the upload copies)

    @property
    def upload_seconds(self) -> float:
        return BOX_UPLOAD_FIXED_SECONDS + self.box_mb / BOX_UPLOAD_MB_PER_SECOND if self.upload else 0.0

    @property
    def seconds(self) -> float:
        # the VMs boot at once and share the CPUs; twice the measured time, plus vagrant's own start
        parallel = self.vms / max(1, min(self.cpus, self.vms))
        return round(60.0 + self.upload_seconds + 2.0 * VM_CPU_SECONDS[self.driver] * parallel)

    def describe(self) -> str:
        return (f"{self.vms} VMs under {self.driver} on {self.cpus} CPUs"
                + (f", first upload of the box ({self.box_mb:.0f} MB) into the pool" if self.upload else "")
                + f": `vagrant up` may take {self.seconds:.0f} s")


def up_timeout(budget: UpBudget) -> float:
    configured = os.environ.get(UP_TIMEOUT_ENV)
    if configured:
        try:
            return float(configured)
        except ValueError:
            raise LabError(f"{UP_TIMEOUT_ENV}={configured!r} is not a number of seconds", target="vm lab",
                           hint=f"unset it, or give seconds, e.g. {UP_TIMEOUT_ENV}=1800") from None
    return budget.seconds


# --------------------------------------------------------------------------------------------
# what vagrant says
# --------------------------------------------------------------------------------------------

# What vagrant and vagrant-libvirt say about a machine (the text of its `==> NAME: ...` lines) ->
# the stage it is at. The first pattern that matches wins; other lines leave the stage as it was.
_STAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), stage)
    for pattern, stage in (
        (r"^Uploading base box image", "uploading the box into the libvirt pool (first time only)"),
        (r"^Creating image \(snapshot", "creating its disk"),
        (r"^Creating domain", "defining the VM"),
        (r"^Starting domain", "starting"),
        (r"^Waiting for domain to get an IP", "booting (waiting for its address)"),
        (r"^Waiting for machine to boot", "booting (waiting for SSH)"),
        (r"^Machine booted and ready", "booted"),
        (r"^Running provisioner: hostkey", "provisioning (its pinned host key)"),
        (r"^Running provisioner: lab", "provisioning (networks, nftables, services)"),
        (r"^Machine already provisioned", "already provisioned"),
        (r"^Domain is already running|^Machine is already running", "already running"),
    )
)


UP_FINISHED = "up (booted and provisioned)"


def parse_machine_readable(line: str) -> tuple[str, str] | None:
    """One line of ``vagrant --machine-readable`` (``TIMESTAMP,TARGET,TYPE,DATA...``) -> (target,
    text) for a ``ui`` line, None for anything else. Vagrant escapes commas and newlines in data."""
    fields = line.rstrip("\n").split(",", 4)
    if len(fields) < 5 or fields[2] != "ui":
        return None
    text = fields[4].replace("%!(VAGRANT_COMMA)", ",").replace("\\n", "\n").replace("\\r", "")
    return fields[1], text


def finished_machine(line: str) -> str | None:
    """The machine a ``TIMESTAMP,TARGET,action,up,end`` line says is up, None for any other line."""
    fields = line.rstrip("\n").split(",")
    if len(fields) == 5 and fields[2:] == ["action", "up", "end"] and fields[1]:
        return fields[1]
    return None


_PANIC = re.compile(rb"Kernel panic - not syncing: ([^\r\n]{0,120})")


def console_panics(console: Path) -> list[str]:
    """The kernel panics a VM's serial console log shows (their reasons, oldest first)."""
    try:
        data = console.read_bytes()
    except OSError:
        return []
    return [m.group(1).decode("ascii", "replace").strip() for m in _PANIC.finditer(data)]


def vagrant_stage(text: str) -> str | None:
    """The stage a machine is at, from one of vagrant's messages about it (None: no change)."""
    message = re.sub(r"^==> [^:]+: ", "", text.strip())
    for pattern, stage in _STAGES:
        if pattern.search(message):
            return stage
    return None


class UpProgress:
    """Follows ``vagrant up --machine-readable``: writes it readably to its log, and reports each
    machine's change of stage through ``progress``."""

    def __init__(
        self, log: IO[str], machines: list[str], progress: Progress | None, started: float,
        console_dir: Path | None = None,
    ) -> None:
        self.log = log
        self.machines = set(machines)
        self.progress = progress
        self.started = started
        self.console_dir = console_dir
        self.stages: dict[str, str] = {}
        self.panics: dict[str, int] = {}

    def check_consoles(self) -> None:
        """Say once per new panic which VM's kernel panicked at boot (the box boots with panic=5, so
        it restarts itself and vagrant keeps waiting for it)."""
        if self.console_dir is None:
            return
        for machine in sorted(self.machines):
            if self.stages.get(machine) == UP_FINISHED:
                continue
            panics = console_panics(self.console_dir / f"{machine}.log")
            for reason in panics[self.panics.get(machine, 0):]:
                if self.progress is not None:
                    self.progress(f"{machine}: kernel panic at boot ({reason}); it restarts itself "
                                  f"({time.monotonic() - self.started:.0f} s)")
            self.panics[machine] = len(panics)

    def summary(self) -> str:
        """Where every VM is, e.g. ``120 s: vm-fw booting (waiting for SSH), vm-ad1 starting, ...``."""
        where = ", ".join(f"{m} {self.stages.get(m, 'waiting for vagrant')}" for m in sorted(self.machines))
        return f"{time.monotonic() - self.started:.0f} s: {where}"

    def follow(self, stream: IO[str]) -> None:
        for raw in stream:
            self.line(raw)

    def line(self, raw: str) -> None:
        parsed = parse_machine_readable(raw)
        if parsed is None:
            self.log.write(raw if raw.endswith("\n") else raw + "\n")
            self.log.flush()
            finished = finished_machine(raw)
            if finished in self.machines:
                self._enter(finished, UP_FINISHED)
            return
        target, text = parsed
        self.log.write(text.rstrip("\n") + "\n")
        self.log.flush()
        if target not in self.machines:
            return
        stage = vagrant_stage(text)
        if stage is not None:
            self._enter(target, stage)

    def _enter(self, target: str, stage: str) -> None:
        if self.stages.get(target) == stage:
            return
        self.stages[target] = stage
        if self.progress is not None:
            self.progress(f"{target}: {stage} ({time.monotonic() - self.started:.0f} s)")


# --------------------------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------------------------


def run_vagrant_up(
    log: Path, machines: list[str], *, timeout: float, env: Mapping[str, str], progress: Progress | None
) -> int:
    """``vagrant up`` with its output going to ``log`` as it comes (to follow with tail -f) and
    each machine's stage to ``progress``. Past ``timeout`` it is stopped (its whole process group)."""
    argv = ["vagrant", "up", "--provider=libvirt", "--machine-readable"]
    started = time.monotonic()
    with log.open("w", encoding="utf-8", errors="replace") as out:
        os.fchmod(out.fileno(), 0o600)  # also when an older log was made with other modes
        follower = UpProgress(out, machines, progress, started, console_dir=Path(env["ORCHESTRATOR_LAB_CONSOLE_DIR"])
                              if "ORCHESTRATOR_LAB_CONSOLE_DIR" in env else None)
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                text=True, errors="replace", start_new_session=True, umask=SYSTEM_UMASK,
            )
        except FileNotFoundError as exc:
            raise LabError("vagrant is not installed", target="vm lab",
                           hint="run scripts/vagrant-tier.sh --setup-only") from exc
        assert proc.stdout is not None
        stdout = proc.stdout
        reader = threading.Thread(target=follower.follow, args=(stdout,), daemon=True)
        reader.start()
        try:
            rc = _wait_reporting(proc, follower, started + timeout)
        except BaseException as exc:  # past the limit, or interrupted: vagrant is in its own session
            _stop_group(proc)
            _finish_reading(reader, stdout)
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            raise LabError(
                f"`vagrant up` did not finish within {timeout:.0f} s (log: {log}; stages: "
                + (", ".join(f"{m} {follower.stages[m]}" for m in sorted(follower.stages)) or "none reached")
                + ")",
                target="vm lab",
                hint=f"see the VMs' console logs in {vm_lab_root() / 'console'}; {UP_TIMEOUT_ENV}=SECONDS "
                "sets a longer limit",
            ) from None
        _finish_reading(reader, stdout)
    return rc


def _finish_reading(reader: threading.Thread, stdout: IO[str]) -> None:
    """Let the follower read vagrant's last lines, then close the pipe (its end is ours to close)."""
    reader.join(timeout=10)
    if not reader.is_alive():  # a reader still inside read() would trip over a closed pipe
        stdout.close()


def _wait_reporting(proc: subprocess.Popen[str], follower: UpProgress, deadline: float) -> int:
    """Wait for ``proc`` until ``deadline`` (then TimeoutExpired), saying every minute where each VM
    is, and as soon as it is seen, a VM's kernel panic."""
    next_summary = time.monotonic() + PROGRESS_EVERY_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise subprocess.TimeoutExpired(proc.args, 0)
        try:
            return proc.wait(timeout=min(CONSOLE_CHECK_EVERY_S, PROGRESS_EVERY_S, remaining))
        except subprocess.TimeoutExpired:
            follower.check_consoles()
            if follower.progress is not None and next_summary <= time.monotonic() < deadline:
                follower.progress(follower.summary())
                next_summary = time.monotonic() + PROGRESS_EVERY_S


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """Stop a command started in its own session and everything it started (TERM, then KILL)."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue

"""The console script as an operator runs it, a run's journal, and the lab put back as it was: shared by
the lab tiers (tests/lab, the lab tests of tests/adversarial, tests/vagrant). Not a test module."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from orchestrator.journal import read_journal
from orchestrator.model import Action, Inventory

REPO = Path(__file__).resolve().parents[1]
CLI = str(REPO / ".venv" / "bin" / "orchestrator")
LAB_YML = REPO / "inventories" / "lab.yml"
VM_LAB_YML = REPO / "inventories" / "vm-lab.yml"
TERMINAL_WIDTH = "100"  # the progress view renders as on an operator's terminal (not --json)


def orch(
    state_dir: Path | None, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``orchestrator ARGS`` from the repository, no stdin (no terminal to confirm on), on ``state_dir``
    (``ORCHESTRATOR_STATE_DIR``; None: the environment's), with ``env`` added to the environment."""
    state = {"ORCHESTRATOR_STATE_DIR": str(state_dir)} if state_dir is not None else {}
    full_env = {**os.environ, **state, "COLUMNS": TERMINAL_WIDTH, "TERM": "xterm", **(env or {})}
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=full_env, timeout=timeout, cwd=REPO, check=False)


def run_ids(state_dir: Path) -> list[str]:
    """The runs of a state directory, oldest first (run ids sort by their start)."""
    runs = state_dir / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.exists() else []


def last_run_id(state_dir: Path) -> str:
    ids = run_ids(state_dir)
    assert ids, f"no run in {state_dir}"
    return ids[-1]


def records(state_dir: Path, run_id: str) -> list[dict[str, Any]]:
    return read_journal(state_dir / "runs" / run_id / "journal.jsonl")


def finished(recs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each step's step-finished record, by step id."""
    return {r["step_id"]: r for r in recs if r["type"] == "step-finished"}


def lab_variant(tmp_path: Path, name: str, *replacements: tuple[str, str]) -> Path:
    """A copy of inventories/lab.yml with exact text replacements (each must match once)."""
    text = LAB_YML.read_text(encoding="utf-8")
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return write_lab_copy(tmp_path / name, text)


def write_lab_copy(path: Path, text: str) -> Path:
    """``text`` (inventories/lab.yml, changed) written to ``path``, with the lab's health suites beside it
    (a link to inventories/health: the inventory names them relative to its own directory)."""
    path.write_text(text, encoding="utf-8")
    suites = path.parent / "health"
    if not suites.exists():
        suites.symlink_to(LAB_YML.parent / "health", target_is_directory=True)
    return path


def wait_port(address: str, port: int, *, up: bool, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=1).close()
            if up:
                return
        except OSError:
            if not up:
                return
        time.sleep(0.3)
    raise AssertionError(f"{address}:{port} did not become {'open' if up else 'closed'} in {timeout} s")


def restore_lab(inv: Inventory, power_cycle: tuple[str, ...] = (), *, wait_ssh: bool = True) -> None:
    """Every machine running (``power_cycle`` ones rebooted: what was stopped or firewalled inside is
    gone), no isolation or cut in force; with ``wait_ssh``, until every host's SSH port answers."""
    from orchestrator.drivers.netmiko import NetmikoDriver
    from orchestrator.drivers.power import LabPower

    power = LabPower()
    for name in power_cycle:
        if power.state(name) != "stopped":
            power.power_off(name, graceful=False)
    for host in inv.hosts.values():
        if power.state(host.name) == "stopped":
            power.power_on(host.name)
    net = NetmikoDriver(inv)
    try:
        for seg in inv.segments.values():
            if seg.gateway and net.is_in_force(seg.gateway, Action.ISOLATE_SEGMENT, seg.name):
                net.apply(seg.gateway, Action.RECONNECT_SEGMENT, seg.name)
        for link in inv.links.values():
            if net.is_in_force(link.device, Action.CUT_LINK, link.name):
                net.apply(link.device, Action.RESTORE_LINK, link.name)
    finally:
        net.close()
    if wait_ssh:
        for host in inv.hosts.values():
            wait_port(str(host.management_address), 22, up=True)

"""The restore floor: what `orchestrator restore --approve all` does, with nothing but parallel paramiko.

On a lab left contained and off (after a shutdown), the restore plan's waves in order
(orchestrator.planner.build_plan, Mode.RESTORE), each wave's steps all at once, and the same checks:

* start-host: power on through the lab power driver; SSH answers with the pinned host key; the boot
  settled (`systemctl is-system-running --wait`, as the product waits before checking);
* check-integrity: the product's own comparison (orchestrator.integrity.check_host: the same
  collector script, files, hashes and signed baseline) over a paramiko transport;
* check-health: the host's services active and its baseline's TCP ports listening (retried for up
  to 20 s, as the product does);
* gate: nothing (approved);
* reconnect-segment and restore-link: the rendered commands, one command per device, then proven from
  outside (a host inside reaches beyond its gateway again; the link's peer reaches inside).

Baselines must exist in ``state_dir`` (``orchestrator baseline capture``), captured before.

    .venv/bin/python bench/restore_floor.py INVENTORY STATE_DIR   # on a shut-down lab; leaves it running
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from floor import (
    FloorError,
    FloorResult,
    LabSsh,
    Timing,
    Verifier,
    device_command,
    device_root,
    parse_reach,
    ping_command,
    pmap,
)

from orchestrator.config import Settings
from orchestrator.drivers.base import CommandResult
from orchestrator.drivers.power import LabPower
from orchestrator.integrity import check_host, listening_tcp_ports, load_baseline
from orchestrator.model import Action, Inventory, Mode, Plan, Step
from orchestrator.planner import build_plan


class ParamikoRunner:
    """The integrity collector's transport (``CommandRunner``) over the floor's pooled paramiko."""

    def __init__(self, inventory: Inventory, ssh: LabSsh) -> None:
        self.inventory = inventory
        self.ssh = ssh

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult:
        h = self.inventory.hosts[host]
        started = time.monotonic()
        res = self.ssh.run(str(h.management_address), self.inventory.credentials[h.credentials], command,
                           timeout_s, stdin=stdin)
        return CommandResult(host, command, res.rc, res.stdout, res.stderr, round(time.monotonic() - started, 3))


class Checks:
    """The restore steps of one host, as the product does them, over bare paramiko."""

    def __init__(self, inventory: Inventory, settings: Settings, ssh: LabSsh, start_timeout_s: float) -> None:
        self.inventory = inventory
        self.settings = settings
        self.runner = ParamikoRunner(inventory, ssh)
        self.power = LabPower()
        self.start_timeout_s = start_timeout_s

    def start(self, step: Step) -> str | None:
        h = self.inventory.hosts[step.target]
        if self.power.state(h.name) != "running":
            self.power.power_on(h.name)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                res = self.runner.run(h.name, "timeout 60 systemctl is-system-running --wait", 70.0)
                return None if res.stdout.strip() else f"{h.name}: no system state"
            except Exception as exc:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    return f"{h.name}: no SSH after {self.start_timeout_s:.0f} s ({type(exc).__name__})"
                time.sleep(0.2)

    def integrity(self, step: Step) -> str | None:
        found = check_host(self.runner, self.inventory, step.target, self.settings)
        if found.clean:
            return None
        # what the host reported, quoted (repr): a path may hold newlines or terminal escapes
        said = "; ".join(f"{d.category} {d.path!r}: {d.detail!r}" for d in found.differences[:3])
        return f"{step.target}: {len(found.differences)} difference(s): {said}"[:400]

    def health(self, step: Step) -> str | None:
        h = self.inventory.hosts[step.target]
        want = set(listening_tcp_ports(load_baseline(h.name, self.settings)))
        units = " ".join(shlex.quote(s) for s in h.services)
        command = (f"systemctl is-active -- {units}; " if units else "") + "echo ports; ss -ltnH"
        deadline = time.monotonic() + 20.0
        while True:
            out = self.runner.run(h.name, command, 15.0).stdout
            states, _, ports = out.partition("ports\n")
            have = {int(line.split()[3].rsplit(":", 1)[1]) for line in ports.splitlines() if len(line.split()) > 3}
            problem = None
            if any(st != "active" for st in states.split()) or len(states.split()) != len(h.services):
                problem = f"{h.name}: services {states.split()}"
            elif not want <= have:
                problem = f"{h.name}: ports {sorted(want - have)} not listening"
            if problem is None or time.monotonic() > deadline:
                return problem
            time.sleep(1.0)


def run_restore_floor(inventory: Inventory, settings: Settings, plan: Plan | None = None, *,
                      start_timeout_s: float = 120.0) -> FloorResult:
    plan = plan or build_plan(inventory, Mode.RESTORE)
    ssh = LabSsh()
    verifier = Verifier(inventory, ssh)
    checks = Checks(inventory, settings, ssh, start_timeout_s)
    by_action = {Action.START_HOST: checks.start, Action.CHECK_INTEGRITY: checks.integrity,
                 Action.CHECK_HEALTH: checks.health}
    result = FloorResult()
    go = time.monotonic()
    try:
        for wave in plan.waves:
            action = wave.steps[0].action
            t0 = time.monotonic()
            if action is Action.GATE:
                continue
            if action in (Action.RECONNECT_SEGMENT, Action.RESTORE_LINK):
                failures = _reconnect(inventory, ssh, verifier, wave.steps)
            elif action in by_action:
                fn = by_action[action]
                failures = [f for f in pmap(lambda s, fn=fn: _guarded(fn, s), wave.steps) if f]
            else:
                raise FloorError(f"the restore floor does not do {action.value}")
            done = time.monotonic()
            result.waves.append(Timing(f"{action.value} wave {wave.index} ({len(wave.steps)} steps)",
                                       round(done - t0, 3), 0.0, round(done - go, 3)))
            result.failures += failures
        result.shutdown_s = round(time.monotonic() - go, 3)  # here: "restored"
    finally:
        ssh.close()
    return result


def _guarded(fn: Callable[[Step], str | None], step: Step) -> str | None:
    try:
        return fn(step)
    except Exception as exc:  # noqa: BLE001 - a check that cannot run is a failed check
        return f"{step.id}: {type(exc).__name__}: {exc}"


def _reconnect(inventory: Inventory, ssh: LabSsh, verifier: Verifier, steps: Sequence[Step]) -> list[str]:
    by_device: dict[str, list[Step]] = {}
    for s in steps:
        by_device.setdefault(str(s.device), []).append(s)

    def act(item: tuple[str, list[Step]]) -> str | None:
        device, device_steps = item
        try:
            res = ssh.run(str(inventory.devices[device].address), device_root(inventory, device),
                          device_command(inventory, device, device_steps), 30.0, username="root")
        except Exception as exc:  # noqa: BLE001
            return f"{device}: {type(exc).__name__}: {exc}"
        return None if res.rc == 0 else f"{device}: exit {res.rc}: {(res.stderr or res.stdout).strip()[:200]}"

    failures = [f for f in pmap(act, list(by_device.items())) if f]

    def proven(step: Step) -> str | None:
        deadline = time.monotonic() + 8.0
        while True:
            why = _reaches_again(inventory, verifier, step)
            if why is None or time.monotonic() > deadline:
                return why
            time.sleep(0.5)

    return failures + [f for f in pmap(lambda s: _guarded(proven, s), list(steps)) if f]


def _reaches_again(inventory: Inventory, verifier: Verifier, step: Step) -> str | None:
    if step.action is Action.RESTORE_LINK:
        lab = inventory.lab
        if lab is None or step.target not in lab.peers:
            return None
        segs = sorted((s for s in inventory.segments.values()
                       if s.gateway_address is not None and s.name != inventory.management_segment),
                      key=lambda s: s.name)
        inside = [str(s.gateway_address) for s in segs[:2]]
        res = verifier.ssh.run(str(lab.peers[step.target].management_address), verifier.lab_credential,
                               ping_command(inside, []))
        answers = parse_reach(res.stdout)
        return None if any(answers.get(t) for t in inside) else f"{step.target}: the peer does not reach inside"
    hosts = sorted(inventory.hosts_in_segment(step.target), key=lambda h: h.name)
    if not hosts:
        return None
    probe = hosts[0]
    beyond = verifier.targets.cross_gateway_targets(step.target)[:3]
    res = verifier.ssh.run(str(probe.management_address), verifier.host_cred(probe), ping_command(beyond, []))
    answers = parse_reach(res.stdout)
    return None if any(answers.get(t) for t in beyond) else f"{step.target}: nothing beyond the gateway answers"


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from orchestrator.inventory import load_inventory

    parser = argparse.ArgumentParser(description="The restore floor: restore with bare parallel paramiko.")
    parser.add_argument("inventory")
    parser.add_argument("state_dir", help="where the baselines are (orchestrator baseline capture)")
    args = parser.parse_args(argv)
    settings = Settings(state_dir=Path(args.state_dir), state_dir_source="cli")
    res = run_restore_floor(load_inventory(args.inventory), settings)
    for w in res.waves:
        print(f"{w.label}: {w.act_s:.2f} s, done at {w.done_at_s:.2f} s")
    print(f"restored {res.shutdown_s} s")
    for f in res.failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())

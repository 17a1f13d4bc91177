"""The floor: what `orchestrator shutdown` does, with nothing but parallel paramiko.

The same plan (orchestrator.planner.build_plan: its waves, in order), the same device commands
(orchestrator.drivers.devices.render), the same verification, and nothing else: no journal, no probes
before acting, no Ansible. What is measured is execution, from "go" to "verified":

* backup-config: each device's configuration read in parallel (linux: the rendered commands as
  root; the FRR router, platform cisco_ios: `vtysh -c 'show running-config'` as root);
* cut-link and isolate-segment: one command per device, devices in parallel. linux gets the rendered
  nft lines as root in one shell; the FRR router gets `vtysh -c 'configure terminal' -c 'interface X'
  -c 'shutdown' ...` as root (its netops login shell is vtysh; root has a normal shell). Verified
  from outside: a link's lab peer can no longer reach inside, a host inside a segment can no longer
  ping across its gateway (while it still reaches a neighbour in the segment);
* stop-host waves: every host of the wave at once gets its services stopped and `systemctl
  poweroff` at once, no delay (the session dropping as the machine goes down is expected: the command
  is fired, not waited for); the wave is verified when every host's SSH port is closed (the product's
  knock, with its timeout: ``SSH_KNOCK_TIMEOUT_S``) and the lab power driver says stopped. The SSH
  connections to the hosts to stop are opened ahead, as the product does: in the background once
  containment is verified, 4 handshakes at a time, in wave order (a host whose connection is not up
  yet when its stop comes is connected to then);
* ``dag=True``, the dependency-driven floor: no wave barrier, a host is stopped as soon as every host
  that depends on it (its step's ``requires``) is verified off;
* restore (``run_restore_floor``): the plan's restore waves; power on through the lab power driver,
  SSH answering and the boot settled (`systemctl is-system-running --wait`), the integrity collector
  (orchestrator.integrity.collect: the same script, files and hashes) compared with the signed
  baseline, services active and the baseline's TCP ports listening, then the rendered reconnect and
  restore-link commands per device.

Host keys are checked strictly (paramiko RejectPolicy against the credential's known_hosts).

    .venv/bin/python bench/floor.py INVENTORY      # on a running lab; leaves it contained and off
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import paramiko

from orchestrator.drivers.devices import render
from orchestrator.drivers.netmiko import linux_batch
from orchestrator.drivers.power import LabPower
from orchestrator.model import Action, Credential, Host, Inventory, Mode, Phase, Plan, Step, Wave
from orchestrator.planner import build_plan
from orchestrator.verify import SSH_KNOCK_TIMEOUT_S, Probes

KEEP_SERVICES = frozenset({"ssh", "sshd", "ssh.service", "sshd.service", "ssh.socket"})  # as stop-host.yml
T = TypeVar("T")
R = TypeVar("R")
POWEROFF = "/bin/systemctl poweroff"
OPEN_AHEAD = 4  # handshakes at a time, as orchestrator/drivers/ssh_masters.py


class FloorError(Exception):
    """A command or a verification of the floor failed."""


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str


@dataclass
class Timing:
    """Seconds since "go" at which each wave was verified, and what each took."""

    label: str
    act_s: float
    verify_s: float
    done_at_s: float


@dataclass
class FloorResult:
    contain_s: float | None = None
    shutdown_s: float | None = None
    waves: list[Timing] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class LabSsh:
    """Pooled paramiko clients by (address, user), strict host keys, thread-safe."""

    def __init__(self, connect_timeout_s: float = 5.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self._clients: dict[tuple[str, str], paramiko.SSHClient] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def run(self, address: str, cred: Credential, command: str, timeout_s: float = 20.0, *,
            username: str | None = None, stdin: str | None = None) -> Result:
        key = (address, username or cred.username)
        client = self._client(key, cred)
        try:
            return _exec(client, command, timeout_s, stdin=stdin)
        except (OSError, paramiko.SSHException, EOFError):
            self.drop(address, username or cred.username)
            raise

    def fire(self, address: str, cred: Credential, command: str, timeout_s: float = 20.0) -> Result:
        """Run a command that ends the session (a power-off): its exit status when it comes, and a
        session that drops (or stays silent once the command is sent) counts as sent."""
        key = (address, cred.username)
        client = self._client(key, cred)
        try:
            return _exec(client, command, timeout_s, dropped_ok=True)
        finally:
            self.drop(address, cred.username)

    def open(self, address: str, cred: Credential) -> None:
        """Open (and keep) the connection now, for a command later."""
        self._client((address, cred.username), cred)

    def drop(self, address: str, username: str) -> None:
        with self._guard:
            client = self._clients.pop((address, username), None)
        if client is not None:
            client.close()

    def close(self) -> None:
        with self._guard:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def _client(self, key: tuple[str, str], cred: Credential) -> paramiko.SSHClient:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            client = self._clients.get(key)
            transport = client.get_transport() if client is not None else None
            if client is not None and transport is not None and transport.is_active():
                return client
            client = paramiko.SSHClient()
            if cred.known_hosts is None or cred.key_file is None:
                raise FloorError(f"credential {cred.name} needs key_file and known_hosts for the floor")
            client.load_host_keys(str(Path(cred.known_hosts).expanduser()))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            t = self.connect_timeout_s
            client.connect(key[0], username=key[1], key_filename=str(Path(cred.key_file).expanduser()),
                           timeout=t, banner_timeout=t, auth_timeout=t, look_for_keys=False, allow_agent=False)
            with self._guard:
                self._clients[key] = client
            return client


def _exec(client: paramiko.SSHClient, command: str, timeout_s: float, *, dropped_ok: bool = False,
          stdin: str | None = None) -> Result:
    transport = client.get_transport()
    if transport is None:
        raise paramiko.SSHException("no transport")
    chan = transport.open_session(timeout=timeout_s)
    try:
        chan.settimeout(timeout_s)
        chan.exec_command(command)
        if stdin is not None:
            chan.sendall(stdin.encode())
            chan.shutdown_write()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout_s
        while not (chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()):
            if dropped_ok and (not transport.is_active() or chan.closed or time.monotonic() > deadline):
                return Result(0, out.decode(errors="replace"), "session dropped (expected: powering off)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"command did not finish in {timeout_s:.0f} s: {command[:80]}")
            if chan.recv_ready():
                out += chan.recv(65536)
            elif chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            else:
                time.sleep(0.005)
        return Result(chan.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace"))
    finally:
        chan.close()


def port_open(address: str, port: int = 22, timeout_s: float = SSH_KNOCK_TIMEOUT_S) -> bool:
    """The product's knock (``Probes.ssh_answers``), with its timeout: a machine that is gone never
    answers, so each host verified off waits that long, in the floor as in the product."""
    try:
        socket.create_connection((address, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def pmap(fn: Callable[[T], R], items: Sequence[T], workers: int = 128) -> list[R]:
    """``fn`` over ``items`` in parallel threads, results in order."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))


# ---- verification (shared with the Ansible baseline) -------------------------------------------


def ping_command(reach_expected: Iterable[str], cut_expected: Iterable[str]) -> str:
    """Ping every address at once; one `reach ADDRESS yes|no` line each. The product's rule: a cut is
    proven by 1 s of echo requests every 0.2 s without an answer; reachability by a first answer
    within 3 s."""
    jobs = []
    for addresses, deadline in ((cut_expected, 1), (reach_expected, 3)):
        for a in addresses:
            ipaddress.IPv4Address(a)
            jobs.append(f"(ping -n -q -c 1 -i 0.2 -w {deadline} {a} >/dev/null 2>&1 && echo 'reach {a} yes' "
                        f"|| echo 'reach {a} no') &")
    return " ".join(jobs) + " wait"


def parse_reach(stdout: str) -> dict[str, bool]:
    answers = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "reach":
            answers[parts[1]] = parts[2] == "yes"
    return answers


class Verifier:
    """The same checks as the product's: SSH closed and the lab power driver says stopped; a
    segment's hosts no longer ping across its gateway; a link's peer no longer reaches inside."""

    def __init__(self, inventory: Inventory, ssh: LabSsh) -> None:
        self.inventory = inventory
        self.ssh = ssh
        self.power = LabPower()
        self.targets = Probes(inventory, None, lambda _h: None)  # only its address logic is used
        names = sorted({h.credentials for h in inventory.hosts.values()})
        self.lab_credential = inventory.credentials[names[0]]

    def host_cred(self, host: Host) -> Credential:
        return self.inventory.credentials[host.credentials]

    def segment_isolated(self, segment: str) -> str | None:
        """None when isolated, else why not."""
        hosts = [h for h in sorted(self.inventory.hosts_in_segment(segment), key=lambda h: h.name)]
        if not hosts:
            return None
        probe = hosts[0]
        cut = self.targets.cross_gateway_targets(segment)[:3]
        neighbour = [str(hosts[1].address)] if len(hosts) > 1 else []
        res = self.ssh.run(str(probe.management_address), self.host_cred(probe), ping_command(neighbour, cut))
        answers = parse_reach(res.stdout)
        crosses = [t for t in cut if answers.get(t, True)]
        if crosses:
            return f"{segment}: {probe.name} still reaches {', '.join(crosses)}"
        if neighbour and not answers.get(neighbour[0], False):
            return f"{segment}: {probe.name} no longer reaches its neighbour {neighbour[0]}"
        return None

    def link_cut(self, link: str) -> str | None:
        lab = self.inventory.lab
        if lab is None or link not in lab.peers:
            return None
        segs = sorted((s for s in self.inventory.segments.values()
                       if s.gateway_address is not None and s.name != self.inventory.management_segment),
                      key=lambda s: s.name)
        inside = [str(s.gateway_address) for s in segs[:2]]
        res = self.ssh.run(str(lab.peers[link].management_address), self.lab_credential, ping_command([], inside))
        answers = parse_reach(res.stdout)
        crosses = [t for t in inside if answers.get(t, True)]
        return f"{link}: the peer still reaches {', '.join(crosses)}" if crosses else None

    def host_off(self, host: Host) -> bool:
        return self.power.state(host.name) == "stopped" and not port_open(str(host.management_address))

    def wait_off(self, hosts: Sequence[Host], timeout_s: float) -> list[str]:
        """Wait, in parallel, until every host is off; the names still on at the deadline."""
        deadline = time.monotonic() + timeout_s

        def one(h: Host) -> str | None:
            while True:
                if self.host_off(h):
                    return None
                if time.monotonic() > deadline:
                    return h.name
                time.sleep(0.1)

        return [n for n in pmap(one, hosts) if n is not None]

    def contained(self, links: Sequence[str], segments: Sequence[str]) -> list[str]:
        checks = [(self.link_cut, k) for k in links] + [(self.segment_isolated, s) for s in segments]
        return [r for r in pmap(_guard, checks) if r is not None]


def _guard(check: tuple[Callable[[str], str | None], str]) -> str | None:
    fn, target = check
    try:
        return fn(target)
    except Exception as exc:  # noqa: BLE001 - a probe that cannot run is a failed verification
        return f"probe failed: {type(exc).__name__}: {exc}"


# ---- the floor ------------------------------------------------------------------------------------


def device_command(inventory: Inventory, device: str, steps: Sequence[Step]) -> str:
    """One command doing every step of this wave on ``device`` (rendered from the same templates)."""
    dev = inventory.devices[device]
    lines: list[str] = []
    for step in steps:
        if step.action is Action.BACKUP_CONFIG:
            lines += render(dev.platform, "backup-config", device=dev)
        elif step.action is Action.ISOLATE_SEGMENT:
            lines += render(dev.platform, step.action.value, device=dev, segment=inventory.segments[step.target])
        elif step.action in (Action.CUT_LINK, Action.RESTORE_LINK):
            lines += render(dev.platform, step.action.value, device=dev, link=inventory.links[step.target])
        elif step.action is Action.RECONNECT_SEGMENT:
            lines += render(dev.platform, step.action.value, device=dev, segment=inventory.segments[step.target])
        else:
            raise FloorError(f"the floor does not do {step.action.value} on devices")
    if dev.platform == "linux":
        return linux_batch(lines)
    if dev.platform == "cisco_ios":  # the lab's FRR router, as root through vtysh
        if all(s.action is Action.BACKUP_CONFIG for s in steps):
            return "vtysh -c 'show running-config'"
        return "vtysh " + " ".join(f"-c {shlex.quote(c)}" for c in ["configure terminal", *lines])
    raise FloorError(f"the floor drives linux and the lab's FRR (cisco_ios) only, not {dev.platform}")


def stop_command(host: Host) -> str:
    services = [s for s in reversed(host.services) if s not in KEEP_SERVICES]
    stop = f"systemctl stop {' '.join(shlex.quote(s) for s in services)}; " if services else ""
    return stop + POWEROFF


def device_root(inventory: Inventory, device: str) -> Credential:
    return inventory.credentials[inventory.devices[device].credentials]


def run_floor(inventory: Inventory, plan: Plan | None = None, *, stop_timeout_s: float = 60.0,
              contain_only: bool = False, dag: bool = False) -> FloorResult:
    """Run the floor on a running lab and time it; raises nothing for a failed check (see failures).
    ``dag``: the stops dependency-driven (no wave barrier) instead of wave by wave."""
    plan = plan or build_plan(inventory, Mode.CONTAIN if contain_only else Mode.SHUTDOWN)
    ssh = LabSsh()
    verifier = Verifier(inventory, ssh)
    result = FloorResult()
    opener: ThreadPoolExecutor | None = None
    go = time.monotonic()
    try:
        stop_waves = [w for w in plan.waves if w.steps and w.steps[0].action is Action.STOP_HOST]
        for wave in plan.waves:
            if wave.phase is Phase.VERIFY or wave in stop_waves:
                continue
            t0 = time.monotonic()
            failures, label = _contain_wave(inventory, ssh, verifier, wave)
            done = time.monotonic()
            result.waves.append(Timing(label, round(done - t0, 3), 0.0, round(done - go, 3)))
            result.failures += failures
            if wave.phase is Phase.CONTAIN:
                result.contain_s = round(done - go, 3)
        if stop_waves:  # once contained, as the product does
            opener = _open_ahead(verifier, [inventory.hosts[s.target] for w in stop_waves for s in w.steps])
        if dag and stop_waves:
            _stop_dag(inventory, verifier, stop_waves, stop_timeout_s, result, go)
        else:
            for wave in stop_waves:
                t0 = time.monotonic()
                hosts = [inventory.hosts[s.target] for s in wave.steps]
                failures = [f for f in pmap(lambda h: _stop_one(verifier, h, stop_timeout_s), hosts) if f]
                done = time.monotonic()
                result.waves.append(Timing(f"stop-host wave {wave.index} ({len(hosts)} hosts)",
                                           round(done - t0, 3), 0.0, round(done - go, 3)))
                result.failures += failures
        if stop_waves:
            result.shutdown_s = round(time.monotonic() - go, 3)
    finally:
        if opener is not None:
            opener.shutdown(wait=True, cancel_futures=True)
        ssh.close()
    return result


def _open_ahead(verifier: Verifier, hosts: Sequence[Host]) -> ThreadPoolExecutor:
    """The stop hosts' connections, opened in the background, OPEN_AHEAD at a time, in wave order."""
    pool = ThreadPoolExecutor(max_workers=OPEN_AHEAD)

    def one(h: Host) -> None:
        with contextlib.suppress(Exception):  # only a head start: the stop connects anyway
            verifier.ssh.open(str(h.management_address), verifier.host_cred(h))

    for h in hosts:
        pool.submit(one, h)
    return pool


def _stop_one(verifier: Verifier, h: Host, stop_timeout_s: float) -> str | None:
    """Fire the stop (services, then power-off at once) and wait until the host is verified off."""
    addr = str(h.management_address)
    problem = None
    try:
        res = verifier.ssh.fire(addr, verifier.host_cred(h), stop_command(h), 5.0)
        if res.rc != 0:
            problem = f"{h.name}: exit {res.rc}: {res.stderr.strip()[:200]}"
    except Exception as exc:  # noqa: BLE001 - recorded, verified below anyway
        problem = f"{h.name}: {type(exc).__name__}: {exc}"
    late = verifier.wait_off([h], stop_timeout_s)
    if late:
        return f"{h.name}: still on after {stop_timeout_s:.0f} s" + (f" ({problem})" if problem else "")
    return None


def _stop_dag(inventory: Inventory, verifier: Verifier, stop_waves: Sequence[Wave], stop_timeout_s: float,
              result: FloorResult, go: float) -> None:
    """Every host stopped as soon as each host depending on it (its step's requires) is verified off."""
    steps = [s for w in stop_waves for s in w.steps]  # wave order: what a step waits for comes first
    off = {s.id: threading.Event() for s in steps}
    ok: dict[str, bool] = {}
    done_at: dict[str, float] = {}

    def one(step: Step) -> str | None:
        for req in step.requires:
            if req in off:
                off[req].wait()
                if not ok.get(req):
                    off[step.id].set()
                    return f"{step.target}: not stopped, {req} did not stop"
        problem = _stop_one(verifier, inventory.hosts[step.target], stop_timeout_s)
        ok[step.id] = problem is None
        done_at[step.id] = time.monotonic() - go
        off[step.id].set()
        return problem

    t0 = time.monotonic()
    result.failures += [f for f in pmap(one, steps, workers=len(steps)) if f]
    for wave in stop_waves:
        last = max((done_at.get(s.id, 0.0) for s in wave.steps), default=0.0)
        result.waves.append(Timing(f"stop-host (dependency-driven) plan wave {wave.index} ({len(wave.steps)} hosts)",
                                   round(time.monotonic() - t0, 3), 0.0, round(last, 3)))


def _contain_wave(inventory: Inventory, ssh: LabSsh, verifier: Verifier, wave: Wave) -> tuple[list[str], str]:
    by_device: dict[str, list[Step]] = {}
    for s in wave.steps:
        assert s.device is not None or s.action is Action.BACKUP_CONFIG
        by_device.setdefault(s.device or s.target, []).append(s)

    def act(item: tuple[str, list[Step]]) -> str | None:
        device, steps = item
        cred = device_root(inventory, device)
        try:
            res = ssh.run(str(inventory.devices[device].address), cred,
                          device_command(inventory, device, steps), 30.0, username="root")
        except Exception as exc:  # noqa: BLE001
            return f"{device}: {type(exc).__name__}: {exc}"
        bad = res.rc != 0 or any(line.startswith("%") for line in res.stdout.splitlines())
        if bad:
            return f"{device}: exit {res.rc}: {(res.stderr or res.stdout).strip()[:200]}"
        if steps[0].action is Action.BACKUP_CONFIG and not res.stdout.strip():
            return f"{device}: empty configuration"
        return None

    failures = [f for f in pmap(act, list(by_device.items())) if f is not None]
    links = [s.target for s in wave.steps if s.action is Action.CUT_LINK]
    segments = [s.target for s in wave.steps if s.action is Action.ISOLATE_SEGMENT]
    failures += verifier.contained(links, segments)
    kinds = sorted({s.action.value for s in wave.steps})
    return failures, f"{'+'.join(kinds)} wave {wave.index} ({len(wave.steps)} steps)"


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from orchestrator.inventory import load_inventory

    parser = argparse.ArgumentParser(description="The floor: shutdown with bare parallel paramiko.")
    parser.add_argument("inventory")
    parser.add_argument("--contain-only", action="store_true")
    parser.add_argument("--dag", action="store_true", help="the dependency-driven floor (no wave barrier)")
    args = parser.parse_args(argv)
    res = run_floor(load_inventory(args.inventory), contain_only=args.contain_only, dag=args.dag)
    for w in res.waves:
        print(f"{w.label}: act {w.act_s:.2f} s, verify {w.verify_s:.2f} s, verified at {w.done_at_s:.2f} s")
    print(f"contain {res.contain_s} s, shutdown {res.shutdown_s} s")
    for f in res.failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Independent probes: what really happened, never the action's exit code.

* a host is off when SSH on its management address stops answering and, where it has a power
  driver, the driver says off (a power controller that cannot be reached or refuses the login says
  "unknown (why)": never off);
* a segment is isolated when, from inside it (reached over management), nothing beyond its
  gateway answers while the segment itself still does;
* a link is cut when its peer can no longer reach inside (in the lab), and its cut is present in
  the device's running configuration.
"""

from __future__ import annotations

import ipaddress
import shlex
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from orchestrator.drivers.base import PowerDriver, SshRunner
from orchestrator.errors import DriverError
from orchestrator.model import ESXI_PORTS, WINDOWS_PORTS, Host, HostOs, Inventory, Verification

# How long a knock on SSH's port waits for an answer before the port counts as closed. A machine that
# is gone (powered off, its address with it) never answers, so every "off" verified by a knock costs
# this whole wait; a live host's kernel answers in milliseconds, even under load. Kept long enough for
# a congested management network: it is the second proof of "off", the one that catches a power
# controller mapped to the wrong machine. The benchmark's floors knock with the same value.
SSH_KNOCK_TIMEOUT_S = 1.0


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


@dataclass
class Probes:
    inventory: Inventory
    ssh: SshRunner
    power: Callable[[Host], PowerDriver | None]  # host -> its power driver or None

    # ---- hosts -------------------------------------------------------------------------------

    def ssh_answers(self, host: Host, timeout_s: float = SSH_KNOCK_TIMEOUT_S) -> bool:
        """SSH's port answers on the management address; never knocked on for a host that is never
        reached over SSH (``Host.never_ssh``: False)."""
        if host.never_ssh:
            return False
        return self.ssh.port_open(str(host.management_address), 22, timeout_s)

    def own_ports(self, host: Host, timeout_s: float = 1.0) -> dict[str, str]:
        """``address:port -> answers|closed``, all at once, for what a host outside SSH answers on: RDP,
        WinRM and SMB on a windows host's address(es); SSH, HTTPS and vpxa on an ESXi host's management
        address (TCP connects only: nothing is sent)."""
        if host.os is HostOs.WINDOWS:
            targets = [(str(a), p) for a in dict.fromkeys((host.address, host.management_address))
                       for p in WINDOWS_PORTS]
        else:
            targets = [(str(host.management_address), p) for p in ESXI_PORTS]
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            open_ = list(pool.map(lambda t: self.ssh.port_open(t[0], t[1], timeout_s), targets))
        return {f"{a}:{p}": "answers" if up else "closed" for (a, p), up in zip(targets, open_, strict=True)}

    def answers(self, host: Host, timeout_s: float = 1.0) -> bool:
        """The host's own probe answers: SSH, or one of ``own_ports`` for a host never reached over SSH."""
        if host.never_ssh:
            return "answers" in self.own_ports(host, timeout_s).values()
        return self.ssh_answers(host, timeout_s)

    def power_state(self, host: Host) -> str | None:
        driver = self.power(host)
        if driver is None:
            return None
        try:
            return str(driver.state(host.name))
        except DriverError as exc:
            return f"unknown ({exc.message})"

    def _power_evidence(self, host: Host) -> dict[str, Any]:
        """``{"power_driver": ...}``: which controller answered and what it last did (nothing for the
        lab's drivers, whose state says it all)."""
        driver = self.power(host)
        said = driver.evidence(host.name) if driver is not None else {}
        return {"power_driver": said} if said else {}

    def host_off(self, host: Host) -> Verification:
        """Off: the power driver says off and SSH is closed. Without a power driver, SSH closed is
        not enough (sshd may just have died): the management address must not answer ICMP either.

        The power driver is asked first: while it says the machine runs, the host is not off and
        SSH is not knocked on (every knock costs the machine an sshd fork while it shuts down)."""
        from orchestrator.drivers import icmp

        state = self.power_state(host)
        if host.never_ssh:
            return self._outside_off(host, state)
        if state is not None and state != "stopped":
            not_probed = "not probed (power on)" if state == "running" else "not probed (power not known off)"
            return Verification(False, "host-off", {"power": state, "ssh_port_22": not_probed,
                                                    **self._power_evidence(host)})
        ssh_up = self.ssh_answers(host)
        evidence: dict[str, Any] = {
            "ssh_port_22": "answers" if ssh_up else "closed",
            "power": state if state is not None else "no power driver",
            **self._power_evidence(host),
        }
        if state is None:
            alive = not ssh_up and icmp.echo(str(host.management_address))
            evidence["icmp"] = "answers" if alive else "silent"
            return Verification(not ssh_up and not alive, "host-off", evidence)
        return Verification(not ssh_up, "host-off", evidence)

    def _outside_off(self, host: Host, state: str | None) -> Verification:
        """A host never reached over SSH is off when its power controller says off and its ``own_ports``
        are silent."""
        return self._outside(host, state, "stopped")

    def windows_up(self, host: Host) -> Verification:
        """A windows host is up when its power controller says on and one of RDP, WinRM, SMB answers."""
        return self._outside(host, self.power_state(host), "running")

    def _outside(self, host: Host, state: str | None, want: str) -> Verification:
        """Judge a host never reached over SSH from outside: its controller must say ``want``
        (stopped / running), then its ``own_ports`` must be silent (off) or one must answer (up)."""
        check = "host-off" if want == "stopped" else "host-up"
        evidence: dict[str, Any] = {"power": state if state is not None else "no power driver",
                                    **self._power_evidence(host)}
        if state != want:
            evidence["ports"] = f"not probed (power not known {'off' if want == 'stopped' else 'on'})"
            return Verification(False, check, evidence)
        ports = self.own_ports(host)
        evidence["ports"] = ports
        answering = "answers" in ports.values()
        return Verification(answering if want == "running" else not answering, check, evidence)

    def wait_windows_up(self, host: Host, timeout_s: float) -> Verification:
        last: list[Verification] = []

        def check() -> bool:
            last[:] = [self.windows_up(host)]
            return last[0].passed

        driver = self.power(host)
        wait_until(check, timeout_s, driver.poll_interval_s if driver is not None else 0.5)
        return last[0]

    def wait_host_off(self, host: Host, timeout_s: float, *,
                      keep_waiting: Callable[[], bool] | None = None) -> Verification:
        """Off within ``timeout_s``; or, with ``keep_waiting``, for as long as it says so (asked at
        each poll: the caller's deadline may move while the host goes down)."""
        last: list[Verification] = []

        def check() -> bool:
            last[:] = [self.host_off(host)]
            return last[0].passed

        driver = self.power(host)  # asked at its own pace; SSH only once it says off
        interval = driver.poll_interval_s if driver is not None else 0.1
        if keep_waiting is None:
            wait_until(check, timeout_s, interval)
        else:
            while not check() and keep_waiting():
                time.sleep(interval)
        return last[0]

    def host_up(self, host: Host) -> Verification:
        """Up means: logged in over SSH with the pinned host key and ran a command."""
        try:
            result = self.ssh.run(host.name, "cat /proc/sys/kernel/random/boot_id", timeout_s=10)
        except DriverError as exc:
            return Verification(False, "host-up", {"ssh": exc.code, "detail": exc.message})
        return Verification(result.exit_status == 0, "host-up", {"boot_id": result.stdout.strip()})

    def wait_host_up(self, host: Host, timeout_s: float) -> Verification:
        last: list[Verification] = [Verification(False, "host-up", {"ssh": "not tried"})]

        def check() -> bool:
            if not self.ssh_answers(host, 0.5):
                last[:] = [Verification(False, "host-up", {"ssh_port_22": "closed"})]
                return False
            last[:] = [self.host_up(host)]
            return last[0].passed

        wait_until(check, timeout_s, 0.3)
        return last[0]

    # ---- reachability from inside ---------------------------------------------------------------

    def peer_reaches(self, link_name: str, address: str, *, expect: bool) -> bool:
        return self.peer_reach_map(link_name, [address], expect=expect)[address]

    def reach_map(self, from_host: str, addresses: Iterable[str], *, expect: bool,
                  expect_reach: Iterable[str] = ()) -> dict[str, bool]:
        """Ping several addresses at once from a host (over its management SSH): one command, the
        pings in parallel, so proving a cut costs one timeout, not one per target. ``expect`` tunes
        patience for all (``expect_reach`` for some): see ``_parallel_ping``."""
        targets = list(dict.fromkeys(addresses))
        if not targets:
            return {}
        patient = set(targets) if expect else set(expect_reach)
        result = self.ssh.run(from_host, _parallel_ping(targets, patient), timeout_s=15)
        return _parse_ping_lines(result.stdout, targets)

    def peer_reach_map(self, link_name: str, addresses: Iterable[str], *, expect: bool) -> dict[str, bool]:
        lab = self.inventory.lab
        if lab is None or link_name not in lab.peers:
            raise DriverError(f"link {link_name} has no lab peer to probe from", target=link_name)
        targets = list(dict.fromkeys(addresses))
        if not targets:
            return {}
        peer = lab.peers[link_name]
        cred = self.inventory.credentials[self._lab_credential()]
        result = self.ssh.run_at(str(peer.management_address), cred,
                                 _parallel_ping(targets, set(targets) if expect else set()), timeout_s=15)
        return _parse_ping_lines(result.stdout, targets)

    def _lab_credential(self) -> str:
        names = sorted({h.credentials for h in self.inventory.hosts.values()})
        return names[0]

    def running_hosts_in(self, segment: str, exclude: Iterable[str] = (), *, limit: int | None = None) -> list[Host]:
        """The segment's hosts whose SSH answers, in inventory order; with ``limit``, the first
        ``limit`` of them (the rest are not knocked on)."""
        skip = set(exclude)
        found: list[Host] = []
        for h in self.inventory.hosts_in_segment(segment):
            if limit is not None and len(found) >= limit:
                break
            if h.name not in skip and self.ssh_answers(h):
                found.append(h)
        return found

    def cross_gateway_targets(self, segment: str) -> list[str]:
        """Addresses beyond the segment's gateway: the gateway's legs in other segments first."""
        seg = self.inventory.segments[segment]
        same_gw = [s for s in self.inventory.segments.values()
                   if s.name != segment and s.gateway == seg.gateway and s.gateway_address is not None]
        others = [s for s in self.inventory.segments.values()
                  if s.name != segment and s.gateway != seg.gateway and s.gateway_address is not None
                  and s.name != self.inventory.management_segment]
        return [str(s.gateway_address) for s in sorted(same_gw, key=lambda s: s.name)] + \
               [str(s.gateway_address) for s in sorted(others, key=lambda s: s.name)]


# Proving a cut: an echo request every 0.2 s for 1 s, and not one answer. Proving reachability:
# the same until the first answer, for up to 3 s. Either way the first reply ends the ping.
CUT_DEADLINE_S = 1
REACH_DEADLINE_S = 3


def _parallel_ping(targets: list[str], patient: set[str]) -> str:
    """One shell line pinging every target at once; prints ``reach ADDRESS yes|no`` per target.
    Targets in ``patient`` are expected to answer (a longer deadline), the others not."""
    for t in targets:
        ipaddress.IPv4Address(t)  # only addresses reach the shell
    jobs = " ".join(
        f"(ping -n -q -c 1 -i 0.2 -w {REACH_DEADLINE_S if t in patient else CUT_DEADLINE_S} {shlex.quote(t)} "
        f">/dev/null 2>&1 && echo 'reach {t} yes' || echo 'reach {t} no') &"
        for t in targets
    )
    return f"{jobs} wait"


def _parse_ping_lines(stdout: str, targets: list[str]) -> dict[str, bool]:
    answers = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "reach":
            answers[parts[1]] = parts[2] == "yes"
    missing = [t for t in targets if t not in answers]
    if missing:
        raise DriverError(f"the reachability probe gave no answer for {', '.join(missing)}",
                          hint="check that ping (iputils-ping) is installed on the probing machine")
    return {t: answers[t] for t in targets}

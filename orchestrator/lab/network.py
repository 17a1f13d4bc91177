"""The lab's network in the root namespace: bridges, the management address, and the guards.

The root namespace sits on the management bridge only, never forwards from it, and holds a blackhole
route for every lab data range, so lab traffic cannot leave through the machine's own uplink.
Machines' management ports are *isolated* bridge ports: they talk to the root namespace, never to
each other, so management is never a path between data networks or from a peer into the hospital.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

from orchestrator.errors import LabError
from orchestrator.lab.topology import Bridge, Topology


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LabError(
            f"`ip {' '.join(args)}` failed: {result.stderr.strip()}",
            target="lab network",
            hint="the lab needs root and iproute2; run `orchestrator lab down` to clean up a partial lab",
        )
    return result


def _write_sysctl(path: str, value: str) -> None:
    try:
        Path(path).write_text(value)
    except OSError as exc:
        raise LabError(f"cannot set {path}: {exc.strerror}", target="lab network", hint="the lab needs root") from exc


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def ensure_bridge(bridge: Bridge) -> None:
    if not link_exists(bridge.name):
        run_ip("link", "add", bridge.name, "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
    _write_sysctl(f"/proc/sys/net/ipv6/conf/{bridge.name}/disable_ipv6", "1")
    # Never forward packets arriving on a lab bridge (IPv4 forwarding is per input interface).
    _write_sysctl(f"/proc/sys/net/ipv4/conf/{bridge.name}/forwarding", "0")
    run_ip("link", "set", bridge.name, "up")


def _routes_exact(net: ipaddress.IPv4Network) -> list[dict[str, object]]:
    out = run_ip("-j", "route", "show", "exact", str(net)).stdout.strip() or "[]"
    routes: list[dict[str, object]] = json.loads(out)
    return routes


def ensure_blackhole(net: ipaddress.IPv4Network) -> None:
    for route in _routes_exact(net):
        if route.get("type") != "blackhole":
            raise LabError(
                f"the root namespace already routes {net} ({route.get('dev', '?')}); the lab would shadow it",
                target="lab network",
                hint="choose lab ranges that this machine does not use",
            )
        return
    run_ip("route", "add", "blackhole", str(net))


INOTIFY_PER_MACHINE = 16  # a booted Debian container uses ~5 inotify instances; keep headroom


def raise_host_limits(machines: int) -> None:
    """Each container's systemd needs inotify instances; the kernel default (128) fits ~20 machines."""
    wanted = {
        "/proc/sys/fs/inotify/max_user_instances": max(1024, INOTIFY_PER_MACHINE * machines),
        "/proc/sys/fs/inotify/max_user_watches": max(65536, 2048 * machines),
    }
    for path, value in wanted.items():
        if int(Path(path).read_text()) < value:
            _write_sysctl(path, str(value))


def setup(topo: Topology) -> None:
    raise_host_limits(len(topo.machines))
    for bridge in topo.bridges:
        ensure_bridge(bridge)
    mgmt = topo.management_bridge
    run_ip("addr", "replace", str(topo.management_gateway), "dev", mgmt.name)
    for net in topo.data_ranges:
        ensure_blackhole(net)


GUARD_METRIC = 4242  # below every connected route's priority (metric 0): the lab's own routes win while they exist


def guard_range(net: ipaddress.IPv4Network) -> None:
    """A low-priority blackhole for a lab range: while the lab's bridges carry the range, their connected
    routes win; when they do not (a lab half built, failed or down), nothing for the range leaves through
    the default route. Idempotent."""
    for route in _routes_exact(net):
        if route.get("type") == "blackhole" and route.get("metric") == GUARD_METRIC:
            return
    run_ip("route", "add", "blackhole", str(net), "metric", str(GUARD_METRIC))


def unguard_range(net: ipaddress.IPv4Network) -> bool:
    """Remove :func:`guard_range`'s route. False when it is there and could not be removed."""
    for route in _routes_exact(net):
        if route.get("type") == "blackhole" and route.get("metric") == GUARD_METRIC:
            args = ("route", "del", "blackhole", str(net), "metric", str(GUARD_METRIC))
            return run_ip(*args, check=False).returncode == 0
    return True


def teardown(bridges: list[str], blackholes: list[str]) -> list[str]:
    """Remove the named bridges and blackhole routes. Returns what could not be removed."""
    left: list[str] = []
    for name in bridges:
        if link_exists(name) and run_ip("link", "del", name, check=False).returncode != 0:
            left.append(f"bridge {name}")
    for net in blackholes:
        for route in _routes_exact(ipaddress.IPv4Network(net)):
            if (
                route.get("type") == "blackhole"
                and run_ip("route", "del", "blackhole", net, check=False).returncode != 0
            ):
                left.append(f"route blackhole {net}")
    return left

"""ICMP echo from the controller: "is anything still alive at this management address?".

Used where a host has no power driver: a closed SSH port alone does not prove a host is off (sshd
may have died, or been stopped by an intruder), so silence on ICMP is required as well.
"""

from __future__ import annotations

import ipaddress
import subprocess

from orchestrator.errors import DriverError


def echo(address: str, timeout_s: float = 1.0, count: int = 2) -> bool:
    """True when the address answered at least one echo request."""
    ipaddress.IPv4Address(address)  # never hand anything but an address to ping
    try:
        result = subprocess.run(
            ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(max(1, round(timeout_s))), address],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s * count + 5, check=False,
        )
    except FileNotFoundError as exc:
        raise DriverError("ping is not installed", target=address, hint="apt-get install iputils-ping") from exc
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0

"""The collector: a POSIX shell script run on the host over SSH (it travels on stdin; the host needs
no Python and nothing is written on it), in parallel parts, and what it printed parsed once."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from orchestrator.drivers.ssh import CommandResult
from orchestrator.errors import IntegrityError
from orchestrator.integrity.parse import parse_collector_output
from orchestrator.integrity.snapshot import Snapshot
from orchestrator.model import Inventory

COLLECT_TIMEOUT_S = 900.0

# System paths hashed on every host, before the host's own ``integrity:`` paths.
SYSTEM_ROOTS: tuple[str, ...] = (
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/local/lib",
    "/etc",
)
# The roots hashed by their own collector part, in parallel with the rest (the bulk of the bytes).
_SEPARATE_ROOTS: tuple[str, ...] = ("/usr/lib",)


class CommandRunner(Protocol):
    """What the collector needs from a transport: SshDriver, or a local runner in tests."""

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult: ...


def collector_script() -> str:
    return resources.files("orchestrator").joinpath("templates/integrity/collect.sh").read_text()


def host_roots(inventory: Inventory, host: str) -> tuple[str, ...]:
    extra = inventory.hosts[host].integrity
    return tuple(dict.fromkeys((*SYSTEM_ROOTS, *extra)))


def collector_commands(roots: Iterable[str], *, verify_packages: bool = True) -> tuple[str, ...]:
    """The parts run in parallel: the big roots each on their own, the other roots, state, verify.

    Each is ``sh -s -- ARG...`` (the script comes on stdin), every argument quoted for the remote
    shell; a root is an absolute path (never read as an option by the script's find) without
    control characters, else IntegrityError."""
    roots = tuple(roots)
    for root in roots:
        if not root.startswith("/") or any(ord(c) < 32 or ord(c) == 127 for c in root):
            raise IntegrityError(f"integrity root {root!r} is not an absolute path without control characters",
                                 hint="fix the host's integrity: list (absolute paths only)")
    separate = [r for r in roots if r in _SEPARATE_ROOTS]
    rest = [r for r in roots if r not in _SEPARATE_ROOTS]
    parts = [["files", r] for r in separate]
    if rest:
        parts.append(["files", *rest])
    parts.append(["state"])
    if verify_packages:
        parts.append(["verify"])
    return tuple("sh -s -- " + " ".join(shlex.quote(a) for a in part) for part in parts)


@dataclass(frozen=True)
class Collected:
    snapshot: Snapshot
    meta: dict[str, str]
    stderr: str
    duration_s: float


def collect(
    runner: CommandRunner,
    host: str,
    roots: Iterable[str],
    timeout_s: float = COLLECT_TIMEOUT_S,
    *,
    verify_packages: bool = True,
) -> Collected:
    """Run the collector's parts on ``host`` in parallel and parse what they print."""
    script = collector_script()
    commands = collector_commands(roots, verify_packages=verify_packages)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        results = list(pool.map(lambda c: runner.run(host, c, timeout_s, stdin=script), commands))
    for result in results:
        if result.exit_status != 0:
            raise IntegrityError(
                f"the integrity collector failed (exit {result.exit_status}): "
                f"{result.stderr.strip()[:300] or 'no error output'}",
                target=host,
                hint="the host needs a POSIX sh, find and sha256sum; log in and run `sh -s` by hand",
            )
    text = "".join(r.stdout if r.stdout.endswith("\n") else r.stdout + "\n" for r in results)
    snapshot, meta = parse_collector_output(text, host=host)
    for required in ("meta", "files", "users"):
        if required not in snapshot.collected:
            raise IntegrityError(
                f"the integrity collector's output has no {required!r} section",
                target=host,
                hint="the connection may have dropped; run it again",
            )
    stderr = "".join(r.stderr for r in results)
    return Collected(snapshot, meta, stderr[:4000], time.monotonic() - started)

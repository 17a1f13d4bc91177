"""What the collector saw on a host, as a typed value: :class:`Snapshot`.

A snapshot is stored inside a signed baseline as plain JSON (:meth:`Snapshot.as_json`, the on-disk
format of ``orchestrator.baseline/v1``) and read back with :meth:`Snapshot.from_json`. A part the
collector did not report is ``None`` ("not collected"), never an empty value: an empty mapping means
"collected, and there is none".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

# Files under the roots that change on a healthy host by themselves (boot, DHCP, routine jobs).
# Everything else under the roots is compared. Keep this list short and explain every entry.
VOLATILE_FILES: frozenset[str] = frozenset(
    {
        "/etc/ld.so.cache",  # rebuilt by ldconfig on boot and package changes; derived from the libs
        "/etc/adjtime",  # the hardware clock's drift, rewritten by hwclock at shutdown
        "/etc/resolv.conf",  # written by DHCP / resolved / systemd-nspawn at boot
        "/etc/.pwd.lock",  # an empty lock file created by the shadow tools
        "/etc/.updated",  # systemd's ConditionNeedsUpdate stamp, touched on boot after an update
    }
)

# Sections whose exit status says whether they were read at all (one command each). A section that
# failed is "not collected": never compared as if it were empty (a timed-out `systemctl` would
# otherwise report every unit as removed, or hide a planted one). -> the snapshot fields built from it.
MUST_SUCCEED: dict[str, tuple[str, ...]] = {
    "packages": ("packages",),
    "users": ("users",),
    "groups": ("groups",),
    "unit_files": ("units", "timers"),
    "ports": ("ports",),
}

Lines = tuple[str, ...]


@dataclass(frozen=True)
class Snapshot:
    """One host's state. ``collected`` is every collector section seen, with its exit status."""

    collected: Mapping[str, int]
    files: Mapping[str, str] | None = None  # path -> "sha256:HEX" | "symlink:TARGET"
    missing_roots: Lines | None = None
    packages: Mapping[str, str] | None = None  # name -> version ("1.0 [rc]" when not installed)
    package_verify: Lines | None = None  # the host's own dpkg --verify lines
    users: Mapping[str, Mapping[str, str]] | None = None  # name -> uid, gid, gecos, home, shell
    groups: Mapping[str, Mapping[str, str]] | None = None  # name -> gid, members
    authorized_keys: Mapping[str, Lines] | None = None  # file -> its lines
    cron: Mapping[str, Lines] | None = None  # file -> its lines
    timers: Mapping[str, str] | None = None  # every timer unit -> its state
    units: Mapping[str, str] | None = None  # enabled units (timers apart)
    ports: Lines | None = None  # "tcp 0.0.0.0:22"
    suid: Mapping[str, str] | None = None  # path -> "sha256:HEX"

    def failed_sections(self) -> dict[str, int]:
        """The sections that were started but did not finish well, with their exit status."""
        return {name: int(self.collected[name]) for name in MUST_SUCCEED
                if name in self.collected and self.collected[name] != 0}

    def without(self, names: Iterable[str]) -> Snapshot:
        """This snapshot with the fields ``names`` not collected (what cannot be compared)."""
        gone: dict[str, Any] = dict.fromkeys(names)
        return replace(self, **gone)

    def as_json(self) -> dict[str, Any]:
        """The plain JSON form stored in a baseline: only the fields collected, lists for tuples."""
        out: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                out[field.name] = _plain(value)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """A snapshot from a baseline's ``snapshot`` (signed, so made by :meth:`as_json`); unknown
        keys are ignored, as they always were."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: _frozen(v) for k, v in data.items() if k in known}
        values.setdefault("collected", {})
        return cls(**values)


def failed_sections(snapshot: Snapshot) -> dict[str, int]:
    """The sections of ``snapshot`` that were started but did not finish well, with their exit status."""
    return snapshot.failed_sections()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _frozen(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value

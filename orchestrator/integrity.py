"""Integrity baselines: what a known-good host looked like, kept off the host, signed; and the diff.

``capture_baseline`` runs a POSIX shell collector on the host over SSH (the script travels on stdin;
the host needs no Python and nothing is written on it) and stores the parsed snapshot in the state
dir as ``baselines/HOST.json``, signed with HMAC-SHA256 under a key that never leaves the controller.
``check_host`` collects again and lists every difference by category and path. Nothing compared
against lives on the suspect host: the host's own dpkg md5sums are recorded (``package-verify``)
as one more view, never as the truth.

Files that legitimately change on every boot or on routine maintenance are excluded by name in
``VOLATILE_FILES`` below, and only those.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from orchestrator import storage
from orchestrator.config import Settings
from orchestrator.drivers.ssh import CommandResult
from orchestrator.errors import IntegrityError, OrchestratorError, UsageError
from orchestrator.model import Inventory

BASELINE_SCHEMA = "orchestrator.baseline/v1"
SIGNATURE_ALG = "hmac-sha256"
COLLECT_TIMEOUT_S = 900.0
MARK = "@@orchestrator:"

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

CATEGORIES: tuple[str, ...] = (
    "file-added",
    "file-removed",
    "file-changed",
    "package",
    "package-verify",
    "user",
    "group",
    "authorized_keys",
    "cron",
    "timer",
    "unit",
    "port",
    "suid",
    "collector",
)

# Collector section -> snapshot key and the category its differences are reported under.
_SECTION_CATEGORY: dict[str, str] = {
    "files": "file-changed",
    "links": "file-changed",
    "packages": "package",
    "package_verify": "package-verify",
    "users": "user",
    "groups": "group",
    "authorized_keys": "authorized_keys",
    "cron": "cron",
    "unit_files": "unit",
    "ports": "port",
    "ports_proc": "port",
    "suid": "suid",
}


# Sections whose exit status says whether they were read at all (one command each). A section that
# failed is "not collected": never compared as if it were empty (a timed-out `systemctl` would
# otherwise report every unit as removed, or hide a planted one). -> the snapshot keys built from it.
MUST_SUCCEED: dict[str, tuple[str, ...]] = {
    "packages": ("packages",),
    "users": ("users",),
    "groups": ("groups",),
    "unit_files": ("units", "timers"),
    "ports": ("ports",),
}


def failed_sections(snapshot: Mapping[str, Any]) -> dict[str, int]:
    """The sections of ``snapshot`` that were started but did not finish well, with their exit status."""
    collected = snapshot.get("collected", {})
    return {name: int(collected[name]) for name in MUST_SUCCEED if name in collected and collected[name] != 0}


class CommandRunner(Protocol):
    """What the collector needs from a transport: SshDriver, or a local runner in tests."""

    def run(self, host: str, command: str, timeout_s: float = 30.0, *, stdin: str | None = None) -> CommandResult: ...


@dataclass(frozen=True)
class Difference:
    category: str  # one of CATEGORIES
    path: str  # file path, package, user, group, unit, "proto address:port", ...
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"category": self.category, "path": self.path, "detail": self.detail}


@dataclass(frozen=True)
class IntegrityResult:
    host: str
    differences: tuple[Difference, ...]
    baseline_taken: str
    checked: str
    duration_s: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.differences

    def paths(self) -> tuple[str, ...]:
        return tuple(sorted({d.path for d in self.differences}))

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "clean": self.clean,
            "baseline_taken": self.baseline_taken,
            "checked": self.checked,
            "duration_s": round(self.duration_s, 3),
            "differences": [d.as_dict() for d in self.differences],
        }


# --------------------------------------------------------------------------------------------
# The collector and its output
# --------------------------------------------------------------------------------------------


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
    snapshot: dict[str, Any]
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
        if required not in snapshot["collected"]:
            raise IntegrityError(
                f"the integrity collector's output has no {required!r} section",
                target=host,
                hint="the connection may have dropped; run it again",
            )
    stderr = "".join(r.stderr for r in results)
    return Collected(snapshot, meta, stderr[:4000], time.monotonic() - started)


def _unescape_sha256sum(name: str) -> str:
    """Undo sha256sum's escaping of names with a backslash or a newline."""
    out, i = [], 0
    while i < len(name):
        ch = name[i]
        if ch == "\\" and i + 1 < len(name):
            nxt = name[i + 1]
            out.append({"n": "\n", "\\": "\\", "r": "\r"}.get(nxt, nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _parse_hash_line(line: str) -> tuple[str, str] | None:
    escaped = line.startswith("\\")
    if escaped:
        line = line[1:]
    if len(line) < 67 or line[64:66] not in ("  ", " *"):
        return None
    digest, name = line[:64], line[66:]
    return name if not escaped else _unescape_sha256sum(name), digest


def _file_blocks(lines: list[str]) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith(MARK + "file "):
            current = blocks.setdefault(line[len(MARK) + 5 :], [])
        elif line.startswith("|") and current is not None:
            current.append(line[1:])
    return blocks


def _split_sections(text: str, host: str) -> tuple[dict[str, list[str]], dict[str, int]]:
    sections: dict[str, list[str]] = {}
    status: dict[str, int] = {}
    current: str | None = None
    for line in text.split("\n"):
        if line.startswith(MARK + "begin "):
            current = line[len(MARK) + 6 :].strip()
            sections.setdefault(current, [])
        elif line.startswith(MARK + "end "):
            fields = line[len(MARK) + 4 :].split()
            name = fields[0] if fields else ""
            if name != current:
                raise IntegrityError(
                    f"collector output is malformed: end of section {name!r} inside {current!r}",
                    target=host,
                    hint="run the capture again; if it persists, the host's shell is not POSIX",
                )
            status[name] = int(fields[1]) if len(fields) > 1 and fields[1].lstrip("-").isdigit() else -1
            current = None
        elif current is not None:
            sections[current].append(line)
    unfinished = sorted(set(sections) - set(status))
    if unfinished:
        raise IntegrityError(
            f"collector output is incomplete: section(s) {', '.join(unfinished)} never ended",
            target=host,
            hint="the connection may have dropped or the host ran out of time; run it again",
        )
    return sections, status


def parse_collector_output(text: str, host: str = "host") -> tuple[dict[str, Any], dict[str, str]]:
    """Collector text -> (snapshot, meta). The snapshot is plain JSON data, compared by ``diff_snapshots``."""
    sections, status = _split_sections(text, host)
    snap: dict[str, Any] = {"collected": dict(sorted(status.items()))}
    meta: dict[str, str] = {}
    for line in sections.get("meta", []):
        key, _, value = line.partition("\t")
        if key:
            meta[key] = value

    if "files" in sections or "links" in sections:
        files: dict[str, str] = {}
        missing: list[str] = []
        for line in sections.get("files", []):
            if line.startswith(MARK + "missing "):
                missing.append(line[len(MARK) + 8 :])
                continue
            parsed = _parse_hash_line(line)
            if parsed:
                files[parsed[0]] = "sha256:" + parsed[1]
        for line in sections.get("links", []):
            path, sep, target = line.partition("\t")
            if sep:
                files[path] = "symlink:" + target
        snap["files"] = {p: v for p, v in sorted(files.items()) if p not in VOLATILE_FILES}
        snap["missing_roots"] = sorted(missing)

    if "packages" in sections:
        packages: dict[str, str] = {}
        for line in sections["packages"]:
            fields = line.split("\t")
            if len(fields) >= 2 and fields[0]:
                state = fields[2].strip() if len(fields) > 2 else "ii"
                packages[fields[0]] = fields[1] if state == "ii" else f"{fields[1]} [{state}]"
        snap["packages"] = dict(sorted(packages.items()))

    if "package_verify" in sections:
        snap["package_verify"] = sorted({ln for ln in sections["package_verify"] if ln.strip()})

    if "users" in sections:
        users: dict[str, dict[str, str]] = {}
        for lines in _file_blocks(sections["users"]).values():
            for line in lines:
                f = line.split(":")
                if len(f) >= 7 and f[0] and not f[0].startswith("#"):
                    users[f[0]] = {"uid": f[2], "gid": f[3], "gecos": f[4], "home": f[5], "shell": f[6]}
        snap["users"] = dict(sorted(users.items()))

    if "groups" in sections:
        groups: dict[str, dict[str, str]] = {}
        for lines in _file_blocks(sections["groups"]).values():
            for line in lines:
                f = line.split(":")
                if len(f) >= 4 and f[0] and not f[0].startswith("#"):
                    members = ",".join(sorted(m for m in f[3].split(",") if m))
                    groups[f[0]] = {"gid": f[2], "members": members}
        snap["groups"] = dict(sorted(groups.items()))

    for name in ("authorized_keys", "cron"):
        if name in sections:
            blocks = _file_blocks(sections[name])
            snap[name] = {p: lines for p, lines in sorted(blocks.items())}

    if "unit_files" in sections:
        unit_files: dict[str, str] = {}
        for line in sections["unit_files"]:
            f = line.split()
            if len(f) >= 2:
                unit_files[f[0]] = f[1]
        snap["timers"] = {u: st for u, st in sorted(unit_files.items()) if u.endswith(".timer")}
        snap["units"] = {  # enabled units; timers are compared above, in full
            u: st for u, st in sorted(unit_files.items()) if st == "enabled" and not u.endswith(".timer")
        }

    if "ports" in sections:
        ports = set()
        for line in sections["ports"]:
            f = line.split()
            if len(f) >= 5:
                ports.add(f"{f[0]} {f[4]}")
        snap["ports"] = sorted(ports)
    elif "ports_proc" in sections:
        snap["ports"] = _parse_proc_net(_file_blocks(sections["ports_proc"]))

    if "suid" in sections:
        suid: dict[str, str] = {}
        for line in sections["suid"]:
            parsed = _parse_hash_line(line)
            if parsed:
                suid[parsed[0]] = "sha256:" + parsed[1]
        snap["suid"] = dict(sorted(suid.items()))
    return snap, meta


def _proc_addr(hex_addr: str) -> str:
    host, _, port = hex_addr.partition(":")
    raw = binascii.unhexlify(host)
    if len(raw) == 4:
        addr = ".".join(str(b) for b in raw[::-1])
    else:  # IPv6: four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        addr = f"[{ipaddress.IPv6Address(words)}]"
    return f"{addr}:{int(port, 16)}"


def _parse_proc_net(blocks: Mapping[str, list[str]]) -> list[str]:
    """/proc/net/{tcp,udp}[6] -> "tcp 0.0.0.0:22"-style entries (listening TCP, bound UDP)."""
    ports = set()
    for path, lines in blocks.items():
        proto = "tcp" if "tcp" in path.rsplit("/", 1)[-1] else "udp"
        for line in lines[1:]:
            f = line.split()
            if len(f) < 4:
                continue
            if (proto == "tcp" and f[3] == "0A") or (proto == "udp" and f[3] == "07"):
                ports.add(f"{proto} {_proc_addr(f[1])}")
    return sorted(ports)


# --------------------------------------------------------------------------------------------
# Comparing two snapshots
# --------------------------------------------------------------------------------------------


def _short_value(value: str) -> str:
    if value.startswith("sha256:"):
        return "sha256 " + value[7:19]
    if value.startswith("symlink:"):
        return "symlink -> " + value[8:]
    return value


def _key_summary(line: str) -> str:
    """An authorized_keys line as "TYPE SHA256:fingerprint comment" (the key itself stays out)."""
    tokens = line.split()
    for i, token in enumerate(tokens[:-1]):
        if token.startswith(("ssh-", "ecdsa-", "sk-")):
            try:
                blob = base64.b64decode(tokens[i + 1], validate=True)
            except (binascii.Error, ValueError):
                break
            fp = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
            comment = " ".join(tokens[i + 2 :])
            options = " (with options)" if i > 0 else ""
            return f"{token} SHA256:{fp}{(' ' + comment) if comment else ''}{options}"
    return line[:80] + (" ..." if len(line) > 80 else "")


def _diff_mapping(
    category: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    describe: Callable[[Any], str] = str,
) -> list[Difference]:
    out: list[Difference] = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            out.append(Difference(category, key, f"removed (was {describe(old[key])})"))
        elif key not in old:
            out.append(Difference(category, key, f"added ({describe(new[key])})"))
        elif old[key] != new[key]:
            out.append(Difference(category, key, f"changed: {describe(old[key])} -> {describe(new[key])}"))
    return out


def _describe_fields(value: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in value.items())


def _diff_fields(category: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Difference]:
    out: list[Difference] = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            out.append(Difference(category, key, f"removed (was {_describe_fields(old[key])})"))
        elif key not in old:
            out.append(Difference(category, key, f"added ({_describe_fields(new[key])})"))
        elif old[key] != new[key]:
            changes = [
                f"{f} {old[key].get(f, '')!r} -> {new[key].get(f, '')!r}"
                for f in sorted(set(old[key]) | set(new[key]))
                if old[key].get(f) != new[key].get(f)
            ]
            out.append(Difference(category, key, "changed: " + ", ".join(changes)))
    return out


def _diff_files(old: Mapping[str, str], new: Mapping[str, str]) -> list[Difference]:
    out: list[Difference] = []
    for path in sorted(set(old) | set(new)):
        if path not in new:
            out.append(Difference("file-removed", path, f"removed (was {_short_value(old[path])})"))
        elif path not in old:
            out.append(Difference("file-added", path, f"added ({_short_value(new[path])})"))
        elif old[path] != new[path]:
            out.append(Difference("file-changed", path, f"{_short_value(old[path])} -> {_short_value(new[path])}"))
    return out


def _diff_contents(
    category: str,
    old: Mapping[str, list[str]],
    new: Mapping[str, list[str]],
    per_line: bool,
) -> list[Difference]:
    """Files compared line by line. ``per_line`` reports each added/removed line (authorized keys)."""
    out: list[Difference] = []
    render = _key_summary if per_line else (lambda s: s[:100])
    for path in sorted(set(old) | set(new)):
        before = [ln for ln in old.get(path, []) if ln.strip()]
        after = [ln for ln in new.get(path, []) if ln.strip()]
        if path not in new:
            out.append(Difference(category, path, f"file removed ({len(before)} line(s))"))
            continue
        added = [ln for ln in after if ln not in before]
        removed = [ln for ln in before if ln not in after]
        if path not in old:
            if per_line:
                out += [Difference(category, path, f"new file, key {render(ln)}") for ln in after] or [
                    Difference(category, path, "new file (empty)")
                ]
            else:
                first = f": {render(after[0])}" if after else ""
                out.append(Difference(category, path, f"new file ({len(after)} line(s)){first}"))
            continue
        if per_line:
            out += [Difference(category, path, f"added key {render(ln)}") for ln in added]
            out += [Difference(category, path, f"removed key {render(ln)}") for ln in removed]
        elif added or removed:
            parts = [f"+ {render(ln)}" for ln in added[:3]] + [f"- {render(ln)}" for ln in removed[:3]]
            more = len(added) + len(removed) - len(parts)
            tail = f" (and {more} more)" if more > 0 else ""
            out.append(Difference(category, path, "; ".join(parts) + tail))
        elif before != after:
            out.append(Difference(category, path, "lines reordered"))
    return out


def diff_snapshots(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[Difference, ...]:
    """Every difference between a baseline snapshot and a current one, ordered by category and path."""
    out: list[Difference] = []
    old_sections = set(old.get("collected", {}))
    new_sections = set(new.get("collected", {}))
    for section in sorted(old_sections - new_sections):
        category = _SECTION_CATEGORY.get(section, "collector")
        out.append(Difference(category, f"({section})", "collected in the baseline but not now"))
    # What could not be read on either side is not compared, and says so: the host is not proven clean.
    old_failed, new_failed = failed_sections(old), failed_sections(new)
    for section in sorted(set(old_failed) | set(new_failed)):
        when = (f"now (exit {new_failed[section]})" if section in new_failed
                else f"in the baseline (exit {old_failed[section]})")
        out.append(Difference("collector", f"({section})", f"not collected {when}: not compared, "
                                                            "so this part of the host is not proven clean"))
        old = {k: v for k, v in old.items() if k not in MUST_SUCCEED[section]}
        new = {k: v for k, v in new.items() if k not in MUST_SUCCEED[section]}

    if "files" in old and "files" in new:
        out += _diff_files(old["files"], new["files"])
    if "packages" in old and "packages" in new:
        out += _diff_mapping("package", old["packages"], new["packages"])
    if "package_verify" in old and "package_verify" in new:
        before, after = set(old["package_verify"]), set(new["package_verify"])
        out += [Difference("package-verify", _verify_path(ln), f"now reported: {ln}") for ln in sorted(after - before)]
        out += [
            Difference("package-verify", _verify_path(ln), f"no longer reported: {ln}") for ln in sorted(before - after)
        ]
    if "users" in old and "users" in new:
        out += _diff_fields("user", old["users"], new["users"])
    if "groups" in old and "groups" in new:
        out += _diff_fields("group", old["groups"], new["groups"])
    if "authorized_keys" in old and "authorized_keys" in new:
        out += _diff_contents("authorized_keys", old["authorized_keys"], new["authorized_keys"], per_line=True)
    if "cron" in old and "cron" in new:
        out += _diff_contents("cron", old["cron"], new["cron"], per_line=False)
    if "timers" in old and "timers" in new:
        out += _diff_mapping("timer", old["timers"], new["timers"])
    if "units" in old and "units" in new:
        out += _diff_mapping("unit", old["units"], new["units"])
    if "ports" in old and "ports" in new:
        before_p, after_p = set(old["ports"]), set(new["ports"])
        out += [Difference("port", p, "now listening") for p in sorted(after_p - before_p)]
        out += [Difference("port", p, "no longer listening") for p in sorted(before_p - after_p)]
    if "suid" in old and "suid" in new:
        out += _diff_mapping("suid", old["suid"], new["suid"], _short_value)
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return tuple(sorted(out, key=lambda d: (order.get(d.category, len(order)), d.path, d.detail)))


def _verify_path(line: str) -> str:
    """dpkg --verify lines are "??5??????   /path" or "??5?????? c /path"."""
    return line.split()[-1] if line.split() else line


def listening_ports(baseline: Mapping[str, Any]) -> tuple[str, ...]:
    """The baseline's listening sockets ("tcp 0.0.0.0:22", ...), for the health check."""
    return tuple(baseline.get("snapshot", {}).get("ports", ()))


def listening_tcp_ports(baseline: Mapping[str, Any]) -> tuple[int, ...]:
    ports = {int(p.rsplit(":", 1)[1]) for p in listening_ports(baseline) if p.startswith("tcp")}
    return tuple(sorted(ports))


# --------------------------------------------------------------------------------------------
# Signing and storage
# --------------------------------------------------------------------------------------------


def signing_key(settings: Settings, *, create: bool) -> bytes:
    """The controller's HMAC key (32 random bytes, mode 0600). Created on first capture (or run) only."""
    path = settings.signing_key_path
    try:
        key = storage.load_key(path, create=create)
    except OrchestratorError as exc:
        raise IntegrityError(f"the baseline signing key: {exc.message}", target=str(path), hint=exc.hint) from None
    if key is None:
        raise IntegrityError(
            f"the baseline signing key {path} does not exist, so no baseline can be trusted",
            target=str(path),
            hint="restore the key from the controller's backup; or, if the baselines are lost "
            "too, run `orchestrator baseline capture` on hosts known to be good",
        )
    return key


def _canonical(doc: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"orchestrator-baseline-key:" + key).hexdigest()[:16]


def sign_document(doc: dict[str, Any], key: bytes) -> dict[str, Any]:
    signature = hmac.new(key, _canonical(doc), hashlib.sha256).hexdigest()
    return {**doc, "signature": {"alg": SIGNATURE_ALG, "key_id": _key_id(key), "value": signature}}


def baseline_path(host: str, settings: Settings) -> Path:
    """The legacy single-file location (read only when a host has no versioned baseline yet)."""
    return settings.baselines_dir / f"{host}.json"


def baseline_dir(host: str, settings: Settings) -> Path:
    """Every baseline of ``host``, one file per capture, never overwritten: ``baselines/HOST/TAKEN.json``."""
    return settings.baselines_dir / host


def baseline_versions(host: str, settings: Settings) -> list[Path]:
    """The host's baseline files, newest first (the legacy ``HOST.json`` last)."""
    directory = baseline_dir(host, settings)
    versions = sorted(directory.glob("*.json"), reverse=True) if directory.is_dir() else []
    legacy = baseline_path(host, settings)
    return versions + ([legacy] if legacy.is_file() else [])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _store_version(host: str, settings: Settings, data: bytes) -> Path:
    """Write a new version, 0600, durably; an existing version is never replaced."""
    for _ in range(100):
        name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + ".json"
        path = baseline_dir(host, settings) / name
        try:
            storage.write_new(path, data)
        except FileExistsError:
            continue
        return path
    raise IntegrityError("could not name a new baseline version", target=host, hint="try again")


def _host_or_error(inventory: Inventory, host: str) -> None:
    if host not in inventory.hosts:
        raise IntegrityError(
            "no such host in the inventory",
            target=host,
            hint=f"check the name against {inventory.path}",
        )


def capture_baseline(ssh: CommandRunner, inventory: Inventory, host: str, settings: Settings) -> Path:
    """Collect ``host``'s state and store it, signed, as a new version ``baselines/HOST/TAKEN.json``
    (earlier versions are kept). Returns the path. Use :func:`capture_all` from a command: it takes
    the state lock, refuses suspect hosts and journals every capture."""
    _host_or_error(inventory, host)
    key = signing_key(settings, create=True)
    roots = host_roots(inventory, host)
    collected = collect(ssh, host, roots)
    if collected.meta.get("uid") != "0":
        raise IntegrityError(
            f"the collector ran as uid {collected.meta.get('uid', '?')}, not root: it cannot read every file",
            target=host,
            hint="give the host a credential that logs in as root",
        )
    failed = failed_sections(collected.snapshot)
    if failed:
        raise IntegrityError(
            "the collector could not read " + ", ".join(f"{n} (exit {rc})" for n, rc in sorted(failed.items()))
            + ": no baseline was written",
            target=host,
            hint="run the capture again once the host is idle (a busy host's systemctl can time out)",
        )
    doc: dict[str, Any] = {
        "schema": BASELINE_SCHEMA,
        "host": host,
        "address": str(inventory.hosts[host].management_address),
        "taken": _now(),
        "duration_s": round(collected.duration_s, 3),
        "collector_sha256": hashlib.sha256(collector_script().encode()).hexdigest(),
        "roots": list(roots),
        "excluded": sorted(VOLATILE_FILES),
        "meta": collected.meta,
        "collector_stderr": collected.stderr,
        "snapshot": collected.snapshot,
    }
    signed = sign_document(doc, key)
    return _store_version(host, settings, json.dumps(signed, sort_keys=True, indent=1).encode() + b"\n")


def load_baseline(host: str, settings: Settings) -> dict[str, Any]:
    """The host's newest baseline, after checking its signature. Missing, unreadable or forged:
    IntegrityError. A newest version that fails its check is refused loudly, never skipped for an
    older one: a forged file among the baselines is evidence of tampering, not noise."""
    versions = baseline_versions(host, settings)
    if not versions:
        raise IntegrityError(
            f"no baseline for this host in {baseline_dir(host, settings)}",
            target=host,
            hint="run `orchestrator baseline capture INVENTORY --host "
            f"{host}` while the host is known to be good; without a baseline it cannot be declared clean",
        )
    path = versions[0]
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise IntegrityError(
            f"baseline {path} cannot be read: {exc}",
            target=host,
            hint="restore it from backup or capture a new one from a known-good host",
        ) from None
    sig = doc.get("signature") if isinstance(doc, dict) else None
    if not isinstance(sig, dict) or sig.get("alg") != SIGNATURE_ALG or not isinstance(sig.get("value"), str):
        raise IntegrityError(
            f"baseline {path} carries no valid {SIGNATURE_ALG} signature",
            target=host,
            hint="do not trust it; capture a new baseline from a known-good host",
        )
    key = signing_key(settings, create=False)
    expected = hmac.new(key, _canonical(doc), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig["value"]):
        other_key = sig.get("key_id") != _key_id(key)
        why = "it was signed with another key" if other_key else "its content was changed after signing"
        raise IntegrityError(
            f"baseline {path} FAILS its signature check: {why}",
            target=host,
            hint="treat the baseline as tampered with; do not restore on it. Capture a new one only "
            "from a host known to be good (or use the right state dir and key)",
        )
    if doc.get("host") != host or doc.get("schema") != BASELINE_SCHEMA:
        raise IntegrityError(
            f"baseline {path} belongs to {doc.get('host')!r} ({doc.get('schema')}), not to this host",
            target=host,
            hint="capture a baseline for this host",
        )
    return dict(doc)


def check_host(ssh: CommandRunner, inventory: Inventory, host: str, settings: Settings) -> IntegrityResult:
    """Compare ``host`` now with its signed baseline; every difference, by category and path."""
    _host_or_error(inventory, host)
    baseline = load_baseline(host, settings)  # before touching the host: no baseline, no check
    roots = tuple(dict.fromkeys((*baseline.get("roots", ()), *host_roots(inventory, host))))
    collected = collect(ssh, host, roots)
    differences = diff_snapshots(baseline["snapshot"], collected.snapshot)
    return IntegrityResult(
        host=host,
        differences=differences,
        baseline_taken=str(baseline.get("taken", "")),
        checked=_now(),
        duration_s=collected.duration_s,
    )


def _in_parallel(fn: Callable[[str], Any], hosts: Iterable[str], forks: int) -> dict[str, Any]:
    hosts = list(dict.fromkeys(hosts))
    if not hosts:
        return {}

    def one(host: str) -> Any:
        try:
            return fn(host)
        except OrchestratorError as exc:  # per-host outcome: recorded, the others go on
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        return dict(zip(hosts, pool.map(one, hosts), strict=True))


class BaselineRefused(IntegrityError):  # noqa: N818 - a refusal by a safety interlock, not a bug
    """Re-baselining a host that a run found compromised, without ``--force --reason``."""

    code = "baseline-refused"
    exit_code = 3


CAPTURES_JOURNAL_ID = "baseline-captures"


def suspect_hosts(settings: Settings) -> dict[str, str]:
    """Hosts that a run quarantined or found differing from their baseline, and that nothing has
    cleared since (a later verified integrity check, or a forced capture), with why.

    Every run's journal counts, however old: a host quarantined months ago and never proven clean
    since is still suspect. A journal that cannot be read makes every host of its plan suspect.
    """
    from orchestrator.journal import read_journal

    events: list[tuple[str, int, str, str | None]] = []  # (ts, order, host, why or None when cleared)
    runs = sorted(p for p in settings.runs_dir.glob("*/journal.jsonl")) if settings.runs_dir.is_dir() else []
    paths = [*runs, settings.baseline_journal_path]
    for order, path in enumerate(paths):
        if not path.is_file():
            continue
        run = path.parent.name if path in runs else "baseline captures"
        try:
            records = read_journal(path)
        except OrchestratorError as exc:
            return {"*": f"the journal of {run} cannot be read ({exc.message}): nothing can be ruled out"}
        for r in records:
            ts, kind = str(r.get("ts", "")), r.get("type")
            if kind == "quarantine" and isinstance(r.get("host"), str):
                events.append((ts, order, r["host"], f"quarantined in run {run}: {r.get('reason', '')}"))
            elif kind == "integrity-finding" and isinstance(r.get("host"), str):
                events.append((ts, order, r["host"], f"differed from its baseline in run {run}"))
            elif kind == "step-finished" and r.get("action") == "check-integrity":
                host = r.get("target")
                if not isinstance(host, str):
                    continue
                if r.get("status") == "verified":
                    events.append((ts, order, host, None))
                elif r.get("status") == "failed":
                    events.append((ts, order, host, f"failed its integrity check in run {run}"))
            elif kind == "baseline-captured" and r.get("forced") and isinstance(r.get("host"), str):
                events.append((ts, order, r["host"], None))
    suspect: dict[str, str] = {}
    for _ts, _order, host, why in sorted(events, key=lambda e: (e[0], e[1])):
        if why is None:
            suspect.pop(host, None)
        else:
            suspect[host] = why
    return suspect


def _captures_journal(settings: Settings) -> Any:
    from orchestrator.journal import Journal, journal_key
    from orchestrator.runs import open_forwarder

    key = journal_key(settings.signing_key_path, create=True)
    path = settings.baseline_journal_path
    if path.exists() and path.stat().st_size == 0:
        path.unlink()  # a capture that failed before its first record left an empty file: nothing to keep
    if path.exists():
        return Journal.open_existing(path, key=key, forwarder=open_forwarder(settings))
    return Journal.create(path, CAPTURES_JOURNAL_ID, key=key, forwarder=open_forwarder(settings))


def capture_all(
    ssh: CommandRunner,
    inventory: Inventory,
    hosts: Iterable[str],
    settings: Settings,
    forks: int | None = None,
    *,
    force: bool = False,
    reason: str | None = None,
    operator: str = "",
) -> dict[str, Path | OrchestratorError]:
    """Capture every host in parallel (``forks`` at a time, default ``settings.forks``), under the
    state-dir lock, each as a new version, each capture journaled (``baselines/captures.jsonl``).

    A host that a run quarantined or found differing (:func:`suspect_hosts`) is refused
    (:class:`BaselineRefused`) unless ``force`` with a ``reason``: a capture after an incident would
    sign the compromised state. Each value is the baseline's path, or why that host was not captured.
    """
    from orchestrator.journal import current_operator
    from orchestrator.lock import RunLock

    if force and not (reason or "").strip():
        raise UsageError("--force needs --reason: say why this host's current state is trusted",
                         target="--force", hint="e.g. --reason 'rebuilt from the 2026-01-10 image, EDR scan clean'")
    hosts = list(dict.fromkeys(hosts))
    settings.syslog_target()  # a malformed collector address: exit 2 before anything
    storage.ensure_private_dir(settings.state_dir)
    signing_key(settings, create=True)  # once, before the threads
    with RunLock(settings.lock_path, command="baseline capture"):
        suspects = suspect_hosts(settings)
        journal = _captures_journal(settings)
        who = operator or current_operator()
        try:
            def one(host: str) -> Path:
                why = suspects.get(host) or suspects.get("*")
                if why and not force:
                    journal.emit("baseline-refused", host=host, operator=who, why=why)
                    raise BaselineRefused(
                        f"not re-baselined: {why}; a capture now could sign a compromised state",
                        target=host,
                        hint="prove it clean first (integrity check / restore), or, if it was rebuilt or "
                             "cleared, pass --force --reason TEXT (journaled with who and why)")
                path = capture_baseline(ssh, inventory, host, settings)
                journal.emit("baseline-captured", host=host, operator=who, file=str(path),
                             sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                             forced=bool(why) and force, reason=reason if force else None, suspect=why)
                return path

            return _in_parallel(one, hosts, forks or settings.forks)
        finally:
            journal.close()


def check_all(
    ssh: CommandRunner,
    inventory: Inventory,
    hosts: Iterable[str],
    settings: Settings,
    forks: int | None = None,
) -> dict[str, IntegrityResult | OrchestratorError]:
    """Check every host in parallel. Each value is the result, or why the host could not be checked
    (no baseline, a forged baseline, unreachable): such a host is not clean."""
    return _in_parallel(lambda h: check_host(ssh, inventory, h, settings), hosts, forks or settings.forks)

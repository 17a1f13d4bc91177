"""The collector's output -> a :class:`Snapshot`, one parser per section (``_PARSERS``).

The output is a run of sections, ``@@orchestrator:begin NAME`` ... ``@@orchestrator:end NAME RC``;
a file's content is printed as ``@@orchestrator:file PATH`` then its lines behind ``|`` (so content
can never forge a marker). Sha256sum lines are ``HEX  PATH`` (escaped with a leading backslash when
the name holds a newline or a backslash).
"""

from __future__ import annotations

import binascii
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import replace

from orchestrator.errors import IntegrityError
from orchestrator.integrity.snapshot import VOLATILE_FILES, Snapshot

MARK = "@@orchestrator:"

Sections = Mapping[str, list[str]]
Parser = Callable[[Sections, Snapshot], Snapshot]


def parse_collector_output(text: str, host: str = "host") -> tuple[Snapshot, dict[str, str]]:
    """Collector text -> (snapshot, meta). The snapshot is compared by ``diff_snapshots``."""
    sections, status = _split_sections(text, host)
    snap = Snapshot(collected=dict(sorted(status.items())))
    for triggers, parse in _PARSERS:
        if any(name in sections for name in triggers):
            snap = parse(sections, snap)
    return snap, _meta(sections.get("meta", []))


def _split_sections(text: str, host: str) -> tuple[dict[str, list[str]], dict[str, int]]:
    sections: dict[str, list[str]] = {}
    status: dict[str, int] = {}
    current: str | None = None
    for line in text.split("\n"):
        if line.startswith(MARK + "begin "):
            current = line[len(MARK) + 6 :].strip()
            sections.setdefault(current, [])
        elif line.startswith(MARK + "end "):
            name, rc = _end_marker(line, current, host)
            status[name] = rc
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


def _end_marker(line: str, current: str | None, host: str) -> tuple[str, int]:
    """``@@orchestrator:end NAME RC`` -> (NAME, RC); -1 when RC is not a number."""
    fields = line[len(MARK) + 4 :].split()
    name = fields[0] if fields else ""
    if name != current:
        raise IntegrityError(
            f"collector output is malformed: end of section {name!r} inside {current!r}",
            target=host,
            hint="run the capture again; if it persists, the host's shell is not POSIX",
        )
    return name, int(fields[1]) if len(fields) > 1 and fields[1].lstrip("-").isdigit() else -1


def _meta(lines: list[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition("\t")
        if key:
            meta[key] = value
    return meta


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


def _hashes(lines: list[str]) -> dict[str, str]:
    """sha256sum lines -> path -> "sha256:HEX" (other lines ignored)."""
    out: dict[str, str] = {}
    for line in lines:
        parsed = _parse_hash_line(line)
        if parsed:
            out[parsed[0]] = "sha256:" + parsed[1]
    return out


def _file_blocks(lines: list[str]) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith(MARK + "file "):
            current = blocks.setdefault(line[len(MARK) + 5 :], [])
        elif line.startswith("|") and current is not None:
            current.append(line[1:])
    return blocks


def _colon_records(lines: list[str], min_fields: int) -> list[list[str]]:
    """The records of files like /etc/passwd: named, not comments, at least ``min_fields`` fields."""
    records = []
    for block in _file_blocks(lines).values():
        for line in block:
            f = line.split(":")
            if len(f) >= min_fields and f[0] and not f[0].startswith("#"):
                records.append(f)
    return records


# --------------------------------------------------------------------------------------------
# one parser per section
# --------------------------------------------------------------------------------------------


def _files(sections: Sections, snap: Snapshot) -> Snapshot:
    missing = [ln[len(MARK) + 8 :] for ln in sections.get("files", []) if ln.startswith(MARK + "missing ")]
    files = _hashes([ln for ln in sections.get("files", []) if not ln.startswith(MARK + "missing ")])
    for line in sections.get("links", []):
        path, sep, target = line.partition("\t")
        if sep:
            files[path] = "symlink:" + target
    kept = {p: v for p, v in sorted(files.items()) if p not in VOLATILE_FILES}
    return replace(snap, files=kept, missing_roots=tuple(sorted(missing)))


def _packages(sections: Sections, snap: Snapshot) -> Snapshot:
    packages: dict[str, str] = {}
    for line in sections["packages"]:
        fields = line.split("\t")
        if len(fields) >= 2 and fields[0]:
            state = fields[2].strip() if len(fields) > 2 else "ii"
            packages[fields[0]] = fields[1] if state == "ii" else f"{fields[1]} [{state}]"
    return replace(snap, packages=dict(sorted(packages.items())))


def _package_verify(sections: Sections, snap: Snapshot) -> Snapshot:
    return replace(snap, package_verify=tuple(sorted({ln for ln in sections["package_verify"] if ln.strip()})))


def _users(sections: Sections, snap: Snapshot) -> Snapshot:
    users = {f[0]: {"uid": f[2], "gid": f[3], "gecos": f[4], "home": f[5], "shell": f[6]}
             for f in _colon_records(sections["users"], 7)}
    return replace(snap, users=dict(sorted(users.items())))


def _groups(sections: Sections, snap: Snapshot) -> Snapshot:
    groups = {f[0]: {"gid": f[2], "members": ",".join(sorted(m for m in f[3].split(",") if m))}
              for f in _colon_records(sections["groups"], 4)}
    return replace(snap, groups=dict(sorted(groups.items())))


def _authorized_keys(sections: Sections, snap: Snapshot) -> Snapshot:
    return replace(snap, authorized_keys=_file_contents(sections["authorized_keys"]))


def _cron(sections: Sections, snap: Snapshot) -> Snapshot:
    return replace(snap, cron=_file_contents(sections["cron"]))


def _file_contents(lines: list[str]) -> dict[str, tuple[str, ...]]:
    return {p: tuple(block) for p, block in sorted(_file_blocks(lines).items())}


def _unit_files(sections: Sections, snap: Snapshot) -> Snapshot:
    unit_files: dict[str, str] = {}
    for line in sections["unit_files"]:
        f = line.split()
        if len(f) >= 2:
            unit_files[f[0]] = f[1]
    timers = {u: st for u, st in sorted(unit_files.items()) if u.endswith(".timer")}
    # enabled units; timers are compared in full, above
    units = {u: st for u, st in sorted(unit_files.items()) if st == "enabled" and not u.endswith(".timer")}
    return replace(snap, timers=timers, units=units)


def _ports(sections: Sections, snap: Snapshot) -> Snapshot:
    """``ss -H -ltun`` lines; without ss, /proc/net/{tcp,udp}[6] (``ports_proc``)."""
    if "ports" not in sections:
        return replace(snap, ports=_parse_proc_net(_file_blocks(sections["ports_proc"])))
    ports = {f"{f[0]} {f[4]}" for f in (line.split() for line in sections["ports"]) if len(f) >= 5}
    return replace(snap, ports=tuple(sorted(ports)))


def _suid(sections: Sections, snap: Snapshot) -> Snapshot:
    return replace(snap, suid=dict(sorted(_hashes(sections["suid"]).items())))


# Which sections (any of them present) -> the parser that fills their part of the snapshot.
_PARSERS: tuple[tuple[tuple[str, ...], Parser], ...] = (
    (("files", "links"), _files),
    (("packages",), _packages),
    (("package_verify",), _package_verify),
    (("users",), _users),
    (("groups",), _groups),
    (("authorized_keys",), _authorized_keys),
    (("cron",), _cron),
    (("unit_files",), _unit_files),
    (("ports", "ports_proc"), _ports),
    (("suid",), _suid),
)


def _proc_addr(hex_addr: str) -> str:
    host, _, port = hex_addr.partition(":")
    raw = binascii.unhexlify(host)
    if len(raw) == 4:
        addr = ".".join(str(b) for b in raw[::-1])
    else:  # IPv6: four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        addr = f"[{ipaddress.IPv6Address(words)}]"
    return f"{addr}:{int(port, 16)}"


def _parse_proc_net(blocks: Mapping[str, list[str]]) -> tuple[str, ...]:
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
    return tuple(sorted(ports))

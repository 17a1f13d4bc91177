"""Comparing two snapshots: every difference by category and path, one comparer per snapshot field
(``_COMPARERS``). The texts of the differences are what the journal, the report and
``integrity check`` show: keep them stable."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from orchestrator.integrity.snapshot import MUST_SUCCEED, Snapshot

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

# Collector section -> the category its differences are reported under.
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
    collections: int = 1  # more than one when a part could not be read at first (collected again)

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
            "collections": self.collections,
            "differences": [d.as_dict() for d in self.differences],
        }


def diff_snapshots(old: Snapshot, new: Snapshot) -> tuple[Difference, ...]:
    """Every difference between a baseline snapshot and a current one, ordered by category and path."""
    out = _sections_gone(old, new)
    # What could not be read on either side is not compared, and says so: the host is not proven clean.
    old_failed, new_failed = old.failed_sections(), new.failed_sections()
    for section in sorted(set(old_failed) | set(new_failed)):
        when = (f"now (exit {new_failed[section]})" if section in new_failed
                else f"in the baseline (exit {old_failed[section]})")
        out.append(Difference("collector", f"({section})", f"not collected {when}: not compared, "
                                                            "so this part of the host is not proven clean"))
        old, new = old.without(MUST_SUCCEED[section]), new.without(MUST_SUCCEED[section])
    for name, compare in _COMPARERS:
        before, after = getattr(old, name), getattr(new, name)
        if before is not None and after is not None:
            out += compare(before, after)
    return ordered(out)


def ordered(differences: Iterable[Difference]) -> tuple[Difference, ...]:
    """Differences by category (in CATEGORIES order), then path and detail."""
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return tuple(sorted(differences, key=lambda d: (order.get(d.category, len(order)), d.path, d.detail)))


def _sections_gone(old: Snapshot, new: Snapshot) -> list[Difference]:
    return [
        Difference(_SECTION_CATEGORY.get(section, "collector"), f"({section})", "collected in the baseline but not now")
        for section in sorted(set(old.collected) - set(new.collected))
    ]


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
    changed: Callable[[Any, Any], str] | None = None,
) -> list[Difference]:
    """Keyed values: each key removed, added or changed. ``changed`` words a change (default: both
    values, described)."""
    out: list[Difference] = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            out.append(Difference(category, key, f"removed (was {describe(old[key])})"))
        elif key not in old:
            out.append(Difference(category, key, f"added ({describe(new[key])})"))
        elif old[key] != new[key]:
            detail = changed(old[key], new[key]) if changed else f"{describe(old[key])} -> {describe(new[key])}"
            out.append(Difference(category, key, "changed: " + detail))
    return out


def _describe_fields(value: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in value.items())


def _changed_fields(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """A user's or group's fields that changed: ``uid '1000' -> '0', ...``."""
    return ", ".join(f"{f} {old.get(f, '')!r} -> {new.get(f, '')!r}"
                     for f in sorted(set(old) | set(new)) if old.get(f) != new.get(f))


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
    old: Mapping[str, Sequence[str]],
    new: Mapping[str, Sequence[str]],
    per_line: bool,
) -> list[Difference]:
    """Files compared line by line. ``per_line`` reports each added/removed line (authorized keys)."""
    out: list[Difference] = []
    for path in sorted(set(old) | set(new)):
        before = [ln for ln in old.get(path, []) if ln.strip()]
        after = [ln for ln in new.get(path, []) if ln.strip()]
        if path not in new:
            out.append(Difference(category, path, f"file removed ({len(before)} line(s))"))
        elif path not in old:
            out += _new_file(category, path, after, per_line)
        elif per_line:
            out += [Difference(category, path, f"added key {_key_summary(ln)}") for ln in after if ln not in before]
            out += [Difference(category, path, f"removed key {_key_summary(ln)}") for ln in before if ln not in after]
        else:
            out += _changed_lines(category, path, before, after)
    return out


def _line(text: str) -> str:
    return text[:100]


def _new_file(category: str, path: str, after: list[str], per_line: bool) -> list[Difference]:
    if per_line:
        return [Difference(category, path, f"new file, key {_key_summary(ln)}") for ln in after] or [
            Difference(category, path, "new file (empty)")
        ]
    first = f": {_line(after[0])}" if after else ""
    return [Difference(category, path, f"new file ({len(after)} line(s)){first}")]


def _changed_lines(category: str, path: str, before: list[str], after: list[str]) -> list[Difference]:
    """A file (crontab) whose lines changed: the first three added and removed, and how many more."""
    added = [ln for ln in after if ln not in before]
    removed = [ln for ln in before if ln not in after]
    if added or removed:
        parts = [f"+ {_line(ln)}" for ln in added[:3]] + [f"- {_line(ln)}" for ln in removed[:3]]
        more = len(added) + len(removed) - len(parts)
        tail = f" (and {more} more)" if more > 0 else ""
        return [Difference(category, path, "; ".join(parts) + tail)]
    if before != after:
        return [Difference(category, path, "lines reordered")]
    return []


def _verify_path(line: str) -> str:
    """dpkg --verify lines are "??5??????   /path" or "??5?????? c /path"."""
    return line.split()[-1] if line.split() else line


def _diff_verify(old: Sequence[str], new: Sequence[str]) -> list[Difference]:
    before, after = set(old), set(new)
    return [Difference("package-verify", _verify_path(ln), f"now reported: {ln}") for ln in sorted(after - before)] + [
        Difference("package-verify", _verify_path(ln), f"no longer reported: {ln}") for ln in sorted(before - after)
    ]


def _diff_ports(old: Sequence[str], new: Sequence[str]) -> list[Difference]:
    before, after = set(old), set(new)
    return [Difference("port", p, "now listening") for p in sorted(after - before)] + [
        Difference("port", p, "no longer listening") for p in sorted(before - after)
    ]


# Snapshot field -> how a baseline's and a current value of it are compared (both collected).
_COMPARERS: tuple[tuple[str, Callable[[Any, Any], list[Difference]]], ...] = (
    ("files", _diff_files),
    ("packages", partial(_diff_mapping, "package")),
    ("package_verify", _diff_verify),
    ("users", partial(_diff_mapping, "user", describe=_describe_fields, changed=_changed_fields)),
    ("groups", partial(_diff_mapping, "group", describe=_describe_fields, changed=_changed_fields)),
    ("authorized_keys", partial(_diff_contents, "authorized_keys", per_line=True)),
    ("cron", partial(_diff_contents, "cron", per_line=False)),
    ("timers", partial(_diff_mapping, "timer")),
    ("units", partial(_diff_mapping, "unit")),
    ("ports", _diff_ports),
    ("suid", partial(_diff_mapping, "suid", describe=_short_value)),
)

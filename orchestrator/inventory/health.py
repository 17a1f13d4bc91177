"""Health suites named by the inventory: ``health_suites: {ROLE: [FILE, ...]}`` and a host's own
``health: [FILE, ...]``. Each file is a pytest-testinfra module that the controller runs against the
host (``orchestrator.health.suites``): Python code executed here, so only a ``.py`` file that exists
is accepted, named by an absolute path or by a path inside the inventory's own directory (a relative
path never climbs out of it with ``..``). Paths are resolved once, against the inventory's
directory (the original's, for a run's copy), as credential paths are.

A host runs its role's suites first, then its own, each file once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.inventory.problems import KeyPath, Problems

# What a suite path may not hold: control characters (one line in every report), "::" (pytest would
# read a node id), and a leading "-" (an option to pytest).
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_FIX_PATH = ("write a .py file's path relative to the inventory's directory (e.g. health/test_emr.py), "
             "or an absolute path")


def resolve_suite(path: str, base_dir: Path) -> str:
    """A suite's file as the runner reads it: absolute, normalised (a relative path from ``base_dir``)."""
    return os.path.normpath(path if os.path.isabs(path) else base_dir / path)


def suite_label(path: str, base_dir: str) -> str:
    """How reports name a suite: its path relative to the inventory's directory when it lies under it,
    else its absolute path."""
    if base_dir:
        rel = os.path.relpath(path, base_dir)
        if not rel.startswith(".."):
            return rel
    return path


def host_suites(data: Mapping[str, Any], host: Mapping[str, Any], base_dir: Path) -> tuple[str, ...]:
    """The resolved suites of ``host`` (its role's, then its own, each once), from checked data."""
    by_role = data.get("health_suites") or {}
    named = [*(by_role.get(str(host.get("role", ""))) or ()), *(host.get("health") or ())]
    return tuple(dict.fromkeys(resolve_suite(str(p), base_dir) for p in named))


def check_health_suites(data: Mapping[str, Any], problems: Problems, base_dir: Path) -> None:
    """Every suite path names an existing .py file; every role of ``health_suites:`` has a host."""
    by_role = data.get("health_suites")
    roles = {str(h.get("role", "")) for h in (data.get("hosts") or {}).values() if isinstance(h, Mapping)}
    if isinstance(by_role, Mapping):
        for role, paths in by_role.items():
            if role not in roles:
                problems.add(("health_suites", role), f"no host has role '{role}': these suites never run",
                             "correct the role's spelling, or remove the entry", severity="warning")
            _check_paths(paths, ("health_suites", role), problems, base_dir)
    for name, host in (data.get("hosts") or {}).items():
        if isinstance(host, Mapping):
            _check_paths(host.get("health"), ("hosts", name, "health"), problems, base_dir)


def _check_paths(paths: Any, base: KeyPath, problems: Problems, base_dir: Path) -> None:
    if not isinstance(paths, list):
        return  # the schema check said so
    for i, path in enumerate(paths):
        if isinstance(path, str):
            found = _path_problem(path, base_dir)
            if found is not None:
                problems.add((*base, i), *found)


def _path_problem(path: str, base_dir: Path) -> tuple[str, str] | None:
    """Why a suite path is refused (message, hint), or None."""
    if not path.endswith(".py"):
        return None  # the schema check said so
    if _BAD_CHARS.search(path) or "::" in path or path.startswith("-"):
        return (f"{path!r} is not a plain file path (control characters, '::' or a leading '-')", _FIX_PATH)
    if not os.path.isabs(path):
        inside = os.path.normpath(base_dir / path)
        if os.path.commonpath([inside, str(base_dir)]) != str(base_dir):
            return (f"{path!r} leaves the inventory's directory ({base_dir})",
                    "keep suites under the inventory's directory, or name them by an absolute path")
    resolved = Path(resolve_suite(path, base_dir))
    if not resolved.is_file():
        what = "is not a file" if resolved.exists() else "does not exist"
        return (f"suite {resolved} {what}",
                f"create it (def test_x(host): ...), or correct the path; {_FIX_PATH}")
    return None

"""YAML inventory -> typed Inventory, validated once, at the edge.

Every problem is collected (never just the first) with the file, the line, the key path, what is wrong
and how to fix it. Duplicate keys are errors: a YAML loader would silently keep the last one, a safety
tool must not. The file is untrusted input: whatever it says ends in the model or in problems with
their lines, never in an exception.

The steps, one module each:

- ``parse``: text -> plain data, with each key's line; refuses tags, dates, NaN, alias bombs and
  repeated keys (``Parsed``).
- ``schema``: the structure, against the JSON Schema that ships with the package
  (``orchestrator/schema/inventory.schema.json``, also printed by ``orchestrator inventory schema``).
- ``checks``: references, addresses, dependency cycles and tiers, kept hosts, the lab block, one
  function per section sharing one address book; then, on the model, each device's commands.
- ``build``: checked data -> ``orchestrator.model.Inventory`` (credential paths resolved, once,
  against the inventory's directory).
- ``health``: the health suites it names (files that exist, under its directory or absolute).
- ``problems``: key paths and the problem collector they all report to.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InventoryError, Problem
from orchestrator.gcutil import gc_paused
from orchestrator.inventory.build import build_inventory, resolve_credential_path
from orchestrator.inventory.checks import check_device_commands, check_semantics, find_cycles, ipv4
from orchestrator.inventory.health import check_health_suites
from orchestrator.inventory.parse import Parsed, parse_yaml, parse_yaml_fast, value_budget
from orchestrator.inventory.problems import KeyPath, Problems, format_path
from orchestrator.inventory.schema import check_schema, inventory_schema
from orchestrator.model import Inventory

__all__ = [
    "KeyPath",
    "ValidationResult",
    "find_cycles",
    "format_path",
    "inventory_schema",
    "ipv4",
    "load_inventory",
    "resolve_credential_path",
    "validate_file",
    "validate_text",
    "value_budget",
]


@dataclass(frozen=True)
class ValidationResult:
    inventory: Inventory
    warnings: tuple[Problem, ...]


def validate_text(text: str, file: str, *, strict: bool = False,
                  base_dir: str | Path | None = None) -> ValidationResult:
    """Validate inventory text. Raises InventoryError with every problem; returns the model and warnings.

    Relative credential paths are resolved against ``base_dir`` (default: the directory of ``file``)."""
    base = Path(os.path.abspath(base_dir if base_dir is not None else Path(file).parent))
    with gc_paused():
        return _validate_text(text, file, strict, base)


def _read(text: str, file: str) -> tuple[Parsed, Problems]:
    """The data of ``text`` and a problem collector holding what reading it found."""
    fast = parse_yaml_fast(text)
    if isinstance(fast, dict):
        # Lines are looked up only if something is wrong: then the text is parsed again, with marks.
        parsed = Parsed(fast, {}, [])
        problems = Problems(file, lambda: parse_yaml(text, file).lines)
    else:
        parsed = parse_yaml(text, file)
        problems = Problems(file, parsed.lines)
    for path, line, first in parsed.duplicates:
        problems.items.append(Problem(
            file, line, format_path(path),
            f"duplicate key '{path[-1]}' (first defined on line {first})",
            "remove or rename one of them: YAML would silently keep only the last one",
        ))
    for path, line, message, hint in parsed.values:
        problems.items.append(Problem(file, line, format_path(path), message, hint))
    problems.skip |= parsed.stand_ins
    return parsed, problems


def _validate_text(text: str, file: str, strict: bool, base_dir: Path) -> ValidationResult:
    parsed, problems = _read(text, file)
    if not isinstance(parsed.data, dict):
        problems.add((), "the top level must be a mapping of sections", "start from inventories/example-hospital.yml")
        raise InventoryError(problems.items)
    check_schema(parsed.data, problems)
    structurally_sound = not problems.errors
    try:
        check_semantics(parsed.data, problems, strict)
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
        # malformed structure already reported by the schema check; report what could be checked
        if structurally_sound:
            raise
    check_health_suites(parsed.data, problems, base_dir)
    if problems.errors:
        problems.items.sort(key=lambda p: (p.line or 0, p.key))
        raise InventoryError(problems.items)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    inventory = build_inventory(parsed.data, file, sha, base_dir)
    check_device_commands(inventory, problems, strict)
    problems.items.sort(key=lambda p: (p.line or 0, p.key))
    if problems.errors:
        raise InventoryError(problems.items)
    return ValidationResult(inventory, tuple(problems.items))


def validate_file(path: str | Path, *, strict: bool = False, base_dir: str | Path | None = None) -> ValidationResult:
    """Validate an inventory file. Relative ``key_file``/``known_hosts`` paths are resolved against
    ``base_dir``, by default the file's own directory (a run's copy of an inventory passes the
    directory of the original)."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InventoryError([Problem(file, None, "(file)", f"cannot read the inventory: {exc.strerror}",
                                      "check the path")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InventoryError([Problem(file, line, "(file)", "not UTF-8 text", "save the file as UTF-8")]) from None
    return validate_text(text, file, strict=strict, base_dir=base_dir)


def load_inventory(path: str | Path, *, strict: bool = False, base_dir: str | Path | None = None) -> Inventory:
    return validate_file(path, strict=strict, base_dir=base_dir).inventory

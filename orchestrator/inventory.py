"""YAML inventory -> typed Inventory, validated once, at the edge.

Every problem is collected (never just the first) with the file, the line, the key path, what is wrong
and how to fix it. Structure is checked against the JSON Schema that ships with the package
(``orchestrator/schema/inventory.schema.json``, also printed by ``orchestrator inventory schema``);
references, addresses, dependency cycles and tiers are checked here. Duplicate keys are errors:
a YAML loader would silently keep the last one, a safety tool must not.

The file is untrusted input: only plain data is accepted (text, whole numbers, finite decimals,
booleans, lists, mappings; no tags, dates, NaN or infinity), aliases may not expand it past a budget
(alias bombs), and whatever the file says ends in the model or in problems with their lines, never
in an exception. Values that reach hosts and devices are checked as they will be used: host ``vars``
never set Ansible connection variables, credential paths are plain paths (resolved here, once,
against the inventory's directory), services are systemd unit names, interfaces pass the device
renderer's own checks, and a power driver that cannot work is refused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

from orchestrator.errors import InventoryError, Problem
from orchestrator.gcutil import gc_paused
from orchestrator.model import (
    Campus,
    Credential,
    Device,
    Host,
    Inventory,
    Island,
    LabPeer,
    LabSettings,
    Link,
    LinkKind,
    Segment,
    Site,
)

KeyPath = tuple[str | int, ...]


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        text = part if isinstance(part, int) or part.isprintable() else repr(part)  # a key with "\n" stays one line
        out += f"[{text}]" if isinstance(part, int) else (f".{text}" if out else str(text))
    return out or "(top level)"


@cache
def inventory_schema() -> dict[str, Any]:
    text = resources.files("orchestrator").joinpath("schema/inventory.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


# --------------------------------------------------------------------------------------------
# YAML with line numbers and duplicate-key detection
# --------------------------------------------------------------------------------------------


@dataclass
class _Parsed:
    data: Any
    lines: dict[KeyPath, int]
    duplicates: list[tuple[KeyPath, int, int]]  # path, line of the repeat, line of the first
    values: list[tuple[KeyPath, int, str, str]] = field(default_factory=list)  # path, line, message, hint
    stand_ins: set[KeyPath] = field(default_factory=set)  # refused values, built as None


# The scalar tags a value may carry: plain text, whole numbers, finite decimals, booleans and null.
# Anything else (a date, binary, a set, an application tag such as Ansible's ``!vault``) is refused.
_STR_TAG = "tag:yaml.org,2002:str"
_SCALAR_TAGS = frozenset({_STR_TAG, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                          "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"})
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"

# Aliases can make a small file expand to billions of values (an "alias bomb"). A value reached
# through an alias counts again each time: past this many values in all the file is refused. Real
# inventories stay far below (a 5,000-host one has about 60 values per KiB of text).
_MIN_VALUE_BUDGET = 100_000


def value_budget(text: str) -> int:
    """How many values (counting every alias use again) a text of this size may expand to."""
    return _MIN_VALUE_BUDGET + 2 * len(text)


def _describe_tag(tag: str) -> str:
    return "!!" + tag.rpartition(":")[2] if tag.startswith("tag:yaml.org,2002:") else tag


def _scalar_problem(value: Any) -> tuple[str, str] | None:
    """Why a constructed scalar is not acceptable inventory data (message, hint), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return (f"{value!r} is not a finite number",
                "write a plain number (NaN and infinity are never valid here)")
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return None
    return (f"a YAML {type(value).__name__} value is not allowed here",
            "quote it to make it text, or write a plain number")


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, count: int = 1) -> bool:
        """Count values; False once past the limit."""
        self.used += count
        return self.used <= self.limit


class _AliasBombError(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Builder:
    """Turns a composed YAML node tree into plain data while recording each key's line.

    Never raises for what the file says: a value that cannot be constructed (a bad merge key, an
    unknown tag, ``!!int x``), a date or NaN is recorded in ``values`` with its line and built as
    None; an alias bomb raises ``_AliasBombError`` with the line where the budget ran out."""

    def __init__(self, budget: _Budget) -> None:
        self.lines: dict[KeyPath, int] = {}
        self.duplicates: list[tuple[KeyPath, int, int]] = []
        self.values: list[tuple[KeyPath, int, str, str]] = []
        self.stand_ins: set[KeyPath] = set()
        self._constructor = yaml.SafeLoader("")
        self._budget = budget
        self._open: set[int] = set()  # collection nodes being built (an alias to one is a loop)

    def _refuse(self, path: KeyPath, node: yaml.Node, message: str, hint: str, *, key: bool = False) -> None:
        """Record a refused value (built as None) or, with ``key``, a refused key (the entry is left out)."""
        self.values.append((path, node.start_mark.line + 1, message, hint))
        if not key:
            self.stand_ins.add(path)

    def _scalar(self, node: yaml.Node, path: KeyPath, *, key: bool = False) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self._refuse(path, node, f"tag {_describe_tag(node.tag)} is not allowed on a "
                         f"{'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}",
                         "remove the tag", key=key)
            return None
        if node.tag == _STR_TAG:
            return node.value
        if node.tag not in _SCALAR_TAGS:
            self._refuse(path, node, f"YAML tag {_describe_tag(node.tag)} is not allowed here",
                         "write plain text (quote it) or a plain number; the inventory holds no "
                         "encrypted values, dates or binary data", key=key)
            return None
        try:
            value = self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError, OverflowError):
            self._refuse(path, node, f"{node.value!r} is not a valid {_describe_tag(node.tag)} value",
                         "remove the tag, or write a value of that type", key=key)
            return None
        bad = _scalar_problem(value)
        if bad is not None:
            self._refuse(path, node, *bad, key=key)
            return None
        return value

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        if not self._budget.spend():
            raise _AliasBombError(node.start_mark.line + 1)
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            if id(node) in self._open:
                self._refuse(path, node, "an alias refers to the mapping that contains it",
                             "a value cannot contain itself: copy what you need instead")
                return None
            try:
                self._constructor.flatten_mapping(node)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or str(exc)
                self._refuse(path, node, f"invalid merge key '<<': {problem}",
                             "'<<:' takes an alias of a mapping (<<: *defaults) or a list of them")
                return None
            if not self._budget.spend(len(node.value)):
                raise _AliasBombError(node.start_mark.line + 1)
            self._open.add(id(node))
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    self._refuse(path, key_node, "a key must be plain text, not a list or a mapping",
                                 "write the key as a name", key=True)
                    continue
                key = self._scalar(key_node, path, key=True)
                if key is None and key_node.tag != "tag:yaml.org,2002:null":
                    continue  # refused (reported); the entry is left out
                skey = key if isinstance(key, str) else str(key)
                child: KeyPath = (*path, skey)
                if skey in out:
                    self.duplicates.append((child, line, self.lines.get(child, 0)))
                    continue
                self.lines[child] = line
                out[skey] = self.build(value_node, child)
            self._open.discard(id(node))
            return out
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            if id(node) in self._open:
                self._refuse(path, node, "an alias refers to the list that contains it",
                             "a value cannot contain itself: copy what you need instead")
                return None
            self._open.add(id(node))
            items = [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            self._open.discard(id(node))
            return items
        return self._scalar(node, path)


class _SlowPathError(Exception):
    """Something the fast path does not report (a repeated key, a refused value): use the builder."""


_CLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster


def _plain(node: yaml.Node, constructor: yaml.constructor.SafeConstructor, budget: _Budget) -> Any:
    """Plain data from a composed node, with no line map: what ``_Builder`` makes, keys made strings
    the same way. Strings (nearly every scalar here) are taken as they are; other plain scalars go
    through PyYAML's constructor. Anything ``_Builder`` would refuse or report (a repeated key, a
    tag, NaN, a bad merge, a loop, the value budget spent) raises ``_SlowPathError``."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR_TAG:
            return node.value
        if node.tag not in _SCALAR_TAGS:
            raise _SlowPathError(node.tag)
        value = constructor.construct_object(node, deep=True)
        if _scalar_problem(value) is not None:
            raise _SlowPathError("value")
        return value
    # Values are counted by the collection holding them (one call per list or mapping, not per value).
    if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
        if not budget.spend(len(node.value)):
            raise _SlowPathError("budget")
        return [_plain(item, constructor, budget) for item in node.value]
    if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
        constructor.flatten_mapping(node)
        if not budget.spend(2 * len(node.value)):
            raise _SlowPathError("budget")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG:
                key = key_node.value
            elif isinstance(key_node, yaml.ScalarNode) and key_node.tag in _SCALAR_TAGS:
                key = constructor.construct_object(key_node, deep=True)
                if _scalar_problem(key) is not None:
                    raise _SlowPathError("key")
            else:
                raise _SlowPathError("key")
            skey = key if isinstance(key, str) else str(key)
            if skey in out:
                raise _SlowPathError(skey)
            out[skey] = _plain(value_node, constructor, budget)
        return out
    raise _SlowPathError("tag")


def _parse_yaml_fast(text: str) -> Any | None:
    """The data of a well-formed file with nothing to report, or None (then use ``_parse_yaml``)."""
    try:
        root = yaml.compose(text, Loader=_CLoader)
        return None if root is None else _plain(root, yaml.SafeLoader(""), _Budget(value_budget(text)))
    except (yaml.YAMLError, _SlowPathError, RecursionError, ValueError, TypeError, KeyError, AttributeError,
            OverflowError):
        return None


def _char(character: int | str) -> str:
    code = character if isinstance(character, int) else ord(character[:1] or "\0")
    return f"U+{code:04X}"


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1


def _parse_yaml(text: str, file: str) -> _Parsed:
    try:
        root = yaml.compose(text, Loader=_CLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise InventoryError(
            [Problem(file, line, "(yaml)", f"not valid YAML: {exc.problem or exc.context}",
                     "check indentation and quoting around this line")]
        ) from None
    except yaml.reader.ReaderError as exc:
        raise InventoryError([Problem(file, _line_at(text, exc.position), "(yaml)",
                                      f"not valid YAML: character {_char(exc.character)} is not allowed",
                                      "remove the control character (only tabs and newlines may appear)")]
                             ) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise InventoryError([Problem(file, 1, "(yaml)", f"not valid YAML: {exc}", "check the syntax")]) from None
    if root is None:
        raise InventoryError([Problem(file, 1, "(top level)", "the file is empty",
                                      "start from inventories/example-hospital.yml")])
    budget = _Budget(value_budget(text))
    builder = _Builder(budget)
    try:
        data = builder.build(root, ())
    except _AliasBombError as bomb:
        raise InventoryError([Problem(
            file, bomb.line, "(yaml)",
            f"the file expands to more than {budget.limit:,} values through YAML aliases (an alias bomb?)",
            "write the values out, or use an alias only for small, repeated blocks")]) from None
    except RecursionError:
        raise InventoryError([Problem(file, 1, "(yaml)", "values are nested too deeply",
                                      "an inventory needs only a few levels of nesting")]) from None
    return _Parsed(data, builder.lines, builder.duplicates, builder.values, builder.stand_ins)


# --------------------------------------------------------------------------------------------
# Problem collection
# --------------------------------------------------------------------------------------------


class _Problems:
    """Problems found, each with its line. The line map is built only when a first problem needs it
    (``lines`` may be a function producing it): a clean file never pays for it."""

    def __init__(self, file: str, lines: Mapping[KeyPath, int] | Callable[[], Mapping[KeyPath, int]]) -> None:
        self.file = file
        self._lines = lines
        self.items: list[Problem] = []
        self.skip: set[KeyPath] = set()  # values already refused: no second complaint about them

    @property
    def lines(self) -> Mapping[KeyPath, int]:
        if callable(self._lines):
            self._lines = self._lines()
        return self._lines

    def line_of(self, path: KeyPath) -> int | None:
        lines = self.lines
        probe = path
        while probe:
            if probe in lines:
                return lines[probe]
            probe = probe[:-1]
        return lines.get((), None)

    def add(self, path: KeyPath, message: str, hint: str, severity: str = "error") -> None:
        if self.skip and any(path[:len(bad)] == bad for bad in self.skip):
            return  # that value was refused already; what else is said about its stand-in is noise
        self.items.append(Problem(self.file, self.line_of(path), format_path(path), message, hint, severity))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "error"]


def _schema_at(schema: Mapping[str, Any], path: Iterable[Any]) -> Mapping[str, Any]:
    node: Mapping[str, Any] = schema
    for part in path:
        if isinstance(node.get("properties"), dict) and part in node["properties"]:
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif isinstance(node.get("items"), dict):
            node = node["items"]
        else:
            return {}
    return node


# What each pattern of the schema means, said the way a person fixing the file needs it.
_PATTERN_HINTS: Mapping[str, str] = {
    "^[a-z0-9][a-z0-9-]*$": "names use lowercase letters, digits and '-', starting with a letter or digit",
    "^[A-Za-z_][A-Za-z0-9_]*$": "letters, digits and '_', not starting with a digit",
}


@cache
def _validator() -> Any:
    """The one schema validator (jsonschema-rs: ECMA-262 patterns as the JSON Schema spec says, so
    '$' never matches before a final newline; a 5,000-host inventory in a few milliseconds)."""
    return jsonschema_rs.validator_for(inventory_schema())


def _check_schema(data: Any, problems: _Problems) -> None:
    """Every structural problem, each with its key path."""
    validator = _validator()
    try:
        if validator.is_valid(data):
            return
        errors = list(validator.iter_errors(data))
    except ValueError as exc:  # a value JSON cannot hold; the YAML layer refuses those first
        problems.add((), f"the inventory holds a value that is not plain data ({exc})",
                     "write text, numbers, lists and mappings only")
        return
    schema = inventory_schema()
    for err in sorted(errors, key=lambda e: [str(p) for p in e.instance_path]):
        path: KeyPath = tuple(err.instance_path)
        kind = err.kind.name
        value = err.kind.value
        if kind == "additionalProperties" and isinstance(err.instance, dict):
            allowed = sorted(_schema_at(schema, path).get("properties", {}))
            for extra in sorted(str(x) for x in value):
                hint = f"remove it or correct its spelling; allowed keys here: {', '.join(allowed)}"
                if extra in ("password", "secret", "private_key", "token"):
                    hint = ("secrets never go in the inventory: reference them with password_env "
                            "(an environment variable) or key_file")
                problems.add((*path, extra), f"unknown key '{extra}'", hint)
        elif kind == "required":
            problems.add(path, f"missing required key '{value}'", f"add '{value}:' here")
        elif kind == "propertyNames":
            bad = getattr(value, "instance", value)
            pattern = _schema_at(schema, path).get("propertyNames", {}).get("pattern", "")
            problems.add((*path, str(bad)), f"name {bad!r} is not allowed",
                         _PATTERN_HINTS.get(pattern, f"names match {pattern}"))
        elif kind == "enum":
            allowed_values = ", ".join(str(v) for v in value)
            problems.add(path, f"{err.instance!r} is not one of the allowed values", f"use one of: {allowed_values}")
        elif kind == "const":
            problems.add(path, f"must be {value!r}, found {err.instance!r}", f"set it to {value!r}")
        elif kind == "type":
            wanted = " or ".join(str(v) for v in value) if isinstance(value, list) else str(value)
            problems.add(path, f"expected {wanted}, found {type(err.instance).__name__} {err.instance!r}",
                         f"write {'an' if wanted[:1] in 'aeiou' else 'a'} {wanted} here")
        elif kind == "pattern":
            node = _schema_at(schema, path)
            hint = _PATTERN_HINTS.get(str(value)) or node.get("description") or f"match {value}"
            problems.add(path, f"{err.instance!r} does not match the expected form", hint)
        elif kind == "uniqueItems":
            problems.add(path, "lists the same entry twice", "remove the repeated entry")
        else:
            node = _schema_at(schema, path)
            hint = node.get("description") or "see `orchestrator inventory schema` for the format"
            problems.add(path, err.message, hint)


# --------------------------------------------------------------------------------------------
# Cross-reference and semantic checks
# --------------------------------------------------------------------------------------------


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")


@functools.lru_cache(maxsize=65536)
def ipv4(text: str) -> ipaddress.IPv4Address:
    """``ipaddress.IPv4Address(text)``, 5x faster for plain dotted quads (the usual case) and
    remembered: every address is read twice (checks, then the model). Anything else, including
    what ipaddress refuses (leading zeros, out-of-range octets), goes to ipaddress itself."""
    if _DOTTED_QUAD.match(text):
        a, b, c, d = text.split(".")
        return ipaddress.IPv4Address((int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d))
    return ipaddress.IPv4Address(text)


def _address(value: Any, path: KeyPath, problems: _Problems) -> ipaddress.IPv4Address | None:
    try:
        return ipv4(str(value))
    except ValueError:
        problems.add(path, f"'{value}' is not an IPv4 address", "write four numbers 0-255, e.g. 10.10.2.10")
        return None


def _network(value: Any, path: KeyPath, problems: _Problems) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        hint = "write the network in CIDR form with host bits zero, e.g. 10.10.2.0/24"
        with contextlib.suppress(ValueError):
            hint = f"did you mean {ipaddress.IPv4Network(str(value), strict=False)}?"
        problems.add(path, f"'{value}' is not an IPv4 network ({exc})", hint)
        return None


def _ref(value: Any, kind: str, known: Mapping[str, Any], path: KeyPath, problems: _Problems) -> bool:
    if value is None or value in known:
        return True
    choices = ", ".join(k if k.isprintable() else repr(k) for k in sorted(known)) or "(none defined)"
    section = "campuses" if kind == "campus" else f"{kind}s"
    problems.add(path, f"unknown {kind} '{value}'", f"define it under '{section}:' or use one of: {choices}")
    return False


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node depending on itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    cycles.append(sorted(component))
    return sorted(cycles)


# Host ``vars:`` go to Ansible as host variables. How Ansible connects (ansible_host, ansible_port,
# ansible_user, ansible_ssh_common_args, ansible_host_key_checking, ansible_become*, the interpreters
# and shells it runs, ...) is an ``ansible_`` variable: the whole prefix is refused, since the
# orchestrator alone decides how a host is reached. So are Ansible's magic variables and the
# playbook keywords that choose a connection, and the variables the export itself owns.
_ANSIBLE_MAGIC_VARS = frozenset({
    "hostvars", "groups", "group_names", "inventory_hostname", "inventory_hostname_short", "inventory_dir",
    "inventory_file", "omit", "play_hosts", "playbook_dir", "role_name", "role_names", "role_path",
    "environment", "vars", "connection", "remote_user", "port", "become", "become_user", "become_method",
    "become_flags", "become_exe", "delegate_to", "gather_facts",
})
_EXPORT_VARS = frozenset({"services", "depends_on"})


def _var_key_problem(key: str) -> tuple[str, str] | None:
    """Why a host ``vars:`` key is refused (message, hint), or None."""
    low = key.lower()
    if low.startswith("ansible_"):
        return (f"'{key}' would change how Ansible connects to or runs on this host (every ansible_* "
                "variable is a connection, privilege or interpreter setting)",
                "remove it: the address comes from management_address, the login and host-key checking "
                "from the host's credentials")
    if low in _ANSIBLE_MAGIC_VARS:
        return (f"'{key}' is an Ansible magic variable or playbook keyword",
                "rename the variable")
    if low.startswith("orchestrator_") or low in _EXPORT_VARS:
        return (f"'{key}' is set by the orchestrator from the inventory itself",
                "remove it; use the host's own keys (services:, depends_on:, tier:, ...)")
    return None


# A credential path goes to paramiko, netmiko, OpenSSH (-i, -o UserKnownHostsFile=) and Ansible:
# what each of them reads the same way and nothing an option parser could split or expand.
_PATH_FORBIDDEN = re.compile(r"""[\s"'\\%$\x00-\x1f\x7f]""")


def _path_problem(value: str) -> tuple[str, str] | None:
    if not value:
        return "the path is empty", "write the file's path, or remove the key"
    if value.startswith("-"):
        return (f"{value!r} starts with '-', which SSH would read as an option",
                "write the file's path (relative paths are taken from the inventory's directory)")
    bad = _PATH_FORBIDDEN.search(value)
    if bad is not None:
        char = bad.group()
        what = "whitespace" if char.isspace() else f"{char!r}"
        return (f"{value!r} contains {what}, which SSH option parsing would split, quote or expand",
                "move the file to a path of letters, digits and / . _ - ~ only")
    if len(value) > 4096:
        return "the path is longer than 4096 characters", "use a shorter path"
    return None


# Power drivers that the schema names but that cannot power anything in this version.
_NO_WORKING_POWER_DRIVER: Mapping[str, str] = {
    "ipmi": "the ipmi power driver is not implemented yet: it refuses every request, so this host "
            "could never be forced off nor proven off by its power state",
}


def resolve_credential_path(path: str, base_dir: Path) -> str:
    """A credential's file as every client must read it: relative paths taken from ``base_dir``
    (the inventory's directory), once, here; ``~`` left for each client to expand as before."""
    if path.startswith("~") or os.path.isabs(path):
        return path
    return os.path.normpath(base_dir / path)


def _check_semantics(data: Mapping[str, Any], problems: _Problems, strict: bool) -> None:
    campuses = data.get("campuses") or {}
    segments = data.get("segments") or {}
    devices = data.get("devices") or {}
    links = data.get("links") or {}
    hosts = data.get("hosts") or {}
    islands = data.get("islands") or {}
    credentials = data.get("credentials") or {}

    mgmt_name = (data.get("management") or {}).get("segment")
    if mgmt_name is not None and mgmt_name not in segments:
        problems.add(("management", "segment"), f"management segment '{mgmt_name}' is not defined",
                     f"add it under 'segments:' or use one of: {', '.join(sorted(segments))}")

    subnets: dict[str, ipaddress.IPv4Network] = {}
    for name, seg in segments.items():
        base: KeyPath = ("segments", name)
        subnet = _network(seg.get("subnet"), (*base, "subnet"), problems) if "subnet" in seg else None
        if subnet is not None:
            subnets[name] = subnet
        _ref(seg.get("campus"), "campus", campuses, (*base, "campus"), problems)
        _ref(seg.get("gateway"), "device", devices, (*base, "gateway"), problems)
        if name != mgmt_name and seg.get("gateway") is None:
            problems.add(base, "segment has no gateway, so nothing can isolate it",
                         "add 'gateway: DEVICE' naming the router or firewall that routes it")
        if name == mgmt_name and seg.get("gateway") is not None:
            problems.add((*base, "gateway"), "the management segment is never isolated; a gateway here is unused",
                         "remove the gateway from the management segment", "warning")
        if "gateway_address" in seg:
            gw = _address(seg["gateway_address"], (*base, "gateway_address"), problems)
            if gw is not None and subnet is not None and gw not in subnet:
                problems.add((*base, "gateway_address"), f"{gw} is outside the segment's subnet {subnet}",
                             f"use an address inside {subnet}")
    names_seen = sorted(subnets.items(), key=lambda kv: kv[0])
    for i, (a_name, a_net) in enumerate(names_seen):
        for b_name, b_net in names_seen[i + 1:]:
            if a_net.overlaps(b_net):
                problems.add(("segments", b_name, "subnet"),
                             f"subnet {b_net} overlaps segment '{a_name}' ({a_net})",
                             "give every segment its own, non-overlapping subnet")
    mgmt_net = subnets.get(mgmt_name) if isinstance(mgmt_name, str) else None

    used_addresses: dict[ipaddress.IPv4Address, str] = {}

    def claim(addr: ipaddress.IPv4Address | None, owner: str, path: KeyPath) -> None:
        if addr is None:
            return
        if addr in used_addresses:
            problems.add(path, f"address {addr} is already used by {used_addresses[addr]}",
                         "give every host, device and peer its own address")
        else:
            used_addresses[addr] = owner

    for name, cred in credentials.items():
        if not cred.get("key_file") and not cred.get("password_env"):
            problems.add(("credentials", name), "credential has neither key_file nor password_env",
                         "add 'key_file: PATH' (preferred) or 'password_env: ENV_VAR_NAME'")
        for key in ("key_file", "known_hosts"):
            if isinstance(cred.get(key), str):
                bad_path = _path_problem(cred[key])
                if bad_path is not None:
                    problems.add(("credentials", name, key), *bad_path)

    for name, dev in devices.items():
        base = ("devices", name)
        _ref(dev.get("campus"), "campus", campuses, (*base, "campus"), problems)
        _ref(dev.get("credentials"), "credential", credentials, (*base, "credentials"), problems)
        if "address" in dev:
            addr = _address(dev["address"], (*base, "address"), problems)
            claim(addr, f"device {name}", (*base, "address"))

    for name, link in links.items():
        base = ("links", name)
        _ref(link.get("device"), "device", devices, (*base, "device"), problems)
        peer = _network(link.get("peer"), (*base, "peer"), problems) if "peer" in link else None
        if "peer_address" in link:
            paddr = _address(link["peer_address"], (*base, "peer_address"), problems)
            if paddr is not None and peer is not None and paddr not in peer:
                problems.add((*base, "peer_address"), f"{paddr} is outside the link's peer network {peer}",
                             f"use an address inside {peer}")

    for name, host in hosts.items():
        base = ("hosts", name)
        _ref(host.get("campus"), "campus", campuses, (*base, "campus"), problems)
        for key in host.get("vars") or {}:
            refused = _var_key_problem(str(key))
            if refused is not None:
                problems.add((*base, "vars", key), *refused)
        power = host.get("power")
        if isinstance(power, str) and power in _NO_WORKING_POWER_DRIVER:
            problems.add((*base, "power"), f"no working power driver for '{power}': "
                         f"{_NO_WORKING_POWER_DRIVER[power]}",
                         "write 'power: manual' (a person at the rack or the BMC console powers it) or "
                         "remove 'power:' (graceful stop only)")
        _ref(host.get("credentials"), "credential", credentials, (*base, "credentials"), problems)
        seg_name = host.get("segment")
        seg_ok = _ref(seg_name, "segment", segments, (*base, "segment"), problems)
        if seg_ok and seg_name is not None:
            seg = segments[seg_name]
            if host.get("campus") and seg.get("campus") and host["campus"] != seg["campus"]:
                problems.add((*base, "campus"),
                             f"host is on campus '{host['campus']}' but its segment '{seg_name}' is on "
                             f"'{seg['campus']}'", "make the host's campus match its segment's campus")
        addr = _address(host["address"], (*base, "address"), problems) if "address" in host else None
        if addr is not None and seg_name in subnets and addr not in subnets[seg_name]:
            problems.add((*base, "address"), f"{addr} is outside segment '{seg_name}' ({subnets[seg_name]})",
                         f"use an address inside {subnets[seg_name]} or move the host to the right segment")
        if "management_address" in host:
            maddr = _address(host["management_address"], (*base, "management_address"), problems)
            if maddr is not None and mgmt_net is not None and maddr not in mgmt_net:
                problems.add((*base, "management_address"),
                             f"{maddr} is outside the management segment ({mgmt_net})",
                             f"use an address inside {mgmt_net}")
            claim(maddr, f"host {name} (management)", (*base, "management_address"))
            claim(addr, f"host {name}", (*base, "address"))
        else:
            claim(addr, f"host {name}", (*base, "address"))
            if seg_name != mgmt_name:
                problems.add(base, "no management_address: once its segment is isolated the orchestrator "
                             "cannot reach this host to verify it", "add 'management_address:' on the "
                             "management segment", "warning")
        for i, dep in enumerate(host.get("depends_on") or []):
            if dep == name:
                problems.add((*base, "depends_on", i), "host depends on itself", "remove it from depends_on")
            elif _ref(dep, "host", hosts, (*base, "depends_on", i), problems):
                dep_tier = int(hosts[dep].get("tier", 0) or 0)
                tier = int(host.get("tier", 0) or 0)
                if isinstance(hosts[dep].get("tier", 0), int) and isinstance(host.get("tier", 0), int) \
                        and tier < dep_tier:
                    problems.add((*base, "tier"),
                                 f"tier {tier} is lower than tier {dep_tier} of '{dep}', which it depends on",
                                 f"set tier to {dep_tier} or more, or lower '{dep}''s tier")

    graph = {name: [d for d in (h.get("depends_on") or []) if d != name] for name, h in hosts.items()}
    for cycle in find_cycles(graph):
        problems.add(("hosts", cycle[0], "depends_on"),
                     f"dependency cycle between hosts {', '.join(cycle)}",
                     "break the cycle: a host cannot need, directly or through others, a host that needs it")

    for name, island in islands.items():
        base = ("islands", name)
        for i, seg_name in enumerate(island.get("segments") or []):
            _ref(seg_name, "segment", segments, (*base, "segments", i), problems)
            if seg_name == mgmt_name:
                problems.add((*base, "segments", i), "the management segment cannot be an island",
                             "remove it: management is never isolated nor powered off anyway", "warning")
        for i, host_name in enumerate(island.get("hosts") or []):
            _ref(host_name, "host", hosts, (*base, "hosts", i), problems)
        if not island.get("segments") and not island.get("hosts"):
            problems.add(base, "island has no segments and no hosts", "add 'segments: [...]' or 'hosts: [...]'")

    kept: set[str] = set()
    for name, host in hosts.items():
        if host.get("keep_running") is True:
            kept.add(name)
    for island in islands.values():
        for name, host in hosts.items():
            if name in (island.get("hosts") or []) or host.get("segment") in (island.get("segments") or []):
                kept.add(name)
    for name in sorted(kept):
        for i, dep in enumerate(hosts[name].get("depends_on") or []):
            if dep in hosts and dep not in kept:
                problems.add(("hosts", name, "depends_on", i),
                             f"kept host '{name}' depends on '{dep}', which a shutdown will power off",
                             f"keep '{dep}' running too (keep_running: true or add it to the island), "
                             "or accept that it runs degraded", "error" if strict else "warning")

    lab = data.get("lab")
    if isinstance(lab, dict):
        if "management_gateway" in lab:
            gw = _address(lab["management_gateway"], ("lab", "management_gateway"), problems)
            if gw is not None and mgmt_net is not None and gw not in mgmt_net:
                problems.add(("lab", "management_gateway"), f"{gw} is outside the management segment",
                             f"use an address inside {mgmt_net}")
            claim(gw, "the lab's management gateway", ("lab", "management_gateway"))
        if "backbone" in lab:
            backbone = _network(lab["backbone"], ("lab", "backbone"), problems)
            for seg_name, subnet in subnets.items():
                if backbone is not None and backbone.overlaps(subnet):
                    problems.add(("lab", "backbone"), f"backbone {backbone} overlaps segment '{seg_name}'",
                                 "pick a backbone range no segment uses")
        for name, peer in (lab.get("peers") or {}).items():
            base = ("lab", "peers", name)
            _ref(name, "link", links, base, problems)
            if name in links and not links[name].get("peer_address"):
                problems.add(base, f"link '{name}' has no peer_address for its lab peer",
                             f"add 'peer_address:' to links.{name}")
            if "management_address" in peer:
                addr = _address(peer["management_address"], (*base, "management_address"), problems)
                claim(addr, f"lab peer {name}", (*base, "management_address"))


# --------------------------------------------------------------------------------------------
# Building the model
# --------------------------------------------------------------------------------------------


def _build(data: Mapping[str, Any], path: str, sha256: str, base_dir: Path) -> Inventory:
    def addr(value: Any) -> ipaddress.IPv4Address:
        return ipv4(str(value))

    def opt_addr(value: Any) -> ipaddress.IPv4Address | None:
        return None if value is None else addr(value)

    site_data = data["site"]
    segments = {
        name: Segment(
            name=name, subnet=ipaddress.IPv4Network(str(s["subnet"])), zone=str(s["zone"]),
            campus=s.get("campus"), vlan=s.get("vlan"), gateway=s.get("gateway"),
            interface=s.get("interface"), gateway_address=opt_addr(s.get("gateway_address")),
        )
        for name, s in sorted((data.get("segments") or {}).items())
    }
    hosts = {}
    for name, h in sorted((data.get("hosts") or {}).items()):
        address = addr(h["address"])
        hosts[name] = Host(
            name=name, segment=h["segment"], address=address,
            management_address=opt_addr(h.get("management_address")) or address,
            credentials=h["credentials"], tier=int(h.get("tier", 0)),
            campus=h.get("campus") or segments[h["segment"]].campus, role=str(h.get("role", "")),
            depends_on=tuple(h.get("depends_on") or ()), services=tuple(h.get("services") or ()),
            keep_running=bool(h.get("keep_running", False)), power=h.get("power"),
            integrity=tuple(h.get("integrity") or ()), vars=dict(h.get("vars") or {}),
        )
    lab_data = data.get("lab")
    lab = None
    if lab_data:
        lab = LabSettings(
            management_gateway=addr(lab_data["management_gateway"]),
            backbone=ipaddress.IPv4Network(str(lab_data["backbone"])),
            peers={n: LabPeer(link=n, management_address=addr(p["management_address"]))
                   for n, p in sorted((lab_data.get("peers") or {}).items())},
        )
    return Inventory(
        path=path,
        sha256=sha256,
        site=Site(name=site_data["name"], timezone=site_data.get("timezone", "UTC")),
        management_segment=data["management"]["segment"],
        campuses={n: Campus(n, str((c or {}).get("description", "")))
                  for n, c in sorted((data.get("campuses") or {}).items())},
        segments=segments,
        devices={
            n: Device(name=n, platform=d["platform"], address=addr(d["address"]), role=d["role"],
                      credentials=d["credentials"], campus=d.get("campus"), vars=dict(d.get("vars") or {}))
            for n, d in sorted((data.get("devices") or {}).items())
        },
        links={
            n: Link(name=n, kind=LinkKind(k["kind"]), device=k["device"],
                    peer=ipaddress.IPv4Network(str(k["peer"])), description=str(k.get("description", "")),
                    interface=k.get("interface"), peer_address=opt_addr(k.get("peer_address")))
            for n, k in sorted((data.get("links") or {}).items())
        },
        hosts=hosts,
        islands={
            n: Island(name=n, reason=str(i["reason"]), segments=tuple(i.get("segments") or ()),
                      hosts=tuple(i.get("hosts") or ()))
            for n, i in sorted((data.get("islands") or {}).items())
        },
        credentials={
            n: Credential(name=n, username=str(c["username"]),
                          key_file=(resolve_credential_path(c["key_file"], base_dir) if c.get("key_file")
                                    else None),
                          password_env=c.get("password_env"),
                          known_hosts=(resolve_credential_path(c["known_hosts"], base_dir) if c.get("known_hosts")
                                       else None),
                          connect_timeout_s=(float(c["connect_timeout_s"]) if c.get("connect_timeout_s") is not None
                                             else None),
                          allow_password_on_suspect_hosts=c.get("allow_password_on_suspect_hosts") is True)
            for n, c in sorted((data.get("credentials") or {}).items())
        },
        version=int(data["version"]),
        lab=lab,
    )


def _check_device_commands(inventory: Inventory, problems: _Problems, strict: bool) -> None:
    """Render, for every segment with a gateway and every link, the commands its device would be sent
    (isolate/reconnect, cut/restore), with the renderer's own per-platform checks, so that what would
    fail every step on that device in the middle of an emergency is found here. An interface name a
    device CLI would misread is an error; with --strict, so is an interface the platform needs and the
    inventory does not give (that segment or link could not be cut)."""
    from orchestrator import devices as device_commands
    from orchestrator.errors import DriverError

    def attempt(path: KeyPath, platform: str, actions: tuple[str, str], **kw: Any) -> None:
        target = kw.get("segment") or kw.get("link")
        missing = target is not None and target.interface is None
        for action in actions:
            try:
                device_commands.render_commands(platform, action, **kw)
            except DriverError as exc:
                if missing and not strict:
                    return
                problems.add(path, f"{action} on {platform} device '{kw['device'].name}': {exc.message}",
                             exc.hint or "fix the interface name")
                return

    for name, segment in inventory.segments.items():
        device = inventory.devices.get(segment.gateway or "")
        if device is None or name == inventory.management_segment:
            continue
        path: KeyPath = ("segments", name, "interface") if segment.interface else ("segments", name, "gateway")
        attempt(path, device.platform, ("isolate-segment", "reconnect-segment"), device=device, segment=segment)
    for name, link in inventory.links.items():
        device = inventory.devices.get(link.device)
        if device is None:
            continue
        path = ("links", name, "interface") if link.interface else ("links", name)
        attempt(path, device.platform, ("cut-link", "restore-link"), device=device, link=link)


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


def _validate_text(text: str, file: str, strict: bool, base_dir: Path) -> ValidationResult:
    fast = _parse_yaml_fast(text)
    if isinstance(fast, dict):
        # Lines are looked up only if something is wrong: then the text is parsed again, with marks.
        parsed = _Parsed(fast, {}, [])
        problems = _Problems(file, lambda: _parse_yaml(text, file).lines)
    else:
        parsed = _parse_yaml(text, file)
        problems = _Problems(file, parsed.lines)
    for path, line, first in parsed.duplicates:
        problems.items.append(Problem(
            file, line, format_path(path),
            f"duplicate key '{path[-1]}' (first defined on line {first})",
            "remove or rename one of them: YAML would silently keep only the last one",
        ))
    for path, line, message, hint in parsed.values:
        problems.items.append(Problem(file, line, format_path(path), message, hint))
    problems.skip |= parsed.stand_ins
    if not isinstance(parsed.data, dict):
        problems.add((), "the top level must be a mapping of sections", "start from inventories/example-hospital.yml")
        raise InventoryError(problems.items)
    _check_schema(parsed.data, problems)
    structurally_sound = not problems.errors
    try:
        _check_semantics(parsed.data, problems, strict)
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
        # malformed structure already reported by the schema check; report what could be checked
        if structurally_sound:
            raise
    if problems.errors:
        problems.items.sort(key=lambda p: (p.line or 0, p.key))
        raise InventoryError(problems.items)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    inventory = _build(parsed.data, file, sha, base_dir)
    _check_device_commands(inventory, problems, strict)
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


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

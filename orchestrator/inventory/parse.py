"""Inventory text -> plain data, with each key's line, refusing what is not plain data.

The file is untrusted input: only plain data is accepted (text, whole numbers, finite decimals, booleans,
lists, mappings; no tags, dates, NaN or infinity), aliases may not expand it past a budget (alias bombs),
and a repeated key is reported (a YAML loader would silently keep the last one). What the file says ends
in the data or in the problems of :class:`Parsed`, never in an exception, except for text that is not
YAML at all (an ``InventoryError`` with its line).

One walker (:class:`_Walker`) turns the composed node tree into data. A clean file is read once in its
fast mode (no line map; the first thing worth reporting stops it); only then is the text read again
in its careful mode, which records every key's line and every refused value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.errors import InventoryError, Problem
from orchestrator.inventory.problems import KeyPath


@dataclass
class Parsed:
    data: Any
    lines: dict[KeyPath, int]
    duplicates: list[tuple[KeyPath, int, int]]  # path, line of the repeat, line of the first
    values: list[tuple[KeyPath, int, str, str]] = field(default_factory=list)  # path, line, message, hint
    stand_ins: set[KeyPath] = field(default_factory=set)  # refused values, built as None


# The scalar tags a value may carry: plain text, whole numbers, finite decimals, booleans and null.
# Anything else (a date, binary, a set, an application tag such as Ansible's ``!vault``) is refused.
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_SCALAR_TAGS = frozenset({_STR_TAG, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                          "tag:yaml.org,2002:bool", _NULL_TAG})
_MAP_TAG = "tag:yaml.org,2002:map"
_FLATTEN_TAGS = frozenset({"tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"})  # keys flatten_mapping rewrites
_SEQ_TAG = "tag:yaml.org,2002:seq"

# Aliases can make a small file expand to billions of values (an "alias bomb"). A value reached
# through an alias counts again each time: past this many values in all the file is refused. Real
# inventories stay far below (a 5,000-host one has about 60 values per KiB of text).
_MIN_VALUE_BUDGET = 100_000

_CLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster


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


def _needs_flattening(node: yaml.MappingNode) -> bool:
    """Whether a mapping has a key ``flatten_mapping`` rewrites (``<<``, ``=``); else it changes nothing
    (this check is 5x faster than the call, which every mapping would pay)."""
    for key, _ in node.value:  # noqa: SIM110 - a loop, 3x faster than any() over a generator
        if key.tag in _FLATTEN_TAGS:
            return True
    return False


class _AliasBombError(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _SlowPathError(Exception):
    """Something the fast mode does not report (a repeated key, a refused value): read carefully."""


class _Walker:
    """Turns a composed YAML node tree into plain data (keys made text).

    Careful (``careful=True``): records each key's line, and never raises for what the file says: a
    value that cannot be constructed (a bad merge key, an unknown tag, ``!!int x``), a date or NaN is
    recorded in ``values`` with its line and built as None, a repeated key in ``duplicates``; an alias
    bomb raises ``_AliasBombError`` with the line where the budget ran out.

    Fast (``careful=False``): no line map and no key paths; the first thing the careful mode would
    record raises ``_SlowPathError`` (the budget running out still raises ``_AliasBombError``).

    Both count every value (again at each use of an alias) against the same budget, to the same total:
    the careful mode as it builds each one (the bomb's line is where the budget ran out), the fast mode
    a collection's values at once, before building them. So the fast mode gives data only when the
    careful one would report nothing, and then the same data."""

    def __init__(self, budget: int, *, careful: bool) -> None:
        self.careful = careful
        self.lines: dict[KeyPath, int] = {}
        self.duplicates: list[tuple[KeyPath, int, int]] = []
        self.values: list[tuple[KeyPath, int, str, str]] = []
        self.stand_ins: set[KeyPath] = set()
        self.budget = budget
        self._used = 0 if careful else 1  # the fast mode counts a collection's values before building them
        self._constructor = yaml.SafeLoader("")
        self._open: set[int] = set()  # collection nodes being built (an alias to one is a loop)

    def _spend(self, node: yaml.Node, count: int = 1) -> None:
        """Count values; past the budget the file is refused."""
        self._used += count
        if self._used > self.budget:
            raise _AliasBombError(node.start_mark.line + 1)

    def _refuse(self, path: KeyPath, node: yaml.Node, message: str, hint: str, *, key: bool = False) -> None:
        """Record a refused value (built as None) or, with ``key``, a refused key (the entry is left out)."""
        if not self.careful:
            raise _SlowPathError(message)
        self.values.append((path, node.start_mark.line + 1, message, hint))
        if not key:
            self.stand_ins.add(path)

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        """The data of ``node`` at ``path`` (the fast mode keeps no paths: it passes ``()``)."""
        if self.careful:
            self._spend(node)
            self.lines.setdefault(path, node.start_mark.line + 1)
        if node.tag == _STR_TAG and isinstance(node, yaml.ScalarNode):
            return node.value  # nearly every value of an inventory
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            return self._sequence(node, path)
        return self._scalar(node, path)

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

    def _loop(self, node: yaml.Node, path: KeyPath, what: str) -> None:
        """Refuse a collection an alias made contain itself (built as None)."""
        self._refuse(path, node, f"an alias refers to the {what} that contains it",
                     "a value cannot contain itself: copy what you need instead")

    def _sequence(self, node: yaml.SequenceNode, path: KeyPath) -> list[Any] | None:
        if id(node) in self._open:
            self._loop(node, path, "list")
            return None
        self._open.add(id(node))
        build = self.build
        if self.careful:
            items = [build(item, (*path, i)) for i, item in enumerate(node.value)]
        else:
            self._spend(node, len(node.value))
            items = [item.value if item.tag == _STR_TAG and isinstance(item, yaml.ScalarNode)
                     else build(item, path) for item in node.value]  # build(item, path), inlined for text
        self._open.discard(id(node))
        return items

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any] | None:
        if id(node) in self._open:
            self._loop(node, path, "mapping")
            return None
        try:
            if _needs_flattening(node):
                self._constructor.flatten_mapping(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self._refuse(path, node, f"invalid merge key '<<': {problem}",
                         "'<<:' takes an alias of a mapping (<<: *defaults) or a list of them")
            return None
        self._spend(node, len(node.value) if self.careful else 2 * len(node.value))  # keys (and values)
        self._open.add(id(node))
        out = self._entries(node, path)
        self._open.discard(id(node))
        return out

    def _entries(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        build, careful = self.build, self.careful
        for key_node, value_node in node.value:
            if key_node.tag == _STR_TAG and isinstance(key_node, yaml.ScalarNode):
                key = key_node.value  # nearly every key
            else:
                key = self._key(key_node, path)
                if key is None:
                    continue  # refused (reported); the entry is left out
            if key in out:
                self._duplicate((*path, key), key_node)
            elif careful:
                child: KeyPath = (*path, key)
                self.lines[child] = key_node.start_mark.line + 1
                out[key] = build(value_node, child)
            elif value_node.tag == _STR_TAG and isinstance(value_node, yaml.ScalarNode):
                out[key] = value_node.value  # build(value_node, path), inlined for the usual case
            else:
                out[key] = build(value_node, path)
        return out

    def _key(self, node: yaml.Node, path: KeyPath) -> str | None:
        """A mapping key as text (``null`` is "None", as ``str`` makes it), or None when refused."""
        if not isinstance(node, yaml.ScalarNode):
            self._refuse(path, node, "a key must be plain text, not a list or a mapping",
                         "write the key as a name", key=True)
            return None
        key = self._scalar(node, path, key=True)
        if key is None and node.tag != _NULL_TAG:
            return None
        return key if isinstance(key, str) else str(key)

    def _duplicate(self, path: KeyPath, node: yaml.Node) -> None:
        if not self.careful:
            raise _SlowPathError(path[-1])
        self.duplicates.append((path, node.start_mark.line + 1, self.lines.get(path, 0)))


def parse_yaml_fast(text: str) -> Any | None:
    """The data of a well-formed file with nothing to report, or None (then use :func:`parse_yaml`)."""
    try:
        root = yaml.compose(text, Loader=_CLoader)
        return None if root is None else _Walker(value_budget(text), careful=False).build(root, ())
    except (yaml.YAMLError, _SlowPathError, _AliasBombError, RecursionError, ValueError, TypeError, KeyError,
            AttributeError, OverflowError):
        return None


def _char(character: int | str) -> str:
    code = character if isinstance(character, int) else ord(character[:1] or "\0")
    return f"U+{code:04X}"


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1


def _compose(text: str, file: str) -> yaml.Node:
    """The node tree of ``text``; InventoryError (with its line) when it is not YAML or is empty."""
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
    return root


def parse_yaml(text: str, file: str) -> Parsed:
    """The data of ``text`` with each key's line and every refused value and repeated key."""
    root = _compose(text, file)
    walker = _Walker(value_budget(text), careful=True)
    try:
        data = walker.build(root, ())
    except _AliasBombError as bomb:
        raise InventoryError([Problem(
            file, bomb.line, "(yaml)",
            f"the file expands to more than {walker.budget:,} values through YAML aliases (an alias bomb?)",
            "write the values out, or use an alias only for small, repeated blocks")]) from None
    except RecursionError:
        raise InventoryError([Problem(file, 1, "(yaml)", "values are nested too deeply",
                                      "an inventory needs only a few levels of nesting")]) from None
    return Parsed(data, walker.lines, walker.duplicates, walker.values, walker.stand_ins)
